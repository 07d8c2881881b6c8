"""ALVTS's selector as it was before the blockwise rewrite (tokenbench 0.x, commit 272bbc6), kept verbatim as the
reference the new implementation is tested and benchmarked against: it materialises the float32 (B, H, T, T)
attention map, pools its heads and gathers the visual columns."""

from __future__ import annotations

import torch

from tokenbench.methods.alvts.selector import importance


def _rope_then(inp, x: torch.Tensor) -> torch.Tensor:
    """The probe's RoPE as it was then (``x * cos + rotate_half(x) * sin`` with a concatenated rotate_half, cos/sin
    promoted by the multiply), on the cos/sin ``inp.rope`` holds; the same values as today's, at its old cost."""
    cos, sin = inp.rope.keywords["cos"].unsqueeze(1), inp.rope.keywords["sin"].unsqueeze(1)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def _heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    b, n, _ = x.shape
    return x.view(b, n, -1, head_dim).transpose(1, 2)


def selector_attention(inp, uq, vq, uk, vk, causal: bool = True, rope: bool = True) -> torch.Tensor:
    x = inp.normed.to(uq.dtype)
    q, k = (x @ vq.T) @ uq.T, (x @ vk.T) @ uk.T
    if inp.q_bias is not None:
        q = q + inp.q_bias.to(q.dtype)
    if inp.k_bias is not None:
        k = k + inp.k_bias.to(k.dtype)
    q, k = _heads(q, inp.head_dim), _heads(k, inp.head_dim)
    if rope:
        q, k = _rope_then(inp, q), _rope_then(inp, k)
    k = k.repeat_interleave(inp.n_heads // inp.n_kv_heads, dim=1)
    logits = torch.matmul(q.float(), k.float().transpose(-1, -2)) * inp.scaling
    allowed = inp.valid[:, None, :].expand(-1, inp.valid.shape[1], -1)
    if causal:
        allowed = allowed & (inp.positions[:, None, :] <= inp.positions[:, :, None])
    logits = logits.masked_fill(~allowed[:, None], torch.finfo(logits.dtype).min)
    return logits.softmax(dim=-1)


def selector_scores(inp, factors, pooling: str = "mean", causal: bool = True, rope: bool = True) -> torch.Tensor:
    probs = selector_attention(inp, *factors, causal=causal, rope=rope)
    probs = probs.mean(dim=1, keepdim=True) if pooling == "mean" else probs.amax(dim=1, keepdim=True)
    vis = inp.visual
    cols = vis[:, None, None, :].expand(-1, probs.shape[1], -1, -1)

    def rows_to_visual(rows):
        picked = probs.gather(2, rows[:, None, :, None].expand(-1, probs.shape[1], -1, probs.shape[3]))
        return picked.gather(3, cols.expand(-1, -1, rows.shape[1], -1))

    return importance(rows_to_visual(vis), rows_to_visual(inp.text), inp.valid.gather(1, inp.text), pooling)
