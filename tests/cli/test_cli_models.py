"""`tokenbench compare` and `tokenbench flops` on LLaVA-NeXT and Qwen2.5-VL: what users see."""

from __future__ import annotations

import json

import pytest

from test_cli_errors import assert_cli_error, invoke

FAST = ["--limit", "3", "--repeats", "1", "--warmup", "0", "-q"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tokenbench-cache"))


@pytest.mark.parametrize("model", ["tiny-llava-next", "tiny-qwen2.5-vl"])
def test_compare_alvts_fastv_on_each_tiny_model(model, cache, tmp_path):
    out = tmp_path / "rows.json"
    result = invoke(cache, "compare", "alvts", "fastv", "--model", model, *FAST, "-T", "aspect=mixed",
                    "--json", str(out))
    assert result.exit_code == 0, result.output
    full, alvts, fastv = json.loads(out.read_text())
    assert {r["model"] for r in (full, alvts, fastv)} == {model}
    for row in (alvts, fastv):
        assert row["keep_ratio"] == pytest.approx(1 / 9, abs=0.02)  # the default budget, resolved per image
        assert row["flops_ratio"] < 1 and row["budget"] == "r0.111111"
    assert full["keep_ratio"] == 1 and full["n_visual"] == full["keep"]


def test_per_crop_scope_on_llava_next_is_recorded(cache, tmp_path):
    out = tmp_path / "rows.json"
    result = invoke(cache, "run", "fastv", "--model", "tiny-llava-next", *FAST, "--budget-scope", "crop",
                    "--json", str(out))
    assert result.exit_code == 0, result.output
    assert {r["budget_scope"] for r in json.loads(out.read_text())} == {"crop"}


def test_an_absolute_budget_larger_than_an_image_is_refused_before_compute(cache):
    assert_cli_error(cache, ["compare", "fastv", "--model", "tiny-qwen2.5-vl", *FAST, "--keep", "5000"],
                     "--keep 5000 is out of range", "--keep-ratio")


@pytest.mark.parametrize("model, n_visual, layers", [
    ("llava-next-7b", 2304, 32),  # 640x480: base 576 + a 36 x 48 unpadded grid (2x2 crops of 24 x 24), 36 newlines
    ("qwen2.5-vl-7b", 391, 28),  # 640x480 -> 644 x 476 px -> 23 x 17 merged tokens
    ("qwen2.5-vl-3b", 391, 36),
])
def test_flops_of_full_size_models_from_shipped_configs(model, n_visual, layers, cache, tmp_path):
    out = tmp_path / "flops.json"
    result = invoke(cache, "flops", "full", "fastv", "alvts", "--model", model, "--keep-ratio", "0.111",
                    "--image-size", "640x480", "--json", str(out))
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert {r["n_visual"] for r in rows} == {n_visual}
    assert f"({layers} layers" in result.stdout
    full, fastv, alvts = rows
    assert fastv["keep"] == alvts["keep"] == int(0.111 * n_visual)
    assert full["flops_ratio"] == 1 and 0 < alvts["flops_ratio"] < 1 and 0 < fastv["flops_ratio"] < 1


def test_a_bad_image_size_is_a_user_error(cache):
    assert_cli_error(cache, ["flops", "fastv", "--model", "qwen2.5-vl-7b", "--image-size", "640by480"],
                     "--image-size", "WIDTHxHEIGHT")
