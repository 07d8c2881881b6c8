"""VisPruner (Zhang et al., "Beyond Text-Visual Attention: Exploiting Visual Cues for Effective Token Pruning in VLMs",
ICCV 2025, arXiv:2412.01818; official code Theia-4869/VisPruner, ``llava/model/llava_arch.py::encode_images`` with the
signals of ``llava/model/multimodal_encoder/clip_encoder.py::feature_select``; read at commit aefa01a).

Rule, before the LLM, in the vision tower (text-agnostic), for a budget of T visual tokens:

1. **important** tokens: the CLS query's attention to the patches at the CLIP layer whose output feeds the projector
   (official ``attentions[select_layer]`` with ``hidden_states[select_layer]``, select_layer -2), **averaged over
   heads**; the top ``T_imp = int(T * important_ratio)`` patches;
2. **diverse** tokens, ``T_div = T - T_imp``, from the other patches ("residual", taken in descending CLS attention,
   the order the official ``argsort`` leaves them in), by iterative duplicate removal on the L2-normalised features
   of that same layer (the pre-projector CLIP features, CLS dropped). Each round, while more than ``T_div`` remain:
   split the residual list by position into even (``0, 2, 4, ...``) and odd (``1, 3, ...``) entries; score each even
   entry by its **largest** cosine similarity to any odd entry; drop the ``r = min(per_round, R - T_div)`` even entries
   with the highest score (the most duplicated); the new residual list is the surviving even entries in descending
   score order (official ``argsort(descending=True)[:, r:]``) followed by the odd entries in their previous order. The
   order matters: it decides the next round's even/odd split; it is reproduced exactly up to ties (see Deviations);
3. kept = important + the final residual. The official code turns them into an index mask, so the kept tokens stay in
   their original raster order; tokenbench does the same (the router sorts every selection ascending; this method
   returns its indices sorted), and the LLM reads them as a shorter image with contiguous positions, as LLaVA's
   concatenation of the masked features does (``positions=auto``, the default, :mod:`tokenbench.contract.positions`;
   ``positions=original`` keeps each kept token's original id).

Defaults (official): ``important_ratio = 0.5`` (the evaluation scripts' argparse default; the README's examples run
128 tokens at 0.5 and 64 at 0.75, i.e. 48 important + 16 diverse), ``per_round = 8`` (the official ``min(8, ...)``).
Options: ``important_ratio`` in [0, 1] (0: diversity only, 1: CLS attention only, the FasterVLM rule), ``per_round``
>= 1.

Cost: the CLS attention row and the layer's keys are counted by the adapter with the signal (0.61 GMACs on CLIP-L/336);
the similarity matmuls of the rounds (``ceil(R/2) x floor(R/2) x Dv`` MACs each, ``dedup_macs``) are counted in
``Selection.macs``. On LLaVA-1.5-7B (N = 576, Dv = 1024, ratio 0.5) that is 1.75 / 1.46 / 1.20 GMACs at T = 64 / 128 /
192 (64 / 56 / 48 rounds), under 0.2 % of the prefill.

Deviations, stated:

- Ties: both official sorts (the CLS ranking and each round's score ranking) are torch's default ``argsort``, which
  leaves the order of equal values to the implementation; here both are ``stable=True``: equal values keep their
  current order (the lower patch index first in the CLS ranking, the even entry earlier in the residual list in a
  round). Without exact ties the two agree; on exactly tied scores the selection can differ from an official run, and
  by how much is data-dependent: a flipped tie changes the next round's even/odd split and everything after it.
  Exact float32 ties are common on real images (one image, as measured in an issue: 164,036 distinct values among
  165,600 similarities), and there the tie order changed up to 22 of the 64 kept tokens.
- Failure cases of the official loop (``llava_arch.py`` at aefa01a, lines 161-176; each count below re-checked by
  running its loop at N = 576 for every T from 1 to 575): with R residual entries and a drop of
  ``r = min(8, R - T_div)``, it indexes the ``ceil(R/2)`` even entries with ``arange(B)[:, None].expand(-1, R // 2 -
  r)`` against the ``max(0, ceil(R/2) - r)`` surviving positions of ``argsort(...)[:, r:]``. The two agree when R is
  even and ``r <= R/2``. A round raises when R is odd and ``r <= R//2 - 2`` (IndexError: the index shapes
  ``[B, R//2 - r]`` and ``[B, R//2 - r + 1]`` do not broadcast) or when ``r >= R//2 + 2`` (RuntimeError: ``expand``
  to a negative size; for R even: the drop exceeds the ``R/2`` even entries by 2 or more). The rest run, through
  broadcasting: R odd with ``r = R//2 - 1`` or ``R//2 + 1`` as intended; R even with ``r = R/2 + 1`` dropping only the
  ``R/2`` even entries (as here); R odd with ``r = R//2`` dropping all ``ceil(R/2)``, one more than ``r``, so the
  run can end with T - 1 tokens. At 576 tokens (checked at ratios 0, 0.25, 0.5, 0.75, 0.9): every budget with odd
  ``T_imp`` raises in its first round (R = 576 - T_imp is odd); with even ``T_imp``, budgets with few diverse tokens
  raise: ratio 0.5 at T = 1, 4, 8; ratio 0.75 at T = 1, 3, 6, 8, 9, 16, 24 (T = 16: 12 important, 4 diverse, and a
  round with R = 12 and r = 8 against 6 even entries), and at 0.75 T = 14 keeps 13 tokens; ratio 1 never (no rounds
  when T_div = 0). The README's budgets (64 at 0.75; 128, 192 at 0.5) run. Here a round drops
  ``min(r, ceil(R/2))`` of the ``ceil(R/2)`` even entries (positions 0, 2, ...), so every budget runs and keeps
  exactly T_div diverse tokens; wherever the official loop runs and keeps T tokens, the kept set is the same (up to
  ties).
- Similarities are computed in float32 on the run's features (the official code runs in the tower's float16).
- LLaVA-NeXT (official: the rule on each 336 px crop, base image included, T tokens each, before unpadding, and
  contiguous positions): under ``--budget-scope crop`` the rule runs inside each region of ``layout.crops`` on its
  share of the budget (``ctx.crop_shares``, proportional to the region's tokens after unpadding), which is the
  official per-crop rule up to the share; under ``global`` it ranks the whole image at once. Positions are contiguous
  there too (``positions=auto``; the newline tokens take the next positions). Each token's CLS
  attention is its own crop's CLS row (the adapter maps every tower pass's row through unpadding), so a global
  ranking compares rows that are softmaxes over different crops; the features are the last N rows of
  ``vision_features`` (after every pass's CLS row).

Adapters: runs where the adapter provides ``cls_attn`` and ``vision_features`` (LLaVA-1.5: tiny-llava, mini-llava,
llava-1.5-7b/13b; LLaVA-NeXT: tiny-llava-next, llava-next-7b/13b/mistral-7b). Refused up front by ``adapter.check_compatible`` (IncompatibleError, before any compute) where
the tower has no CLS signal: Qwen2.5-VL (its tower has no CLS token; the official repo has no Qwen2.5-VL variant, only
one for a SigLIP tower, ``siglip_encoder.py``, ranking by the attention each patch receives in the last layer averaged
over queries; the Qwen2.5-VL adapter's ``vision_received`` is close to that signal, but VisPruner's authors published
no Qwen2.5-VL rule, so none is invented here).
"""

from dataclasses import dataclass

from tokenbench.api import Need, PositionsOption, Step, TokenReducer, register_method

NEEDS = (Need("cls_attn"), Need("vision_features"))


def dedup_macs(n_residual: int, n_div: int, dim: int, per_round: int = 8) -> int:
    """MACs of the duplicate-removal rounds on ``n_residual`` candidates down to ``n_div``, features of ``dim``
    (the count ``select`` reports; the schedule depends on the sizes only)."""
    macs, r_left = 0, n_residual
    while n_div > 0 and r_left - n_div > 0:
        even, odd = (r_left + 1) // 2, r_left // 2
        macs += even * odd * dim
        r_left -= min(per_round, r_left - n_div, even)
    return macs


@register_method("vispruner")
@dataclass(frozen=True)
class VisPruner(PositionsOption, TokenReducer):
    stage = "pre_llm"
    budget_scopes = ("global", "crop")  # under crop, the whole rule runs inside each region on its share
    important_ratio: float = 0.5  # share of the budget taken by CLS attention (official default); the rest diverse
    per_round: int = 8  # most duplicated tokens dropped per round (official min(8, ...))

    def check(self, n_layers):
        if not 0 <= self.important_ratio <= 1:
            raise self.option_error("important_ratio", "must be in [0, 1] (the budget's share of important tokens; "
                                    "0.75 is the README's setting at 64 tokens)", 0.75)
        if self.per_round < 1:
            raise self.option_error("per_round", "must be at least 1 (duplicates dropped per round)", 8)

    def steps(self, n_layers):
        return (Step(-1, needs=NEEDS),)

    def reduces(self, keep, n_visual):
        return keep < n_visual

    def split(self, keep: int) -> tuple[int, int]:
        """(important, diverse) counts for a budget of ``keep`` (official ``int(T * r)``, the rest diverse)."""
        important = int(keep * self.important_ratio)
        return important, keep - important

    def choose(self, attn, unit, keep: int):
        """The rule on one group of candidates: ``attn`` (B, n) head-averaged CLS attention, ``unit`` (B, n, Dv)
        normalised features; returns ((B, keep) positions in the group, unsorted; MACs of one sample)."""
        import torch

        important, diverse = self.split(keep)
        order = attn.argsort(dim=1, descending=True, stable=True)
        residual = order[:, important:]
        macs = 0
        while diverse > 0:
            r_left = residual.shape[1]
            drop = min(self.per_round, r_left - diverse)
            if drop <= 0:
                break
            tokens = unit.gather(1, residual[..., None].expand(-1, -1, unit.shape[-1]))
            even, odd = tokens[:, ::2], tokens[:, 1::2]
            best = torch.bmm(even, odd.transpose(1, 2)).max(dim=2).values  # (B, ceil(R/2)) most similar odd entry
            macs += even.shape[1] * odd.shape[1] * unit.shape[-1]
            drop = min(drop, even.shape[1])
            survivors = best.argsort(dim=1, descending=True, stable=True)[:, drop:]
            residual = torch.cat([residual[:, ::2].gather(1, survivors), residual[:, 1::2]], dim=1)
        return torch.cat([order[:, :important], residual[:, :diverse]], dim=1), macs

    def select(self, ctx):
        import torch

        attn = ctx.signal(Need("cls_attn")).float().mean(dim=1)  # (B, N) averaged over heads
        n = attn.shape[1]
        unit = torch.nn.functional.normalize(ctx.signal(Need("vision_features"))[:, -n:].float(), dim=-1)  # no CLS
        shares = ctx.crop_shares(ctx.keep)
        if shares is None:
            chosen, macs = self.choose(attn, unit, ctx.keep)
        else:
            owner, quotas = shares
            rows, macs = [], 0
            for b in range(ctx.batch_size):
                picks, sample_macs = [], 0
                for crop, quota in enumerate(quotas[b]):
                    members = (owner[b] == crop).nonzero().squeeze(1)
                    if quota:
                        local, m = self.choose(attn[b:b + 1, members], unit[b:b + 1, members], quota)
                        picks.append(members[local[0]])
                        sample_macs += m
                rows.append(torch.cat(picks))
                macs = sample_macs  # one sample's work (a batch shares one layout)
            chosen = torch.stack(rows)
        return self.kept(ctx, chosen.sort(dim=1).values, macs=macs)  # original raster order
