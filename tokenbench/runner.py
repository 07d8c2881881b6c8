"""The harness: run ``full`` and each method at each budget on the same samples in one process, and compare.

``compare(spec)`` is the Python API behind ``tokenbench compare`` and ``tokenbench run``. Every comparison includes
``full`` (the unmodified model), run first; retention, agreement, first-token KL and the FLOPs ratio are taken
against it on the same samples, and timings are measured side by side in the same process.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from tokenbench.api import MODELS, TASKS, Prepared, TokenReducer, build_method
from tokenbench.errors import ConfigError, UnknownNameError
from tokenbench.registry import unknown_name_message


FLOPS_CONVENTION = ("FLOPs = 2 x MACs (multiply-accumulates); matmul work only; attention as the full n_q x n_kv "
                    "rectangle; fastv_formula_llm_macs is the FastV paper's formula (MACs, printed as FLOPs by papers)")


# -- budgets -------------------------------------------------------------------------------------------------------------
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


def parse_budgets(keep: str | None, keep_ratio: str | None, default: tuple[Budget, ...] | None = None
                  ) -> tuple[Budget, ...]:
    """``--keep`` / ``--keep-ratio`` as budgets; neither: ``default``, else 1/9 of each image's visual tokens. An empty
    value is a mistake (a shell variable that was not set), never the default."""
    for flag, raw in (("--keep", keep), ("--keep-ratio", keep_ratio)):
        if raw is not None and not raw.strip(" ,"):
            example = "64,128,192" if flag == "--keep" else "0.111,0.222"
            raise ConfigError(f"{flag} is empty; give a value or a comma-separated list (e.g. {flag} {example}), or "
                              "leave it out for the default (1/9 of each image's visual tokens)")
    if keep is not None and keep_ratio is not None:
        raise ConfigError("give either --keep or --keep-ratio, not both")
    if keep is not None:
        try:
            values = [int(v) for v in keep.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"--keep {keep!r} is not a number or comma-separated list of numbers (e.g. 64,128,192)") from None
        if any(v < 1 for v in values):
            raise ConfigError(f"--keep {keep!r}: every value must be a positive number of visual tokens (e.g. 64)")
        return tuple(Budget(keep=v) for v in values)
    if keep_ratio is not None:
        try:
            ratios = [float(v) for v in keep_ratio.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"--keep-ratio {keep_ratio!r} is not a number or comma-separated list (e.g. 0.111,0.25)") from None
        if any(not 0 < r <= 1 for r in ratios):
            raise ConfigError(f"--keep-ratio {keep_ratio!r}: every value must be in (0, 1] (e.g. 0.111 for 1/9)")
        return tuple(Budget(ratio=r) for r in ratios)
    return default or (Budget(ratio=1 / 9),)  # the field's headline setting: 64 of 576 on LLaVA-1.5


# -- models and tasks ----------------------------------------------------------------------------------------------------
def resolve_model(spec: str):
    """A registered name, ``name:<hub id or directory>``, or an existing directory (family from its config.json)."""
    if ":" in spec and not os.path.exists(spec):
        name, source = spec.split(":", 1)
        factory = MODELS.get(name)
        try:
            return factory(source=source)
        except TypeError:
            raise ConfigError(f"model {name!r} does not take a source; use it alone (--model {name})") from None
    if spec in MODELS.names():
        return MODELS.get(spec)()
    if os.path.isdir(spec):
        return _adapter_for_directory(spec)
    if "/" in spec or os.sep in spec or spec.startswith("."):
        raise ConfigError(
            f"model path {spec!r} does not exist. Give an existing directory saved with save_pretrained, a registered "
            f"name (see `tokenbench list models`), or family:<hub id> (e.g. llava:llava-hf/llava-1.5-13b-hf)"
        )
    raise UnknownNameError(unknown_name_message("model", spec, MODELS.names()))


def parse_tasks(spec: str) -> list[str]:
    """``pope,textvqa`` -> the registered task names, each once (unknown names are refused)."""
    names = [t.strip() for t in spec.split(",") if t.strip()]
    if not names:
        raise ConfigError(f"--task {spec!r} names no task; give one or a comma-separated list (e.g. pope,textvqa)")
    repeated = sorted({t for t in names if names.count(t) > 1})
    if repeated:
        raise ConfigError(f"--task lists {repeated[0]!r} twice; name each task once")
    for t in names:
        TASKS.get(t)
    return names


def task_options(name: str, options: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The options of task ``name``: ``key`` applies to every listed task that has the option, ``task.key`` to one."""
    out = {}
    for key, value in options.items():
        owner, _, k = key.rpartition(".")
        if owner:
            if owner not in names:
                raise ConfigError(f"task option {key!r} names task {owner!r}, which is not in --task "
                                  f"({', '.join(names)})")
            if owner == name:
                out[k] = value
        elif k in task_option_names(name) or len(names) == 1:
            out[k] = value
        elif not any(k in task_option_names(t) for t in names):
            raise ConfigError(f"no task in --task ({', '.join(names)}) has option {k!r}; "
                              + "; ".join(f"{t}: {', '.join(task_option_names(t)) or '(none)'}" for t in names))
    return out


def task_option_names(name: str) -> list[str]:
    import dataclasses
    import inspect

    factory = TASKS.get(name)
    if dataclasses.is_dataclass(factory):
        return [f.name for f in dataclasses.fields(factory) if f.init]
    return [p for p in inspect.signature(factory).parameters if p != "self"]


def build_task(name: str, options: dict[str, Any], seed: int):
    """Instantiate task ``name`` with typed ``options`` (checked against its dataclass fields as a method's are);
    ``--seed`` seeds its split unless ``options`` set ``seed`` explicitly."""
    import dataclasses
    import difflib

    from tokenbench.api import coerce_option

    factory = TASKS.get(name)
    params = task_option_names(name)
    unknown = [k for k in options if k not in params]
    if unknown:
        close = difflib.get_close_matches(unknown[0], params, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"task {name!r} has no option {unknown[0]!r}.{hint} Its options: "
                          f"{', '.join(params) or '(none)'}")
    if dataclasses.is_dataclass(factory):
        fields = {f.name: f for f in dataclasses.fields(factory)}
        options = {k: coerce_option(name, fields[k], v, kind="task", flag="-T") for k, v in options.items()}
    if "seed" in params and "seed" not in options:
        options = {**options, "seed": seed}
    try:
        return factory(**options)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"task {name!r}: {exc}") from exc


def _adapter_for_directory(path: str):
    from tokenbench.checkpoint import read_config

    model_type = read_config(path).get("model_type")
    for name in MODELS.available():  # a broken model plugin is skipped with a warning, not fatal
        factory = MODELS.get(name)
        if model_type in getattr(factory, "model_types", ()):  # family factories declare what they load
            return factory(source=path)
    raise ConfigError(f"model directory {path!r} has model_type {model_type!r}, which no registered adapter loads")


# -- first-token statistics and store keys ------------------------------------------------------------------------------
#: how many of full's most likely first tokens the store keeps per sample (all of them for a vocabulary this small)
TOP_K = 256


def first_token_kl(ref_ids: list[int], ref_logprobs: list[float], logprobs) -> float:
    """KL(full || method) of the first answer token over full's :data:`TOP_K` most likely tokens plus one bin for the
    rest of the vocabulary: exact when the vocabulary has at most TOP_K tokens, else the KL of both distributions
    coarsened to those bins (a lower bound of the full KL; the top 256 tokens hold nearly all of a first token's
    mass). Computed the same way whether full ran in this process or was read back from the store."""
    import torch

    p_log = torch.tensor(ref_logprobs, dtype=torch.float64)
    q_log = logprobs.double()[torch.tensor(ref_ids)]
    kl = float((p_log.exp() * (p_log - q_log)).sum())
    p_rest = 1.0 - float(p_log.exp().sum())
    if len(ref_ids) < logprobs.shape[-1] and p_rest > 1e-12:
        q_rest = max(1.0 - float(q_log.exp().sum()), 1e-300)
        kl += p_rest * (math.log(p_rest) - math.log(q_rest))
    return max(kl, 0.0)


def _source_digest(cls) -> str | None:
    """sha256 of the file defining ``cls`` (a method's rule): a plugin's edited method never reuses stored results."""
    import inspect

    from tokenbench.store import file_digest

    try:
        return file_digest(inspect.getsourcefile(cls))
    except TypeError:
        return None


def _artefact_digest(prepared) -> str | None:
    """sha256 over a prepared artefact's tensors (and what its ``info`` records), or None when there is none."""
    import hashlib

    if prepared.artefact is None:
        return None
    h = hashlib.sha256(json.dumps(prepared.info, sort_keys=True, default=str).encode())

    def visit(x):
        import torch

        if isinstance(x, torch.Tensor):
            h.update(str((x.dtype, tuple(x.shape))).encode())
            h.update(x.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                h.update(str(k).encode())
                visit(x[k])
        elif isinstance(x, (list, tuple)):
            for v in x:
                visit(v)
        elif dataclasses.is_dataclass(x):
            for f in dataclasses.fields(x):
                h.update(f.name.encode())
                visit(getattr(x, f.name))
        else:
            h.update(repr(x).encode())

    visit(prepared.artefact)
    return h.hexdigest()


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
    store: str | None = None  # a results store (tokenbench.store) to reuse and save samples in; None: none
    #: budget conventions (tokenbench.budgets), each run in turn; a method whose plan a later one leaves unchanged
    #: is not run again: its rows are copied with the later convention's name and ``same_as`` the first's
    match: tuple[Any, ...] = ()
    #: the processes whose samples the rows merge (tokenbench.parallel); the timings are always one process's own
    processes: int = 1


@dataclass
class MethodRun:
    answers: list[str]
    correct: list[float]
    kl: list[float]  # per sample: KL(full || method) of the first answer token (see first_token_kl)
    visual_per_layer: list[list[int]]
    flops: list[Any]  # PrefillCount per sample
    decode_flops: list[tuple[int, int]]  # per sample: (FLOPs of its decode steps, FLOPs of its first decode step)
    fastv_formula: list[int]  # per sample: the FastV formula over its LLM layers (MACs, as the papers print them)
    kv_bytes: float  # per sample
    keeps: list[int]  # the budget resolved for each sample's image
    n_visual: list[int]  # each sample's visual tokens before reduction
    scored: Any = None  # the task's tokenbench.task.Scored
    method_keeps: list[int] = field(default_factory=list)  # what the method ran at under the convention


def check_counts(**counts: tuple[int | None, int, int]) -> None:
    """Each ``name=(value, least, example)``: an int of at least ``least`` (None: not given); a seed also below 2**32,
    what torch, numpy and Python's random all take. The error names the option as the CLI spells it, with an example."""
    for name, (value, least, example) in counts.items():
        flag = "--" + name.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{flag} {value!r} must be a whole number; e.g. {flag} {example}")
        if name.endswith("seed") and not 0 <= value < 2**32:
            raise ConfigError(f"{flag} {value} must be in 0..{2**32 - 1}; e.g. {flag} {example}")
        if value < least:
            raise ConfigError(f"{flag} {value} must be at least {least}; e.g. {flag} {example}")


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
    from tokenbench.accounting import plan, prefill_count

    lm = adapter.lm_dims()

    def cost_of(n_visual: int):
        encoder = adapter.encoder_macs(sizes.get(n_visual))

        def cost(method, k: int) -> float:
            p = plan(method, lm.n_layers, n_visual, k)
            return prefill_count(lm, encoder, n_text, p.visual_per_layer, p, method).total_flops

        return cost

    return cost_of


def compare(spec: RunSpec, on_row: Callable[[dict[str, Any]], None] | None = None, progress: bool = True,
            on_warning: Callable[[str], None] | None = None, shard: tuple[int, int] | None = None,
            computed: dict[str, int] | None = None) -> list[dict]:
    """Run ``full`` plus every method of ``spec`` at every budget; return one row per (method, budget).

    ``on_warning`` receives what a method's preparation wants the user to see (e.g. ALVTS without a calibration
    artefact); the same text is kept in the rows' ``warnings``.

    Data-parallel runs (:mod:`tokenbench.parallel`): ``shard=(rank, world)`` computes only every world-th batch of
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
    from tokenbench.adapter import check_device

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

    from tokenbench.results import provenance

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
    from tokenbench.store import Store

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


def average_retention(rows: list[dict]) -> list[dict]:
    """The papers' average over tasks: for each (label, budget) present on every task, the mean over tasks of its
    per-task retention (primary metric against full's on the same task); ``None`` where full scores 0 on a task.
    Rows of one comparison."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    cells: dict[tuple, dict[str, float | None]] = {}
    for r in rows:
        cells.setdefault((r.get("label") or r["method"], r["budget"]), {})[r["task"]] = r["retention"]
    out = []
    for (label, budget), per_task in cells.items():
        if set(per_task) != set(tasks):
            continue
        defined = None not in per_task.values()  # None: full scores 0 on that task, so retention is undefined
        out.append({"label": label, "budget": budget, "tasks": tasks, "retention": per_task,
                    "mean_retention": sum(per_task.values()) / len(tasks) if defined else None})
    return out


evaluate = compare


class _Context:
    def __init__(self, spec, task, adapter, samples, prov, progress, failed=None):
        self.spec, self.task, self.adapter, self.samples, self.prov = spec, task, adapter, samples, prov
        self.progress = progress
        self.failed = failed or {}  # sample id -> why it could not run (left out of every method's run)
        self.task_name = spec.task  # the registered name
        self.lm = adapter.lm_dims()
        self.artefact = None  # the current method's prepared artefact
        self.artefact_digest = None  # its hash, for the store key
        self.store = None  # a tokenbench.store.Store, or None to run without one
        self.reference = None  # full's records by sample id, once full has run (its first-token statistics)
        self.reused = self.computed = 0  # samples read back from the store / computed, over this context
        self.cells: list[str] = []
        self.model_fingerprint = None
        self.shard: tuple[int, int] | None = None  # (rank, world): compute only this process's batches (compare)
        self.computed_by: dict[str, int] = {}  # cell -> samples this run's processes computed (compare's shard passes)
        self.too_long: str | None = None  # set by full's run: samples longer than the model's positions
        self.match = None  # the budget convention of the current runs (tokenbench.budgets.Convention)
        self.keep_of: Callable[[int], int] | None = None  # n_visual -> the method's own budget under it

    def run(self, method: TokenReducer, budget: Budget) -> MethodRun:
        """Every sample, in batches of samples that share a visual layout; results in the samples' order. With a
        store, batches already stored for this cell are read back and every new batch is stored as it finishes."""
        import dataclasses as dc

        import torch
        from tqdm.auto import tqdm

        from tokenbench.accounting import decode_flops, kv_counts, prefill_count
        from tokenbench.flops import fastv_formula_macs

        cell, cell_spec = self.cell(method, budget)
        stored = self.store.records(cell) if self.store is not None else {}
        self.reused = self.computed = 0
        records: dict[str, dict] = {}
        n_layers = self.adapter.n_layers
        batches = self.adapter.batches(self.samples, self.spec.batch_size)
        if self.shard is not None:  # one of several processes (tokenbench.parallel): every world-th batch, as batched
            rank, world = self.shard  # in one process, so that every record is the one a single process computes
            batches = batches[rank::world]
        bar = tqdm(total=sum(map(len, batches)), desc=f"{method.name} keep={budget.label()}", unit="sample",
                   disable=True if not self.progress else None, leave=False)  # None: only on a TTY
        with self.adapter.reduction(method, self.keep_of, seed=self.spec.seed, artefact=self.artefact,
                                    budget_scope=self.spec.budget_scope) as router:
            for idx in batches:
                chunk = [self.samples[i] for i in idx]
                if all(s.id in stored for s in chunk):  # this batch finished in an earlier run
                    records.update({s.id: stored[s.id] for s in chunk})
                    self.reused += len(chunk)
                    bar.update(len(chunk))
                    continue
                batch = self.adapter.encode(chunk)
                gen = self.adapter.generate(batch, self.task.max_new_tokens, router=router)
                rec = router.record if router is not None else None
                n_visual = batch.layout.n_visual
                per_layer = rec.visual_per_layer if rec is not None else [n_visual] * n_layers
                cached = kv_counts(rec, per_layer)  # what each layer attended to and cached (keys)
                encoder = self.adapter.encoder_macs(tuple(chunk[0].image.size))
                first = torch.log_softmax(gen.first_logits.float(), dim=-1)
                new = {}
                for j, (s, text, n_text) in enumerate(zip(chunk, gen.texts, batch.n_text)):
                    new[s.id] = {
                        "answer": text,
                        "visual_per_layer": list(per_layer),
                        "keep": budget.resolve(n_visual),
                        "method_keep": self.keep_of(n_visual),
                        "n_visual": n_visual,
                        "n_text": n_text,
                        "flops": dc.asdict(prefill_count(self.lm, encoder, n_text, per_layer, rec, method)),
                        "decode_flops": [decode_flops(self.lm, n_text, cached, len(gen.token_ids[j]) - 1),
                                         decode_flops(self.lm, n_text, cached, 1)],
                        "fastv_formula": fastv_formula_macs(self.lm, [n_text + v for v in per_layer],
                                                            [n_text + v for v in cached]),
                        "kv_bytes": gen.kv_cache_bytes / len(chunk),
                        **self.first_token(s.id, first[j]),
                    }
                if self.store is not None:
                    self.store.put(cell, cell_spec, new)  # the batch is saved whole, or not at all
                records.update(new)
                self.computed += len(chunk)
                bar.update(len(chunk))
        bar.close()
        if self.shard is not None:  # this process's share is stored; the merge scores every sample
            self.computed_by[cell] = self.computed_by.get(cell, 0) + self.computed
            if method.name == "full":  # the methods' KL needs full's records of this process's samples only
                self.reference = records
            return None
        moved = min(self.computed_by.get(cell, 0), self.reused)  # computed by this run's processes, read back here
        self.reused, self.computed = self.reused - moved, self.computed + moved
        if cell not in self.cells:
            self.cells.append(cell)
        ordered = [records[s.id] for s in self.samples]
        if method.name == "full":
            self.reference = records
            self.too_long = self.longer_than_positions(ordered)
        answers = [r["answer"] for r in ordered]
        scored = self.task.evaluate(self.samples, answers)
        if len(scored.per_sample) != len(self.samples):
            raise ValueError(f"task {self.task.name!r}: evaluate() gave {len(scored.per_sample)} scores for "
                             f"{len(self.samples)} samples")
        from tokenbench.flops import PrefillCount

        return MethodRun(answers, list(scored.per_sample), [r["kl"] for r in ordered],
                         [r["visual_per_layer"] for r in ordered], [PrefillCount(**r["flops"]) for r in ordered],
                         [tuple(r["decode_flops"]) for r in ordered], [r["fastv_formula"] for r in ordered],
                         sum(r["kv_bytes"] for r in ordered) / len(ordered), [r["keep"] for r in ordered],
                         [r["n_visual"] for r in ordered], scored, [r.get("method_keep", r["keep"]) for r in ordered])

    def longer_than_positions(self, records: list[dict]) -> str | None:
        """A warning when some samples' prompt plus answer exceeds the positions the model was trained on (its
        ``max_position_embeddings``): it runs, but what it says there is unreliable."""
        limit = getattr(self.adapter.text_config(), "max_position_embeddings", None)
        if not limit:
            return None
        need = self.task.max_new_tokens
        lengths = [(s.id, r.get("n_text", 0) + r["n_visual"] + need) for s, r in zip(self.samples, records)]
        over = [(sid, n) for sid, n in lengths if n > limit]
        if not over:
            return None
        sid, n = max(over, key=lambda x: x[1])
        return (f"task {self.task_name!r}: {len(over)} of {len(self.samples)} samples need more positions (prompt + "
                f"{need} answer tokens; longest {sid!r}: {n}) than model {self.adapter.name!r} has "
                f"({limit}); their results are unreliable. Use shorter prompts or a model with more positions")

    def first_token(self, sample_id: str, logprobs) -> dict[str, Any]:
        """What the store keeps of a sample's first-token distribution: for ``full`` (no reference yet) its
        :data:`TOP_K` most likely tokens with their log-probabilities; for a method its KL to full's."""
        if self.reference is None:
            k = min(TOP_K, logprobs.shape[-1])
            top = logprobs.topk(k)
            return {"kl": 0.0, "top_ids": top.indices.tolist(), "top_logprobs": top.values.tolist()}
        ref = self.reference[sample_id]
        return {"kl": first_token_kl(ref["top_ids"], ref["top_logprobs"], logprobs)}

    def cell(self, method: TokenReducer, budget: Budget) -> tuple[str, dict]:
        """The store key of (this model and task, ``method``, ``budget``) and the spec it hashes: everything that can
        change a sample's stored record (see :mod:`tokenbench.store`)."""
        from tokenbench import __version__
        from tokenbench.store import code_digest, digest

        spec, adapter = self.spec, self.adapter
        if self.model_fingerprint is None:  # hashes the first and last layers' weights: once per context
            self.model_fingerprint = adapter.weights().fingerprint()
        cell = {
            "model": {"name": adapter.name, "source": adapter.source, "revision": adapter.revision,
                      **self.model_fingerprint},
            "dtype": spec.dtype, "device_type": spec.device.split(":")[0], "attn": spec.attn_implementation,
            "task": {"name": self.task_name, "version": self.task.version, "options": _options_of(self.task)},
            "method": {"name": method.name, "params": method.params(), "code": _source_digest(type(method)),
                       "artefact": self.artefact_digest},
            "budget": budget.label(), "budget_scope": spec.budget_scope, "seed": spec.seed,
            "match": None if method.name == "full" else self.match.label,
            "batch_size": spec.batch_size, "max_new_tokens": self.task.max_new_tokens,
            "tokenbench": __version__, "code": code_digest(), "first_token_top_k": TOP_K,
        }
        return digest(cell), cell

    def time(self, method: TokenReducer, budget: Budget) -> dict[str, Any]:
        """Batch-1 latency on the first sample by the protocol of :mod:`tokenbench.latency` (stages vision, prefill =
        time to first token, decode per token, end-to-end, method overhead), ``max_new_tokens`` of the task decoded.

        A method is timed interleaved with ``full`` (rotating rounds, same process, same sample), and its speed-ups
        are ratios of medians from those same rounds; ``full``'s own row is timed alone."""
        from tokenbench.latency import peak_memory_mb, time_variants

        adapter, spec = self.adapter, self.spec
        batch = adapter.encode(self.samples[:1])
        variants = {"method": (method, self.keep_of, self.artefact)}
        if method.name != "full":
            variants["full"] = (build_method("full"), batch.layout.n_visual, None)
        stats = time_variants(adapter, batch, variants, self.task.max_new_tokens, spec.warmup, spec.repeats,
                              seed=spec.seed, budget_scope=spec.budget_scope)
        peak = peak_memory_mb(adapter, batch, method, self.keep_of, self.task.max_new_tokens, seed=spec.seed,
                              artefact=self.artefact, budget_scope=spec.budget_scope)
        return {"method": stats["method"], "ref": stats.get("full", stats["method"]), "peak_mem_mb": peak}

    def row(self, method, budget: Budget, run: MethodRun, ref: MethodRun, timing) -> dict[str, Any]:

        from tokenbench.latency import attention_backends, paired, summary

        n = len(run.answers)
        task = self.task
        metric = task.primary_metric
        score, ref_score = run.scored.metrics[metric], ref.scored.metrics[metric]
        binary = all(c in (0.0, 1.0) for c in run.correct)
        flops = sum(f.total_flops for f in run.flops) / n
        ref_flops = sum(f.total_flops for f in ref.flops) / n
        parts = [f.as_flops_dict() for f in run.flops]
        breakdown = {k: sum(p[k] for p in parts) / n for k in ("vision", "projector", "llm", "lm_head", "overhead")}
        spec = self.spec

        def mean(values):  # an int when every sample agrees (fixed-size models), else the mean
            return values[0] if len(set(values)) == 1 else sum(values) / len(values)

        return {
            "method": method.name,
            "label": method.name,  # the row's name in tables and boards (RunSpec labels variants of one method)
            "model": self.adapter.name,
            "task": self.task_name,
            "budget": budget.label(),
            "budget_scope": spec.budget_scope,
            "budget_kind": method.budget_kind,  # kept: tokens left after the reduction; layer_mean: mean per layer
            "match": None if method.name == "full" else self.match.label,  # the budget convention (tokenbench.budgets): matched, nominal, flops=METHOD
            "keep": mean(run.keeps),
            "method_keep": mean(run.method_keeps),  # the budget the method ran at under the convention
            "keep_ratio": sum(k / v for k, v in zip(run.keeps, run.n_visual)) / n,
            "n_visual": mean(run.n_visual),
            "n_samples": n,
            "metric": metric,  # the task's primary metric: what retention is the ratio of
            "score": score,
            "metric_percent": task.percent,  # True: metrics are shares in [0, 1]
            "metrics": dict(run.scored.metrics),  # the task's official metrics (per category where it has them)
            "accuracy": run.scored.metrics.get("accuracy", sum(run.correct) / n),
            "mean_score": sum(run.correct) / n,  # the mean per-sample score (what the retention interval resamples)
            "retention": score / ref_score if ref_score > 0 else None,
            "agreement": sum(a == b for a, b in zip(run.answers, ref.answers)) / n,
            "per_sample_scores": [round(c, 6) for c in run.correct],  # sample order; for paired intervals
            **({"per_sample_correct": "".join("1" if c else "0" for c in run.correct)} if binary else {}),
            "sample_ids": [smp.id for smp in self.samples],
            "n_failed": len(self.failed) + len(run.scored.unparsed),
            "failed_to_load": dict(self.failed),  # sample id -> why (left out of every method's run)
            "unparsed": {self.samples[i].id: why for i, why in run.scored.unparsed.items()},  # scored by the task's rule
            "kl_first_token": sum(run.kl) / n,
            "tokens_llm_input": sum(v[0] for v in run.visual_per_layer) / n,
            "tokens_avg_layer": sum(sum(v) / len(v) for v in run.visual_per_layer) / n,
            "flops_prefill": flops,
            "flops_ratio": flops / ref_flops,
            "flops_breakdown": breakdown,
            "flops_decode": sum(d for d, _ in run.decode_flops) / n,
            "flops_decode_step": sum(f for _, f in run.decode_flops) / n,
            "fastv_formula_llm_macs": sum(run.fastv_formula) / n,
            "flops_convention": FLOPS_CONVENTION,
            **summary(timing["method"]),
            "decode_tokens": self.task.max_new_tokens,
            **paired(timing["method"], timing["ref"]),
            "timing_repeats": timing["method"]["prefill"].n,
            "peak_mem_mb": timing["peak_mem_mb"],
            "kv_cache_mb": run.kv_bytes / 2**20,
            "device": spec.device,
            "dtype": spec.dtype,
            **attention_backends(spec.device, spec.attn_implementation),
            "batch_size": spec.batch_size,
            "params": method.params(),
            "task_version": task.version,
            "task_options": _options_of(task),
            "dataset": getattr(task, "dataset_ids", lambda: (task.dataset,))()[0] if not getattr(task, "data", "")
            else f"local:{os.path.abspath(task.data)}",
            "model_source": self.adapter.source,
            "seed": spec.seed,
            "processes": spec.processes,  # computed the samples (tokenbench.parallel); the timings are one process's
            "limit": spec.limit,
            "provenance": self.prov,
            # where the samples came from: read back from the store, or computed by this run (not a result field)
            "store": None if self.store is None else {"path": self.store.path, "samples_reused": self.reused,
                                                      "samples_computed": self.computed},
        }


def _options_of(task) -> dict[str, Any]:
    """The task's options as they were resolved (its dataclass fields), for the rows."""
    if not dataclasses.is_dataclass(task):
        return {}
    return {f.name: getattr(task, f.name) for f in dataclasses.fields(task) if f.init}
