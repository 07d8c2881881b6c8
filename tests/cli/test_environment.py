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
