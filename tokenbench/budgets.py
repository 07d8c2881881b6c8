"""Budgets: what a run asks every method to keep (:class:`Budget`, the defaults), the conventions that say what "keep
k" means for each method, and the keep rule that turns both into a method's own budget per image. No torch here.

The harness asks every method for the same budget ``k`` (a count or a share of each image's visual tokens). Methods
read a number differently, so a run names its convention, and every row and board says which one it used:

* ``matched`` (the default): every method spends the same visual tokens per LLM layer, averaged over the layers. A
  method whose budget is a layer mean (``budget_kind = "layer_mean"``: PyramidDrop, SparseVLM, FitPrune, VTW) fits its
  schedule to ``k`` itself. A method that keeps a count (``budget_kind = "kept"``) gets the count ``k'`` whose
  schedule's layer mean is closest to ``k`` (ties to the smaller; never above when an exact hit is impossible): FastV
  and DART, which see every token before their layer, keep fewer than ``k`` after it; methods that act before the LLM
  or at every layer (VisionZip, ALVTS, ...) keep ``k``. When even one kept token is over the mean (the tokens before
  the method's layer alone exceed it) the method keeps 1 and the row reports the mean it reached.
* ``nominal``: each paper's own meaning of "keep k", so that a number can be set beside the paper's. A ``kept`` method
  keeps ``k`` after its reduction (FastV keeps ``k`` from its layer on); a multi-stage method runs its official
  schedule for ``k`` (:meth:`~tokenbench.api.TokenReducer.nominal`: SparseVLM's per-stage rows, PyramidDrop's
  pyramid at its paper layers); methods whose papers have no other meaning keep the matched one.
* ``flops=METHOD``: every method gets the budget at which its prefill FLOPs are closest to ``METHOD``'s at ``k`` (the
  FLOPs of one representative sample: the task's first), so every row costs the same; the fairest comparison.
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Any, Callable

from tokenbench.errors import ConfigError

KINDS = ("matched", "nominal", "flops")
EXAMPLE = "--match nominal, --match matched,nominal or --match flops=alvts"


@dataclass(frozen=True)
class Convention:
    kind: str = "matched"
    reference: str | None = None  # flops: the method whose FLOPs at the budget every method meets

    @property
    def label(self) -> str:
        return f"flops={self.reference}" if self.kind == "flops" else self.kind


MATCHED, NOMINAL = Convention("matched"), Convention("nominal")


def parse(text: str | None) -> tuple[Convention, ...]:
    """``--match`` as conventions: a comma-separated list of ``matched``, ``nominal``, ``flops=METHOD``."""
    if text is None:
        return (MATCHED,)
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ConfigError(f"--match is empty; give a convention, e.g. {EXAMPLE}")
    out = []
    for part in parts:
        kind, _, ref = part.partition("=")
        kind = kind.strip().lower()
        if kind not in KINDS or (kind == "flops") != bool(ref.strip()):
            raise ConfigError(f"--match {part!r} is not a budget convention; use matched, nominal or flops=METHOD "
                              f"(every method at that method's FLOPs), e.g. {EXAMPLE}")
        if kind == "flops":
            from tokenbench.api import METHODS

            METHODS.get(ref.strip())  # an unknown name is the registry's one-line error with the known names
        c = Convention(kind, ref.strip() or None)
        if c in out:
            raise ConfigError(f"--match names {c.label} twice; give each convention once, e.g. {EXAMPLE}")
        out.append(c)
    return tuple(out)


def variant(method, convention: Convention):
    """The method as it runs under ``convention``: its paper's own schedule under ``nominal``, else itself."""
    return method.nominal() if convention.kind == "nominal" else method


def layer_mean(method, keep: int, n_visual: int, n_layers: int) -> float:
    """Visual tokens per LLM layer, averaged, of ``method`` at ``keep`` (its plan, no model needed)."""
    from tokenbench.measure.accounting import plan

    return sum(plan(method, n_layers, n_visual, keep).visual_per_layer) / n_layers


def closest(measure: Callable[[int], float], target: float, n_visual: int) -> int:
    """The count in 1..n_visual whose ``measure`` (non-decreasing in it) is closest to ``target``; ties and
    unreachable targets go to the smaller side."""
    lo, hi = 1, n_visual
    if measure(lo) >= target:
        return lo
    while lo < hi:  # the largest count whose measure is <= target
        mid = (lo + hi + 1) // 2
        if measure(mid) <= target:
            lo = mid
        else:
            hi = mid - 1
    if lo < n_visual and measure(lo + 1) - target < target - measure(lo):
        return lo + 1
    return lo


def keep_rule(method, budget: "Budget", convention: Convention, n_layers: int, cost_of: Callable | None = None
              ) -> Callable[[int], int]:
    """The function of an image's visual tokens that gives ``method``'s own budget under ``convention``
    (:func:`method_keep`; run it as ``variant(method, convention)``). ``cost_of(n_visual)``: prefill FLOPs
    ``(method, k) -> FLOPs`` of an image with that many tokens (``flops=`` conventions; :func:`flops_cost`)."""
    from functools import lru_cache

    m = variant(method, convention)

    @lru_cache(maxsize=None)  # asked for every batch and sample; each answer is a search over the method's plans
    def keep(n_visual: int) -> int:
        return method_keep(m, budget.resolve(n_visual), n_visual, n_layers, convention,
                           cost_of(n_visual) if cost_of is not None else None)

    return keep


def flops_cost(adapter, n_text: int, sizes: dict[int, Any]) -> Callable[[int], Callable]:
    """``cost_of`` for :func:`keep_rule`: the planned prefill FLOPs of one sample with ``n_text`` non-visual tokens, for
    an image of ``sizes[n_visual]`` (its pixel size, which fixes the vision tower's work)."""
    from tokenbench.measure.accounting import plan, prefill_count

    lm = adapter.lm_dims()

    def cost_of(n_visual: int):
        encoder = adapter.encoder_macs(sizes.get(n_visual))

        def cost(method, k: int) -> float:
            p = plan(method, lm.n_layers, n_visual, k)
            return prefill_count(lm, encoder, n_text, p.visual_per_layer, p, method).total_flops

        return cost

    return cost_of


def method_keep(method, keep: int, n_visual: int, n_layers: int, convention: Convention,
                cost: Callable[[object, int], float] | None = None) -> int:
    """The budget ``method`` (already its :func:`variant`) is run at for the run's budget ``keep`` on an image of
    ``n_visual`` tokens. ``cost(method, k)``: prefill FLOPs at ``k`` (``flops`` conventions only)."""
    if keep >= n_visual or method.name == "full":
        return keep
    if convention.kind == "matched" and method.budget_kind == "kept":
        return closest(lambda k: layer_mean(method, k, n_visual, n_layers), keep, n_visual)
    if convention.kind == "flops":
        from tokenbench.api import build_method

        target = cost(build_method(convention.reference), keep)
        return closest(lambda k: cost(method, k), target, n_visual)
    return keep


# -- how tables write it ---------------------------------------------------------------------------------------------
WORDS = {
    "matched": "the same visual tokens per LLM layer, averaged, for every method",
    "nominal": "each paper's own meaning of keep k (FastV keeps k from its layer on; SparseVLM its official rows)",
}


def note(labels: list[str]) -> str:
    """The line under a table that says what its conventions mean."""
    words = [f"{m}: {WORDS.get(m, 'every method at the prefill FLOPs of ' + m.partition('=')[2] + ' at the budget')}"
             for m in labels]
    return ("budgets " + "; ".join(words) + ". keep A → B: budget A, which this method runs as B (its own count, or "
            "layer mean for keep*)")


def keep_cell(row: dict) -> str:
    """``keep`` as tables write it: ``*`` for a layer-mean budget, ``→ k`` where the convention runs it as another."""
    own = row.get("method_keep", row["keep"])
    return (f"{row['keep']}{'*' if row.get('budget_kind') == 'layer_mean' else ''}"
            + (f" → {own:g}" if own != row["keep"] else ""))


@dataclass(frozen=True)
class Budget:
    """``keep`` visual tokens, or ``ratio`` of them (floor(ratio * N)); ``None``/``None`` keeps all."""

    keep: int | None = None
    ratio: float | None = None

    def resolve(self, n_visual: int) -> int:
        """The number of visual tokens to keep of an image with ``n_visual`` (the budget is global over all of them:
        on LLaVA-NeXT, over the base image and every crop together)."""
        if self.keep is not None:
            if not 1 <= self.keep <= n_visual:
                raise ConfigError(
                    f"--keep {self.keep} is out of range: an image here has {n_visual} visual tokens; "
                    f"use 1..{n_visual}, or --keep-ratio in (0, 1] (a share of each image's own tokens, for models "
                    "whose token count depends on the image)"
                )
            return self.keep
        if self.ratio is not None:
            k = math.floor(self.ratio * n_visual)
            if k < 1:
                least = math.ceil(1e4 / n_visual) / 1e4  # rounded up, so that following the advice works
                raise ConfigError(
                    f"--keep-ratio {self.ratio} keeps no visual token of {n_visual}; use at least {least:g}"
                )
            return k
        return n_visual

    def label(self) -> str:
        return str(self.keep) if self.keep is not None else (f"r{self.ratio:g}" if self.ratio is not None else "all")


#: a run's budget when none is given: 64 of LLaVA-1.5's 576 visual tokens, as a share, so AnyRes and dynamic-resolution
#: images get the same cut
DEFAULT_BUDGET = Budget(ratio=1 / 9)
#: 64, 128 and 192 of LLaVA-1.5's 576 tokens, as shares (``tokenbench bench`` on a GPU, ``tokenbench flops``)
DEFAULT_BUDGETS = (DEFAULT_BUDGET, Budget(ratio=2 / 9), Budget(ratio=1 / 3))
