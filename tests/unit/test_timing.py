"""The timing protocol: warm-up is untimed, variants alternate in rotating order, medians and IQR are right."""

from __future__ import annotations

import pytest

from tokenbench.measure.timing import Stats, interleaved


def test_interleaved_rotates_and_skips_warmup():
    calls: list[str] = []
    seconds = {"a": iter([9.0, 9.0, 0.001, 0.003, 0.002, 0.004]), "b": iter([9.0, 9.0, 0.010, 0.030, 0.020, 0.040])}

    def make(name):
        def run():
            calls.append(name)
            return {"prefill": next(seconds[name])}

        return run

    stats = interleaved({"a": make("a"), "b": make("b")}, warmup=2, repeats=4)
    assert calls[:4] == ["a", "b", "a", "b"]  # warm-up
    assert calls[4:] == ["a", "b", "b", "a", "a", "b", "b", "a"]  # the order rotates every round
    assert stats["a"]["prefill"].median_ms == 2.5 and stats["b"]["prefill"].median_ms == 25.0  # warm-up (9 s) excluded
    assert stats["a"]["prefill"].n == 4


def test_stats_iqr():
    s = Stats.of([0.001, 0.002, 0.003, 0.004, 0.100])
    assert s.median_ms == 3.0 and s.n == 5
    # exclusive quartiles of 1, 2, 3, 4, 100 ms: Q1 = 1.5, Q3 = 4 + (100 - 4) / 2 = 52; the outlier widens the IQR
    # but is not the median
    assert s.iqr_ms == pytest.approx(50.5)


def test_clock_on_cpu_measures_elapsed_perf_counter_time():
    import time

    from tokenbench.measure.timing import Clock

    clock = Clock("cpu")
    assert not clock.cuda
    start = clock.mark()
    time.sleep(0.02)
    assert 0.02 <= clock.seconds(start, clock.mark()) < 1.0
