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
   shorter image with contiguous positions (``Selection(renumber=True)``), as LLaVA does with VisionZip's output.

Counts: 54+10 / 108+20 / 162+30 for 64/128/192 (the official README's 54+10 for 64, scaled); any budget k splits the
same way, ``dominant = round(k * dominant_share)`` (54/64) and the rest contextual.

Without a CLS token (**Qwen2.5-VL**) the official Qwen code uses another signal: the attention each token receives in
the vision tower's last block (summed over queries, averaged over heads and each 2x2 merge group), with that block's
keys for the contextual step, merging on the LLM input embeddings and original M-RoPE positions. That variant is not
implemented here, so Qwen2.5-VL refuses VisionZip before any compute (no CLS attention). LLaVA-NeXT is refused too:
the official NeXT code runs VisionZip on each crop on its own and drops the newlines and the unpadding, a different
image layout from the model's own.
"""

from dataclasses import dataclass

from tokenbench.api import Need, Selection, Step, TokenReducer, register_method

CLS_NEEDS = (Need("cls_attn"), Need("vision_keys"), Need("vision_features"))


@register_method("visionzip")
@dataclass(frozen=True)
class VisionZip(TokenReducer):
    stage = "pre_llm"
    budget_scopes = ("global",)  # dominant tokens are ranked over the whole image, and contextual ones merge across it
    dominant_share: float = 54 / 64  # of the budget, dominant tokens (CLS included); the rest are contextual

    def check(self, n_layers):
        if not 0 < self.dominant_share <= 1:
            raise self.option_error("dominant_share", "must be in (0, 1] (the budget's share of dominant tokens)",
                                    0.8)

    def steps(self, n_layers):
        return (Step(-1, needs=CLS_NEEDS),)

    def reduces(self, keep, n_visual):
        return keep < n_visual

    def split(self, keep: int) -> tuple[int, int]:
        dominant = min(keep, max(1, round(keep * self.dominant_share)))
        return dominant, keep - dominant

    def select(self, ctx):
        import torch

        cls_attn = ctx.signal(Need("cls_attn")).float().sum(dim=1)  # (B, N) summed over heads
        keys = ctx.signal(Need("vision_keys")).float().mean(dim=1)  # (B, N, hd) averaged over heads
        feats = ctx.signal(Need("vision_features"))  # (B, 1 + N, Dv), CLS first
        dominant, contextual = self.split(ctx.keep)
        b, n = cls_attn.shape
        top = cls_attn.topk(dominant - 1, dim=1).indices.sort(dim=1).values  # patches, raster order
        rest_mask = torch.ones(b, n, dtype=torch.bool, device=cls_attn.device)
        rest_mask.scatter_(1, top, False)
        rest = rest_mask.nonzero()[:, 1].view(b, n - (dominant - 1))  # the other patches, raster order
        patches = feats[:, 1:]
        parts = [feats[:, :1], patches.gather(1, top[..., None].expand(-1, -1, feats.shape[-1]))]
        macs = 0
        if contextual:
            ctx_feats, macs = merge(keys.gather(1, rest[..., None].expand(-1, -1, keys.shape[-1])),
                                    patches.gather(1, rest[..., None].expand(-1, -1, feats.shape[-1])), contextual)
            parts.append(ctx_feats)
        out = torch.cat(parts, dim=1)
        slots = torch.arange(ctx.keep, device=cls_attn.device).expand(b, -1)
        return Selection(slots, features=out, renumber=True, macs=macs)


def merge(keys, values, contextual: int):
    """VisionZip's contextual step on R remaining tokens: ``contextual`` targets at a uniform stride; every other
    token joins its most cosine-similar target (by ``keys``); each result is the target's ``values`` row plus the mean
    of those that joined it. Returns ((B, contextual, Dv), MACs of one sample's two matmuls)."""
    import torch

    b, r, _ = keys.shape
    step = max(1, r // contextual)
    targets = torch.arange(0, r, step, device=keys.device)[:contextual]
    is_target = torch.zeros(r, dtype=torch.bool, device=keys.device)
    is_target[targets] = True
    unit = torch.nn.functional.normalize(keys, dim=-1)
    sim = torch.bmm(unit[:, ~is_target], unit[:, targets].transpose(1, 2))  # (B, R - c, c)
    assign = torch.zeros_like(sim, dtype=values.dtype).scatter_(2, sim.argmax(dim=2, keepdim=True), 1.0)
    counts = assign.sum(dim=1).clamp(min=1)[..., None]  # (B, c, 1)
    merged = torch.bmm(assign.transpose(1, 2), values[:, ~is_target]) / counts
    others = r - len(targets)
    macs = others * len(targets) * keys.shape[-1] + len(targets) * others * values.shape[-1]
    return values[:, targets] + merged, macs
