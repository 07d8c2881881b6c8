"""Run a decoder layer on a subset of the sequence: the tokens a layer computes, gathered with their own positions.

A :class:`TokenSet` is one set of sequence positions (every non-visual token plus some visual ones) with what a layer
needs for it: the gathered position embeddings and position ids, the 4-D mask's rows and columns, and the columns of
its visual and text tokens. The router builds each set once per prefill and reuses it for every layer that computes
the same tokens (every layer after a pruning step; every layer of a route-only method whose keys are all the
tokens), so a layer after the first pays one gather and one scatter, whatever the method. Nothing here reads a value
on the host: shapes are known before a layer runs, so the path launches a fixed number of kernels and never syncs.

* :func:`run_subset` runs the layer's own ``forward`` on the set (pruning, and routing without ``skipped_as_kv``);
* :func:`routed_layer` runs a route step with ``skipped_as_kv``: queries, the output projection and the MLP for the
  routed tokens, keys and values from one projection of every key token, inside one attention call on the layer's
  own backend (the Llama/Qwen2 decoder layer, written out from its submodules).
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field

import torch


def take(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """t (B, L, ...) gathered at idx (B, n) along dim 1."""
    shape = idx.shape + t.shape[2:]
    return t.gather(1, idx.view(*idx.shape, *([1] * (t.dim() - 2))).expand(shape))


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, n, hd) rotated by cos/sin (B, n, hd): transformers' ``x * cos + rotate_half(x) * sin``, the same ops
    (so the same bits) as the layer's own ``apply_rotary_pos_emb``."""
    cos, sin = cos.unsqueeze(1).to(x.dtype), sin.unsqueeze(1).to(x.dtype)  # a float32 selector on a bfloat16 model
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


@dataclass
class TokenSet:
    """Sequence positions ``positions`` (B, n) and what a layer needs to run on them; ``full``: every token of the
    sequence (nothing gathered). Positions are ascending, except for the query rows of a routed layer (whose mask is
    explicit, so their order does not matter)."""

    positions: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    full: bool = False
    memo: dict = field(default_factory=dict)  # tensors derived from the set alone (masks, columns), built once

    @classmethod
    def of(cls, positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, full: bool = False,
           both: torch.Tensor | None = None) -> "TokenSet":
        """``both``: cos and sin concatenated on the last dimension (built once per forward), so that one gather
        serves both."""
        if full:
            return cls(positions, cos, sin, True)
        if both is None:
            return cls(positions, take(cos, positions), take(sin, positions))
        taken = take(both, positions)
        return cls(positions, taken[..., :cos.shape[-1]], taken[..., cos.shape[-1]:])

    def _memo(self, key, build):
        if key not in self.memo:
            self.memo[key] = build()
        return self.memo[key]

    def columns(self, positions: torch.Tensor) -> torch.Tensor:
        """Columns (in this set) of ``positions``, a subset of it."""
        if self.full:
            return positions
        return torch.searchsorted(self.positions, positions)

    def columns_of(self, name: str, positions: torch.Tensor) -> torch.Tensor:
        """:meth:`columns` of a fixed subset, built once per set (``name`` says which)."""
        return self._memo(("cols", name, id(positions)), lambda: (positions, self.columns(positions)))[1]

    def valid(self, valid: torch.Tensor) -> torch.Tensor:
        return valid if self.full else self._memo("valid", lambda: valid.gather(1, self.positions))

    def position_ids(self, pos_ids):
        """The layer's ``position_ids`` kwarg gathered to the set (None stays None)."""
        if not isinstance(pos_ids, torch.Tensor) or self.full:
            return pos_ids
        b, n = self.positions.shape

        def build():
            return pos_ids.expand(*pos_ids.shape[:-2], b, pos_ids.shape[-1]).gather(
                -1, self.positions.expand(*pos_ids.shape[:-2], b, n))

        return self._memo(("pos_ids", id(pos_ids)), lambda: (pos_ids, build()))[1]

    def mask_columns(self, mask):
        """The 4-D mask's columns at this set's positions (all rows), built once per set and mask."""
        if not isinstance(mask, torch.Tensor) or self.full:
            return mask
        b = self.positions.shape[0]

        def build():
            m = mask.expand(b, *mask.shape[1:])
            return m.gather(3, self.positions[:, None, None, :].expand(-1, m.shape[1], m.shape[2], -1))

        return self._memo(("mask_cols", id(mask)), lambda: (mask, build()))[1]

    def mask_rows(self, columns, rows: "TokenSet"):
        """``columns`` (a mask already restricted to some key set) at the rows of ``rows``' positions."""
        if not isinstance(columns, torch.Tensor) or rows.full:
            return columns
        return columns.gather(2, rows.positions[:, None, :, None].expand(-1, columns.shape[1], -1, columns.shape[3]))


def run_subset(original, hidden: torch.Tensor, tokens: TokenSet, args, kwargs):
    """Run ``original`` (the layer's own forward) on ``tokens`` only, with their own position embeddings, position
    ids and mask rows/columns (``None`` stays ``None``: causal over a sorted subset is still causal); the outputs are
    scattered back into ``hidden``, so the other tokens pass through unchanged."""
    if tokens.full:
        return original(hidden, *args, **kwargs)
    kwargs = dict(kwargs)
    kwargs["position_embeddings"] = (tokens.cos, tokens.sin)
    kwargs["position_ids"] = tokens.position_ids(kwargs.get("position_ids"))
    mask = kwargs.get("attention_mask")
    if isinstance(mask, torch.Tensor):
        kwargs["attention_mask"] = tokens._memo(("mask", id(mask)), lambda: (
            mask, tokens.mask_rows(tokens.mask_columns(mask), tokens)))[1]
    out = original(take(hidden, tokens.positions), *args, **kwargs)
    out_h = out[0] if isinstance(out, tuple) else out
    merged = hidden.scatter(1, tokens.positions[..., None].expand(-1, -1, hidden.shape[-1]), out_h)
    return (merged, *out[1:]) if isinstance(out, tuple) else merged


def _heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    b, n, _ = x.shape
    return x.view(b, n, -1, head_dim).transpose(1, 2)


@functools.cache
def _eager_attention(attn_class):
    """The eager attention function of the attention class's modeling module (the fallback transformers uses)."""
    return getattr(sys.modules[attn_class.__module__], "eager_attention_forward")


def _attention_function(attn):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    impl = attn.config._attn_implementation
    fallback = _eager_attention(type(attn))
    if impl == "eager":
        return fallback
    return ALL_ATTENTION_FUNCTIONS.get_interface(impl, fallback) if hasattr(ALL_ATTENTION_FUNCTIONS, "get_interface") \
        else ALL_ATTENTION_FUNCTIONS[impl]


LAYER_PARTS = ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp")


def check_layer(layer) -> None:
    """A route step with ``skipped_as_kv`` runs the layer from its parts: refuse a layer that lacks one."""
    missing = [p for p in LAYER_PARTS if not hasattr(layer, p)]
    missing += [f"self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling")
                if hasattr(layer, "self_attn") and not hasattr(layer.self_attn, p)]
    if missing:
        raise TypeError(f"decoder layer {type(layer).__name__} has no {', '.join(missing)}: routing with skipped "
                        "tokens as keys needs a Llama/Qwen2-style layer")


def routed_layer(layer, hidden: torch.Tensor, queries: TokenSet, keys: TokenSet, mask, cache,
                 normed: torch.Tensor | None = None) -> torch.Tensor:
    """Layer ``layer`` (Llama/Qwen2 decoder layer) with queries at ``queries`` and keys/values at ``keys`` (a superset,
    every token a routed token attends to): the key tokens' input norm, K and V in one projection each, the queries'
    rows of the same normed input, the layer's RoPE at every token's own position, one attention call on the layer's
    backend (``mask``: the model's 4-D mask, or ``None`` for causal), the output projection, the residual and the MLP
    for the queries; scattered back, so the skipped tokens pass through unchanged. ``cache``: stores every key's K/V.
    ``normed``: the key tokens' normed input when the caller has it already (ALVTS's selector reads the same).

    The arithmetic is :func:`routed_core` (compiled under engine.compiled's compiled layers). This runs
    in the prefill only, where the layer's cache is still empty, so storing K/V after the attention is the same as
    the layer's own store-then-attend."""
    attn = layer.self_attn
    if isinstance(mask, torch.Tensor):
        allowed = keys.mask_rows(keys.mask_columns(mask), queries)
    else:  # causal over positions; the key set is larger than the query set, so it is spelled out
        allowed = keys.positions[:, None, None, :] <= queries.positions[:, None, :, None]
        if attn.config._attn_implementation == "eager":  # eager adds its mask
            allowed = torch.zeros(allowed.shape, dtype=hidden.dtype, device=hidden.device).masked_fill_(
                ~allowed, torch.finfo(hidden.dtype).min)
    from tokenbench.engine.compiled import compiled_for

    core = compiled_for(layer, routed_core)
    out, k, v = core(layer, hidden, normed, queries.positions, queries.cos, queries.sin,
                     None if keys.full else keys.positions, keys.cos, keys.sin, allowed)
    if cache is not None:
        cache.update(k, v, attn.layer_idx)
    return out


def routed_core(layer, hidden, normed, q_pos, q_cos, q_sin, k_pos, k_cos, k_sin, allowed):
    """The tensor work of :func:`routed_layer`: returns (the new hidden states, K, V of the key tokens). ``k_pos``
    None: the keys are the whole sequence."""
    attn = layer.self_attn
    b, hd = hidden.shape[0], attn.head_dim
    if normed is None:
        normed = layer.input_layernorm(hidden if k_pos is None else take(hidden, k_pos))
    x_q = take(normed, q_pos if k_pos is None else torch.searchsorted(k_pos, q_pos))
    q = rope(_heads(attn.q_proj(x_q), hd), q_cos, q_sin)
    k = rope(_heads(attn.k_proj(normed), hd), k_cos, k_sin)
    v = _heads(attn.v_proj(normed), hd)
    if attn.config._attn_implementation == "sdpa" and not getattr(attn, "sliding_window", None):
        # torch's SDPA, as transformers calls it, except that grouped K/V heads are served in place (enable_gqa)
        # rather than repeated: transformers repeats them whenever a mask is given, and here one always is
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=attn.scaling,
                                                               enable_gqa=k.shape[1] != q.shape[1]).transpose(1, 2)
    else:
        extra = {"sliding_window": attn.sliding_window} if getattr(attn, "sliding_window", None) else {}
        out, _ = _attention_function(attn)(attn, q, k, v, allowed, dropout=0.0, scaling=attn.scaling, **extra)
    out = attn.o_proj(out.reshape(b, q_pos.shape[1], -1).contiguous())
    h = take(hidden, q_pos) + out
    h = h + layer.mlp(layer.post_attention_layernorm(h))
    return hidden.scatter(1, q_pos[..., None].expand(-1, -1, hidden.shape[-1]), h), k, v
