"""VTW: Visual Tokens Withdrawal (Lin et al., "Boosting Multimodal Large Language Models with Visual Tokens
Withdrawal for Rapid Inference", AAAI 2025, arXiv:2405.05803; official code lzhxmu/VTW,
``llava/model/language_model/VTW.py``).

Rule: before decoder layer K (0-based) every visual token is removed from the sequence; layers 0..K-1 see all of them,
layers K.. see none (and cache none), and the remaining tokens keep their original position ids (the official
``pe_type="keep"``).

Budget (``budget_kind = "layer_mean"``): the mean visual tokens per layer is K * N / L, so by default K =
round(budget * L / N), the closest K (K = L, no withdrawal, at a full budget). ``layer`` fixes K instead (official
default 15 on 32-layer LLaVA-1.5-7B). Not implemented: the official ``--findk`` search (the first layer >= 5 whose
withdrawal moves the last token's output distribution by KL <= eta on a few samples).
"""

from dataclasses import dataclass

from tokenbench.api import Step, TokenReducer, register_method


@register_method("vtw")
@dataclass(frozen=True)
class VTW(TokenReducer):
    stage = "prune"
    budget_kind = "layer_mean"
    budget_scopes = ("global", "crop")  # withdrawing every token leaves each crop its share, 0
    layer: int | None = None  # K; None: from the budget, round(budget * L / N) (official default 15 of 32)

    def check(self, n_layers):
        if self.layer is not None and not 0 <= self.layer < n_layers:
            raise self.option_error("layer", f"must be in 0..{n_layers - 1} for this {n_layers}-layer model (the "
                                    "layer before which every visual token is withdrawn)", n_layers // 2)

    def steps(self, n_layers):
        return (Step(self.layer if self.layer is not None else n_layers // 2, keep=0),)

    def plan(self, keep, n_visual, n_layers):
        k = self.layer if self.layer is not None else round(keep * n_layers / n_visual)
        return (Step(k, keep=0),) if k < n_layers else ()

    def reduces(self, keep, n_visual):
        return keep < n_visual or self.layer is not None

    def select(self, ctx):
        return ctx.active[:, :0]  # withdraw every visual token
