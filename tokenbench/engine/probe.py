"""The attention probe: compute only the attention rows, keys or normed states a method declared, at one layer.

Works on Llama/Qwen2-style decoder layers (``input_layernorm``, ``self_attn.{q,k}_proj``, ``head_dim``,
``scaling``), with the layer's own RoPE (cos/sin gathered at each token's original position, so M-RoPE is right too).
This is PyramidDrop's trick generalised: no switch to eager attention, no L x L matrix for the whole model; the
cost is counted by the router (``tokenbench.measure.flops.attention_rows_macs``).
"""

from __future__ import annotations

import torch

from tokenbench.engine.subset import _heads, rope, take


def normed(layer, hidden: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return layer.input_layernorm(take(hidden, idx))


def keys(layer, hidden, cos, sin, idx) -> torch.Tensor:
    """Post-RoPE keys (B, kv_heads, n, head_dim) of the tokens at sequence positions idx (B, n)."""
    attn = layer.self_attn
    k = _heads(attn.k_proj(normed(layer, hidden, idx)), attn.head_dim)
    return rope(k, take(cos, idx), take(sin, idx))


def attention_rows(layer, hidden, cos, sin, key_idx, key_valid, query_idx) -> torch.Tensor:
    """Attention probabilities (B, heads, Q, K) from the queries at ``query_idx`` (B, Q) to the keys at ``key_idx``
    (B, K), both sequence positions; causal (a key after the query is masked) and ``key_valid`` (B, K) masks padding.
    Softmax in float32 over all keys given, as the layer itself would normalise."""
    attn = layer.self_attn
    k = keys(layer, hidden, cos, sin, key_idx)
    q = _heads(attn.q_proj(normed(layer, hidden, query_idx)), attn.head_dim)
    q = rope(q, take(cos, query_idx), take(sin, query_idx))
    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * attn.scaling
    allowed = (key_idx[:, None, :] <= query_idx[:, :, None]) & key_valid[:, None, :]
    scores = scores.masked_fill(~allowed[:, None], torch.finfo(scores.dtype).min)
    return scores.softmax(dim=-1)


def layer_input(layer, hidden, tokens, other_idx, visual_idx, valid, visual_span=None):
    """``Need("layer_input")``: the normed input of every token of ``tokens`` (a
    :class:`tokenbench.engine.subset.TokenSet`: the non-visual tokens ``other_idx`` and the active visual tokens
    ``visual_idx``, sequence positions (B, M) and (B, n), in sequence order), with the layer's RoPE at their original
    positions. Elementwise work only (the norm), so it costs no MACs. Everything but the normed input is built once
    per token set and shared by every layer that sees the same tokens (``memo`` too, for the method's own)."""
    from functools import partial

    from tokenbench.api import LayerInput

    attn = layer.self_attn
    head_dim = attn.head_dim
    return LayerInput(
        normed=layer.input_layernorm(hidden if tokens.full else take(hidden, tokens.positions)),
        positions=tokens.positions,
        valid=tokens.valid(valid),
        visual=tokens.columns_of("visual", visual_idx),
        text=tokens.columns_of("text", other_idx),
        rope=tokens._memo("rope", lambda: partial(rope, cos=tokens.cos, sin=tokens.sin)),
        n_heads=attn.q_proj.out_features // head_dim,
        n_kv_heads=attn.k_proj.out_features // head_dim,
        head_dim=head_dim,
        scaling=float(attn.scaling),
        q_bias=attn.q_proj.bias,
        k_bias=attn.k_proj.bias,
        memo=tokens.memo,
        visual_span=visual_span,
    )
