"""The environment (issue 18, class 6): a cache path that cannot hold the tiny models is one error line, and a damaged
tiny model in tokenbench's own cache is built again instead of failing forever."""

from __future__ import annotations

import os

from click.testing import CliRunner

from tokenbench.cli import main

FAST = ["-n", "1", "--repeats", "1", "--warmup", "0", "-q", "--no-store"]


def test_a_cache_path_that_is_a_file_is_one_error_line(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file, not a directory")
    result = CliRunner().invoke(main, ["compare", "fastv", "-M", "tiny-llava", *FAST],
                                env={"TOKENBENCH_CACHE": str(blocker)})
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "cannot build the tiny model" in lines[0] and "TOKENBENCH_CACHE" in lines[0]


def test_a_truncated_tiny_model_in_the_cache_is_rebuilt(tmp_path):
    env = {"TOKENBENCH_CACHE": str(tmp_path)}
    assert CliRunner().invoke(main, ["compare", "fastv", "-M", "tiny-llava", *FAST], env=env).exit_code == 0
    (weights,) = [os.path.join(d, f) for d, _, files in os.walk(tmp_path) for f in files if f == "model.safetensors"]
    with open(weights, "r+b") as fh:
        fh.truncate(os.path.getsize(weights) // 2)
    result = CliRunner().invoke(main, ["compare", "fastv", "-M", "tiny-llava", *FAST], env=env)
    assert result.exit_code == 0, result.output
    assert os.path.getsize(weights) > 0
    from safetensors import safe_open

    with safe_open(weights, framework="pt") as fh:
        assert list(fh.keys())


def test_a_prompt_longer_than_the_models_positions_is_warned_about(tmp_path):
    """A model whose config allows fewer positions than a sample's prompt plus answer runs (RoPE does not stop it), but
    the run says so: one `warning:` line naming the task, the samples and the limit, kept in every row's warnings."""
    import json
    import shutil

    from tokenbench.models.llava import MINI_LLAVA

    model = tmp_path / "short"
    shutil.copytree(MINI_LLAVA, model, ignore=shutil.ignore_patterns("calibration"))
    config = json.loads((model / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = 64  # the synthetic prompts are ~170 tokens
    (model / "config.json").write_text(json.dumps(config))
    out = tmp_path / "rows.json"
    result = CliRunner().invoke(main, ["compare", "fastv", "-M", f"llava:{model}", *FAST, "--json", str(out)],
                                env={"TOKENBENCH_CACHE": str(tmp_path / "cache")})
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "1 of 1 samples need more positions" in warnings[0] and "(64)" in warnings[0]
    rows = json.loads(out.read_text())
    assert all(any("more positions" in w for w in r["warnings"]) for r in rows)
