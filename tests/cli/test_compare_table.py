"""`tokenbench compare`'s table: each printed prefill speed-up stands beside the two paired medians it is the ratio of.

A method is timed in rounds alternating with `full` and its speed-up is full's median from those rounds over the
method's (``full_prefill_ms_paired / prefill_ms``); `full`'s own row is timed alone. Printing full's separate time
as the only reference made rows read as contradictions ("full 11.8 ms, fastv 14.9 ms, speed-up 1.11").
"""

from __future__ import annotations

import pytest

from test_cli_errors import invoke
from tokenbench.results.tables import COMPARE_COLUMNS, SPEEDUP_NOTE, TIMING_NOTE, format_table
from tokenbench.measure.latency import paired, summary
from tokenbench.measure.timing import Stats

FAST = ["--limit", "2", "--repeats", "1", "--warmup", "0", "-q"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tokenbench-cache"))


def _stats(prefill_ms: float) -> dict[str, Stats]:
    return {"vision": Stats(0.2 * prefill_ms, 0.01, 5), "prefill": Stats(prefill_ms, 0.1, 5),
            "decode": Stats(3.0, 0.1, 5), "e2e": Stats(prefill_ms + 9.0, 0.2, 5), "overhead": Stats(0.05, 0.01, 5)}


def _row(method: str, own: dict[str, Stats], ref: dict[str, Stats]) -> dict:
    """A row with the fields format_table reads, the timing ones made exactly as the runner makes them."""
    return {"method": method, "model": "m", "task": "t", "n_samples": 2, "device": "cpu", "dtype": "float32",
            "attn_implementation": "sdpa", "decode_tokens": 4, "timing_repeats": 5, "keep": 16,
            "budget_kind": "kept", "accuracy": 0.5, "retention": 0.5, "agreement": 0.5, "kl_first_token": 0.1,
            "tokens_llm_input": 16, "tokens_avg_layer": 16.0, "flops_prefill": 1e9, "flops_ratio": 0.5,
            "warnings": [], **summary(own), **paired(own, ref)}


def _table(text: str) -> list[dict[str, str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    headers, body = cells[0], cells[2:]  # cells[1] is the |---| rule
    return [dict(zip(headers, row)) for row in body]


def _check_consistent(printed: list[dict[str, str]]) -> None:
    assert printed and {"prefill ms", "full ms (paired)", "speed-up"} <= set(printed[0])
    for row in printed:
        if row["method"] == "full":
            assert row["full ms (paired)"] == "-" and float(row["speed-up"]) == 1
            continue
        full, own, speedup = float(row["full ms (paired)"]), float(row["prefill ms"]), float(row["speed-up"])
        # times print with >= 3 significant figures (<= 0.5 % rounding each), the speed-up with 2 decimals
        assert abs(speedup - full / own) <= 0.005 + 0.011 * full / own, row


def test_the_speedup_is_printed_beside_the_paired_times_it_comes_from():
    full_alone = _stats(11.8)  # full's own row: timed in rounds of its own
    rows = [_row("full", full_alone, full_alone)]
    for method, own_ms, paired_full_ms in [("fastv", 14.9, 16.5), ("alvts", 0.412, 0.978), ("pdrop", 1234.5, 1500.2),
                                           ("dart", 9.996, 10.04), ("random", 100.04, 99.95)]:
        rows.append(_row(method, _stats(own_ms), _stats(paired_full_ms)))
    text = format_table(rows, wide=True)
    printed = _table(text)
    _check_consistent(printed)
    by_method = {r["method"]: r for r in printed}
    assert by_method["full"]["prefill ms"] == "11.8"
    assert (by_method["fastv"]["prefill ms"], by_method["fastv"]["full ms (paired)"],
            by_method["fastv"]["speed-up"]) == ("14.9", "16.5", "1.11")
    assert TIMING_NOTE in text.splitlines()  # says what each timing column is
    assert "timed alone" in TIMING_NOTE and "same rounds" in TIMING_NOTE


def test_a_real_compare_prints_consistent_speedups(cache):
    result = invoke(cache, "compare", "fastv", "random", "-M", "tiny-llava", "--wide", *FAST)
    assert result.exit_code == 0, result.output
    printed = _table(result.stdout)
    assert [r["method"] for r in printed] == ["full", "fastv", "random"]
    _check_consistent(printed)


def test_the_default_table_fits_120_columns_and_wide_shows_every_column(cache):
    """`compare` prints the main columns in 120 characters (with several conventions, failures, a method's options in
    its label); --wide prints every column."""
    result = invoke(cache, "compare", "alvts", "fastv", *FAST)
    assert result.exit_code == 0, result.output
    table = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert table and max(map(len, table)) <= 120, "\n".join(table)
    head = [line for line in result.stdout.splitlines() if line.startswith("model=")]
    assert head and max(map(len, head)) <= 120
    printed = _table(result.stdout)
    assert list(printed[0]) == ["method", "keep", "accuracy %", "retention %", "agree %", "FLOPs ratio", "speed-up"]
    every = [c.header for c in COMPARE_COLUMNS if isinstance(c.header, str)]
    assert not set(every) <= set(printed[0])  # some columns are left to --wide
    wide = invoke(cache, "compare", "alvts", "fastv", "--wide", *FAST)
    assert wide.exit_code == 0, wide.output
    assert list(_table(wide.stdout)[0]) == ["method", "keep", "accuracy %", *every[2:]]
    # the timing note speaks of the timing columns each table shows
    assert SPEEDUP_NOTE in result.stdout.splitlines() and TIMING_NOTE not in result.stdout
    assert TIMING_NOTE in wide.stdout.splitlines() and SPEEDUP_NOTE not in wide.stdout
    assert len(SPEEDUP_NOTE) <= 120
    full = _row("full", _stats(11.8), _stats(11.8))
    conventions = [dict(_row(m, _stats(14.9), _stats(16.5)), match=match, method_keep=4, n_failed=1)
                   for m in ("fastv", "sparsevlm") for match in ("matched", "nominal", "flops=alvts")]
    option = [dict(_row("fastv", _stats(14.9), _stats(16.5)), label="fastv[layer=3]", match=match, method_keep=4)
              for match in ("matched", "nominal", "flops=alvts")]
    for rows, shown in (([full, *conventions], {"budgets", "failed"}), ([full, *option], {"budgets"})):
        text = format_table(rows)
        lines = [line for line in text.splitlines() if line.startswith("|")]
        assert max(map(len, lines)) <= 120, "\n".join(lines)
        assert shown <= set(_table(text)[0])
