"""Where the visual tokens of an image sit: :class:`VisualLayout` and its :class:`Region` s, supplied by the model
adapter for each batch (methods never guess it). No torch here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Region:
    """A rectangle of visual tokens in visual-token index space: ``rows`` x ``cols`` tokens, row-major, the first at
    index ``start`` and consecutive rows ``stride`` indices apart (``stride`` = ``cols`` for a block of its own)."""

    name: str  # "image" (single grid), "base" (LLaVA-NeXT's overview), "crop r,c" (a LLaVA-NeXT high-res crop)
    start: int
    rows: int
    cols: int
    stride: int = 0  # 0: cols

    def indices(self) -> list[int]:
        step = self.stride or self.cols
        return [self.start + r * step + c for r in range(self.rows) for c in range(self.cols)]

    @property
    def size(self) -> int:
        return self.rows * self.cols


@dataclass(frozen=True)
class VisualLayout:
    """Where the visual tokens of one image sit, supplied by the adapter for each batch; methods never guess it.

    Visual tokens are numbered 0..n_visual-1 in sequence order. ``grid`` is (rows, cols) for single-grid models
    (LLaVA-1.5: 24 x 24; Qwen2.5-VL: the merged patch grid). ``crops`` lists the regions that partition them: one
    ``image`` region for single-grid models; LLaVA-NeXT's ``base`` overview then each high-resolution ``crop r,c`` as
    it survives unpadding. ``n_structural`` counts image-span tokens that carry no image content and are never
    candidates (LLaVA-NeXT's row-end newline tokens): they are always kept and counted as non-visual.
    ``position_axes`` is how many position ids each token has: 1 for LLaVA's 1-D RoPE, 3 for Qwen2.5-VL's M-RoPE
    (t, h, w), whose image positions have no contiguous renumbering (:mod:`tokenbench.contract.positions`).
    """

    n_visual: int
    grid: tuple[int, int] | None = None
    crops: tuple[Region, ...] = ()
    has_cls: bool = False
    n_structural: int = 0
    position_axes: int = 1

