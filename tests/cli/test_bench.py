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
    from tokenbench.harness.resolve import resolve_model

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
    from tokenbench.harness.resolve import resolve_model

    adapter = resolve_model("tiny-qwen2.5-vl").build_random("cpu", "float32", layers=2)
    assert adapter.n_layers == 2 and adapter.config_layers == 4
    with pytest.raises(ConfigError, match="--layers 9 is out of range"):
        resolve_model("tiny-llava").build_random("cpu", "float32", layers=9)


@pytest.mark.parametrize("model", tiny_model_names())
def test_bench_prompt_has_exactly_the_text_tokens_asked_for(model):
    from tokenbench.harness.bench import bench_sample
    from tokenbench.errors import ConfigError
    from tokenbench.harness.resolve import resolve_model

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
                                       "1", "--warmup", "0", "--new-tokens", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "predicted ×" in result.output and "measured ×" in result.output
    rows = json.loads(out.read_text())
    full, fastv = rows
    assert (full["method"], fastv["method"], fastv["keep"]) == ("full", "fastv", 64)
    assert full["n_visual"] == 576 and full["n_text"] == 60 and full["llm_layers"] == 3 and full["llm_layers_of"] == 32
    assert fastv["predicted_speedup_prefill"] == pytest.approx(full["flops_prefill"] / fastv["flops_prefill"])
    assert fastv["speedup_prefill"] == pytest.approx(full["prefill_ms"] / fastv["prefill_ms"])  # the same rounds
    assert fastv["full_prefill_ms_paired"] == full["prefill_ms"]  # one interleaved group: full timed once per round
    assert fastv["kv_cache_mb"] < full["kv_cache_mb"] and fastv["timing_repeats"] == 1
    assert fastv["provenance"]["torch"] == torch.__version__


def test_bench_skips_unsupported_defaults_and_refuses_a_named_one(tmp_path):
    runner = CliRunner()
    named = runner.invoke(main, ["bench", "vispruner", "-M", "tiny-qwen2.5-vl", "--device", "cpu"])
    assert named.exit_code == 2 and "error:" in named.output and "cls_attn" in named.output
    from tokenbench.harness.bench import BenchSpec, bench
    from tokenbench.budgets import Budget

    notes: list[str] = []  # no methods named: every one (the GPU default), on the CPU here to test it
    rows = bench(BenchSpec(models=("tiny-qwen2.5-vl",), budgets=(Budget(keep=16),), dtype="float32", repeats=1,
                           warmup=0, new_tokens=1), on_note=notes.append)
    assert any(n.startswith("skipped vispruner on tiny-qwen2.5-vl") for n in notes), notes
    methods = {r["method"] for r in rows}
    assert "vispruner" not in methods and {"full", "fastv", "alvts", "pdrop", "visionzip"} <= methods


def test_bench_refuses_a_budget_before_building_anything():
    result = CliRunner().invoke(main, ["bench", "fastv", "--device", "cpu", "-k", "700"])
    assert result.exit_code == 2 and "--keep 700 is out of range" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("option, value, least", [("--layers", "0", 1), ("--repeats", "0", 1), ("--warmup", "-1", 0),
                                                  ("--new-tokens", "0", 1), ("--n-text", "0", 1)])
def test_each_count_is_checked_on_its_own_before_anything_is_built(option, value, least, monkeypatch):
    """`--repeats 0 must be at least 1`: the option named alone, with an example, and no model built."""
    from tokenbench.hf.adapter import ModelAdapter

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the options were checked")

    monkeypatch.setattr(ModelAdapter, "build_random", refuse)
    result = CliRunner().invoke(main, ["bench", "fastv", "-M", "tiny-llava", "--device", "cpu", option, value])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert lines == [f"error: {option} {value} must be at least {least}; e.g. {option} {lines[0].split()[-1]}"], lines
    others = {"--layers", "--repeats", "--warmup", "--new-tokens", "--n-text"} - {option}
    assert not any(o in lines[0] for o in others)


def test_layers_beyond_a_later_models_depth_is_refused_before_the_first_model_is_built(monkeypatch):
    from tokenbench.hf.adapter import ModelAdapter

    monkeypatch.setattr(ModelAdapter, "build_random", lambda *a, **k: pytest.fail("built before the check"))
    result = CliRunner().invoke(main, ["bench", "fastv", "-M", "llava-1.5-7b", "-M", "tiny-llava", "--device", "cpu",
                                       "--layers", "8"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.splitlines() == [result.stderr.strip()] and "--layers 8 is out of range" in result.stderr
    assert "tiny-llava" in result.stderr


def test_the_cpu_default_is_a_quick_look_with_progress_and_no_calibration_note(tmp_path):
    """Left out on a CPU: fastv and alvts at 1/9, 2 LLM layers, float32, 3 rounds after 1 warm-up; one note says so;
    a progress line for every run; ALVTS's "calibrate me" warning is not shown (random weights: moot)."""
    out = tmp_path / "rows.json"
    result = CliRunner().invoke(main, ["bench", "-M", "tiny-llava", "--device", "cpu", "--new-tokens", "1", "--json",
                                       str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert [(r["method"], r["budget"]) for r in rows] == [("full", "all"), ("fastv", "r0.111111"),
                                                         ("alvts", "r0.111111")]
    assert {(r["llm_layers"], r["dtype"], r["timing_repeats"], r["timing_warmup"]) for r in rows} == {
        (2, "float32", 3, 1)}
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "quick CPU run" in notes[0] and "fastv and alvts" in notes[0], notes
    assert "calibrat" not in result.stderr
    runs = [line for line in result.stderr.splitlines() if line.startswith("bench: tiny-llava: ") and " runs, " in line]
    assert len(runs) == 3 * (1 + 1 + 3)  # per cell: the FLOPs count, the warm-up round, 3 timed rounds
    assert runs[-1].endswith("(15/15 runs, about 0 s left)") and any("round 3/3 alvts@" in r for r in runs)
    from tokenbench.results.provenance import cpu_model

    assert f"device=cpu ({cpu_model()}, " in result.stdout  # the processor's name in the table's header


def test_given_options_take_no_cpu_default_and_no_note(tmp_path):
    result = CliRunner().invoke(main, ["bench", "random", "-M", "tiny-llava", "--device", "cpu", "-k", "16",
                                       "--layers", "3", "--dtype", "float32", "--repeats", "1", "--warmup", "0",
                                       "--new-tokens", "1"])
    assert result.exit_code == 0, result.output
    assert "note:" not in result.stderr and "| random" in result.stdout


def test_provenance_names_the_processor_and_never_fails(tmp_path, monkeypatch):
    from tokenbench.results import provenance as results

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13 64-Core Processor\n")
    assert results.cpu_model(str(info)) == "AMD EPYC 7B13 64-Core Processor"
    monkeypatch.setattr(results.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(OSError("no sysctl")))
    monkeypatch.setattr(results.platform, "processor", lambda: "")
    assert results.cpu_model(str(tmp_path / "absent")) == results.platform.machine()  # never fails
    prov = results.provenance("cpu", 0)
    assert prov["cpu_model"] and prov["cpu_cores"] >= 1
    assert results.hardware({"device": "cpu", "provenance": {"cpu_model": "AMD EPYC 7B13", "cpu_cores": 2}}) == \
        "AMD EPYC 7B13, 2 cores"
    assert results.hardware({"device": "cuda", "provenance": {"gpu": "NVIDIA H200", "gpu_memory_gib": 139.8}}) == \
        "NVIDIA H200, 139.8 GiB"
    assert results.device_words({"device": "cpu", "provenance": {}}) == "cpu"  # rows from before the field
    assert results.device_words({"device": "cpu", "provenance": {"cpu_model": "X", "cpu_cores": 2}}) == "cpu (X, 2 cores)"


def test_compare_header_names_the_processor():
    from tokenbench.results.provenance import cpu_model

    result = CliRunner().invoke(main, ["compare", "random", "-k", "16", "--limit", "2", "--repeats", "1", "--warmup",
                                       "0", "-q", "--no-store"])
    assert result.exit_code == 0, result.output
    assert f"device=cpu ({cpu_model()}, " in result.stdout


def test_a_named_method_too_deep_for_the_cut_says_to_raise_layers(monkeypatch):
    """PyramidDrop's three stages do not fit the CPU default's 2 layers: refused before the build, naming --layers."""
    from tokenbench.hf.adapter import ModelAdapter

    monkeypatch.setattr(ModelAdapter, "build_random", lambda *a, **k: pytest.fail("built before the check"))
    result = CliRunner().invoke(main, ["bench", "pdrop", "-M", "tiny-llava", "--device", "cpu"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "pdrop" in lines[0], lines
    assert "first 2 of tiny-llava's 6 LLM layers" in lines[0] and "give a larger --layers, up to 6" in lines[0]
    device = CliRunner().invoke(main, ["bench", "fastv", "-M", "tiny-llava", "--device", "tpu"])
    assert device.exit_code == 2 and device.stderr.splitlines() == [device.stderr.strip()]  # no progress line first
