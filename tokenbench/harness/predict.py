"""FLOPs predicted from a model's config alone (``tokenbench flops``): no weights, no data.

Each method's schedule comes from its declared steps (:func:`tokenbench.measure.accounting.plan`, the accounting a run
uses), checked first as ``compare`` checks it: a method the model cannot run has no FLOPs. One row per (method, budget,
convention), ``full`` first; :func:`tokenbench.results.tables.format_flops` prints them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokenbench.budgets import Budget, Convention


@dataclass(frozen=True)
class Prediction:
    """The rows and what the table's head says about the model they were predicted on."""

    rows: list[dict]
    n_layers: int
    hidden: int
    matches: tuple[Convention, ...]


def predict_flops(methods: tuple[str, ...], options: dict[str, dict[str, Any]], model: str,
                  budgets: tuple[Budget, ...], matches: tuple[Convention, ...], size: tuple[int, int] | None,
                  n_text: int) -> Prediction:
    """Prefill FLOPs of ``full`` and ``methods`` (with their parsed ``options``) at every budget under every
    convention, for ``n_text`` non-visual prompt tokens and an image of ``size`` (None: the model's default)."""
    from tokenbench.api import build_method
    from tokenbench.budgets import flops_cost
    from tokenbench.harness.plan import check_method_plans
    from tokenbench.harness.resolve import resolve_model
    from tokenbench.hf.quiet import quiet_transformers

    built = [build_method("full")] + [build_method(m, options.get(m, {})) for m in methods if m != "full"]
    quiet_transformers()
    adapter = resolve_model(model).load_config()
    layout = adapter.layout(size)
    lm = adapter.lm_dims()
    n_text += layout.n_structural  # image-span tokens that are never candidates (LLaVA-NeXT's newlines) count as text
    cost_of = flops_cost(adapter, n_text, {layout.n_visual: size})
    for m in built:  # what compare refuses, flops refuses: a method the model cannot run has no FLOPs
        check_method_plans(m, adapter, [layout], budgets, n_layers=lm.n_layers, match=matches, cost_of=cost_of)
    setup = {"adapter": adapter, "lm": lm, "encoder": adapter.encoder_macs(size), "n_text": n_text,
             "n_visual": layout.n_visual, "size": size, "cost_of": cost_of, "options": options}
    rows: list[dict] = []
    runs = [(built[0], Budget(), matches[0])] + [(m, b, c) for c in matches for m in built[1:] for b in budgets]
    for method, budget, convention in runs:
        rows.append(_row(method, budget, convention, setup, rows[0]["flops_prefill"] if rows else None))
    return Prediction(rows, lm.n_layers, lm.hidden, matches)


def _row(method0, budget: Budget, convention: Convention, setup: dict, full_total: int | None) -> dict:
    """One method at one budget under one convention; ``full_total``: full's prefill FLOPs (None for full itself)."""
    from tokenbench.budgets import keep_rule, variant
    from tokenbench.harness.plan import option_label
    from tokenbench.measure.accounting import decode_flops, kv_counts, plan, prefill_count
    from tokenbench.measure.flops import fastv_formula_macs
    from tokenbench.results import rows

    lm, n_text, n_visual = setup["lm"], setup["n_text"], setup["n_visual"]
    m = variant(method0, convention)
    k = keep_rule(method0, budget, convention, lm.n_layers, setup["cost_of"])(n_visual)
    p = plan(m, lm.n_layers, n_visual, k)
    count = prefill_count(lm, setup["encoder"], n_text, p.visual_per_layer, p, m)
    kv = kv_counts(p, p.visual_per_layer)
    return {
        **rows.identity_fields(m, model=setup["adapter"].name, convention=convention, keep=budget.resolve(n_visual),
                               method_keep=k, n_visual=n_visual,
                               label=option_label(m.name, setup["options"].get(m.name, {}))),
        **rows.input_fields(n_text=n_text, image_size=setup["size"]),
        **rows.flops_fields(count.total_flops, full_total or count.total_flops, count.as_flops_dict(),
                            tokens_avg_layer=sum(p.visual_per_layer) / lm.n_layers,
                            decode_step=decode_flops(lm, n_text, kv, 1),
                            fastv_formula=fastv_formula_macs(lm, [n_text + v for v in p.visual_per_layer],
                                                             [n_text + v for v in kv]),
                            selector_share=count.overhead / count.total_macs),
        **rows.setup_fields(m),
    }
