"""Qwen2.5-VL's vision tower (window attention, a 2 x 2 patch merger, no CLS token): its compute count and the
pre-LLM signals read from it.

* FLOPs: :class:`QwenVisionDims` and :func:`qwen_vision_macs`, with :mod:`tokenbench.measure.flops`'s conventions (MACs,
  full attention rectangles within each attention span, elementwise work not counted).
* Signals: ``vision_received`` (a kind only towers with a patch merger give) is declared here;
  :class:`QwenTowerSignals` computes it, and ``vision_keys``, by hooks on the tower's last block.

No torch at import.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any

from tokenbench.api import declare_signal
from tokenbench.measure.flops import check_count, sub_config

declare_signal(
    "vision_received",
    "attention each visual token receives in the vision tower's last block, per head: the block's softmax "
    "probabilities (over its own attention span: the image on a full-attention block) summed over every query patch, "
    "averaged over the patches the merger joins into the token (2x2 on Qwen2.5-VL), in the LLM's raster order: "
    "(B, vision_heads, N) (VisionZip's signal on towers without CLS); only towers with a patch merger",
)


# -- FLOPs -------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QwenVisionDims:
    """Shape of Qwen2.5-VL's vision tower: a Conv3d patch embedding (``temporal_patch``, ``patch``), ``depth`` blocks of
    fused-qkv attention and a SwiGLU MLP, window attention (``window`` pixels) except in ``full_blocks``, and a patch
    merger (RMSNorm, then an MLP ``4d -> 4d -> out`` on each ``merge`` x ``merge`` group)."""

    hidden: int
    depth: int
    intermediate: int
    patch: int
    temporal_patch: int
    merge: int
    window: int
    full_blocks: tuple[int, ...]
    out_hidden: int
    channels: int = 3

    @classmethod
    def from_config(cls, vision_config: Any) -> QwenVisionDims:
        c = sub_config(vision_config, "vision_config")
        return cls(hidden=c.hidden_size, depth=c.depth, intermediate=c.intermediate_size, patch=c.patch_size,
                   temporal_patch=c.temporal_patch_size, merge=c.spatial_merge_size, window=c.window_size,
                   full_blocks=tuple(c.fullatt_block_indexes), out_hidden=c.out_hidden_size,
                   channels=getattr(c, "in_channels", getattr(c, "in_chans", 3)))

    def windows(self, grid_h: int, grid_w: int) -> list[int]:
        """Patches in each attention window of a ``grid_h`` x ``grid_w`` patch grid: windows are ``window // patch``
        patches square (8 x 8 on the real model), aligned to the top left, the last row/column of windows cut short
        (as transformers' ``get_vision_window_index``)."""
        units = self.window // self.merge // self.patch  # window side in merged units
        gh, gw = grid_h // self.merge, grid_w // self.merge

        def blocks(n: int) -> list[int]:
            return [min(units, n - i) for i in range(0, n, units)]

        return [r * c * self.merge * self.merge for r in blocks(gh) for c in blocks(gw)]


def qwen_vision_macs(v: QwenVisionDims, grid_h: int, grid_w: int) -> dict[str, int]:
    """Qwen2.5-VL's vision tower and merger on one image of ``grid_h`` x ``grid_w`` patches (n = grid_h * grid_w)::

        patch embed : n * (C * tp * p * p) * dv
        each block  : 4 * n * dv^2 (fused qkv + proj)  +  3 * n * dv * mv (SwiGLU)
                      + attention 2 * s^2 * dv summed over its windows s (one window of n in a full block)
        merger      : n/4 * (4dv * 4dv + 4dv * d_out)

    Returns ``{"vision": ..., "projector": ...}`` (the merger is the projector)."""
    n = check_count("grid_h", grid_h) * check_count("grid_w", grid_w)
    d = v.hidden
    windowed = sum(2 * s * s * d for s in v.windows(grid_h, grid_w))
    blocks = sum(4 * n * d * d + 3 * n * d * v.intermediate + (2 * n * n * d if i in v.full_blocks else windowed)
                 for i in range(v.depth))
    patch = n * v.channels * v.temporal_patch * v.patch * v.patch * d
    group = d * v.merge * v.merge
    merger = (n // (v.merge * v.merge)) * (group * group + group * v.out_hidden)
    return {"vision": patch + blocks, "projector": merger}


# -- signals -----------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _raster(grid: tuple, merge: int, window: int, patch: int):
    """The permutation from the tower's window order of the merged tokens back to raster order, for images of ``grid``
    (((t, h, w), ...) on the host): it depends on the grid alone, so it is computed on the host, once per grid,
    and never makes the device wait (transformers' helper indexes with a boolean mask)."""
    import torch
    from transformers.vision_utils import get_vision_window_index

    from tokenbench.measure.kernels import host_only

    with host_only():  # host tensors only: no kernel on the device, no sync
        window_index, _ = get_vision_window_index(torch.tensor(grid), spatial_merge_size=merge, window_size=window,
                                                  patch_size=patch)
        return torch.argsort(window_index)


class QwenTowerSignals:
    """Signals of the vision tower's last block (VisionZip's Qwen2.5-VL variant), recomputed by a pre-hook from that
    block's input with the block's own weights, rotary embedding and attention spans, with their cost:
    ``vision_received`` (B, heads, N), the block's softmax attention summed over every query patch, per key, and
    ``vision_keys`` (B, heads, N, head_dim), its keys after the rotary embedding; both averaged over each merge group of
    patches (consecutive in the tower's order) and put back in the LLM's raster order with the inverse of the tower's
    window permutation. MACs: the q and k projections (k only for keys alone) and q k^T in each attention span (the
    whole image on the last block, a full-attention block in every released config)."""

    KINDS = frozenset({"vision_received", "vision_keys"})

    def __init__(self, tower, wanted: set[str]) -> None:
        self.tower, self.wanted = tower, wanted
        self.block, self.unit = tower.blocks[-1], tower.spatial_merge_unit
        self.captured: dict = {}

    @contextlib.contextmanager
    def installed(self):
        """The hooks for the ``with`` block; yields ``{kind: getter}`` (each getter: ``(tensor, macs)``)."""
        handles = [self.tower.register_forward_pre_hook(self.on_tower, with_kwargs=True),
                   self.block.register_forward_pre_hook(self.on_block, with_kwargs=True)]
        try:
            yield {kind: (lambda kind=kind: self.captured[kind]) for kind in self.wanted}
        finally:
            for h in handles:
                h.remove()

    def on_tower(self, module, args, kwargs) -> None:
        """Record the window -> raster order of the merged tokens and the image count of this forward."""
        tower = self.tower
        grid = kwargs["grid_thw"] if "grid_thw" in kwargs else args[1]
        key = tuple(map(tuple, grid.tolist()))  # free on a CPU; one copy to the host on a GPU
        raster = _raster(key, tower.spatial_merge_size, tower.window_size, tower.patch_size)
        self.captured["raster"] = raster.to(grid.device)  # merged tokens, window -> raster
        self.captured["images"] = grid.shape[0]

    def on_block(self, module, args, kwargs) -> None:
        x = module.norm1(args[0] if args else kwargs["hidden_states"])  # (T, d), the tower's window order
        q, k = self.rotated(x, kwargs["position_embeddings"])  # (T, heads, hd)
        t, d = x.shape
        macs = t * d * d * (2 if "vision_received" in self.wanted else 1)
        if "vision_received" in self.wanted:
            received, span_macs = self.received(q, k, kwargs["cu_seqlens"].tolist(), d)
            self.captured["vision_received"] = (self.per_token(received), macs + span_macs)  # projections counted once
            macs = 0
        self.captured["vision_keys"] = (self.per_token(k), macs)

    def rotated(self, x, position_embeddings):
        """The block's queries and keys of ``x`` after its rotary embedding (keys alone: the k projection only, rotated
        as a query too, unused)."""
        import torch
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

        attn = self.block.attn
        t, d = x.shape
        w, b, heads = attn.qkv.weight, attn.qkv.bias, attn.num_heads
        if "vision_received" in self.wanted:
            q, k = torch.nn.functional.linear(x, w[:2 * d], b[:2 * d]).view(t, 2, heads, -1).unbind(1)
        else:
            q = k = torch.nn.functional.linear(x, w[d:2 * d], b[d:2 * d]).view(t, heads, -1)
        return apply_rotary_pos_emb_vision(q, k, *position_embeddings)

    def received(self, q, k, bounds: list[int], d: int):
        """(the attention each patch receives, summed over the queries of its span: (T, heads) float32; the q k^T
        MACs, ``d`` the block's width)."""
        import torch

        t, heads, _ = q.shape
        received = torch.zeros(t, heads, dtype=torch.float32, device=q.device)
        macs = 0
        for lo, hi in zip(bounds[:-1], bounds[1:]):  # each attention span of the block
            qh, kh = q[lo:hi].transpose(0, 1).float(), k[lo:hi].transpose(0, 1).float()  # (heads, L, hd)
            probs = torch.matmul(qh, kh.transpose(1, 2)).mul(self.block.attn.scaling).softmax(dim=-1)
            received[lo:hi] = probs.sum(dim=1).transpose(0, 1)  # summed over the queries, per key
            macs += (hi - lo) ** 2 * d
        return received, macs

    def per_token(self, v):
        """(T, heads, ...) -> (images, heads, N, ...): the mean over each merge group, in raster order."""
        t = v.shape[0]
        v = v.reshape(t // self.unit, self.unit, *v.shape[1:]).mean(dim=1)[self.captured["raster"]]
        return v.reshape(self.captured["images"], -1, *v.shape[1:]).transpose(1, 2)
