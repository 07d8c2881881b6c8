"""A run planned before any compute: methods built with their options and labels, every (method, budget, layout) plan
checked, and the keep rule of each budget convention (:mod:`tokenbench.budgets`)."""

from __future__ import annotations

import os
from typing import Any, Callable

from tokenbench.api import TokenReducer, build_method
from tokenbench.budgets import Budget
from tokenbench.errors import ConfigError


def build_methods(specs: tuple[tuple[Any, ...], ...]) -> list[TokenReducer]:
    return [build_method(spec[0], spec[1]) for spec in specs]


def option_label(name: str, options: dict[str, Any]) -> str:
    """``name``, plus ``[key=value,...]`` for the options that differ from the method's defaults (a path by its file
    name, a tuple as the user types it: ``layers=2,6``)."""
    if not options:
        return name
    chosen, default = build_method(name, options).params(), build_method(name).params()

    def shown(v):
        if isinstance(v, tuple):
            return ",".join(map(str, v))
        return os.path.basename(v) if isinstance(v, str) and os.sep in v else str(v)

    changed = [f"{k}={shown(v)}" for k, v in chosen.items() if v != default.get(k)]
    return f"{name}[{','.join(changed)}]" if changed else name


def method_labels(specs: tuple[tuple[Any, ...], ...]) -> list[str]:
    """Each spec's row label: its own (third element), else the method's name with every option that differs from its
    default, as the leaderboard writes variants (``fastv[layer=3]``, ``alvts[static=True]``); labels must be
    distinct."""
    labels = [spec[2] if len(spec) > 2 else option_label(spec[0], spec[1]) for spec in specs]
    repeated = sorted({x for x in labels if labels.count(x) > 1})
    if repeated:
        raise ConfigError(f"method {repeated[0]!r} is listed twice; name each method once (its options apply to all "
                          "of its rows)")
    return labels


def check_method_plans(method, adapter, layouts, budgets, scope: str = "global", n_layers: int | None = None,
                       match: tuple = (), cost_of: Callable | None = None) -> None:
    """Everything a method can refuse, before any compute: its options against the model's depth (``check``), the
    signals it needs (``check_compatible``), the budget scope against each layout's crops, and its ``plan`` at every
    budget on every image layout (options against the image's tokens and the budget). ``layouts``: VisualLayouts;
    ``n_layers``: the depth when no model is loaded (``flops`` and ``bench`` check from the config alone); ``match``
    and ``cost_of``: the budget conventions and FLOPs (:func:`keep_rule`)."""
    from tokenbench.api import check_budget_scope
    from tokenbench.budgets import MATCHED, variant

    n_layers = adapter.n_layers if n_layers is None else n_layers
    method.check(n_layers)
    adapter.check_compatible(method, method.steps(n_layers))
    for layout in layouts:
        check_budget_scope(method, scope, layout)
        for budget in budgets:
            for convention in match or (MATCHED,):
                keep = keep_rule(method, budget, convention, n_layers, cost_of)
                steps = variant(method, convention).plan(keep(layout.n_visual), layout.n_visual, n_layers)
                adapter.check_compatible(method, steps)


def keep_rule(method, budget: Budget, convention, n_layers: int, cost_of: Callable | None = None
              ) -> Callable[[int], int]:
    """The function of an image's visual tokens that gives ``method``'s own budget under ``convention``
    (:func:`tokenbench.budgets.method_keep`; run it as ``budgets.variant(method, convention)``). ``cost_of(n_visual)``:
    prefill FLOPs ``(method, k) -> FLOPs`` of an image with that many tokens (``flops=`` conventions)."""
    from functools import lru_cache

    from tokenbench.budgets import method_keep, variant

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
