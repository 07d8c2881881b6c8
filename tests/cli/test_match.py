"""`--match`: budget conventions in compare and flops, named in every row and table."""

from __future__ import annotations

import json

import pytest

from tests.cli.test_cli_errors import FAST, assert_cli_error, invoke


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tokenbench-cache"))


def test_compare_runs_each_convention_and_copies_unchanged_plans(cache, tmp_path):
    out = tmp_path / "rows.json"
    result = invoke(cache, "compare", "fastv", "visionzip", "-M", "tiny-llava", "--keep", "64",
                    "--match", "matched,nominal", "--json", str(out), *FAST)
    assert result.exit_code == 0, result.output
    rows = {(r["method"], r["match"]): r for r in json.loads(out.read_text())}
    assert rows[("full", None)]["keep"] == 576
    matched, nominal = rows[("fastv", "matched")], rows[("fastv", "nominal")]
    # tiny-llava: 6 layers, FastV at layer 1 (K=2 of 32): (576 + 5 k') / 6 = 64 -> k' = -38: unreachable, keeps 1
    assert matched["keep"] == nominal["keep"] == 64
    assert matched["method_keep"] == 1 and nominal["method_keep"] == 64
    assert matched["tokens_avg_layer"] == (576 + 5 * 1) / 6 and nominal["tokens_avg_layer"] == (576 + 5 * 64) / 6
    assert "same_as" not in nominal
    vz = rows[("visionzip", "nominal")]
    assert vz["same_as"] == "matched" and vz["score"] == rows[("visionzip", "matched")]["score"]
    assert "budgets matched:" in result.output and "64 → 1" in result.output
    assert "| budgets " in result.output  # two conventions: the table says which each row ran under


def test_flops_match_names_the_convention_and_the_method_budget(cache):
    result = invoke(cache, "flops", "fastv", "sparsevlm", "--keep", "64", "--match", "matched,nominal")
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("| fastv") or ln.startswith("| sparsevlm")]
    cells = [[c.strip() for c in ln.strip("|").split("|")][:3] for ln in lines]
    assert cells == [["fastv", "matched", "64 → 30"], ["sparsevlm", "matched", "64*"], ["fastv", "nominal", "64"],
                     ["sparsevlm", "nominal", "64*"]]
    assert "nominal: each paper's own meaning" in result.output


def test_flops_match_to_a_method(cache):
    result = invoke(cache, "flops", "visionzip", "--keep", "64", "--match", "flops=alvts")
    assert result.exit_code == 0, result.output
    row = next(ln for ln in result.output.splitlines() if ln.startswith("| visionzip"))
    keep = row.split("|")[2].strip()
    assert keep.startswith("64 → ") and int(keep.split("→ ")[1]) > 64
    assert "every method at the prefill FLOPs of alvts" in result.output


def test_bad_match_is_one_line(cache):
    assert_cli_error(cache, ["compare", "fastv", "--match", "fair", *FAST], "--match 'fair'", "flops=alvts")
    assert_cli_error(cache, ["flops", "fastv", "--match", "flops=fastvv"], "fastvv")
