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


def measure(fn: Callable[[], object], warmup: int, repeats: int, sync: Callable[[], None]) -> Stats:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return Stats.of(times)
