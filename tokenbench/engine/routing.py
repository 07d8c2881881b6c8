"""The routing rules, one owner: what the router does at every LLM layer, derived from a method's steps alone.

No torch here. :func:`plan_routing` turns (method, n_layers, n_visual, keep) into a :class:`Routing`: for the pre-LLM
step and for each layer, whether a step runs there, its stage (``prune`` shrinks the active visual set for that layer
and every later one, ``route`` picks a subset for that layer only), how many visual tokens it keeps (``Step.keep``,
else the budget), the signals probed before it (the step's own) and after it (those only later steps read: they
describe the layer as it runs), the ``select`` calls, and the visual tokens each layer computes (its queries) and sees
as keys (every active token at a route step with ``skipped_as_kv``).

:class:`tokenbench.engine.router.Router` executes exactly this schedule (and refuses to run on if its counts ever
differ); :func:`tokenbench.measure.accounting.plan` returns it to ``tokenbench flops`` and the budget conventions, so
prediction and execution cannot drift apart. :func:`check_steps` holds the rules a method's steps must obey, which the
router enforces before it runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenbench.errors import PluginValidationError


@dataclass(frozen=True)
class LayerRule:
    """What the router does at one layer (``layer = -1``: the pre-LLM step)."""

    layer: int
    active: int  # visual tokens active when the layer starts (before its step)
    computed: int  # visual tokens the layer computes on (its queries)
    seen: int  # visual tokens it attends to as keys and values (and caches)
    step: object = None  # the method's Step at this layer, if any
    stage: str | None = None  # the step's stage: "prune", "route" or "pre_llm"
    keep: int | None = None  # visual tokens the step keeps (ctx.keep): Step.keep, else the run's budget
    before: tuple = ()  # Needs probed before the step: the ones it reads at this layer
    after: tuple = ()  # Needs probed after it: the ones only later steps read

    @property
    def prunes(self) -> bool:
        """Whether the step's selection becomes the active set of this and every later layer."""
        return self.stage in ("prune", "pre_llm")

    @property
    def skipped_as_kv(self) -> bool:
        """A route step whose skipped tokens stay keys and values of the layer."""
        return self.step is not None and not self.prunes and self.step.skipped_as_kv

    @property
    def probes(self) -> bool:
        """Whether the router does any of the method's work at this layer (signals or select)."""
        return self.step is not None or bool(self.before) or bool(self.after)


@dataclass
class Routing:
    """A method's schedule for one image at one budget. Its count fields are those of the router's
    :class:`~tokenbench.engine.router.Record` that :func:`tokenbench.measure.accounting.prefill_count` reads; it counts
    no pre-LLM signal (adapter-specific, e.g. the CLS row), which only a run measures."""

    n_visual: int = 0
    steps: tuple = ()  # the method's plan at this budget, as declared
    reduces: bool = False  # False: the model runs untouched (every layer computes every visual token)
    pre_llm: LayerRule | None = None  # the step before the LLM, if any
    layers: tuple[LayerRule, ...] = ()  # one per LLM layer
    visual_per_layer: list[int] = field(default_factory=list)  # LayerRule.computed of each layer
    kv_per_layer: list[int] = field(default_factory=list)  # LayerRule.seen of each layer
    probes: list[tuple[int, str, str | None, int, int]] = field(default_factory=list)  # (layer, kind, queries or
    # tokens, n_vis_keys, n_rows_visual), as the router records them
    select_calls: list[tuple[int, int]] = field(default_factory=list)  # (step layer, visual tokens active)
    pre_llm_macs: int = 0


def check_steps(method, steps, n_layers: int) -> None:
    """Raise PluginValidationError unless ``steps`` (``method.steps`` or ``method.plan``) is a schedule the router can
    run on a model of ``n_layers`` decoder layers."""
    seen: set[int] = set()
    for s in steps:
        if s.layer in seen:
            raise PluginValidationError(f"method {method.name!r} declares two steps at layer {s.layer}")
        pre_llm = method.stage == "pre_llm"
        if pre_llm and s.stage is not None:
            raise PluginValidationError(f"method {method.name!r} is pre_llm; its steps cannot override the stage")
        if not (-1 if pre_llm else 0) <= s.layer < n_layers or pre_llm != (s.layer == -1):
            raise PluginValidationError(
                f"method {method.name!r} ({method.stage}) declares a step at layer {s.layer}; "
                f"valid: {'-1 (before the LLM)' if pre_llm else f'0..{n_layers - 1}'}"
            )
        for need in s.needs:
            if (need.layer is None) != (s.layer == -1):
                raise PluginValidationError(
                    f"method {method.name!r}: step at layer {s.layer} needs {need}; signals computed before "
                    "the LLM (visual_embeds, cls_attn) belong to a pre_llm step, layer signals to an LLM step"
                )
            if need.layer is not None and need.layer > s.layer:
                raise PluginValidationError(
                    f"method {method.name!r}: step at layer {s.layer} needs {need}, computed at a later layer"
                )
        if s.skipped_as_kv and (s.stage or method.stage) != "route":
            raise PluginValidationError(f"method {method.name!r}: skipped_as_kv applies to route steps only")
        seen.add(s.layer)


def needs_by_layer(steps) -> dict[int | None, list]:
    """The signals to compute at each layer (``None``: before the LLM), in declaration order; a signal several steps
    read (SparseVLM's layer-0 raters) is computed once."""
    out: dict[int | None, list] = {}
    for s in steps:
        for need in s.needs:
            if need not in out.setdefault(need.layer, []):
                out[need.layer].append(need)
    return out


def plan_routing(method, n_layers: int, n_visual: int, keep: int, steps=None) -> Routing:
    """The router's schedule for ``method`` at ``keep`` visual tokens of ``n_visual``. ``steps``: the method's plan at
    this budget when the caller already has it (the router, which checks it first); else ``method.plan`` is asked,
    only where the method reduces anything at this budget."""
    reduces = method.reduces(keep, n_visual)
    if steps is None and reduces:
        steps = method.plan(keep, n_visual, n_layers)
    out = Routing(n_visual=n_visual, steps=tuple(steps or ()))
    out.reduces = reduces and bool(out.steps)
    by_layer = {s.layer: s for s in out.steps} if out.reduces else {}
    needs_at = needs_by_layer(out.steps) if out.reduces else {}
    active = n_visual
    if -1 in by_layer:
        step = by_layer[-1]
        kept = keep if step.keep is None else step.keep
        out.pre_llm = LayerRule(-1, active, kept, kept, step, "pre_llm", kept, tuple(step.needs))
        out.select_calls.append((-1, active))
        active = kept
    rules = []
    for layer in range(n_layers):
        rule = _layer_rule(method, layer, by_layer.get(layer), needs_at.get(layer, ()), active, keep)
        for need in rule.before:
            out.probes.append(_probe(layer, need, rule.active))
        if rule.step is not None:
            out.select_calls.append((layer, rule.active))
        active = rule.keep if rule.prunes else rule.active
        for need in rule.after:
            out.probes.append(_probe(layer, need, active))
        rules.append(rule)
    out.layers = tuple(rules)
    out.visual_per_layer = [r.computed for r in rules]
    out.kv_per_layer = [r.seen for r in rules]
    return out


def _layer_rule(method, layer: int, step, needs: list, active: int, keep: int) -> LayerRule:
    """Layer ``layer``'s rule when ``active`` visual tokens reach it: the step's own signals before it, the rest
    after."""
    own = set(step.needs) if step is not None else set()
    before = tuple(n for n in needs if n in own)
    after = tuple(n for n in needs if n not in own)
    if step is None:
        return LayerRule(layer, active, active, active, before=before, after=after)
    kept = keep if step.keep is None else step.keep
    rule = LayerRule(layer, active, kept, kept, step, step.stage or method.stage, kept, before, after)
    if rule.skipped_as_kv:  # route: ``kept`` go through the layer, every active token stays a key
        rule = LayerRule(layer, active, kept, active, step, rule.stage, kept, before, after)
    return rule


def _probe(layer: int, need, n_active: int) -> tuple[int, str, str | None, int, int]:
    return (layer, need.kind, need.queries or need.tokens, n_active, n_active if need.queries == "visual" else 0)
