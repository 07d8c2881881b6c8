"""The latency protocol, shared by ``tokenbench compare`` and ``tokenbench bench``.

One timed run is a batch-1 greedy generation of exactly ``new_tokens`` tokens (the end token is ignored, so every
variant decodes the same number of steps) on one model instance. :class:`tokenbench.measure.timing.Clock` marks, on the
device's timeline (CUDA events on a GPU, ``perf_counter`` on a CPU), the start, the vision stage (the vision tower's
input to the projector's output, by hooks), the first token and the end. Its stages:

* ``vision``: vision tower and projector (or merger);
* ``prefill``: time to the first token (preprocessing excluded: inputs are on the device already);
* ``decode``: per generated token after the first, ``(end - first token) / (new_tokens - 1)``;
* ``e2e``: the whole generation;
* ``overhead``: the method's own work inside the prefill (signals and ``select``), from the router's marks.

Variants run interleaved (:func:`tokenbench.measure.timing.interleaved`): warm-up rounds, then rounds in a rotating order;
every stage is reported as median and IQR over the rounds. Peak memory is a separate run after the timed ones.
:func:`time_with_full` is the whole protocol, the one both commands call: a method is timed beside ``full`` and its
speed-ups are ratios of medians from those same rounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from tokenbench.measure.timing import Clock, Stats, interleaved

STAGES = ("vision", "prefill", "decode", "e2e", "overhead")

#: the variant every other is paired with
FULL = "full"


@dataclass(frozen=True)
class Timing:
    """One variant's figures by the protocol: its stages, ``full``'s from the same rounds (its own where it ran without
    ``full``, or is ``full``) and its peak memory (None where not measured)."""

    stats: dict[str, Stats]
    full: dict[str, Stats]
    peak_mem_mb: float | None
    compile_s: float | None = None  # --compile: seconds of the untimed first run that compiled this variant's shapes


def time_with_full(adapter, batch, variants: dict, new_tokens: int, warmup: int, repeats: int,
                   peak: Iterable[str] | None = None, on_run: Callable[[str, str], None] | None = None,
                   on_peak: Callable[[str], None] | None = None, compile: bool = False) -> dict[str, Timing]:
    """Time ``variants`` (``name -> Reduction``; the one named :data:`FULL` is what the others are paired with)
    interleaved on ``batch``, then measure the peak memory of those named in ``peak`` (default: every one), one after
    another. ``on_run``: see :func:`tokenbench.measure.timing.interleaved`; ``on_peak(name)``: told of every peak
    measured (on CUDA only: elsewhere there is no per-run figure). ``compile``: every variant runs its layers compiled
    (:mod:`tokenbench.engine.compiled`); each is run once first, untimed, to compile its shapes (its ``compile_s``)."""
    with _compiled(adapter, compile):
        compile_s = {name: _warm(adapter, batch, reduction, new_tokens) for name, reduction in variants.items()} \
            if compile else {}
        stats = time_variants(adapter, batch, variants, new_tokens, warmup, repeats, on_run=on_run)
        wanted = set(variants if peak is None else peak)
        out = {}
        for name, reduction in variants.items():
            mb = peak_memory_mb(adapter, batch, reduction, new_tokens) if name in wanted else None
            if mb is not None and on_peak:
                on_peak(name)
            out[name] = Timing(stats[name], stats.get(FULL, stats[name]), mb, compile_s.get(name))
    return out


def _compiled(adapter, compile: bool):
    import contextlib

    if not compile:
        return contextlib.nullcontext()
    from tokenbench.engine.compiled import compiled_layers

    return compiled_layers(adapter.decoder_layers(), adapter.device)


def _warm(adapter, batch, reduction, new_tokens: int) -> float:
    """Seconds of one untimed generation (under compiled layers: the compilation of every shape it meets)."""
    from tokenbench.engine.compiled import warm

    def run():
        with adapter.reduction(reduction) as router:
            adapter.generate(batch, new_tokens, router=router, ignore_eos=True)

    try:
        return warm(run)
    except Exception as exc:  # torch.compile's own failure (no C compiler, an unsupported op): say so, no traceback
        from tokenbench.errors import TokenbenchError

        if isinstance(exc, TokenbenchError):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TokenbenchError(f"--compile: torch.compile failed on {adapter.device} ({type(exc).__name__}: "
                              f"{first[:300]}); run without --compile, or fix the compiler set-up (inductor needs a "
                              "C++ compiler on a CPU, Triton on a GPU)") from exc


def stage_seconds(gen, clock: Clock, router=None) -> dict[str, float]:
    """The stages of one generation made with ``clock`` (see the module docstring)."""
    m = gen.marks
    out = {"prefill": clock.seconds(m["start"], m["first_token"]), "e2e": clock.seconds(m["start"], m["end"])}
    if "vision_start" in m and "vision_end" in m:
        out["vision"] = clock.seconds(m["vision_start"], m["vision_end"])
    if gen.n_steps > 1:
        out["decode"] = clock.seconds(m["first_token"], m["end"]) / (gen.n_steps - 1)
    out["overhead"] = router.record.overhead_s if router is not None else 0.0
    return out


def time_variants(adapter, batch, variants: dict, new_tokens: int, warmup: int, repeats: int,
                  on_run=None) -> dict[str, dict[str, Stats]]:
    """Time each variant ``name -> Reduction`` on ``batch`` side by side; Stats per stage.
    ``on_run``: see :func:`tokenbench.measure.timing.interleaved`."""
    clock = Clock(adapter.device)

    def runner(reduction):
        def run_once() -> dict[str, float]:
            with adapter.reduction(reduction) as router:
                gen = adapter.generate(batch, new_tokens, router=router, ignore_eos=True, clock=clock)
                return stage_seconds(gen, clock, router)

        return run_once

    return interleaved({name: runner(v) for name, v in variants.items()}, warmup, repeats, on_run)


def peak_memory_mb(adapter, batch, reduction, new_tokens: int) -> float | None:
    """Peak CUDA memory (MiB) of one such generation, weights included; ``None`` on a CPU (no per-run figure)."""
    if not adapter.device.startswith("cuda"):
        return None
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(adapter.device)
    with adapter.reduction(reduction) as router:
        adapter.generate(batch, new_tokens, router=router, ignore_eos=True)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated(adapter.device) / 2**20


def attention_backends(device: str, attn_implementation: str) -> dict[str, Any]:
    """What attention ran: the transformers implementation and, for SDPA on CUDA, the kernels torch may pick."""
    out: dict[str, Any] = {"attn_implementation": attn_implementation}
    if attn_implementation == "sdpa" and device.startswith("cuda"):
        import torch

        b = torch.backends.cuda
        out["sdpa_kernels_enabled"] = [name for name, on in (
            ("flash", b.flash_sdp_enabled()), ("mem_efficient", b.mem_efficient_sdp_enabled()),
            ("cudnn", getattr(b, "cudnn_sdp_enabled", lambda: False)()), ("math", b.math_sdp_enabled())) if on]
    return out


def summary(stats: dict[str, Stats]) -> dict[str, Any]:
    """Row fields of one variant: ``<stage>_ms`` and ``<stage>_iqr_ms`` (``decode_ms`` is per token)."""
    out: dict[str, Any] = {}
    for stage in STAGES:
        s = stats.get(stage)
        out[f"{stage}_ms"] = s.median_ms if s else None
        out[f"{stage}_iqr_ms"] = s.iqr_ms if s else None
    return out


def paired(method: dict[str, Stats], full: dict[str, Stats]) -> dict[str, Any]:
    """``full_<stage>_ms_paired`` (full's median from the same rounds) and ``speedup_<stage>`` = full's median over the
    method's, for prefill, decode and e2e; ``None`` where a stage did not run (one new token: no decode)."""
    out: dict[str, Any] = {}
    for stage in ("prefill", "decode", "e2e"):
        ok = stage in method and stage in full
        out[f"full_{stage}_ms_paired"] = full[stage].median_ms if ok else None
        out[f"speedup_{stage}"] = full[stage].median_ms / method[stage].median_ms if ok else None
    return out
