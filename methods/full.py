"""``full``: no reduction. The reference row of every comparison; runs the unmodified model."""

from dataclasses import dataclass

from tokenbench.api import TokenReducer, register_method


@register_method("full")
@dataclass(frozen=True)
class Full(TokenReducer):
    stage = "prune"
    budget_scopes = ("global", "crop")  # nothing to split

    def steps(self, n_layers):
        return ()

    def select(self, ctx):  # never called: full has no steps
        return ctx.active.new_zeros(ctx.batch_size, 0)

    def reduces(self, keep, n_visual):
        return False
