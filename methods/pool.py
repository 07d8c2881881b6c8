"""``pool``: a trivial control. Before the LLM, the visual grid is cut into ``keep`` near-equal rectangular cells and
each cell becomes one token: the mean of its embeddings (``mode=avg``: spatial average pooling) or its centre token
(``mode=center``: uniform downsampling). Peer studies found such controls hard to beat ("Token Pruning in Multimodal
LLMs: Are We Solving the Right Problem?", arXiv:2502.11501; VTC-Bench's downsampling baseline), so the leaderboard
shows them.

Cells: a region of R x C tokens gets r = round(sqrt(k R / C)) row bands (at most R), and its k cells are shared over
the bands as evenly as possible (so a prime k still gives exactly k cells); band and column edges are rounded
linspace. On LLaVA-NeXT the budget is shared over the base image and the crops in proportion to their tokens and each
is pooled on its own grid. Each pooled token sits at its cell's centre slot. Pooling is applied to the projected
embeddings (what the LLM reads), and the LLM reads the pooled tokens as a shorter image in raster order of the cells,
with contiguous positions (``positions=auto``, :mod:`tokenbench.contract.positions`: what a pooled feature map fed to
the LLM gets, as in the peer studies' pooling controls; original M-RoPE ids on Qwen2.5-VL); ``positions=original``
gives each pooled token its centre slot's original id.
"""

from dataclasses import dataclass

from tokenbench.api import Need, PositionsOption, Step, TokenReducer, register_method, split_budget

MODES = ("avg", "center")


def cells(rows: int, cols: int, k: int) -> list[list[tuple[int, int]]]:
    """``k`` cells covering a ``rows`` x ``cols`` grid, each a list of (row, col), in row-major order of cells."""
    import math

    if not 0 < k <= rows * cols:
        return []
    r = min(rows, max(math.ceil(k / cols), round(math.sqrt(k * rows / cols))))
    out = []
    row_edges = [round(i * rows / r) for i in range(r + 1)]
    for band in range(r):
        c = k // r + (band < k % r)
        col_edges = [round(j * cols / c) for j in range(c + 1)]
        for j in range(c):
            out.append([(y, x) for y in range(row_edges[band], row_edges[band + 1])
                        for x in range(col_edges[j], col_edges[j + 1])])
    return out


@register_method("pool")
@dataclass(frozen=True)
class Pool(PositionsOption, TokenReducer):
    stage = "pre_llm"
    budget_scopes = ("global", "crop")  # every region is pooled on its own grid with its share, whatever the scope
    mode: str = "avg"  # avg: mean of each cell's embeddings | center: keep the cell's centre token (uniform sampling)

    def check(self, n_layers):
        if self.mode not in MODES:
            raise self.option_error("mode", f"must be one of {', '.join(MODES)}", "center")

    def steps(self, n_layers):
        return (Step(-1, needs=(Need("visual_embeds"),)),)

    def reduces(self, keep, n_visual):
        return keep < n_visual

    def select(self, ctx):
        import torch

        embeds = ctx.signal(Need("visual_embeds"))  # (B, N, D)
        regions = ctx.layout.crops
        slots, members = [], []
        for region, quota in zip(regions, split_budget(ctx.keep, [r.size for r in regions])):
            step = region.stride or region.cols
            for cell in cells(region.rows, region.cols, quota):
                ids = [region.start + y * step + x for y, x in cell]
                centre = cell[len(cell) // 2]
                slots.append(region.start + centre[0] * step + centre[1])
                members.append(ids)
        index = torch.tensor(slots, device=embeds.device).expand(ctx.batch_size, -1)
        if self.mode == "center":
            return self.kept(ctx, index)
        pooled = torch.stack([embeds[:, ids].mean(dim=1) for ids in members], dim=1)
        return self.kept(ctx, index, embeds=pooled)
