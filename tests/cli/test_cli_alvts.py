"""`tokenbench calibrate`, `tokenbench flops` and ALVTS in `compare`: what users see, good input and bad."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from test_cli_errors import _env, assert_cli_error, invoke

FAST = ["--limit", "2", "--repeats", "1", "--warmup", "0", "-q"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tokenbench-cache"))


def test_uncalibrated_alvts_says_so_in_the_output_and_the_row(cache, tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, "-m", "tokenbench", "compare", "alvts", "fastv", "-M", "tiny-llava", *FAST,
                           "--json", str(out)], capture_output=True, text=True, env=_env(cache), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "warning: alvts: no calibration artefact" in proc.stderr
    assert "note (alvts): alvts: no calibration artefact" in proc.stdout  # repeated under the table
    full, alvts, fastv = json.loads(out.read_text())
    assert alvts["prepared"]["calibration"] == "svd-init" and "SVD initialisation" in alvts["warnings"][0]
    assert alvts["prepared"]["rank"] == 8 and not fastv["warnings"] and not full["warnings"]
    assert alvts["tokens_avg_layer"] == 64 and alvts["flops_breakdown"]["overhead"] > 0


def test_calibrate_then_compare_uses_the_artefact(cache, tmp_path):
    art = tmp_path / "a.safetensors"
    result = invoke(cache, "calibrate", "alvts", "-M", "tiny-llava", "-n", "4", "--heldout", "2", "--epochs", "1",
                    "--out", str(art))
    assert result.exit_code == 0, result.output
    assert f"wrote {art}" in result.stdout and "score_error_after" in result.stdout
    rows = tmp_path / "rows.json"
    result = invoke(cache, "run", "alvts", "-M", "tiny-llava", *FAST, "-a", f"calibration={art}", "--json", str(rows))
    assert result.exit_code == 0, result.output
    row = json.loads(rows.read_text())[1]
    assert row["prepared"]["calibration"] == str(art) and row["warnings"] == []
    assert row["prepared"]["samples"] == 4
    line = assert_cli_error(cache, ["run", "alvts", "-M", "tiny-llava", *FAST, "-a", f"calibration={art}", "-a", "rank=4"],
                            "does not fit this run", "rank: artefact 8, this run 4")
    assert "tokenbench calibrate" in line


def test_default_model_runs_alvts_with_its_shipped_calibration(cache, tmp_path):
    """`tokenbench compare alvts fastv` with no flags: mini-llava, whose directory ships ALVTS's fitted selector."""
    import os

    from tokenbench.models.llava import MINI_LLAVA

    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, "-m", "tokenbench", "compare", "alvts", "fastv", *FAST, "--json", str(out)],
                          capture_output=True, text=True, env=_env(cache), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "warning:" not in proc.stderr
    full, alvts, fastv = json.loads(out.read_text())
    assert full["model"] == "mini-llava" and full["n_visual"] == 144
    shipped = os.path.join(MINI_LLAVA, "calibration", "alvts", "rank4-mean.safetensors")
    assert alvts["prepared"]["calibration"] == os.path.abspath(shipped) and alvts["warnings"] == []


@pytest.mark.parametrize("args, fragment", [
    (["calibrate", "fastv", "-n", "2"], "nothing to calibrate"),
    (["calibrate", "alvts", "-n", "0"], "'--samples' / '-n': 0 is not in the range x>=1"),
    (["calibrate", "alvts", "--lr", "-1"], "'--lr': -1.0 is not in the range x>0"),
    (["calibrate", "alvts", "-a", "pooling=sum", "-n", "2", "--heldout", "1"], "pooling"),
    (["calibrate", "alvts", "-T", "n=3", "-n", "4", "--heldout", "1"], "has 3 samples"),
    (["calibrate", "alvts", "--out", "/nonexistent-dir/x.safetensors"], "cannot write --out '/nonexistent-dir"),
    (["calibrate", "alvtz"], "Did you mean 'alvts'"),
    (["run", "alvts", "-a", "calibration=/no/such/file.safetensors"], "does not exist"),
    (["run", "alvts", "-a", "layers=(0,19)"], "layers"),
    (["flops", "alvts", "-M", "/no/such/dir"], "does not exist"),
    (["flops", "alvts", "--n-text", "0"], "--n-text"),
    (["flops", "alvts", "-k", "999"], "out of range"),
])
def test_bad_input_is_one_line(cache, args, fragment):
    assert_cli_error(cache, args + (FAST if args[0] == "run" else []), fragment)


def test_flops_from_the_7b_config_without_weights(cache, tmp_path):
    out = tmp_path / "flops.json"
    proc = subprocess.run([sys.executable, "-m", "tokenbench", "flops", "alvts", "fastv", "--json", str(out)],
                          capture_output=True, text=True, env=_env(cache) | {"HF_HUB_OFFLINE": "1"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())
    assert [(r["method"], r["keep"]) for r in rows] == [("full", 576)] + [(m, k) for m in ("alvts", "fastv")
                                                                         for k in (64, 128, 192)]
    full = rows[0]
    assert full["flops_breakdown"]["llm"] == 2 * 32 * (2 * 636 * 4096**2 + 2 * 636 * 4096**2 + 2 * 636**2 * 4096
                                                       + 3 * 636 * 4096 * 11008)
    alvts64 = rows[1]
    r, n, d, h = 256, 636, 4096, 32  # the paper's rank for 7B = hidden/16
    # the selector's logits at n = 636, 32 heads: one block (32 x 636 x 636 values, under 2**26), every row against
    # every key (the causal mask applied, not skipped: one fixed shape); per row and key, q.k over 32 x 128 and
    # 2 x 32 group sums
    blocks = 636 * 636
    assert alvts64["flops_breakdown"]["overhead"] == 2 * 32 * (n * r * 4 * d + blocks * (d + 2 * h))
    # skipped tokens stay keys and values: q, o and the MLP on 60 + 64 tokens, k and v on all 636
    q = 60 + 64
    assert alvts64["flops_breakdown"]["llm"] == 2 * 32 * (2 * q * d**2 + 2 * n * d**2 + 2 * q * n * d
                                                          + 3 * q * d * 11008)
    assert all(0 < x["flops_ratio"] < 1 for x in rows[1:])


def test_a_refit_never_silently_replaces_the_shipped_calibration(cache, tmp_path):
    """`calibrate alvts` on the default model writes its artefact where runs look, but the checkpoint's own artefact
    keeps winning: calibrate says so and how to use the refit, and the table says which calibration a row ran on."""
    import os

    from tokenbench.models.llava import MINI_LLAVA

    shipped = os.path.abspath(os.path.join(MINI_LLAVA, "calibration", "alvts", "rank4-mean.safetensors"))
    result = invoke(cache, "calibrate", "alvts", "-n", "4", "--heldout", "2", "--epochs", "1")
    assert result.exit_code == 0, result.output
    written = result.stdout.split("wrote ", 1)[1].split()[0]
    assert written.startswith(cache) and os.path.isfile(written)
    assert f"runs of this model keep using {shipped}" in result.stderr
    assert f"-a alvts.calibration={written}" in result.stderr
    result = invoke(cache, "run", "alvts", *FAST, "--no-store")
    assert result.exit_code == 0, result.output
    assert f"calibration (alvts): {shipped} (fitted on 256 samples" in result.stdout
    result = invoke(cache, "run", "alvts", *FAST, "--no-store", "-a", f"calibration={written}")
    assert result.exit_code == 0, result.output
    assert f"calibration (alvts[calibration={os.path.basename(written)}]): {written} (fitted on 4 samples" in result.stdout


def test_rows_run_with_options_are_labelled_with_them(cache, tmp_path):
    """Options that differ from the defaults are in the row's label (as the leaderboard writes variants); options
    given at their default value are not."""
    out = tmp_path / "rows.json"
    result = invoke(cache, "compare", "alvts", "fastv", "pdrop", *FAST, "--no-store", "-a", "alvts.static=true",
                    "-a", "fastv.layer=3", "-a", "pdrop.layers=2,6", "-a", "pdrop.lam=0.5", "--json", str(out))
    assert result.exit_code == 0, result.output
    labels = [r["label"] for r in json.loads(out.read_text())[1:]]
    assert labels == ["alvts[static=True]", "fastv[layer=3]", "pdrop[layers=2,6]"], labels
    assert "| fastv[layer=3]" in result.stdout
