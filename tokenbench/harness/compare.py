"""The harness: run ``full`` and each method at each budget on the same samples in one process, and compare.

``compare(spec)`` is the Python API behind ``tokenbench compare`` and ``tokenbench run``. Every comparison includes
``full`` (the unmodified model), run first; retention, agreement, first-token KL and the FLOPs ratio are taken
against it on the same samples, and timings are measured side by side in the same process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from tokenbench.api import Prepared, build_method
from tokenbench.budgets import Budget
from tokenbench.config import check_counts, parse_tasks, task_options
from tokenbench.errors import ConfigError
from tokenbench.harness.execute import _artefact_digest, _Context
from tokenbench.harness.plan import build_methods, check_method_plans, flops_cost, keep_rule, method_labels
from tokenbench.harness.resolve import build_task, resolve_model


# -- the run -------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    #: (name, options) per method, or (name, options, label) to run one method in several configurations side by side
    #: (the rows' ``label``; by default the name)
    methods: tuple[tuple[Any, ...], ...]
    model: str = "mini-llava"
    task: str = "synthetic"
    budgets: tuple[Budget, ...] = (Budget(ratio=1 / 9),)
    limit: int | None = None
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    batch_size: int = 8
    warmup: int = 2
    repeats: int = 5
    attn_implementation: str = "sdpa"
    task_options: dict[str, Any] = field(default_factory=dict)
    budget_scope: str = "global"  # "global" over an image's visual tokens, or "crop": split over its crops
    store: str | None = None  # a results store (tokenbench.results.store) to reuse and save samples in; None: none
    #: budget conventions (tokenbench.budgets), each run in turn; a method whose plan a later one leaves unchanged
    #: is not run again: its rows are copied with the later convention's name and ``same_as`` the first's
    match: tuple[Any, ...] = ()
    #: the processes whose samples the rows merge (tokenbench.harness.parallel); the timings are always one process's own
    processes: int = 1


def compare(spec: RunSpec, on_row: Callable[[dict[str, Any]], None] | None = None, progress: bool = True,
            on_warning: Callable[[str], None] | None = None, shard: tuple[int, int] | None = None,
            computed: dict[str, int] | None = None) -> list[dict]:
    """Run ``full`` plus every method of ``spec`` at every budget; return one row per (method, budget).

    ``on_warning`` receives what a method's preparation wants the user to see (e.g. ALVTS without a calibration
    artefact); the same text is kept in the rows' ``warnings``.

    Data-parallel runs (:mod:`tokenbench.harness.parallel`): ``shard=(rank, world)`` computes only every world-th batch of
    every cell, from the rank-th on, into the store (no timing, no row, no run recorded) and counts the samples it
    computed per cell into ``computed``; the merge then runs without ``shard`` and with ``computed`` summed over the
    processes, so that its rows count those samples as computed by this run rather than read back from an earlier one."""
    import torch

    methods = build_methods(spec.methods)  # rejects unknown names and bad options before any compute
    labels = method_labels(spec.methods)
    check_counts(limit=(spec.limit, 1, 200), batch_size=(spec.batch_size, 1, 8), repeats=(spec.repeats, 1, 5),
                 warmup=(spec.warmup, 0, 2), seed=(spec.seed, 0, 0))
    from tokenbench.api import BUDGET_SCOPES

    if spec.budget_scope not in BUDGET_SCOPES:
        raise ConfigError(f"--budget-scope {spec.budget_scope!r} is not one of {', '.join(BUDGET_SCOPES)}")
    from tokenbench.hf.adapter import check_device

    check_device(spec.device)  # before the data loads
    names = parse_tasks(spec.task)
    tasks = [build_task(t, task_options(t, spec.task_options, names), spec.seed) for t in names]
    adapter = resolve_model(spec.model)
    splits = [_split(task, task.samples(spec.limit)) for task in tasks]  # data problems surface before the model loads
    adapter.load(spec.device, spec.dtype, spec.attn_implementation)
    layouts = {}  # every distinct image layout of the samples (visual tokens, regions): what plans depend on
    sizes = {}  # visual tokens -> the first such image's pixel size (what the flops= conventions' FLOPs are of)
    for samples, _ in splits:
        for s in samples:
            layout = adapter.layout_of(s)
            layouts.setdefault((layout.n_visual, len(layout.crops)), layout)
            sizes.setdefault(layout.n_visual, tuple(s.image.size))
    from tokenbench.budgets import MATCHED, variant

    conventions = spec.match or (MATCHED,)
    cost_of = None
    if any(c.kind == "flops" for c in conventions):  # FLOPs of the first sample's prompt, on each image layout
        first = splits[0][0][0]
        first = dataclasses.replace(first, question=tasks[0].prompt(first, adapter.family))
        cost_of = flops_cost(adapter, adapter.encode([first]).n_text[0], sizes)
    for m in methods:  # every budget fits every image and every method can run there, or stop here
        check_method_plans(m, adapter, list(layouts.values()), spec.budgets, spec.budget_scope,
                           match=conventions, cost_of=cost_of)

    def same_plan(m, a, b) -> bool:  # conventions a and b run m identically on every layout and budget
        return variant(m, a) == variant(m, b) and all(
            keep_rule(m, budget, a, adapter.n_layers, cost_of)(lay.n_visual)
            == keep_rule(m, budget, b, adapter.n_layers, cost_of)(lay.n_visual)
            for budget in spec.budgets for lay in layouts.values())
    torch.manual_seed(spec.seed)

    from tokenbench.results.provenance import provenance

    prov = provenance(spec.device, spec.seed)
    prepared = []
    for m in methods:  # before any run, so that a bad artefact is refused before anything is computed
        t0 = time.perf_counter()
        prepared.append((Prepared.of(m.prepare(adapter.weights())), time.perf_counter() - t0))
        if prepared[-1][0].warning and on_warning:
            on_warning(prepared[-1][0].warning)
    store, run_id = _open_store(spec, record=shard is None)
    rows: list[dict] = []
    cells: list[str] = []

    def finished(row):
        rows.append(row)
        if run_id is not None:
            store.update_run(run_id, rows, cells)
        if on_row:
            on_row(row)

    try:
        for name, task, (samples, failed) in zip(names, tasks, splits):
            samples = [dataclasses.replace(s, question=task.prompt(s, adapter.family)) for s in samples]
            ctx = _Context(spec, task, adapter, samples, prov, progress, failed)
            ctx.task_name, ctx.store, ctx.cells = name, store, cells
            ctx.shard, ctx.computed_by = shard, computed if computed is not None else {}
            full = build_method("full")
            everything = Budget()
            ctx.match, ctx.keep_of = conventions[0], everything.resolve
            reference = ctx.run(full, everything)
            task_warnings = [ctx.too_long] if ctx.too_long else []
            if ctx.too_long and on_warning:
                on_warning(ctx.too_long)
            if shard is None:
                finished(ctx.row(full, everything, reference, reference, ctx.time(full, everything))
                         | {"prepare_s": 0.0, "prepared": {}, "warnings": task_warnings})
            for m, label, (prep, prepare_s) in zip(methods, labels, prepared):  # prepared: one-off, from the weights
                if m.name == "full":
                    continue
                ctx.artefact, ctx.artefact_digest = prep.artefact, _artefact_digest(prep)
                extra = {"label": label, "prepare_s": prepare_s, "prepared": prep.info,
                         "warnings": [prep.warning] * bool(prep.warning) + task_warnings}
                done: dict[Any, list[dict]] = {}  # convention -> this method's rows under it
                for convention in conventions:
                    earlier = next((c for c in done if same_plan(m, c, convention)), None)
                    if earlier is not None:  # the same plan: the same rows, named for this convention too
                        for r in done[earlier]:
                            finished(r | {"match": convention.label, "same_as": earlier.label})
                        continue
                    done[convention] = []
                    for budget in spec.budgets:
                        ctx.match = convention
                        ctx.keep_of = keep_rule(m, budget, convention, adapter.n_layers, cost_of)
                        mv = variant(m, convention)
                        run = ctx.run(mv, budget)
                        if shard is not None:
                            continue
                        timing = ctx.time(mv, budget)
                        done[convention].append(ctx.row(mv, budget, run, reference, timing) | extra)
                        finished(done[convention][-1])
    except BaseException:
        if run_id is not None:
            store.update_run(run_id, rows, cells, state="interrupted")
        raise
    if run_id is not None:
        store.update_run(run_id, rows, cells, state="finished")
    return rows


def _open_store(spec: RunSpec, record: bool = True):
    """(Store, run id) for ``spec.store`` (None, None without one); the run is recorded before any compute (unless not
    ``record``: then the run id is None)."""
    if spec.store is None:
        return None, None
    from tokenbench.results.store import Store

    store = Store(spec.store)
    if not record:
        return store, None
    import socket

    fields = json.loads(json.dumps(dataclasses.asdict(spec), default=str))
    return store, store.start_run(fields | {"process": {"pid": os.getpid(), "host": socket.gethostname()}})


def _split(task, samples) -> tuple[list, dict[str, str]]:
    """(the samples that can run, {sample id: why not} for those whose image could not be read)."""
    failed = {s.id: s.meta.get("error", "no image") for s in samples if s.image is None}
    good = [s for s in samples if s.image is not None]
    if not good:
        first = next(iter(failed.items()), ("-", "the split is empty"))
        raise ConfigError(f"task {task.name!r}: no sample can run: {len(failed)} of {len(samples)} failed to load "
                          f"(e.g. {first[0]}: {first[1]})")
    return good, failed


evaluate = compare

