"""Wall-clock timing: warm-up, then repeats; median and inter-quartile range; CUDA synchronised on GPU.

CPU timings are only meaningful as ratios measured side by side in one process (see the README); FLOPs are the
primary efficiency figure.
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


def timed(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    """Seconds ``fn`` takes, with the device synchronised before and after."""
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def interleaved(runs: dict[str, Callable[[], float]], warmup: int, repeats: int) -> dict[str, Stats]:
    """Time several variants side by side: ``warmup`` untimed calls of each, then ``repeats`` rounds in which every
    variant runs once, in an order that rotates from round to round, so drift (thermal, other load) hits all alike.
    Each callable returns its own measured seconds (see :func:`timed`)."""
    names = list(runs)
    for _ in range(warmup):
        for name in names:
            runs[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            times[name].append(runs[name]())
    return {name: Stats.of(ts) for name, ts in times.items()}
