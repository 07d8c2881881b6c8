"""``random``: keep a uniformly random subset of the visual tokens from layer ``layer`` on (a sanity floor).

The draw is seeded per sample from the run's ``--seed`` and the sample's id, so it is reproducible and the same
whether the sample runs alone or in a batch. ``layer=0`` (the default) keeps the same subset in every LLM layer,
which is what "random pruning before the LLM" means in peer studies, with original position ids.
"""

from dataclasses import dataclass

from tokenbench.api import Step, TokenReducer, register_method


@register_method("random")
@dataclass(frozen=True)
class Random(TokenReducer):
    stage = "prune"
    budget_scopes = ("global", "crop")  # ctx.topk
    layer: int = 0  # prune before this LLM layer; 0 = the LLM never sees the dropped tokens

    def check(self, n_layers):
        if not 0 <= self.layer < n_layers:
            raise self.option_error("layer", f"is outside 0..{n_layers - 1} for this {n_layers}-layer model", 0)

    def steps(self, n_layers):
        return (Step(self.layer),)

    def select(self, ctx):
        import torch  # imported here so that `tokenbench list` never loads torch

        scores = torch.stack([torch.rand(ctx.n_active, generator=g) for g in ctx.generators])
        return ctx.topk(scores.to(ctx.active.device))  # a uniform subset (per crop under --budget-scope crop)
