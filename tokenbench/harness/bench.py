"""``tokenbench bench``: speed at real scale without real weights.

Speed does not depend on what the weights have learned, so each model is built at its configuration's full size (the
hub configs ship in ``models/configs/``) with random weights, directly on the target device and dtype
(:meth:`tokenbench.hf.adapter.ModelAdapter.build_random`), optionally truncated to its first ``layers`` LLM layers for a
CPU. The input is what a benchmark feeds it: one image (default: the adapter's typical 640 x 480 photo, which
LLaVA-1.5 resizes and crops to 336 x 336, LLaVA-NeXT tiles by AnyRes and Qwen2.5-VL resizes dynamically) and a
POPE-length prompt (``n_text`` non-visual prompt tokens, 60 by default, as ``tokenbench flops`` assumes).

Every (method, budget) cell and ``full`` are timed side by side in one interleaved group per model
(:mod:`tokenbench.measure.latency`), so every speed-up is a ratio of medians from the same rounds. Beside each measured
prefill speed-up stands the one the FLOPs predict (full's prefill FLOPs over the method's, counted from what the
router recorded in an untimed run of the same input).

Options left out mean the whole benchmark on a GPU and a quick look on a CPU (:data:`CPU_DEFAULTS`: two methods, one
budget, two layers, float32, three rounds), which finishes in minutes. Every finished run is reported (``on_progress``)
so a long run shows it is alive.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from tokenbench.budgets import DEFAULT_BUDGET, DEFAULT_BUDGETS, Budget
from tokenbench.errors import ConfigError

#: what an option left out means on a GPU: the whole benchmark
GPU_DEFAULTS: dict[str, Any] = {"methods": (), "budgets": DEFAULT_BUDGETS, "dtype": "bfloat16", "layers": None,
                                "repeats": 5, "warmup": 2}
#: ... and on a CPU: a quick look, 3 min 21 s for LLaVA-1.5-7B on 2 idle cores of an AMD EPYC server (measured). float32, because
#: CPUs without native bfloat16 (AVX2 only) emulate its matmuls about 6x slower than float32.
CPU_DEFAULTS: dict[str, Any] = {"methods": (("fastv", {}), ("alvts", {})), "budgets": (DEFAULT_BUDGET,), "dtype": "float32",
                                "layers": 2, "repeats": 3, "warmup": 1}
POPE_QUESTION = "Is there a dog in the image? Answer the question using a single word or phrase. "


@dataclass(frozen=True)
class BenchSpec:
    methods: tuple[tuple[str, dict[str, Any]], ...] = ()  # () = every registered method the model supports
    models: tuple[str, ...] = ("llava-1.5-7b",)
    budgets: tuple[Budget, ...] = DEFAULT_BUDGETS
    device: str = "cpu"
    dtype: str = "bfloat16"
    layers: int | None = None  # keep the first N LLM layers (None: all, or at most ``default_layers``)
    default_layers: int | None = None  # without ``layers``: keep at most this many (the CPU default)
    n_text: int = 60
    image_size: tuple[int, int] | None = None
    new_tokens: int = 8
    warmup: int = 2
    repeats: int = 5
    seed: int = 0
    attn_implementation: str = "sdpa"
    compile: bool = False  # time the layers through torch.compile (tokenbench.engine.compiled)
    named: frozenset = field(default_factory=frozenset)  # methods the user named: refused, not skipped, if unsupported
    match: Any = None  # the budget convention (tokenbench.budgets.Convention); None: matched


def defaults_for(device: str) -> dict[str, Any]:
    """What the options left out mean on ``device``: :data:`GPU_DEFAULTS` on CUDA, else :data:`CPU_DEFAULTS`."""
    return GPU_DEFAULTS if device.startswith("cuda") else CPU_DEFAULTS


def cpu_note(left_out: set[str]) -> str:
    """The one line that says which of the quick CPU defaults a run took (``left_out``: keys of CPU_DEFAULTS)."""
    from fractions import Fraction

    d = CPU_DEFAULTS
    parts = {"methods": " and ".join(name for name, _ in d["methods"]),
             "budgets": "keep-ratio " + ",".join(str(Fraction(b.ratio).limit_denominator(64)) for b in d["budgets"]),
             "layers": f"the first {d['layers']} LLM layers", "dtype": f"{d['dtype']} (CPUs without native bfloat16 "
             "emulate it, slowly)", "repeats": f"{d['repeats']} timed rounds", "warmup": f"{d['warmup']} warm-up"}
    took = ", ".join(text for key, text in parts.items() if key in left_out)
    return (f"a quick CPU run: {took}; for more, name the methods or give --keep-ratio 0.111,0.222,0.333, --layers, "
            "--dtype, --repeats, --warmup")


def bench_sample(adapter, n_text: int, size: tuple[int, int] | None, seed: int):
    """One sample: a random-noise image of ``size`` and a POPE-style question cut so that the prompt has exactly
    ``n_text`` non-visual tokens (structural image tokens, LLaVA-NeXT's newlines, not included)."""
    import numpy as np
    from PIL import Image

    from tokenbench.contract.task import Sample

    width, height = size or adapter.typical_size
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB")

    def text_tokens(question: str) -> int:
        batch = adapter.encode([Sample("bench", image, question, "")])
        return batch.n_text[0] - batch.layout.n_structural

    base = text_tokens("")
    if n_text < base + 1:
        raise ConfigError(f"--n-text {n_text} is below what {adapter.name}'s prompt template alone takes ({base} "
                          f"tokens) plus one question token; use at least {base + 1}")
    question = (POPE_QUESTION * (n_text // len(POPE_QUESTION) + 1))[: n_text - base]  # one byte-level token a char
    sample = Sample("bench", image, question, "")
    got = text_tokens(question)
    if got != n_text:
        raise RuntimeError(f"the bench prompt has {got} text tokens, not {n_text}")
    return sample


def _methods_for(adapter, spec: BenchSpec, depth: int, on_note) -> list:
    """The methods to time on ``adapter`` truncated to ``depth`` LLM layers, checked from its config alone (before it
    is built): one it cannot run is skipped with a note, or refused when the user named it."""
    from tokenbench.api import METHODS, build_method
    from tokenbench.errors import IncompatibleError
    from tokenbench.budgets import flops_cost
    from tokenbench.harness.plan import check_method_plans

    specs = spec.methods or tuple((name, {}) for name in METHODS.names() if name != "full")
    out = []
    for name, options in specs:
        if name not in spec.named and not METHODS.usable(name):  # a broken or ambiguous plugin: a warning, not fatal
            continue
        method = build_method(name, options)
        try:
            layout = adapter.layout(spec.image_size)
            check_method_plans(method, adapter, [layout], spec.budgets, n_layers=depth, match=_match(spec),
                               cost_of=flops_cost(adapter, spec.n_text, {layout.n_visual: spec.image_size}))
        except (IncompatibleError, ConfigError) as exc:
            full_depth = adapter.text_config().num_hidden_layers
            if depth < full_depth:  # the depth is bench's cut: say which option made it, and how to change it
                exc = type(exc)(f"{exc} (bench keeps the first {depth} of {adapter.name}'s {full_depth} LLM layers "
                                f"here: give a larger --layers, up to {full_depth})")
            if name in spec.named:
                raise exc from None
            on_note(f"skipped {name} on {adapter.name}: {exc}")
            continue
        out.append(method)
    return out


def bench(spec: BenchSpec, on_row: Callable[[dict], None] | None = None,
          on_note: Callable[[str], None] | None = None, on_progress: Callable[[str], None] | None = None,
          note: str = "") -> list[dict]:
    """Time ``full`` and each method at each budget on each model of ``spec``; one row per cell (``full`` first).
    Everything is checked before any model is built; then ``note`` and the notes of the checks (methods skipped) go
    to ``on_note``, and ``on_progress`` gets a line for each model built and each run finished."""
    from tokenbench.hf.adapter import check_device
    from tokenbench.harness.resolve import resolve_model

    from tokenbench.config import check_counts

    check_counts(layers=(spec.layers, 1, 2), n_text=(spec.n_text, 1, 60), new_tokens=(spec.new_tokens, 1, 8),
                 repeats=(spec.repeats, 1, 3), warmup=(spec.warmup, 0, 1))  # each on its own, before anything is built
    check_device(spec.device)
    say = on_progress or (lambda _: None)
    notes = [note] if note else []
    adapters = [resolve_model(name).load_config() for name in spec.models]  # unknown names fail before any build
    plans = []
    for adapter in adapters:  # and so does a depth, budget or method some model cannot take
        depth = adapter.text_config().num_hidden_layers
        layers = spec.layers
        if layers is None and spec.default_layers is not None:
            layers = min(spec.default_layers, depth)
        if layers is not None and layers > depth:
            raise ConfigError(f"--layers {layers} is out of range: {adapter.name} has {depth} LLM layers; "
                              f"use 1..{depth}")
        for budget in spec.budgets:
            budget.resolve(adapter.layout(spec.image_size).n_visual)
        plans.append((adapter, layers, _methods_for(adapter, spec, layers or depth, notes.append)))
    for line in notes:  # only now: a refused run says one thing, its error
        (on_note or (lambda _: None))(line)
    rows: list[dict] = []
    for adapter, layers, methods in plans:
        kept = f"{layers} of {adapter.text_config().num_hidden_layers}" if layers else "all"
        say(f"{adapter.name}: building with random weights ({kept} LLM layers, {spec.dtype}, {spec.device})")
        start = time.perf_counter()
        adapter.build_random(spec.device, spec.dtype, spec.attn_implementation, layers=layers, seed=spec.seed)
        say(f"{adapter.name}: built in {_duration(time.perf_counter() - start)}")
        for row in _bench_model(adapter, spec, methods, say):
            rows.append(row)
            if on_row:
                on_row(row)
        adapter.model = None  # free the weights before the next model is built
        if spec.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
    return rows


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


class _Progress:
    """One line per finished run of a model: which, how long it took, how many of the model's runs are done, and
    about how long the rest will take (from the mean so far)."""

    def __init__(self, model: str, total: int, say: Callable[[str], None]) -> None:
        self.model, self.total, self.say = model, total, say
        self.done = 0
        self.start = self.last = time.perf_counter()

    def __call__(self, label: str, stage: str) -> None:
        now = time.perf_counter()
        self.done += 1
        left = (now - self.start) / self.done * (self.total - self.done)
        self.say(f"{self.model}: {stage} {label} {now - self.last:.1f} s ({self.done}/{self.total} runs, "
                 f"about {_duration(left)} left)")
        self.last = now


def _match(spec: BenchSpec) -> tuple:
    from tokenbench.budgets import MATCHED

    return (spec.match or MATCHED,)


@dataclass(frozen=True)
class _Counted:
    """What an untimed run of a cell on the bench input recorded: its prefill FLOPs (a PrefillCount), KV cache bytes,
    visual tokens per LLM layer and the prefill's kernels and host syncs (a tokenbench.measure.kernels.Counts)."""

    flops: Any
    kv_bytes: float
    per_layer: list[int]
    kernels: Any


def _bench_model(adapter, spec: BenchSpec, methods: list, say: Callable[[str], None]) -> list[dict]:
    """``full`` and every (method, budget) cell on one built model: each counted (FLOPs, untimed), then all timed
    together by the latency protocol (:func:`tokenbench.measure.latency.time_with_full`); one row per cell."""
    import torch

    from tokenbench.api import Reduction
    from tokenbench.measure.latency import time_with_full
    from tokenbench.results.provenance import provenance

    torch.manual_seed(spec.seed)
    batch = adapter.encode([bench_sample(adapter, spec.n_text, spec.image_size, spec.seed)])
    n_visual = batch.layout.n_visual
    cuda = spec.device.startswith("cuda")
    per_cell = 1 + spec.warmup + spec.repeats + (1 if cuda else 0)  # FLOPs count, rounds, peak memory
    progress = _Progress(adapter.name, per_cell * (1 + len(methods) * len(spec.budgets)), say)
    counted = _count_cells(adapter, spec, methods, batch, progress, say)
    variants = {label: Reduction(cell.method, cell.keep_of(n_visual), seed=spec.seed, artefact=cell.artefact)
                for label, (cell, _) in counted.items()}
    timings = time_with_full(adapter, batch, variants, spec.new_tokens, spec.warmup, spec.repeats, on_run=progress,
                             on_peak=lambda label: progress(label, "peak memory"), compile=spec.compile)
    prov = provenance(spec.device, spec.seed)
    full = counted["full"][1].flops.total_flops
    return [_bench_row(adapter, spec, batch, cell, count, timings[label], full, prov)
            for label, (cell, count) in counted.items()]


def _count_cells(adapter, spec: BenchSpec, methods: list, batch, progress, say) -> dict[str, tuple[Any, _Counted]]:
    """Label -> (cell, what its untimed run counted): ``full``, then each method (prepared from the weights, untimed)
    at each budget under the run's convention."""
    from tokenbench.api import Prepared, build_method
    from tokenbench.budgets import flops_cost, keep_rule, variant
    from tokenbench.harness.plan import Cell, MethodPlan

    n_visual, n_text = batch.layout.n_visual, batch.n_text[0]
    (match,) = _match(spec)
    everything = Budget()
    full = Cell(build_method("full"), everything, match, everything.resolve)
    counted = {"full": (full, _count(adapter, batch, full, spec))}
    progress("full", "FLOPs count")
    for method in methods:
        # a warning here is about selection quality (ALVTS uncalibrated): random weights make that moot, not shown
        say(f"{adapter.name}: preparing {method.name} (untimed)")  # ALVTS's SVD initialisation takes a while
        start = time.perf_counter()
        prep = Prepared.of(method.prepare(adapter.weights()))
        planned = MethodPlan(method, method.name, prep, time.perf_counter() - start, None)
        cost_of = flops_cost(adapter, n_text, {n_visual: spec.image_size})
        for budget in spec.budgets:
            cell = Cell(variant(method, match), budget, match,
                        keep_rule(method, budget, match, adapter.n_layers, cost_of), planned)
            label = f"{method.name}@{budget.label()}"
            counted[label] = (cell, _count(adapter, batch, cell, spec))
            progress(label, "FLOPs count")
    return counted


def _count(adapter, batch, cell, spec: BenchSpec) -> _Counted:
    """One untimed generation of one token under ``cell``: the prefill FLOPs of what the router recorded, and the
    kernels and host syncs it launched (:mod:`tokenbench.measure.kernels`)."""
    from tokenbench.api import Reduction
    from tokenbench.measure.accounting import prefill_count

    from tokenbench.measure.kernels import count_prefill

    n_visual = batch.layout.n_visual
    reduction = Reduction(cell.method, cell.keep_of(n_visual), seed=spec.seed, artefact=cell.artefact)
    kernels, gen, record = count_prefill(adapter, batch, reduction)
    per_layer = record.visual_per_layer if record is not None else [n_visual] * adapter.n_layers
    count = prefill_count(adapter.lm_dims(), adapter.encoder_macs(spec.image_size), batch.n_text[0], per_layer, record,
                          cell.method)
    return _Counted(count, gen.kv_cache_bytes, per_layer, kernels)


def _bench_row(adapter, spec: BenchSpec, batch, cell, count: _Counted, timing, full_flops: float, prov: dict) -> dict:
    """A cell's row, in the schema of :mod:`tokenbench.results.rows`."""
    from tokenbench.results import rows

    n_visual = batch.layout.n_visual
    keep = cell.budget.resolve(n_visual)
    info, warnings, _ = cell.preparation()
    return {
        **rows.identity_fields(cell.method, model=adapter.name, budget=cell.budget, convention=cell.convention,
                               keep=keep, method_keep=cell.keep_of(n_visual), keep_ratio=keep / n_visual,
                               n_visual=n_visual),
        **rows.input_fields(n_text=batch.n_text[0], image_size=list(spec.image_size or adapter.typical_size),
                            llm_layers=adapter.n_layers, llm_layers_of=adapter.config_layers),
        **rows.flops_fields(count.flops.total_flops, full_flops, count.flops.as_flops_dict(),
                            tokens_avg_layer=sum(count.per_layer) / len(count.per_layer), convention=False,
                            predicted_speedup=True),
        **rows.kernel_fields(count.kernels, adapter.n_layers),
        **rows.timing_fields(timing, decode_tokens=spec.new_tokens, kv_cache_bytes=count.kv_bytes, warmup=spec.warmup),
        **rows.setup_fields(cell.method, device=spec.device, dtype=spec.dtype,
                            attn_implementation=spec.attn_implementation,
                            weights="random (normal, initializer_range), built from the shipped config"),
        **rows.provenance_fields(prov),
        **rows.preparation_fields(info, warnings),
    }

