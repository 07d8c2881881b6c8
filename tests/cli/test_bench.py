"""`tokenbench bench`: random-weight models built from configs, POPE-length prompts, predicted beside measured."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from conftest import tiny_model_names
from tokenbench.cli import main


@pytest.mark.parametrize("model", tiny_model_names())
def test_build_random_matches_the_architecture_and_buffers(model):
    """The random build is the checkpoint's architecture: same parameter names and shapes, the same buffers (rotary
    frequencies, position ids), and it generates."""
    from tokenbench import testing
    from tokenbench.runner import resolve_model

    saved = resolve_model(model).load()
    built = resolve_model(model).build_random("cpu", "float32", seed=1)
    params = {n: p.shape for n, p in saved.model.named_parameters()}
    assert {n: p.shape for n, p in built.model.named_parameters()} == params
    for name, buffer in saved.model.named_buffers():
        assert torch.equal(dict(built.model.named_buffers())[name], buffer), name
    assert not any(torch.equal(p, dict(saved.model.named_parameters())[n])
                   for n, p in built.model.named_parameters() if p.dim() == 2)  # fresh random matrices
    gen = built.generate(built.encode(testing.synthetic_samples(1, size=(392, 280))), 2)
    assert torch.isfinite(gen.first_logits).all()


def test_build_random_truncates_and_refuses_a_bad_depth():
    from tokenbench.errors import ConfigError
    from tokenbench.runner import resolve_model

    adapter = resolve_model("tiny-qwen2.5-vl").build_random("cpu", "float32", layers=2)
    assert adapter.n_layers == 2 and adapter.config_layers == 4
    with pytest.raises(ConfigError, match="--layers 9 is out of range"):
        resolve_model("tiny-llava").build_random("cpu", "float32", layers=9)


@pytest.mark.parametrize("model", tiny_model_names())
def test_bench_prompt_has_exactly_the_text_tokens_asked_for(model):
    from tokenbench.bench import bench_sample
    from tokenbench.errors import ConfigError
    from tokenbench.runner import resolve_model

    adapter = resolve_model(model).build_random("cpu", "float32")
    for n_text in (60, 97):
        batch = adapter.encode([bench_sample(adapter, n_text, (640, 480), seed=0)])
        assert batch.n_text[0] - batch.layout.n_structural == n_text
    with pytest.raises(ConfigError, match="--n-text 3 is below"):
        bench_sample(adapter, 3, None, seed=0)


def test_bench_on_a_truncated_7b_config_prints_predicted_and_measured(tmp_path):
    """The real LLaVA-1.5-7B config, truncated to 3 LLM layers, on the CPU: full and FastV timed side by side."""
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", "fastv", "--device", "cpu", "--layers", "3", "-k", "64", "--repeats",
                                       "2", "--warmup", "0", "--new-tokens", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "predicted ×" in result.output and "measured ×" in result.output
    rows = json.loads(out.read_text())
    full, fastv = rows
    assert (full["method"], fastv["method"], fastv["keep"]) == ("full", "fastv", 64)
    assert full["n_visual"] == 576 and full["n_text"] == 60 and full["llm_layers"] == 3 and full["llm_layers_of"] == 32
    assert fastv["predicted_speedup_prefill"] == pytest.approx(full["flops_prefill"] / fastv["flops_prefill"])
    assert fastv["speedup_prefill"] == pytest.approx(full["prefill_ms"] / fastv["prefill_ms"])  # the same rounds
    assert fastv["full_prefill_ms_paired"] == full["prefill_ms"]  # one interleaved group: full timed once per round
    assert fastv["kv_cache_mb"] < full["kv_cache_mb"] and fastv["timing_repeats"] == 2
    assert fastv["provenance"]["torch"] == torch.__version__


def test_bench_skips_unsupported_defaults_and_refuses_a_named_one(tmp_path):
    runner = CliRunner()
    named = runner.invoke(main, ["bench", "visionzip", "-M", "tiny-qwen2.5-vl", "--device", "cpu"])
    assert named.exit_code == 2 and "error:" in named.output and "cls_attn" in named.output
    out = tmp_path / "rows.json"
    skipped = runner.invoke(main, ["bench", "-M", "tiny-qwen2.5-vl", "--device", "cpu", "-k", "16", "--repeats", "1",
                                   "--warmup", "0", "--new-tokens", "1", "--json", str(out)])
    assert skipped.exit_code == 0, skipped.output
    assert "note: skipped visionzip on tiny-qwen2.5-vl" in skipped.output
    methods = {r["method"] for r in json.loads(out.read_text())}
    assert "visionzip" not in methods and {"full", "fastv", "alvts", "pdrop"} <= methods


def test_bench_refuses_a_budget_before_building_anything():
    result = CliRunner().invoke(main, ["bench", "fastv", "--device", "cpu", "-k", "700"])
    assert result.exit_code == 2 and "--keep 700 is out of range" in result.output
    assert "Traceback" not in result.output
