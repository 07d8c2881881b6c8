"""The CLI on bad input: exit status 2, one line `error: ...` on stderr, no traceback, nothing computed.

Plus one run that succeeds end to end and writes the documented JSON rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from tokenbench.cli import main

FAST = ["--limit", "2", "--repeats", "1", "--warmup", "0", "-q"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tokenbench-cache"))


def _env(cache: str) -> dict[str, str]:
    env = dict(os.environ)
    env["TOKENBENCH_CACHE"] = cache
    env.pop("TOKENBENCH_DISABLE_PLUGIN_AUTOLOAD", None)
    return env


def invoke(cache: str, *args: str):
    result = CliRunner().invoke(main, list(args), env={"TOKENBENCH_CACHE": cache})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # an unexpected exception, not a handled user error: show it
    return result


def assert_user_error(exit_code: int, stderr: str, stdout: str, *fragments: str) -> str:
    assert exit_code == 2, f"exit {exit_code}; stderr={stderr!r}; stdout={stdout!r}"
    assert "Traceback" not in stderr and "Traceback" not in stdout
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {stderr!r}"
    line = lines[0]
    assert line.startswith("error: "), line
    assert stdout == "", f"nothing may be printed on stdout: {stdout!r}"
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def assert_cli_error(cache: str, args: list[str], *fragments: str) -> str:
    result = invoke(cache, *args)
    return assert_user_error(result.exit_code, result.stderr, result.stdout, *fragments)


# -- names -----------------------------------------------------------------------------------------------------------
def test_unknown_method_real_process(cache):
    """A real process: exit status 2 as the shell sees it, one line, did-you-mean."""
    proc = subprocess.run(
        [sys.executable, "-m", "tokenbench", "compare", "fastvv", *FAST],
        capture_output=True, text=True, env=_env(cache), timeout=120,
    )
    line = assert_user_error(proc.returncode, proc.stderr, proc.stdout, "Did you mean 'fastv'", "'fastvv'")
    available = line.split("Available: ", 1)[1]  # lists what is available
    assert "fastv" in available and "full" in available and "random" in available


def test_unknown_method_in_run(cache):
    assert_cli_error(cache, ["run", "fastvv", *FAST], "Did you mean 'fastv'")


def test_unknown_task(cache):
    assert_cli_error(cache, ["compare", "fastv", "--task", "synthetc", *FAST], "Did you mean 'synthetic'")


def test_unknown_model_name(cache):
    assert_cli_error(cache, ["compare", "fastv", "--model", "tiny-lava", *FAST], "Did you mean 'tiny-llava'")


def test_model_path_that_does_not_exist(cache):
    assert_cli_error(cache, ["compare", "fastv", "--model", "./no/such/dir", *FAST], "'./no/such/dir'",
                     "does not exist")


# -- budgets ---------------------------------------------------------------------------------------------------------
def test_keep_above_the_number_of_visual_tokens(cache):
    assert_cli_error(cache, ["compare", "fastv", "--keep", "1000", *FAST], "1000", "144")  # mini-llava's 144


def test_keep_out_of_range_in_a_list(cache):
    assert_cli_error(cache, ["compare", "fastv", "--keep", "64,145", *FAST], "145", "144")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--keep", "0"], "'0'"),
        (["--keep", "-5"], "'-5'"),
        (["--keep", "abc"], "'abc'"),
        (["--keep-ratio", "1.5"], "'1.5'"),
        (["--keep-ratio", "0"], "(0, 1]"),
        (["--keep-ratio", "half"], "'half'"),
        (["--keep", "64", "--keep-ratio", "0.5"], "not both"),
    ],
)
def test_bad_budget(cache, args, fragment):
    assert_cli_error(cache, ["compare", "fastv", *args, *FAST], fragment)


def test_keep_ratio_that_keeps_nothing(cache):
    assert_cli_error(cache, ["compare", "fastv", "--keep-ratio", "0.001", *FAST], "144")


# -- method options --------------------------------------------------------------------------------------------------
def test_option_of_the_wrong_type(cache):
    assert_cli_error(cache, ["compare", "fastv", "-a", "layer=abc", *FAST], "'layer'", "int", "'abc'")


def test_option_with_a_typo(cache):
    assert_cli_error(cache, ["compare", "fastv", "-a", "fastv.layr=3", *FAST], "'layr'", "Did you mean 'layer'")


def test_option_no_method_has(cache):
    assert_cli_error(cache, ["compare", "fastv", "random", "-a", "nosuch=1", *FAST], "'nosuch'")


def test_option_for_a_method_not_in_the_run(cache):
    assert_cli_error(cache, ["compare", "fastv", "-a", "random.layer=1", *FAST], "'random'")


def test_option_without_equals(cache):
    assert_cli_error(cache, ["compare", "fastv", "-a", "layer", *FAST], "KEY=VALUE")


def test_option_rejected_by_check_for_this_model(cache):
    """layer=0 type-checks but fastv.check rejects it once the 6-layer model's depth is known."""
    assert_cli_error(cache, ["compare", "fastv", "-a", "fastv.layer=0", *FAST], "layer=0", "1..11")


def test_option_beyond_the_models_depth(cache):
    assert_cli_error(cache, ["compare", "fastv", "-a", "layer=12", *FAST], "layer=12", "1..11")


def test_method_named_twice(cache):
    assert_cli_error(cache, ["compare", "fastv", "fastv", *FAST], "twice")


# -- output ----------------------------------------------------------------------------------------------------------
def test_json_into_a_missing_directory_fails_before_any_compute(tmp_path):
    fresh_cache = tmp_path / "cache"  # the tiny model would be built here if anything loaded
    target = tmp_path / "no" / "such" / "rows.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tokenbench", "compare", "fastv", "--json", str(target), *FAST],
        capture_output=True, text=True, env=_env(str(fresh_cache)), timeout=120,
    )
    assert_user_error(proc.returncode, proc.stderr, proc.stdout, "--json", "does not exist")
    assert not fresh_cache.exists(), "the model was built although the run could not write its results"
    assert not target.parent.exists()


def test_json_onto_a_directory(cache, tmp_path):
    assert_cli_error(cache, ["compare", "fastv", "--json", str(tmp_path), *FAST], "directory")


# -- a run that works ------------------------------------------------------------------------------------------------
ROW_KEYS = {
    "method", "model", "task", "keep", "n_samples", "accuracy", "retention", "agreement", "kl_first_token",
    "tokens_llm_input", "tokens_avg_layer", "flops_prefill", "flops_ratio", "prefill_ms", "e2e_ms", "peak_mem_mb",
    "device", "dtype", "provenance", "params",
}


def test_compare_end_to_end(cache, tmp_path):
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tokenbench", "compare", "fastv", "random", "--limit", "4", "--repeats", "1",
         "--warmup", "0", "-q", "--json", str(out)],
        capture_output=True, text=True, env=_env(cache), timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr

    table_rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    methods_in_table = [row.split("|")[1].strip() for row in table_rows]
    assert methods_in_table == ["method", "full", "fastv", "random"]
    assert f"wrote 3 rows to {out}" in proc.stdout

    rows = json.loads(out.read_text())
    assert [r["method"] for r in rows] == ["full", "fastv", "random"]
    for r in rows:
        missing = ROW_KEYS - set(r)
        assert not missing, f"{r['method']} row lacks {sorted(missing)}"
        assert {"tokenbench", "torch", "transformers", "git_commit"} <= set(r["provenance"])
        assert r["model"] == "mini-llava" and r["task"] == "synthetic"  # the defaults
        assert r["n_samples"] == 4
        assert r["device"] == "cpu" and r["dtype"] == "float32"
        assert r["prefill_ms"] > 0 and r["e2e_ms"] > 0
        assert r["peak_mem_mb"] is None  # only measured on CUDA
    full, fastv, rand = rows
    assert full["keep"] == 144  # mini-llava: 12 x 12 visual tokens, 12 LLM layers
    assert full["flops_ratio"] == 1.0 and full["accuracy"] > 0  # the trained mini model answers
    assert full["agreement"] == 1.0 and full["kl_first_token"] == 0.0
    assert full["tokens_llm_input"] == 144 and full["tokens_avg_layer"] == 144
    assert fastv["keep"] == 16  # default keep ratio 1/9 of 144
    assert rand["keep"] == 16
    assert fastv["params"] == {"layer": None} and rand["params"] == {"layer": 0}  # None: K=2 of 32 -> 1 of 12
    assert 0 < fastv["flops_ratio"] < 1
    assert 0 < rand["flops_ratio"] < fastv["flops_ratio"]  # random prunes from layer 0, fastv from layer 1
    # fastv under the default matched budgets: layer 0 sees all 144 visual tokens, layers 1-11 the k' kept, with
    # (144 + 11 k') / 12 closest to 16: k' = 4 (15.67; 5 would give 16.58)
    assert fastv["match"] == "matched" and fastv["method_keep"] == 4
    assert fastv["tokens_llm_input"] == 144
    assert fastv["tokens_avg_layer"] == pytest.approx((144 + 11 * 4) / 12)
    assert rand["tokens_llm_input"] == 16 and rand["tokens_avg_layer"] == 16


# -- click's own usage errors follow the same one-line rule ------------------------------------------------------------
@pytest.mark.parametrize(
    "args, fragment",
    [
        (["compare", "fastv", "--limit", "abc"], "'abc' is not a valid integer"),
        (["compare", "fastv", "--no-such-flag"], "--no-such-flag"),
        (["compare", "fastv", "--dtype", "f8"], "'f8'"),
        (["compare"], "METHODS"),
        (["frobnicate"], "frobnicate"),
    ],
)
def test_click_usage_errors_are_one_line(cache, args, fragment):
    assert_cli_error(cache, args, fragment)


def test_help_and_no_args_exit_zero(cache):
    for args in (["--help"], [], ["compare", "--help"]):
        result = invoke(cache, *args)
        assert result.exit_code == 0, (args, result.output)
        assert "Usage:" in result.stdout


def test_json_under_a_file(cache, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("")
    assert_cli_error(cache, ["compare", "fastv", "--json", str(blocker / "rows.json"), *FAST], "is a file, not a directory")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["-T", "nn=5"], "has no option 'nn'"),
        (["-T", "grid=1"], "grid"),
        (["-T", "n"], "KEY=VALUE"),
    ],
)
def test_bad_task_options(cache, args, fragment):
    assert_cli_error(cache, ["compare", "fastv", *args, *FAST], fragment)


def test_seed_selects_the_task_split():
    from tokenbench.harness.resolve import build_task

    a, b = build_task("synthetic", {}, 1).samples(5), build_task("synthetic", {}, 2).samples(5)
    assert [s.question for s in a] != [s.question for s in b]
    assert build_task("synthetic", {"seed": 7}, 1).seed == 7
