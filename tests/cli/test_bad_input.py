"""Issue 18's "done means" suite: bad input over every subcommand and every class of the issue.

Each case asserts what a user is promised: exit status 2, exactly one stderr line starting with `error: ` that names
the problem (key words) and the fix (a hint: `use`, `give`, `e.g.`, a valid range, a did-you-mean ...), nothing on
stdout, no traceback, and, where something was written before, that nothing of it is lost. Damaged checkpoints and
artefacts are built in the test from the shipped mini model. Everything runs in-process through click's CliRunner
(``assert_cli_error`` of test_cli_errors), plus a few real processes for the exit status as the shell sees it.
Plugins (class 4) are covered by tests/cli/test_plugin.py, which builds real packages.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from test_cli_errors import _env, assert_user_error, invoke
from test_damaged_artefacts import drop, nan, reshape, rewrite
from test_damaged_checkpoints import (
    corrupt_config,
    list_config,
    missing_lm_head,
    pickled_only,
    random_bytes,
    truncated,
    wrong_shape,
)
from tokenbench.models.llava import MINI_LLAVA

#: compare/run: the fastest run there is; errors must come before any compute anyway
FAST = ["--limit", "2", "--repeats", "1", "--warmup", "0", "-q", "--no-store"]
#: bench: the tiny model, one round (a case that is wrongly accepted must not run for minutes)
#: every quick-CPU default given, so that bench's note does not come first (test_bench_note_does_not_precede_an_error)
BENCH = ["-M", "tiny-llava", "--device", "cpu", "--layers", "2", "--dtype", "float32", "--keep-ratio", "0.25",
         "--repeats", "1", "--warmup", "0", "--new-tokens", "1"]
SEED_2_70 = "1180591620717411303424"  # 2**70: no int64 holds it
#: words that tell the user how to fix it (a command, an example), or what is valid (a range, a list of names)
HINT = re.compile(r"\b(use|give|pass|example|did you mean|must|should|one of|at least|at most|between|convert|"
                  r"delete|remove|move|rebuild|restore|make|create|set|choose|pick|see|available|valid|"
                  r"expected|instead|not (an? )?(int|float|str|bool|number|list))\b|e\.g\.|options:|--help|`tokenbench |"
                  r"\d\s*\.\.\s*-?\d|\(0, 1\]|[<>]=?\s*\d", re.IGNORECASE)


@pytest.fixture(scope="module")
def cache():
    """The session's cache (tests/conftest.py): the tiny models are built there once."""
    return os.environ["TOKENBENCH_CACHE"]


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def bad(cache: str, args: list[str], *keywords: str) -> str:
    """One bad input: exit 2, one `error:` line naming ``keywords`` (case-insensitive; ``!word``: must not be named,
    e.g. the other options of a combined check) and a fix. A failure starts with the exit status and last line."""
    result = invoke(cache, *args)
    try:
        line = assert_user_error(result.exit_code, result.stderr, result.stdout)
        for word in keywords:
            if word.startswith("!"):
                assert word[1:].lower() not in line.lower(), f"names {word[1:]!r} too: not the one option at fault"
            else:
                assert word.lower() in line.lower(), f"{word!r} not named"
        assert HINT.search(line), "names no fix (no hint word, example or valid range)"
    except AssertionError as exc:
        raise AssertionError(f"[exit {result.exit_code}; last line: {last_line(result.output)[:400]!r}] "
                             f"{str(exc).splitlines()[0][:300]}") from None
    return line


@pytest.fixture
def ckpt(tmp_path):
    """A copy of the shipped mini model, to be damaged."""
    path = str(tmp_path / "ckpt")
    shutil.copytree(MINI_LLAVA, path, ignore=shutil.ignore_patterns("calibration"))
    return path


# -- 0. names, missing values, one per subcommand ------------------------------------------------------------------
@pytest.mark.parametrize("args, keywords", [
    pytest.param(["list", "methodz"], ["'methodz'", "methods"], id="list-unknown-kind"),
    pytest.param(["compare", "fastvv", *FAST], ["'fastvv'", "did you mean 'fastv'"], id="compare-unknown-method"),
    pytest.param(["run", "sparsvlm", *FAST], ["'sparsvlm'", "did you mean 'sparsevlm'"], id="run-unknown-method"),
    pytest.param(["run", "fastv", "random", *FAST], ["random"], id="run-two-methods"),
    pytest.param(["calibrate", "alvst", "-n", "2", "--heldout", "1"], ["'alvst'", "did you mean 'alvts'"],
                 id="calibrate-unknown-method"),
    pytest.param(["calibrate", "fastv", "-n", "2", "--heldout", "1"], ["fastv", "calibrat"],
                 id="calibrate-method-without-calibration"),
    pytest.param(["calibrate", "alvts", "-t", "synthetc", "-n", "2", "--heldout", "1"], ["did you mean 'synthetic'"],
                 id="calibrate-unknown-task"),
    pytest.param(["flops", "visonzip"], ["'visonzip'", "did you mean 'visionzip'"], id="flops-unknown-method"),
    pytest.param(["flops", "fastv", "-M", "llava-1.5-7"], ["'llava-1.5-7'", "did you mean"], id="flops-unknown-model"),
    pytest.param(["bench", "fastvv", *BENCH], ["'fastvv'", "did you mean 'fastv'"], id="bench-unknown-method"),
    pytest.param(["bench", "fastv", *BENCH, "-M", "tiny-lava"], ["'tiny-lava'", "did you mean 'tiny-llava'"],
                 id="bench-unknown-model"),
    pytest.param(["results", "shwo", "1"], ["shwo"], id="results-unknown-subcommand"),
    pytest.param(["results", "show"], ["RUN_ID"], id="results-show-missing-id"),
    pytest.param(["results", "show", "abc"], ["'abc'"], id="results-show-id-not-int"),
    pytest.param(["compare", "fastv", *FAST, "--keep"], ["--keep"], id="compare-keep-missing-value"),
    pytest.param(["run", "fastv", *FAST, "-a"], ["-a"], id="run-arg-missing-value"),
    pytest.param(["leaderboard", "--dir"], ["--dir"], id="leaderboard-dir-missing-value"),
    pytest.param(["flops", "fastv", "--image-size", "640"], ["'640'", "e.g."], id="flops-image-size-no-x"),
    pytest.param(["bench", "fastv", *BENCH, "--image-size", "axb"], ["'axb'"], id="bench-image-size-words"),
    pytest.param(["flops", "fastv", "--n-text", "-1"], ["--n-text", "-1"], id="flops-n-text-negative"),
    pytest.param(["bench", "fastv", *BENCH, "--new-tokens", "0"], ["--new-tokens", "!--repeats"], id="bench-new-tokens-0"),
    pytest.param(["calibrate", "alvts", "-n", "0", "--heldout", "1"], ["--samples", "!--epochs"], id="calibrate-samples-0"),
    pytest.param(["calibrate", "alvts", "-n", "2", "--heldout", "1", "--epochs", "0"], ["--epochs", "!--samples"],
                 id="calibrate-epochs-0"),
    pytest.param(["calibrate", "alvts", "-n", "2", "--heldout", "1", "--lr", "-1"], ["--lr"], id="calibrate-lr-neg"),
    pytest.param(["compare", "fastv", *FAST, "-a", "fitprune.x=1"], ["fitprune"], id="compare-option-of-other-method"),
])
def test_names_and_missing_values(cache, args, keywords):
    bad(cache, args, *keywords)


# -- 1. damaged or incomplete checkpoints, built from the shipped mini model ----------------------------------------
@pytest.mark.parametrize("damage, prefix, keywords", [
    pytest.param(missing_lm_head, "", ["lm_head.weight", "missing"], id="missing-lm-head"),
    pytest.param(truncated, "", ["model.safetensors"], id="truncated"),
    pytest.param(random_bytes, "", ["model.safetensors"], id="random-bytes"),
    pytest.param(corrupt_config, "", ["config.json", "JSON"], id="config-not-json"),
    pytest.param(list_config, "", ["config.json", "list"], id="config-a-list"),
    pytest.param(None, "qwen2.5-vl:", ["llava", "qwen2.5-vl"], id="wrong-family-prefix"),
    pytest.param(pickled_only, "", ["pytorch_model.bin", "safetensors"], id="pytorch-bin-only"),
    pytest.param(wrong_shape, "", ["q_proj.weight", "shape"], id="wrong-shape"),
])
def test_compare_on_a_damaged_checkpoint(cache, ckpt, tmp_path, damage, prefix, keywords):
    if damage is not None:
        damage(ckpt)
    out = tmp_path / "rows.json"
    bad(cache, ["compare", "fastv", "-M", prefix + ckpt, "--json", str(out), *FAST], *keywords)
    assert not out.exists(), "rows were written from a damaged checkpoint"


@pytest.mark.parametrize("command, damage, keywords", [
    pytest.param(["run", "fastv", *FAST], truncated, ["model.safetensors"], id="run-truncated"),
    pytest.param(["calibrate", "alvts", "-n", "2", "--heldout", "1"], missing_lm_head, ["lm_head.weight"],
                 id="calibrate-missing-lm-head"),
    pytest.param(["flops", "fastv"], corrupt_config, ["config.json"], id="flops-config-not-json"),
    pytest.param(["flops", "fastv"], list_config, ["config.json"], id="flops-config-a-list"),
    pytest.param(["bench", "fastv", *BENCH[2:]], corrupt_config, ["config.json"], id="bench-config-not-json"),
])
def test_other_commands_on_a_damaged_checkpoint(cache, ckpt, command, damage, keywords):
    damage(ckpt)
    bad(cache, [*command, "-M", ckpt], *keywords)


def test_flops_with_a_family_prefix_that_does_not_match(cache, ckpt):
    bad(cache, ["flops", "fastv", "-M", "qwen2.5-vl:" + ckpt], "llava", "qwen2.5-vl")


# -- 2. options that pass validation and then break or do nothing --------------------------------------------------
@pytest.mark.parametrize("method, option, keywords", [
    pytest.param("sparsevlm", "sparsevlm.heads=-1", ["heads", "-1"], id="sparsevlm-heads-neg"),
    pytest.param("sparsevlm", "sparsevlm.counts=(1000,1000,1000)", ["counts"], id="sparsevlm-counts-too-many"),
    pytest.param("sparsevlm", "sparsevlm.version='3.0'", ["version", "'3.0'"], id="sparsevlm-version"),
    pytest.param("pdrop", "pdrop.layers=()", ["layers", "()"], id="pdrop-layers-empty"),
    pytest.param("pdrop", "pdrop.lam=0", ["lam"], id="pdrop-lam-0"),
    pytest.param("dart", "dart.pivot_text=10000", ["pivot_text", "10000"], id="dart-pivot-text-huge"),
    pytest.param("dart", "dart.pivot_image=0", ["pivot_image"], id="dart-pivot-image-0"),
    pytest.param("fastv", "fastv.layer=99", ["layer", "99"], id="fastv-layer-99"),
    pytest.param("vtw", "vtw.layer=99", ["layer", "99"], id="vtw-layer-99"),
    pytest.param("random", "random.layer=-1", ["layer", "-1"], id="random-layer-neg"),
    pytest.param("pool", "pool.mode='xyz'", ["mode", "'xyz'"], id="pool-mode"),
    pytest.param("visionzip", "visionzip.dominant_share=2", ["dominant_share"], id="visionzip-share-2"),
    pytest.param("alvts", "alvts.rank=-1", ["rank", "-1"], id="alvts-rank-neg"),
    pytest.param("alvts", "alvts.pooling='median'", ["pooling", "'median'"], id="alvts-pooling"),
    pytest.param("alvts", "alvts.layers=(99,)", ["layers", "99"], id="alvts-layers-99"),
    pytest.param("fitprune", "fitprune.layer=3", ["fitprune", "layer"], id="fitprune-has-no-options"),
])
def test_method_option_out_of_range(cache, tmp_path, method, option, keywords):
    out = tmp_path / "rows.json"
    bad(cache, ["compare", method, "-a", option, "--json", str(out), *FAST], *keywords)
    assert not out.exists(), "refused options must be refused before any row is computed"


def test_type_error_example_is_of_the_right_type(cache):
    line = bad(cache, ["compare", "fastv", "-a", "fastv.layer=abc", *FAST], "'abc'", "layer")
    assert "=None" not in line, f"the example shows the default None, not a value of the right type: {line!r}"
    assert re.search(r"layer=\d", line), f"no example with an int: {line!r}"


@pytest.mark.parametrize("args, keywords", [
    pytest.param(["compare", "fastv", "--seed", SEED_2_70, *FAST], ["--seed", SEED_2_70], id="compare-seed-2**70"),
    pytest.param(["run", "fastv", "--seed", "-1", *FAST], ["--seed", "-1"], id="run-seed-negative"),
    pytest.param(["calibrate", "alvts", "-n", "2", "--heldout", "1", "--seed", SEED_2_70], ["--seed"],
                 id="calibrate-seed-2**70"),
    pytest.param(["bench", "fastv", *BENCH, "--seed", SEED_2_70], ["--seed"], id="bench-seed-2**70"),
    pytest.param(["compare", "fastv", "--device", "mps", *FAST], ["mps"], id="compare-device-mps"),
    pytest.param(["compare", "fastv", "--device", "cuda", *FAST], ["cuda"], id="compare-device-cuda-no-gpu"),
    pytest.param(["run", "fastv", "--device", "tpu", *FAST], ["'tpu'"], id="run-device-tpu"),
    pytest.param(["compare", "fastv", "--device", "cuda:x", *FAST], ["'cuda:x'"], id="compare-device-cuda-x"),
    pytest.param(["calibrate", "alvts", "-n", "2", "--heldout", "1", "--device", "mps"], ["mps"],
                 id="calibrate-device-mps"),
    pytest.param(["bench", "fastv", *BENCH, "--device", "tpu"], ["'tpu'"], id="bench-device-tpu"),
    pytest.param(["bench", "fastv", *BENCH, "--layers", "1"], ["--layers"], id="bench-layers-1"),
    pytest.param(["bench", "fastv", *BENCH, "--layers", "0"], ["--layers"], id="bench-layers-0"),
    pytest.param(["compare", "fastv", "--keep", "", *FAST], ["--keep", "empty"], id="compare-keep-empty"),
    pytest.param(["compare", "fastv", "--keep-ratio", "", *FAST], ["--keep-ratio", "empty"],
                 id="compare-keep-ratio-empty"),
    pytest.param(["compare", "fastv", "--json", "", *FAST], ["--json"], id="compare-json-empty"),
    pytest.param(["flops", "fastv", "-M", "mini-llava", "--keep", ""], ["--keep"], id="flops-keep-empty"),
    pytest.param(["flops", "fastv", "--json", ""], ["--json"], id="flops-json-empty"),
    pytest.param(["bench", "fastv", *BENCH, "--json", ""], ["--json"], id="bench-json-empty"),
    pytest.param(["compare", "fastv", "--batch-size", "0", *FAST], ["--batch-size", "!--repeats"], id="compare-batch-size-0"),
    pytest.param(["compare", "fastv", *FAST, "--repeats", "0"], ["--repeats", "!--batch-size"], id="compare-repeats-0"),
    pytest.param(["compare", "fastv", *FAST, "--warmup", "-1"], ["--warmup", "!--batch-size"], id="compare-warmup-neg"),
    pytest.param(["compare", "fastv", *FAST, "--limit", "0"], ["--limit"], id="compare-limit-0"),
    pytest.param(["bench", "fastv", *BENCH, "--repeats", "0"], ["--repeats", "!--new-tokens"], id="bench-repeats-0"),
    pytest.param(["calibrate", "alvts", "-n", "2", "--heldout", "1", "-b", "0"], ["--batch-size", "!--epochs"],
                 id="calibrate-batch-size-0"),
    pytest.param(["run", "fastv", "--keep", "64,abc", *FAST], ["abc"], id="run-keep-word-in-list"),
    pytest.param(["flops", "fastv", "-M", "mini-llava", "--keep", "0"], ["'0'"], id="flops-keep-0"),
    pytest.param(["flops", "fastv", "-M", "mini-llava", "--keep-ratio", "2"], ["'2'"], id="flops-keep-ratio-2"),
    pytest.param(["bench", "fastv", *BENCH, "--keep-ratio", "0"], ["--keep-ratio"], id="bench-keep-ratio-0"),
])
def test_options_that_used_to_break_later(cache, args, keywords):
    bad(cache, args, *keywords)


def test_bench_note_does_not_precede_an_error(cache):
    """Without --layers, bench's CPU note must not come before (or instead of) the one error line."""
    bad(cache, ["bench", "fastvv", "-M", "tiny-llava", "--device", "cpu"], "'fastvv'", "did you mean")


@pytest.mark.parametrize("command", [
    pytest.param(["compare", "fastv", *FAST], id="compare"),
    pytest.param(["flops", "fastv", "-M", "mini-llava"], id="flops"),
])
def test_too_small_keep_ratio_advice_works_when_followed(cache, command):
    line = bad(cache, [*command, "--keep-ratio", "0.001"], "0.001", "at least")
    advice = re.search(r"at least (\d*\.\d+|\d+(?:/\d+)?)", line)
    assert advice, line
    result = invoke(cache, *command, "--keep-ratio", advice.group(1))
    assert result.exit_code == 0, f"following the advice {advice.group(1)!r} failed: {result.output!r}"


# -- 3. built-in methods under --budget-scope crop on LLaVA-NeXT: run, or refused before compute --------------------
@pytest.mark.parametrize("method", ["alvts", "dart", "fastv", "fitprune", "pdrop", "pool", "random", "sparsevlm",
                                    "visionzip", "vtw"])
def test_budget_scope_crop_runs_or_is_refused_before_compute(cache, tmp_path, method):
    out = tmp_path / "rows.json"
    result = invoke(cache, "compare", method, "-M", "tiny-llava-next", "--budget-scope", "crop",
                    "--json", str(out), *FAST, "--limit", "1")
    if result.exit_code == 0:
        assert [r["method"] for r in json.loads(out.read_text())] == ["full", method]
        assert "Traceback" not in result.output
    else:  # refused: one line, before any compute (no row, no table)
        line = assert_user_error(result.exit_code, result.stderr, result.stdout, method)
        assert HINT.search(line), line
        assert not out.exists()


# -- 5. calibration artefacts, built from the shipped one ----------------------------------------------------------
@pytest.mark.parametrize("change, keywords", [
    pytest.param(drop, ["no tensor"], id="missing-factor"),
    pytest.param(reshape, ["shape"], id="wrong-shape"),
    pytest.param(nan, ["NaN"], id="nan"),
    pytest.param("dir", ["directory"], id="a-directory"),
    pytest.param("junk", ["safetensors"], id="random-bytes"),
    pytest.param("none", ["does not exist"], id="missing-file"),
])
def test_a_damaged_artefact(cache, tmp_path, change, keywords):
    path = str(tmp_path / "alvts.safetensors")
    if change == "dir":
        path = str(tmp_path)
    elif change == "junk":
        with open(path, "wb") as fh:
            fh.write(os.urandom(512))
    elif callable(change):
        rewrite(path, change)
    bad(cache, ["run", "alvts", "-a", f"alvts.calibration={path}", *FAST], "calibration", *keywords)


@pytest.mark.parametrize("where", ["missing-dir", "a-directory"])
def test_calibrate_out_that_cannot_be_written_fails_before_the_fit(cache, tmp_path, where):
    out = str(tmp_path / "no" / "such" / "a.safetensors") if where == "missing-dir" else str(tmp_path)
    bad(cache, ["calibrate", "alvts", "-n", "2", "--heldout", "1", "--epochs", "1", "--out", out], "--out")


# -- 6. the environment --------------------------------------------------------------------------------------------
def test_cache_is_a_file(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("not a directory")
    bad(str(blocker), ["compare", "fastv", "-M", "tiny-llava", *FAST], "TOKENBENCH_CACHE", str(blocker))


def test_cache_is_a_file_and_the_default_store_lives_there(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("not a directory")
    bad(str(blocker), ["compare", "fastv", "--limit", "2", "--repeats", "1", "--warmup", "0", "-q"], str(blocker))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only directories")
def test_cache_is_read_only(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        bad(str(ro), ["compare", "fastv", "-M", "tiny-llava", *FAST], "TOKENBENCH_CACHE", str(ro))
    finally:
        ro.chmod(0o755)


# -- 7. results and leaderboard input ------------------------------------------------------------------------------
def _board_rows() -> list[dict]:
    from test_leaderboard_cli import _rows

    return _rows()


def _no_model(path):
    rows = _board_rows()
    del rows[1]["model"]
    path.write_text(json.dumps(rows))


def _latin1(path):
    path.write_bytes(json.dumps(_board_rows()).replace('"m"', '"mod\u00e8le"').encode("latin-1"))


def _wrong_type(path):
    rows = _board_rows()
    rows[1]["accuracy"] = "high"
    path.write_text(json.dumps(rows))


def _no_full(path):
    path.write_text(json.dumps(_board_rows()[1:]))


@pytest.mark.parametrize("write, keywords", [
    pytest.param(_no_model, ["model"], id="row-without-model"),
    pytest.param(_latin1, ["UTF-8"], id="not-utf8"),
    pytest.param(_wrong_type, ["accuracy", "'high'"], id="wrong-type"),
    pytest.param(lambda p: p.write_text("[]"), ["no rows"], id="empty-list"),
    pytest.param(_no_full, ["full"], id="no-full-row"),
    pytest.param(lambda p: p.write_text('{"rows": '), ["JSON"], id="not-json"),
    pytest.param(lambda p: p.write_text('{"method": "full"}'), ["list"], id="an-object-not-a-list"),
])
def test_leaderboard_on_bad_results(cache, tmp_path, write, keywords):
    (tmp_path / "results").mkdir()
    path = tmp_path / "results" / "cpu.json"
    write(path)
    bad(cache, ["leaderboard", "--dir", str(tmp_path)], "cpu.json", *keywords)


def test_leaderboard_dir_on_a_file(cache, tmp_path):
    afile = tmp_path / "board"
    afile.write_text("x")
    bad(cache, ["leaderboard", "--dir", str(afile)], str(afile), "directory")
    assert afile.read_text() == "x"


@pytest.fixture
def store(tmp_path):
    """An empty results store (no run in it)."""
    from tokenbench.results.store import Store

    path = str(tmp_path / "store.sqlite")
    Store(path)
    return path


@pytest.mark.parametrize("command", [["show"], ["export", "--json", "rows.json"], ["delete"]])
def test_results_of_an_unknown_run(cache, store, tmp_path, command):
    args = ["results", command[0], "999", *[str(tmp_path / a) if a.endswith(".json") else a for a in command[1:]]]
    bad(cache, [*args, "--store", store], "999", "results list")
    assert not (tmp_path / "rows.json").exists()


@pytest.mark.parametrize("command", [["results", "list"], ["results", "show", "1"], ["compare", "fastv", *FAST[:-1]]])
def test_a_store_that_is_not_sqlite(cache, tmp_path, command):
    junk = tmp_path / "store.sqlite"
    junk.write_bytes(b"this is not an SQLite database" * 40)
    bad(cache, [*command, "--store", str(junk)], str(junk))
    assert junk.read_bytes() == b"this is not an SQLite database" * 40


@pytest.mark.parametrize("command", [["results", "list"], ["results", "delete", "1"], ["compare", "fastv", *FAST[:-1]]])
def test_store_empty_string(cache, command):
    bad(cache, [*command, "--store", ""], "--store")


def test_results_list_on_a_directory(cache, tmp_path):
    bad(cache, ["results", "list", "--store", str(tmp_path)], "directory")


def test_results_export_with_nothing_to_write(cache, store):
    bad(cache, ["results", "export", "1", "--store", store], "--json")


# -- 8. check_method on every tiny model (python API) --------------------------------------------------------------
def test_check_method_on_a_tiny_model_other_than_tiny_llava():
    """Its default budgets (up to 575) are clamped to the model's visual tokens; one model, to keep the suite short."""
    from tokenbench.testing import check_method

    check_method("random", model="tiny-qwen2.5-vl", n_samples=1)


# -- 9. flops agrees with compare ----------------------------------------------------------------------------------
def test_flops_refuses_what_compare_refuses(cache):
    compare = bad(cache, ["compare", "vispruner", "-M", "tiny-qwen2.5-vl", *FAST], "vispruner")
    flops = bad(cache, ["flops", "vispruner", "-M", "qwen2.5-vl-7b"], "vispruner")
    assert "qwen" in compare.lower() and "qwen" in flops.lower()


def test_flops_refuses_vispruner_on_tiny_qwen(cache):
    bad(cache, ["flops", "vispruner", "-M", "tiny-qwen2.5-vl"], "vispruner")


@pytest.mark.parametrize("method", ["fastv", "alvts", "pdrop"])
def test_flops_default_budgets_on_mini_llava(cache, method):
    result = invoke(cache, "flops", method, "-M", "mini-llava")
    if result.exit_code != 0:
        bad(cache, ["flops", method, "-M", "mini-llava"], "--keep")
    else:
        assert "Traceback" not in result.output and method in result.stdout


# -- nothing already written is lost -------------------------------------------------------------------------------
EARLIER = [{"method": "full", "model": "mini-llava", "note": "written by an earlier run"}]


@pytest.mark.parametrize("args", [
    pytest.param(["compare", "fastv", "--keep", "1000", *FAST], id="compare-bad-keep"),
    pytest.param(["compare", "fastv", "dart", "-M", "tiny-llava-next", "--budget-scope", "crop", *FAST],
                 id="compare-crop-mid-run"),
    pytest.param(["run", "fastv", "--seed", SEED_2_70, *FAST], id="run-seed"),
    pytest.param(["flops", "vispruner", "-M", "qwen2.5-vl-7b"], id="flops-refused-pair"),
    pytest.param(["bench", "fastv", *BENCH, "--layers", "1"], id="bench-layers-1"),
])
def test_a_later_failure_keeps_the_earlier_json(cache, tmp_path, args):
    out = tmp_path / "rows.json"
    out.write_text(json.dumps(EARLIER))
    result = invoke(cache, *args, "--json", str(out))
    if result.exit_code == 0:  # it ran (crop honoured): it may rewrite the file, with whole rows
        assert isinstance(json.loads(out.read_text()), list)
        return
    assert result.exit_code == 2 and last_line(result.stderr).startswith("error: "), (result.exit_code,
                                                                                    last_line(result.output))
    assert "Traceback" not in result.output
    rows = json.loads(out.read_text())
    if result.stdout:  # it failed after computing rows: the file holds whole rows of this run (rewritten per row)
        assert isinstance(rows, list) and all("method" in r for r in rows), rows
    else:  # refused before any compute: the earlier file is untouched
        assert rows == EARLIER, "a run refused before computing anything lost the rows an earlier one wrote"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.json"], "a temporary file was left behind"


def test_results_export_of_an_unknown_run_keeps_the_existing_file(cache, store, tmp_path):
    out = tmp_path / "rows.json"
    out.write_text(json.dumps(EARLIER))
    bad(cache, ["results", "export", "999", "--json", str(out), "--store", store], "999")
    assert json.loads(out.read_text()) == EARLIER


def test_calibrate_with_bad_options_keeps_the_existing_artefact(cache, tmp_path):
    out = tmp_path / "alvts.safetensors"
    out.write_bytes(b"an earlier artefact")
    bad(cache, ["calibrate", "alvts", "-n", "2", "--heldout", "1", "-a", "alvts.rank=-1", "--out", str(out)], "rank")
    assert out.read_bytes() == b"an earlier artefact"


def test_leaderboard_on_bad_results_keeps_the_rendered_board(cache, tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "cpu.json").write_text("[]")
    board = tmp_path / "m--t.md"
    board.write_text("an earlier board")
    bad(cache, ["leaderboard", "--dir", str(tmp_path)], "cpu.json")
    assert board.read_text() == "an earlier board"


# -- real processes: the exit status and stderr as the shell sees them ---------------------------------------------
@pytest.mark.parametrize("args, keywords", [
    pytest.param(["compare", "fastv", "--seed", SEED_2_70, *FAST], ["--seed"], id="seed-2**70"),
    pytest.param(["results", "show", "999", "--store", "{store}"], ["999"], id="results-unknown-run"),
])
def test_real_process(cache, store, args, keywords):
    args = [a.format(store=store) for a in args]
    proc = subprocess.run([sys.executable, "-m", "tokenbench", *args], check=False, capture_output=True, text=True,
                          env=_env(cache), timeout=180)
    line = assert_user_error(proc.returncode, proc.stderr, proc.stdout, *keywords)
    assert HINT.search(line), line


def test_real_process_damaged_checkpoint(cache, ckpt):
    missing_lm_head(ckpt)
    proc = subprocess.run([sys.executable, "-m", "tokenbench", "compare", "fastv", "-M", ckpt, *FAST],
                          check=False, capture_output=True, text=True, env=_env(cache), timeout=180)
    assert_user_error(proc.returncode, proc.stderr, proc.stdout, "lm_head.weight")
