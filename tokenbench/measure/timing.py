"""Wall-clock timing: a device clock, warm-up, interleaved repeats, median and inter-quartile range.

The protocol (README, "Timing"): every variant of a comparison runs in one process on one model instance; ``warmup``
untimed rounds, then ``repeats`` rounds in which each variant runs once, in an order that rotates from round to round,
so drift (clocks, thermals, other load) hits all alike. A run reports the seconds of each of its stages; each stage's
figure is the median over the rounds, with its IQR.

:class:`Clock` marks points on the device's own timeline: CUDA events on a GPU (recorded on the stream, read after
one synchronisation at the end of the run, so timing adds no synchronisation in between), ``time.perf_counter`` on a
CPU. CPU timings are only meaningful as ratios measured side by side; FLOPs are the primary efficiency figure.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Stats:
    median_ms: float
    iqr_ms: float
    n: int

    @classmethod
    def of(cls, seconds: list[float]) -> "Stats":
        ms = sorted(s * 1e3 for s in seconds)
        if len(ms) >= 4:
            q = statistics.quantiles(ms, n=4)
            iqr = q[2] - q[0]
        else:
            iqr = ms[-1] - ms[0]
        return cls(statistics.median(ms), iqr, len(ms))


class Clock:
    """Time points on ``device``'s timeline: ``mark()`` returns one, ``seconds(a, b)`` the time between two (on CUDA
    this waits for ``b`` to be reached, so call it after the timed work)."""

    def __init__(self, device: str = "cpu") -> None:
        self.cuda = str(device).startswith("cuda")

    def mark(self):
        if self.cuda:
            import torch

            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def seconds(self, a, b) -> float:
        if self.cuda:
            b.synchronize()
            return a.elapsed_time(b) / 1e3
        return b - a


def interleaved(runs: dict[str, Callable[[], dict[str, float]]], warmup: int, repeats: int,
                on_run: Callable[[str, str], None] | None = None) -> dict[str, dict[str, Stats]]:
    """Time several variants side by side: ``warmup`` untimed rounds, then ``repeats`` rounds in which every variant
    runs once, in an order that rotates from round to round. Each callable returns the seconds of each of its stages
    (``{"prefill": ..., "e2e": ...}``); the result holds every variant's :class:`Stats` per stage. ``on_run(name,
    round)`` is told of every finished run (``round``: "warm-up 1/2", "round 3/5"), to show progress."""
    names = list(runs)
    done = on_run or (lambda name, round_: None)
    for w in range(warmup):
        for name in names:
            runs[name]()
            done(name, f"warm-up {w + 1}/{warmup}")
    times: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            for stage, seconds in runs[name]().items():
                times[name].setdefault(stage, []).append(seconds)
            done(name, f"round {r + 1}/{repeats}")
    return {name: {stage: Stats.of(ts) for stage, ts in stages.items()} for name, stages in times.items()}
