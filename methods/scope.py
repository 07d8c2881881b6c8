"""SCOPE (Deng, Li, Zhou, He, "SCOPE: Saliency-Coverage Oriented Token Pruning for Efficient Multimodel LLMs",
NeurIPS 2025, arXiv:2510.24214; official code kinredon/SCOPE, ``scope/clip_encoder.py``: ``CLIPVisionTower_SCOPE``
and the batched ``SCOPE`` function, applied by ``scope/main.py``'s ``SCOPE(model, num_token)``; run with
``run_scope_llava.sh``: ``ALPHA=1.0``, ``COMBINED`` unset = ``multi``).

Rule, before the LLM, in the vision tower (text-agnostic):

1. features: the N patch features of the CLIP layer that feeds the projector (LLaVA-1.5: the penultimate layer's
   output, ``hidden_states[-2][:, 1:]``, CLS dropped), tokenbench's ``Need("vision_features")`` without its CLS row;
   their pairwise **cosine similarity** S (N x N, S[i, j] = how well candidate j represents token i);
2. saliency: the CLS query's attention to each patch at that same layer (``attentions[-2][:, :, 0, 1:]``),
   **summed over heads**, raised to ``alpha`` (official ``ALPHA``, 1.0), tokenbench's ``Need("cls_attn")``;
3. greedy: a running coverage ``c`` (N), all zeros at the start; at each of ``keep`` steps every unselected candidate
   j gets the **coverage gain** ``g_j = sum_i max(0, S[i, j] - c_i)`` (over all N tokens i, selected ones included;
   how much j raises the coverage of every token), its SCOPE score is ``g_j * saliency_j ** alpha`` (official
   ``COMBINED='multi'``), the highest score joins (ties: the lowest index, ``argmax``), and ``c = max(c, S[j, :])``.
   This is greedy maximisation of the facility-location coverage weighted by saliency; with ``alpha=0`` it is pure
   coverage (the official ``cls_attn is None`` branch).

Order and positions: the router sorts every selection into ascending visual-token order, so the kept tokens enter
the LLM in their original (raster) order, whatever the greedy order was (the official code does the same:
``scatter_`` into a mask, then ``masked_select``). The official LLaVA code then feeds the LLM the kept tokens as a
**shorter image** with contiguous positions (the text after the image moves up), as VisionZip does; that is what
``positions=auto`` (the default, :mod:`tokenbench.contract.positions`) does on LLaVA-1.5 and LLaVA-NeXT (there the
newline tokens take the next positions too). ``positions=original`` keeps each kept token's original position id.

Defaults: ``alpha=1.0`` (``run_scope_llava.sh``), exactly ``keep`` tokens (the official ``num_token``).

Deviations from the official code, all stated:

* similarities, saliency and gains in float32 (the official code runs them in the tower's float16), so near-ties may
  break differently;
* the official ``COMBINED='add'`` ablation (gain + saliency) is not offered, only the product it runs by default;
* LLaVA-NeXT: the official NeXT script runs another code path (``LLaVA/llava/model/llava_arch.py``, facility location
  per crop through ``submodular_function.FacilityLocation`` on the projected tokens), not implemented; here the rule
  above runs on the adapter's per-crop signals (each token's saliency is its own crop's CLS row, mapped through
  unpadding; features are the last N rows of ``vision_features``, after every tower pass's CLS row): under
  ``--budget-scope global`` one greedy over the whole image, under ``crop`` one greedy inside each region of
  ``layout.crops`` on its share (``ctx.crop_shares``), the closer to the official per-crop selection.

Adapters: it needs ``cls_attn`` and ``vision_features`` (a vision tower with a CLS token), so it runs on LLaVA-1.5
(``llava``, ``tiny-llava``, ``mini-llava``, ...) and LLaVA-NeXT (``tiny-llava-next``, ``llava-next-7b``, ...).
``adapter.check_compatible`` refuses it up front, before any compute, on **tiny-qwen2.5-vl / Qwen2.5-VL** (its tower
has no CLS token), with that reason. Budget scope: global or crop.

Cost: one cosine-similarity matmul, N x N x Dv MACs per image (per region under ``crop``: the sum of each region's
squared size; ``Selection.macs``, counted with the pre-LLM signals;
576 x 576 x 1024 ~ 0.34 GMACs on LLaVA-1.5-7B); the greedy loop is ``keep`` passes of elementwise work over the
N x N matrix (no matmul, not in the MAC count; its time is the method's measured overhead).
"""

from dataclasses import dataclass

from tokenbench.api import Need, PositionsOption, Step, TokenReducer, register_method

NEEDS = (Need("cls_attn"), Need("vision_features"))


@register_method("scope")
@dataclass(frozen=True)
class SCOPE(PositionsOption, TokenReducer):
    stage = "pre_llm"
    budget_scopes = ("global", "crop")  # under crop, the greedy runs inside each region on its share
    alpha: float = 1.0  # saliency exponent (official ALPHA=1.0 in run_scope_llava.sh); 0: coverage alone

    def check(self, n_layers):
        if not 0 <= self.alpha <= 10:
            raise self.option_error("alpha", "must be in [0, 10] (the CLS saliency's exponent; 0: coverage alone)",
                                    1.0)

    def steps(self, n_layers):
        return (Step(-1, needs=NEEDS),)

    def reduces(self, keep, n_visual):
        return keep < n_visual

    def select(self, ctx):
        import torch

        saliency = ctx.signal(Need("cls_attn")).float().sum(dim=1) ** self.alpha  # (B, N), summed over heads
        n = saliency.shape[1]
        feats = ctx.signal(Need("vision_features"))[:, -n:].float()  # (B, N, Dv), the CLS row(s) dropped
        unit = torch.nn.functional.normalize(feats, dim=-1)
        shares = ctx.crop_shares(ctx.keep)  # before the LLM every token is active: one split for every sample
        groups = [(torch.arange(n), ctx.keep)] if shares is None else [
            ((shares[0][0] == i).nonzero().squeeze(1).cpu(), quota) for i, quota in enumerate(shares[1][0])]
        picks, macs = [], 0
        for members, quota in groups:
            members = members.to(unit.device)
            part = unit[:, members]
            sim = torch.bmm(part, part.transpose(1, 2))  # (B, m, m), S[b, i, j]
            picks.append(members[greedy(sim, saliency[:, members], quota)])
            macs += len(members) ** 2 * feats.shape[2]
        return self.kept(ctx, torch.cat(picks, dim=1).sort(dim=1).values, macs=macs)  # raster order


def greedy(sim, saliency, keep: int):
    """SCOPE's greedy selection: ``keep`` (B, keep) indices in pick order. ``sim`` (B, N, N) with ``sim[b, i, j]`` the
    similarity of token i to candidate j; ``saliency`` (B, N) already raised to its exponent."""
    import torch

    b, n, _ = sim.shape
    rows = torch.arange(b, device=sim.device)
    coverage = sim.new_zeros(b, n)  # c_i: how well the selected set covers token i (0 before any pick)
    selected = torch.zeros(b, n, dtype=torch.bool, device=sim.device)
    picks = torch.empty(b, keep, dtype=torch.long, device=sim.device)
    for step in range(keep):
        gain = (sim - coverage[:, :, None]).clamp(min=0).sum(dim=1)  # (B, N): g_j = sum_i max(0, S_ij - c_i)
        score = (gain * saliency).masked_fill(selected, float("-inf"))
        best = score.argmax(dim=1)
        picks[:, step] = best
        selected[rows, best] = True
        coverage = torch.maximum(coverage, sim[rows, best])
    return picks
