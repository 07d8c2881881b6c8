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

from tokenbench.errors import ConfigError
from tokenbench.budgets import Budget

#: 64, 128 and 192 of LLaVA-1.5's 576 tokens, as shares, so AnyRes and dynamic-resolution images get the same cut
DEFAULT_BUDGETS = (Budget(ratio=1 / 9), Budget(ratio=2 / 9), Budget(ratio=1 / 3))
#: what an option left out means on a GPU: the whole benchmark
GPU_DEFAULTS: dict[str, Any] = {"methods": (), "budgets": DEFAULT_BUDGETS, "dtype": "bfloat16", "layers": None,
                                "repeats": 5, "warmup": 2}
#: ... and on a CPU: a quick look, 3 min 21 s for LLaVA-1.5-7B on 2 idle cores of an AMD EPYC server (measured). float32, because
#: CPUs without native bfloat16 (AVX2 only) emulate its matmuls about 6x slower than float32.
CPU_DEFAULTS: dict[str, Any] = {"methods": (("fastv", {}), ("alvts", {})), "budgets": (Budget(ratio=1 / 9),), "dtype": "float32",
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
    from tokenbench.harness.plan import check_method_plans, flops_cost

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


def _bench_model(adapter, spec: BenchSpec, methods: list, say: Callable[[str], None]) -> list[dict]:
    import torch

    from tokenbench.measure.accounting import prefill_count
    from tokenbench.api import Prepared, Reduction, build_method
    from tokenbench.measure.latency import time_with_full
    from tokenbench.results import rows
    from tokenbench.budgets import variant
    from tokenbench.results.provenance import provenance
    from tokenbench.harness.plan import flops_cost, keep_rule

    torch.manual_seed(spec.seed)
    batch = adapter.encode([bench_sample(adapter, spec.n_text, spec.image_size, spec.seed)])
    n_visual, n_text = batch.layout.n_visual, batch.n_text[0]
    keeps = [b.resolve(n_visual) for b in spec.budgets]
    lm, encoder = adapter.lm_dims(), adapter.encoder_macs(spec.image_size)
    total_layers = adapter.config_layers
    cells: dict[str, dict[str, Any]] = {}
    cuda = spec.device.startswith("cuda")
    per_cell = 1 + spec.warmup + spec.repeats + (1 if cuda else 0)  # FLOPs count, rounds, peak memory
    progress = _Progress(adapter.name, per_cell * (1 + len(methods) * len(keeps)), say)

    def add(label, method, keep, artefact, info):
        with adapter.reduction(Reduction(method, keep, seed=spec.seed, artefact=artefact)) as router:
            gen = adapter.generate(batch, 1, router=router)
            record = router.record if router is not None else None
        per_layer = record.visual_per_layer if record is not None else [n_visual] * adapter.n_layers
        count = prefill_count(lm, encoder, n_text, per_layer, record, method)
        cells[label] = {"method": method, "keep": keep, "artefact": artefact, "flops": count, "kv": gen.kv_cache_bytes,
                        "per_layer": per_layer, **info}
        progress(label, "FLOPs count")

    add("full", build_method("full"), n_visual, None, {"prepared": {}, "warnings": []})
    for method in methods:
        # a warning here is about selection quality (ALVTS uncalibrated): random weights make that moot, not shown
        say(f"{adapter.name}: preparing {method.name} (untimed)")  # ALVTS's SVD initialisation takes a while
        prep = Prepared.of(method.prepare(adapter.weights()))
        (match,) = _match(spec)
        cost_of = flops_cost(adapter, n_text, {n_visual: spec.image_size})
        for budget, keep in zip(spec.budgets, keeps):
            own = keep_rule(method, budget, match, adapter.n_layers, cost_of)(n_visual)
            add(f"{method.name}@{budget.label()}", variant(method, match), own, prep.artefact,
                {"budget": budget, "budget_keep": keep, "match": match, "prepared": prep.info,
                 "warnings": [prep.warning] if prep.warning else []})
    variants = {label: Reduction(c["method"], c["keep"], seed=spec.seed, artefact=c["artefact"])
                for label, c in cells.items()}
    timings = time_with_full(adapter, batch, variants, spec.new_tokens, spec.warmup, spec.repeats, on_run=progress,
                             on_peak=lambda label: progress(label, "peak memory"))
    prov = provenance(spec.device, spec.seed)
    full = cells["full"]
    out = []
    for label, c in cells.items():
        method, count = c["method"], c["flops"]
        keep = c.get("budget_keep", c["keep"])
        out.append({
            **rows.identity_fields(method, model=adapter.name, budget=c.get("budget", Budget()),
                                   convention=c.get("match"), keep=keep, method_keep=c["keep"],
                                   keep_ratio=keep / n_visual, n_visual=n_visual),
            **rows.input_fields(n_text=n_text, image_size=list(spec.image_size or adapter.typical_size),
                                llm_layers=adapter.n_layers, llm_layers_of=total_layers),
            **rows.flops_fields(count.total_flops, full["flops"].total_flops, count.as_flops_dict(),
                                tokens_avg_layer=sum(c["per_layer"]) / len(c["per_layer"]), convention=False,
                                predicted_speedup=True),
            **rows.timing_fields(timings[label], decode_tokens=spec.new_tokens, kv_cache_bytes=c["kv"],
                                 warmup=spec.warmup),
            **rows.setup_fields(method, device=spec.device, dtype=spec.dtype,
                                attn_implementation=spec.attn_implementation,
                                weights="random (normal, initializer_range), built from the shipped config"),
            **rows.provenance_fields(prov),
            **rows.preparation_fields(c["prepared"], c["warnings"]),
        })
    return out

