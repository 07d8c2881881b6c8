"""VisionZip (Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language Models", CVPR 2025,
arXiv:2412.04467; official code dvlab-research/VisionZip: ``visionzip/main.py``, ``clip_encoder.py``, ``utils.py``;
Qwen2.5-VL: ``Qwen2_5_VL/qwen2_5vl_visionzip.py`` of the authors' 2025-05 commits).

Rule, before the LLM, in the vision tower (text-agnostic):

1. **dominant** tokens: at the layer that feeds the projector (CLIP's penultimate), the CLS token's attention to the
   patches summed over heads; the top ``dominant - 1`` patches **plus the CLS token itself** (official
   ``dominant_num = dominant - 1``), in raster order after CLS;
2. **contextual** tokens: the other patches' keys of that layer, averaged over heads and L2-normalised; ``contextual``
   targets at a uniform stride over them (``step = max(1, R // contextual)``, the first ``contextual`` of
   ``0, step, 2 step, ...``); every other patch joins its most cosine-similar target, and each contextual token is the
   target's feature plus the mean of the features that joined it;
3. merging happens on the vision features, before the projector; the LLM reads [CLS, dominant, contextual] as a
   shorter image with contiguous positions (``Selection(renumber=True)``), as LLaVA does with VisionZip's output
   (``positions=auto``, the default, :mod:`tokenbench.contract.positions`). ``positions=original`` keeps the tokens
   in place instead, as on LLaVA-NeXT below: dominant patches at their own slots, each contextual token at its
   target's, no CLS token (it has no slot; its share goes to one more dominant patch), original position ids.

Counts: 54+10 / 108+20 / 162+30 for 64/128/192 (the official README's 54+10 for 64, scaled); any budget k splits the
same way, ``dominant = round(k * dominant_share)`` (54/64) and the rest contextual.

**Qwen2.5-VL** (no CLS token): the official variant, ``Qwen2_5_VL/qwen2_5vl_visionzip.py`` of JIA-Lab-research/VisionZip
(formerly dvlab-research, whose mirror here predates the file; read in the fork jsilvcast/VisionZip at 68993a31, the
authors' file "modified from Transformers 4.49.0"). VisionZip picks its signal by model without any option:
the step offers the CLS needs first and the received-attention needs as an alternative (``Step.alternatives``), and
the adapter computes the first set it provides. Rule (:func:`select_received`): the attention each visual token
receives in the tower's last block (softmax probabilities summed over the queries, averaged over heads and over the
2x2 patches of each merge group, mapped back from the tower's window order: ``Need("vision_received")``); its top
``dominant`` tokens; the rest merge by that block's keys (group- and head-averaged, ``Need("vision_keys")``) exactly
as step 2 above, **after the merger**, on the LLM input embeddings; every kept token keeps its slot and original
M-RoPE position (a contextual token sits where its target was), no renumbering. Deviations: the official code keeps
0.65 N dominant + 0.05 N contextual tokens whatever the budget; here the budget is split by ``dominant_share`` as on
LLaVA (``-a visionzip.dominant_share=0.9286`` gives the official 13:1 split); the attention is recomputed in float32
(official: the model's dtype) over the block's own attention spans (the whole image: the last block is a
full-attention block in every released config).

**LLaVA-NeXT** (:meth:`VisionZip.select_per_crop`; official ``clip_encoder.py`` on the stacked crops and
``llava_arch.py::restore_image_features_sorted``): the CLIP tower runs once per crop (the base image and each grid
crop), and the official code applies steps 1-2 to every crop on its own with the same counts (so "64" keeps 64 per
crop: 5 x 64 = 320 on a 2 x 2 grid), then feeds the LLM the base image's [CLS, dominant, contextual], the grid crops'
dominant tokens in the padded grid's raster order, then their CLS and contextual tokens appended, without newlines
or unpadding, positions contiguous. Here the model's own layout is kept (``layout.crops``: the base image, then each
crop as it survives unpadding, newlines between rows), and each region runs steps 1-2 on its own, on the adapter's
per-crop signals (each crop's own CLS row, keys and features, mapped through unpadding); dominant tokens stay at
their own slots, each contextual token takes its target's slot with the merged feature (``Selection.features``);
the LLM reads them in slot order, newlines included, with contiguous positions (``positions=auto``, as the official
shorter sequence) or their original ones (``positions=original``).
Deviations, stated:

- the budget k is shared among the regions in proportion to their tokens after unpadding (``split_budget``, the
  ``crop`` scope's split, whichever scope the run uses: the rule is per crop either way), where the official code
  gives every crop the same count; the paper's LLaVA-NeXT budgets 640/320/160 (of 5 x 576 = 2,880 on a 2 x 2 grid)
  are its 128/64/32 per crop, which ``--keep 640,320,160`` gives up to that split;
- a crop's CLS token has no slot in the model's own layout: its share goes to one more dominant patch (the region's
  ``dominant`` are all patches, where the official ``dominant - 1`` patches + CLS);
- patches that unpadding removes are neither candidates nor merged (the official code ranks and merges all of a
  crop's patches, padding included, and its kept padding tokens reach the LLM);
- contextual tokens sit at their targets' slots in the grid (official: appended after it) and newlines are kept.
"""

from dataclasses import dataclass

from tokenbench.api import Need, PositionsOption, Selection, Step, TokenReducer, register_method, split_budget

CLS_NEEDS = (Need("cls_attn"), Need("vision_keys"), Need("vision_features"))
RECEIVED_NEEDS = (Need("vision_received"), Need("vision_keys"), Need("visual_embeds"))  # Qwen2.5-VL's variant


@register_method("visionzip")
@dataclass(frozen=True)
class VisionZip(PositionsOption, TokenReducer):
    stage = "pre_llm"
    budget_scopes = ("global", "crop")  # one region: the same; LLaVA-NeXT: per crop on its share, whatever the scope
    dominant_share: float = 54 / 64  # of the budget, dominant tokens (CLS included); the rest are contextual

    def check(self, n_layers):
        if not 0 < self.dominant_share <= 1:
            raise self.option_error("dominant_share", "must be in (0, 1] (the budget's share of dominant tokens)",
                                    0.8)

    def steps(self, n_layers):
        return (Step(-1, needs=CLS_NEEDS, alternatives=(RECEIVED_NEEDS,)),)

    def reduces(self, keep, n_visual):
        return keep < n_visual

    def split(self, keep: int) -> tuple[int, int]:
        dominant = min(keep, max(1, round(keep * self.dominant_share)))
        return dominant, keep - dominant

    def select(self, ctx):
        if Need("vision_received") in ctx.signals:  # a tower without CLS: the official Qwen2.5-VL variant
            return select_received(ctx, *self.split(ctx.keep))
        if len(ctx.layout.crops) > 1 or not self.renumbers(ctx.layout):  # LLaVA-NeXT (one tower pass per region:
            return self.select_per_crop(ctx)  # the base image, then each crop), or the kept tokens in place
        return self.select_image(ctx)

    def select_image(self, ctx):
        """LLaVA-1.5: one tower pass; [CLS, dominant, contextual] as a shorter, renumbered image."""
        import torch

        cls_attn = ctx.signal(Need("cls_attn")).float().sum(dim=1)  # (B, N) summed over heads
        keys = ctx.signal(Need("vision_keys")).float().mean(dim=1)  # (B, N, hd) averaged over heads
        feats = ctx.signal(Need("vision_features"))  # (B, 1 + N, Dv), CLS first
        dominant, contextual = self.split(ctx.keep)
        b, n = cls_attn.shape
        top = cls_attn.topk(dominant - 1, dim=1).indices.sort(dim=1).values  # patches, raster order
        rest = others(top, n)  # the other patches, raster order
        patches = feats[:, 1:]
        parts = [feats[:, :1], take(patches, top)]
        macs = 0
        if contextual:
            ctx_feats, macs = merge(take(keys, rest), take(patches, rest), contextual)
            parts.append(ctx_feats)
        out = torch.cat(parts, dim=1)
        slots = torch.arange(ctx.keep, device=cls_attn.device).expand(b, -1)
        return Selection(slots, features=out, renumber=True, macs=macs)

    def select_per_crop(self, ctx):
        """LLaVA-NeXT, or any single-grid CLS tower under ``positions=original``: the rule inside each region on its
        share of the budget; every kept token at a slot of the model's own layout (dominant tokens at theirs, each
        contextual token at its target's), read in that slot order, renumbered as ``positions`` says."""
        import torch

        cls_attn = ctx.signal(Need("cls_attn")).float().sum(dim=1)  # (B, N) summed over heads
        keys = ctx.signal(Need("vision_keys")).float().mean(dim=1)  # (B, N, hd) averaged over heads
        n = cls_attn.shape[1]
        patches = ctx.signal(Need("vision_features"))[:, -n:]  # (B, N, Dv): the passes' CLS rows dropped
        slots, rows, macs = [], [], 0
        for region, quota in zip(ctx.layout.crops, split_budget(ctx.keep, [r.size for r in ctx.layout.crops])):
            if not quota:
                continue
            members = torch.tensor(region.indices(), device=cls_attn.device)
            dominant, contextual = self.split(quota)  # no CLS slot: all `dominant` are patches
            top = cls_attn[:, members].topk(dominant, dim=1).indices.sort(dim=1).values  # region raster order
            slots.append(members[top])
            rows.append(take(patches[:, members], top))
            if contextual:
                rest = others(top, len(members))
                merged, m = merge(take(keys[:, members], rest), take(patches[:, members], rest), contextual)
                slots.append(members[rest[:, targets(rest.shape[1], contextual, rest.device)]])
                rows.append(merged)
                macs += m
        return self.kept(ctx, torch.cat(slots, dim=1), features=torch.cat(rows, dim=1), macs=macs)


def select_received(ctx, dominant: int, contextual: int) -> Selection:
    """VisionZip's official Qwen2.5-VL variant (see the module docstring): the ``dominant`` visual tokens receiving
    the most attention in the tower's last block (averaged over heads), then ``contextual`` tokens merged from the
    others (raster order) by that block's keys (:func:`merge`) on the LLM input embeddings. Every kept token stays in
    its own slot at its original position: a dominant token unchanged, a contextual one where its target was."""
    import torch

    received = ctx.signal(Need("vision_received")).float().mean(dim=1)  # (B, N) averaged over heads
    keys = ctx.signal(Need("vision_keys")).float().mean(dim=1)  # (B, N, hd) averaged over heads
    embeds = ctx.signal(Need("visual_embeds"))  # (B, N, D), after the merger
    top = received.topk(dominant, dim=1).indices
    slots, rows, macs = [top], [take(embeds, top)], 0
    if contextual:
        rest = others(top, received.shape[1])  # raster order
        merged, macs = merge(take(keys, rest), take(embeds, rest), contextual)
        slots.append(rest[:, targets(rest.shape[1], contextual, rest.device)])
        rows.append(merged)
    return Selection(torch.cat(slots, dim=1), embeds=torch.cat(rows, dim=1), macs=macs)


def take(x, index):
    """Rows ``index`` (B, k) of ``x`` (B, n, d)."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def others(chosen, n: int):
    """(B, n - k) the positions 0..n-1 not in ``chosen`` (B, k), ascending."""
    import torch

    mask = torch.ones(chosen.shape[0], n, dtype=torch.uint8, device=chosen.device)
    mask.scatter_(1, chosen, 0)
    # the unchosen first, each group in ascending order (a stable sort): no nonzero, so no host sync
    return mask.argsort(dim=1, descending=True, stable=True)[:, : n - chosen.shape[1]]


def targets(r: int, contextual: int, device=None):
    """The contextual step's targets among ``r`` remaining tokens: ``contextual`` at a uniform stride,
    ``0, step, 2 step, ...`` with ``step = max(1, r // contextual)``."""
    import torch

    return torch.arange(0, r, max(1, r // contextual), device=device)[:contextual]


def merge(keys, values, contextual: int):
    """VisionZip's contextual step on R remaining tokens: ``contextual`` targets at a uniform stride (:func:`targets`);
    every other token joins its most cosine-similar target (by ``keys``); each result is the target's ``values`` row
    plus the mean of those that joined it. Returns ((B, contextual, Dv), MACs of one sample's two matmuls)."""
    import torch

    b, r, _ = keys.shape
    chosen = targets(r, contextual, keys.device)
    rest = others(chosen[None], r)[0]  # the non-targets, ascending (an index, not a boolean mask: no host sync)
    unit = torch.nn.functional.normalize(keys, dim=-1)
    sim = torch.bmm(unit[:, rest], unit[:, chosen].transpose(1, 2))  # (B, R - c, c)
    assign = torch.zeros_like(sim, dtype=values.dtype).scatter_(2, sim.argmax(dim=2, keepdim=True), 1.0)
    counts = assign.sum(dim=1).clamp(min=1)[..., None]  # (B, c, 1)
    merged = torch.bmm(assign.transpose(1, 2), values[:, rest]) / counts
    joined = r - len(chosen)
    # the second product is an outer product when one token joins (inner dimension 1): elementwise work, 0 MACs
    macs = joined * len(chosen) * keys.shape[-1] + (len(chosen) * joined * values.shape[-1] if joined > 1 else 0)
    return values[:, chosen] + merged, macs
