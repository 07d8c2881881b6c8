"""A run planned before any compute: methods built with their options and labels, every (method, budget, layout) plan
checked, every method prepared, and the run laid out in cells (:class:`Cell`: a method as it runs under a budget
convention, at a budget, with its keep rule and artefact) that :mod:`tokenbench.harness.execute` runs.

:func:`plan_run` is everything ``compare`` checks and loads before the first sample is computed: user values, the
tasks' samples, the model, the image layouts, every method's plans and preparation.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from tokenbench.api import Prepared, TokenReducer, build_method
from tokenbench.budgets import Budget, Convention, flops_cost, keep_rule
from tokenbench.errors import ConfigError, IncompatibleError


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
    from tokenbench.api import check_budget_scope, check_positions
    from tokenbench.budgets import MATCHED, variant

    n_layers = adapter.n_layers if n_layers is None else n_layers
    method.check(n_layers)
    adapter.check_compatible(method, method.steps(n_layers))
    for layout in layouts:
        check_budget_scope(method, scope, layout)
        check_positions(method, layout)
        for budget in budgets:
            for convention in match or (MATCHED,):
                keep = keep_rule(method, budget, convention, n_layers, cost_of)
                steps = variant(method, convention).plan(keep(layout.n_visual), layout.n_visual, n_layers)
                adapter.check_compatible(method, steps)


# -- the cells of a comparison ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MethodPlan:
    """A method of the run, prepared once from the weights: its row label, what ``prepare`` returned and how long it
    took, and its artefact's hash (part of the store key)."""

    method: TokenReducer
    label: str
    prepared: Prepared
    prepare_s: float
    artefact_digest: str | None


@dataclass(frozen=True)
class Cell:
    """One run of a comparison: ``method`` as it runs under ``convention`` (:func:`tokenbench.budgets.variant`) at
    ``budget``, at its own budget ``keep_of(n_visual)``; ``of``: the prepared method (None for ``full``)."""

    method: TokenReducer
    budget: Budget
    convention: Convention
    keep_of: Callable[[int], int]
    of: MethodPlan | None = None

    @property
    def label(self) -> str:
        return self.of.label if self.of is not None else self.method.name

    @property
    def artefact(self) -> Any:
        return self.of.prepared.artefact if self.of is not None else None

    @property
    def artefact_digest(self) -> str | None:
        return self.of.artefact_digest if self.of is not None else None

    def preparation(self) -> tuple[dict, list[str], float]:
        """(what the method's preparation recorded, its warnings, its seconds); nothing for ``full``."""
        if self.of is None:
            return {}, [], 0.0
        prep = self.of.prepared
        return prep.info, [prep.warning] * bool(prep.warning), self.of.prepare_s


@dataclass(frozen=True)
class Copy:
    """A convention under which a method runs exactly as under an ``earlier`` one: its rows are the earlier rows,
    named for ``convention`` too (``same_as``), and nothing is run again."""

    label: str
    convention: Convention
    earlier: Convention


@dataclass(frozen=True)
class TaskPlan:
    name: str  # as registered
    task: Any
    samples: list  # those that can run
    failed: dict[str, str]  # sample id -> why its image could not be read


@dataclass(frozen=True)
class RunPlan:
    """A comparison laid out: the loaded model, each task's samples, ``full``'s cell (run first on every task) and the
    methods' steps in order (method, convention, budget), and the run's provenance."""

    adapter: Any
    tasks: tuple[TaskPlan, ...]
    full: Cell
    steps: tuple[Cell | Copy, ...]
    provenance: dict


def plan_run(spec, on_warning: Callable[[str], None] | None = None,
             refused: dict[str, tuple[str, str]] | None = None) -> RunPlan:
    """Everything a comparison (``spec``: a :class:`tokenbench.harness.compare.RunSpec`) checks and loads before any
    compute, in this order: user values, methods, the device, the tasks' samples (data problems surface before the
    model loads), the model, every method's plans on every image layout, then each method's preparation (so that a
    bad artefact is refused before anything is computed); its warnings go to ``on_warning``.

    A method the model, budgets or images refuse (everything :func:`check_method_plans` refuses) stops the run; given
    a ``refused`` dict, it is dropped instead and recorded there as ``{label: (method, why)}`` (a missing signal in
    its short form), so that a suite can list a method refused on a family rather than fail."""
    import torch

    from tokenbench.budgets import MATCHED

    methods, labels = _check_spec(spec)
    tasks, adapter = _load(spec)
    layouts, sizes = _layouts(adapter, tasks)
    conventions = spec.match or (MATCHED,)
    cost_of = _cost_of(tasks, adapter, sizes, conventions)
    kept = []
    for (name, *_), m, label in zip(spec.methods, methods, labels):  # every budget fits every image, or stop here
        try:
            check_method_plans(m, adapter, list(layouts.values()), spec.budgets, spec.budget_scope,
                               match=conventions, cost_of=cost_of)
        except (ConfigError, IncompatibleError) as e:
            if refused is None:
                raise
            refused[label] = (name, getattr(e, "short", str(e)))
            continue
        kept.append((m, label))
    torch.manual_seed(spec.seed)

    from tokenbench.results.provenance import provenance

    prov = provenance(spec.device, spec.seed)
    prepared = _prepare(adapter, [m for m, _ in kept], [label for _, label in kept], on_warning)
    everything = Budget()
    full = Cell(build_method("full"), everything, conventions[0], everything.resolve)
    steps = [step for mp in prepared if mp.method.name != "full"
             for step in _steps(mp, spec.budgets, conventions, adapter.n_layers, cost_of, list(layouts.values()))]
    return RunPlan(adapter, tuple(tasks), full, tuple(steps), prov)


def _cost_of(tasks: list[TaskPlan], adapter, sizes: dict, conventions) -> Callable | None:
    """For the ``flops=`` conventions: the FLOPs of the first sample's prompt on each image layout; else None."""
    if not any(c.kind == "flops" for c in conventions):
        return None
    first = tasks[0].samples[0]
    first = dataclasses.replace(first, question=tasks[0].task.prompt(first, adapter.family))
    return flops_cost(adapter, adapter.encode([first]).n_text[0], sizes)


def _check_spec(spec) -> tuple[list[TokenReducer], list[str]]:
    """The methods and their labels, every count, the budget scope and the device: checked before any data loads."""
    from tokenbench.api import BUDGET_SCOPES
    from tokenbench.config import check_counts
    from tokenbench.hf.adapter import check_device

    methods = build_methods(spec.methods)  # rejects unknown names and bad options before any compute
    labels = method_labels(spec.methods)
    check_counts(limit=(spec.limit, 1, 200), batch_size=(spec.batch_size, 1, 8), repeats=(spec.repeats, 1, 5),
                 warmup=(spec.warmup, 0, 2), seed=(spec.seed, 0, 0))
    if spec.budget_scope not in BUDGET_SCOPES:
        raise ConfigError(f"--budget-scope {spec.budget_scope!r} is not one of {', '.join(BUDGET_SCOPES)}")
    check_device(spec.device)  # before the data loads
    return methods, labels


def _load(spec) -> tuple[list[TaskPlan], Any]:
    """The tasks with their samples (data problems surface before the model loads), then the model, loaded."""
    from tokenbench.config import parse_tasks, task_options
    from tokenbench.harness.resolve import build_task, resolve_model

    names = parse_tasks(spec.task)
    tasks = [build_task(t, task_options(t, spec.task_options, names), spec.seed) for t in names]
    adapter = resolve_model(spec.model).configure(spec.prompt_style, spec.image_pixels)
    plans = [TaskPlan(name, task, *_split(task, task.samples(spec.limit))) for name, task in zip(names, tasks)]
    adapter.load(spec.device, spec.dtype, spec.attn_implementation)
    return plans, adapter


def _split(task, samples) -> tuple[list, dict[str, str]]:
    """(the samples that can run, {sample id: why not} for those whose image could not be read)."""
    failed = {s.id: s.meta.get("error", "no image") for s in samples if s.image is None}
    good = [s for s in samples if s.image is not None]
    if not good:
        first = next(iter(failed.items()), ("-", "the split is empty"))
        raise ConfigError(f"task {task.name!r}: no sample can run: {len(failed)} of {len(samples)} failed to load "
                          f"(e.g. {first[0]}: {first[1]})")
    return good, failed


def _layouts(adapter, tasks: list[TaskPlan]) -> tuple[dict, dict[int, Any]]:
    """Every distinct image layout of the samples (visual tokens, regions: what plans depend on), and for each count of
    visual tokens the first such image's pixel size (what the ``flops=`` conventions' FLOPs are of)."""
    layouts, sizes = {}, {}
    for t in tasks:
        for s in t.samples:
            layout = adapter.layout_of(s)
            layouts.setdefault((layout.n_visual, len(layout.crops)), layout)
            sizes.setdefault(layout.n_visual, tuple(s.image.size))
    return layouts, sizes


def _prepare(adapter, methods: list[TokenReducer], labels: list[str], on_warning) -> list[MethodPlan]:
    """Each method prepared from the weights (one-off, timed), its warning told at once."""
    from tokenbench.harness.execute import artefact_digest

    out = []
    for m, label in zip(methods, labels):
        t0 = time.perf_counter()
        prep = Prepared.of(m.prepare(adapter.weights()))
        seconds = time.perf_counter() - t0
        if prep.warning and on_warning:
            on_warning(prep.warning)
        out.append(MethodPlan(m, label, prep, seconds, None if m.name == "full" else artefact_digest(prep)))
    return out


def _steps(mp: MethodPlan, budgets, conventions, n_layers: int, cost_of, layouts: list) -> list[Cell | Copy]:
    """A method's cells, convention by convention, budget by budget; a convention that runs it exactly as an earlier
    one did (the same variant, the same own budget on every layout) is a :class:`Copy` of that one."""
    from tokenbench.budgets import variant

    def rules(convention):
        return [keep_rule(mp.method, budget, convention, n_layers, cost_of) for budget in budgets]

    run: dict[Convention, list] = {}  # convention -> its keep rules, one per budget
    out: list[Cell | Copy] = []
    for convention in conventions:
        mine = rules(convention)
        earlier = next((c for c, theirs in run.items() if variant(mp.method, c) == variant(mp.method, convention)
                        and all(a(lay.n_visual) == b(lay.n_visual) for a, b in zip(theirs, mine) for lay in layouts)),
                       None)
        if earlier is not None:
            out.append(Copy(mp.label, convention, earlier))
            continue
        run[convention] = mine
        out += [Cell(variant(mp.method, convention), budget, convention, keep, mp) for budget, keep in zip(budgets, mine)]
    return out
