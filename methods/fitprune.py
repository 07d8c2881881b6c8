"""FitPrune (Ye et al., "Fit and Prune: Fast and Training-free Visual Token Pruning for Multi-modal Large Language
Models", AAAI 2025, arXiv:2409.10197; official code ywh187/FitPrune,
``LLaVA_1.5/llava/model/language_model/modeling_llama.py`` and ``llava/eval/statistical_analysis.py``).

Rule, at every layer of a per-layer deletion schedule: with A the layer's attention probabilities, **max over heads**,
each remaining visual token i scores

    (sum over text queries q of A[q, i]) * (sum over visual queries v of A[v, i] / N_v)

(text queries: the tokens after the image; N_v: the visual tokens still present), and the lowest-scoring tokens of
that layer's quota are deleted: the layer's attention saw them, its output does not carry them, and later layers never
see them; kept tokens keep their original position ids. This is ALVTS's score (visual self-attention times text
cross-attention) on true attention with permanent drops, so FitPrune beside ALVTS isolates per-layer re-selection.

Schedule: the official deletion schedules for LLaVA-1.5-7B (``delete_scheme``, 10 % ... 90 % FLOPs reduction),
fitted offline by the authors (binary search on an attention-retention threshold over a small sample set). tokenbench
runs them as published: the remaining share of tokens after each layer, interpolated between the published schedules
(and, beyond 90 %, the 90 % one scaled down) to meet the run's budget as a mean over layers (``budget_kind =
"layer_mean"``), and placed at the same relative depth on models of other depths. Not implemented: re-fitting a
schedule on another model's own attention statistics. Deleting after layer l's attention but before its MLP (official)
and before layer l + 1 (here) give the same outputs; here layer l's MLP also runs on the deleted tokens and is counted.
"""

from dataclasses import dataclass
from itertools import accumulate

from tokenbench.api import Need, Step, TokenReducer, fit_schedule, register_method

#: official delete_scheme (tokens deleted at each of the 32 layers of LLaVA-1.5-7B, of 576), by FLOPs reduction
DELETE_SCHEMES = {
    0.10: (0, 0, 1, 2, 1, 0, 1, 4, 5, 5, 11, 4, 2, 2, 0, 0, 1, 1, 2, 4, 2, 10, 1, 1, 1, 2, 1, 1, 0, 1, 0, 0),
    0.20: (0, 0, 3, 3, 1, 1, 4, 16, 14, 15, 24, 4, 2, 3, 2, 0, 6, 0, 5, 13, 4, 19, 2, 1, 1, 1, 1, 1, 2, 1, 0, 0),
    0.30: (0, 0, 7, 6, 4, 5, 16, 40, 24, 21, 24, 4, 2, 3, 4, 0, 16, 0, 11, 26, 6, 32, 3, 1, 0, 1, 2, 2, 4, 0, 0, 0),
    0.40: (0, 1, 21, 13, 14, 11, 41, 53, 29, 15, 14, 5, 1, 4, 5, 1, 26, 1, 13, 28, 6, 27, 2, 1, 0, 0, 1, 1, 2, 0, 0, 0),
    0.50: (3, 7, 49, 24, 29, 17, 59, 41, 26, 8, 10, 6, 2, 5, 7, 2, 30, 3, 13, 27, 5, 23, 2, 1, 0, 0, 1, 1, 2, 0, 0, 0),
    0.55: (6, 17, 69, 31, 34, 19, 59, 30, 23, 6, 8, 7, 2, 5, 8, 2, 29, 4, 12, 25, 4, 19, 2, 1, 0, 0, 1, 0, 1, 0, 0, 0),
    0.60: (14, 33, 89, 36, 36, 20, 55, 21, 18, 4, 7, 5, 2, 5, 7, 4, 26, 5, 11, 24, 4, 18, 2, 1, 0, 0, 1, 0, 1, 0, 0, 0),
    0.70: (48, 79, 118, 41, 33, 17, 36, 9, 9, 2, 3, 2, 1, 3, 4, 8, 18, 7, 8, 20, 4, 13, 2, 1, 0, 0, 1, 0, 1, 0, 0, 0),
    0.80: (128, 127, 118, 35, 26, 8, 13, 3, 2, 1, 0, 0, 0, 2, 1, 8, 7, 8, 5, 11, 2, 6, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0),
    0.90: (262, 153, 80, 19, 13, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 1, 2, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0),
}
REFERENCE_TOKENS = 576
#: share left after each reference layer, per published schedule (0 % reduction: everything left), built once
_REMAINING = {0.0: [1.0] * 32} | {r: [(REFERENCE_TOKENS - done) / REFERENCE_TOKENS for done in accumulate(deletes)]
                                  for r, deletes in DELETE_SCHEMES.items()}


def remaining_after(ratio: float) -> list[float]:
    """Share of the visual tokens left after each of the 32 reference layers at FLOPs reduction ``ratio`` in [0, 1]:
    linear between the published schedules, the 90 % one scaled down to nothing at 100 %."""
    table = _REMAINING
    if ratio >= 0.9:
        return [x * (1 - ratio) / 0.1 for x in table[0.9]]
    keys = sorted(table)
    hi = next(k for k in keys if k >= ratio)
    lo = max(k for k in keys if k <= ratio)
    w = 0.0 if hi == lo else (ratio - lo) / (hi - lo)
    return [a + w * (b - a) for a, b in zip(table[lo], table[hi])]


@register_method("fitprune")
@dataclass(frozen=True)
class FitPrune(TokenReducer):
    stage = "prune"
    budget_kind = "layer_mean"
    budget_scopes = ("global", "crop")  # ctx.topk at every step

    @staticmethod
    def _needs(layer: int) -> tuple[Need, ...]:
        return (Need("attn", layer=layer, queries="text"), Need("attn", layer=layer, queries="visual"))

    def steps(self, n_layers):
        return tuple(Step(layer + 1, needs=self._needs(layer)) for layer in range(n_layers - 1))

    def plan(self, keep, n_visual, n_layers):
        def family(x: float):  # x = 1 - FLOPs reduction: the layer mean grows with it
            shares = remaining_after(1 - x)
            # model layer j sits where reference layer (j + 1) * 32 / L - 1 does
            counts = [round(n_visual * shares[round((j + 1) * 32 / n_layers) - 1]) for j in range(n_layers - 1)]
            return [(j + 1, c) for j, c in enumerate(counts)]

        stages = fit_schedule(family, keep, n_visual, n_layers)
        out, current = [], n_visual
        for layer, count in stages:
            if count < current:  # a step only where the schedule deletes
                out.append(Step(layer, needs=self._needs(layer - 1), keep=count))
                current = count
        return tuple(out)

    def reduces(self, keep, n_visual):
        return keep < n_visual

    def select(self, ctx):
        a_text = ctx.signal(Need("attn", layer=ctx.layer - 1, queries="text")).amax(dim=1)  # (B, T, n) max over heads
        a_vis = ctx.signal(Need("attn", layer=ctx.layer - 1, queries="visual")).amax(dim=1)  # (B, n, n)
        cross = (a_text * ctx.text_after_image[..., None]).sum(dim=1)
        self_ = a_vis.sum(dim=1) / ctx.n_active
        return ctx.topk(cross * self_)
