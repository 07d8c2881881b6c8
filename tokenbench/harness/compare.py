"""The harness: run ``full`` and each method at each budget on the same samples in one process, and compare.

``compare(spec)`` is the Python API behind ``tokenbench compare`` and ``tokenbench run``. Every comparison includes
``full`` (the unmodified model), run first; retention, agreement, first-token KL and the FLOPs ratio are taken
against it on the same samples, and timings are measured side by side in the same process.

The run is planned first (:func:`tokenbench.harness.plan.plan_run`: every check before any compute), then each task's
cells are run by one :class:`tokenbench.harness.execute.Executor`; :class:`_Record` owns the store's lifecycle.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from tokenbench.budgets import DEFAULT_BUDGET, Budget
from tokenbench.harness.execute import Executor
from tokenbench.harness.parallel import Share
from tokenbench.harness.plan import Copy, RunPlan, plan_run


# -- the run -------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    #: (name, options) per method, or (name, options, label) to run one method in several configurations side by side
    #: (the rows' ``label``; by default the name)
    methods: tuple[tuple[Any, ...], ...]
    model: str = "mini-llava"
    task: str = "synthetic"
    budgets: tuple[Budget, ...] = (DEFAULT_BUDGET,)
    limit: int | None = None
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    batch_size: int = 8
    warmup: int = 2
    repeats: int = 5
    compile: bool = False  # time the layers through torch.compile (tokenbench.engine.compiled)
    attn_implementation: str = "sdpa"
    prompt_style: str | None = None  # the model's prompt style (tokenbench.contract.model.PROMPT_STYLES); None: chat
    image_pixels: str | None = None  # a dynamic-resolution model's pixel range (PIXEL_RANGES); None: its default
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
            computed: dict[str, int] | None = None, refused: dict[str, tuple[str, str]] | None = None) -> list[dict]:
    """Run ``full`` plus every method of ``spec`` at every budget; return one row per (method, budget).

    ``on_warning`` receives what a method's preparation wants the user to see (e.g. ALVTS without a calibration
    artefact); the same text is kept in the rows' ``warnings``.

    Data-parallel runs (:mod:`tokenbench.harness.parallel`): ``shard=(rank, world)`` computes only every world-th batch of
    every cell, from the rank-th on, into the store (no timing, no row, no run recorded) and counts the samples it
    computed per cell into ``computed``; the merge then runs without ``shard`` and with ``computed`` summed over the
    processes, so that its rows count those samples as computed by this run rather than read back from an earlier one.

    ``refused``: a method the model refuses is left out and recorded there rather than stopping the run
    (:func:`tokenbench.harness.plan.plan_run`)."""
    plan = plan_run(spec, on_warning, refused)  # everything checked and loaded before any compute
    share = Share(shard, computed if computed is not None else {})
    with _Record(spec, on_row, record=not share.partial) as record:
        for task in plan.tasks:
            samples = [dataclasses.replace(s, question=task.task.prompt(s, plan.adapter.family)) for s in task.samples]
            executor = Executor(spec, task.name, task.task, plan.adapter, samples, task.failed, plan.provenance,
                                store=record.store, share=share, progress=progress)
            _run_task(plan, executor, record, on_warning)
    return record.rows


def _run_task(plan: RunPlan, executor: Executor, record: "_Record", on_warning) -> None:
    """``full``, then every step of the plan, on one task: each cell run (and, unless in a shard pass, timed and its
    row recorded); a :class:`~tokenbench.harness.plan.Copy` repeats an earlier convention's rows under its name."""
    from tokenbench.results.rows import same_as

    partial = executor.share.partial
    reference = executor.run(plan.full)
    warnings = [executor.too_long] if executor.too_long else []
    if executor.too_long and on_warning:
        on_warning(executor.too_long)
    if not partial:
        record.cell(reference.key)
        record.add(executor.row(plan.full, reference, reference, executor.time(plan.full), warnings,
                                executor.count(plan.full)))
    done: dict[tuple, list[dict]] = {}  # (label, convention) -> the method's rows under it
    for step in plan.steps:
        if isinstance(step, Copy):  # the same plan: the same rows, named for this convention too
            for row in done.get((step.label, step.earlier), []):
                record.add(same_as(row, step.convention, step.earlier))
            continue
        run = executor.run(step)
        if partial:
            continue
        record.cell(run.key)
        row = executor.row(step, run, reference, executor.time(step), warnings, executor.count(step))
        done.setdefault((step.label, step.convention), []).append(row)
        record.add(row)


class _Record:
    """The store's lifecycle for one comparison, and its rows: the store opened (None without one), the run recorded
    before any compute (unless not ``record``: a shard pass records none), updated with every finished row and the
    cells it has read or computed, and closed as finished, or as interrupted when anything stops it."""

    def __init__(self, spec: RunSpec, on_row: Callable[[dict[str, Any]], None] | None, record: bool = True) -> None:
        self.store, self.run_id = _open_store(spec, record)
        self.on_row = on_row
        self.rows: list[dict] = []
        self.cells: list[str] = []  # store keys of the cells the rows come from

    def cell(self, key: str) -> None:
        if key not in self.cells:
            self.cells.append(key)

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.run_id is not None:
            self.store.update_run(self.run_id, self.rows, self.cells)
        if self.on_row:
            self.on_row(row)

    def __enter__(self) -> "_Record":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        try:
            if self.run_id is not None:
                self.store.update_run(self.run_id, self.rows, self.cells,
                                      state="finished" if kind is None else "interrupted")
        finally:
            if self.store is not None:  # its lock too (a store on a network filesystem is held exclusively)
                self.store.close()


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


evaluate = compare

