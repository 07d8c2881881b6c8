"""Every example in the README and in `--help` runs on the embedded default as written (issue 18's first hour: the
README's `--keep 64,128,192` failed on the default's 144 visual tokens).

Each example is run in-process in a scratch directory, shortened only by options that change how long it takes, never
what it checks: `--limit 1 --repeats 1 --warmup 0 -q` after a compare or run, a smaller fit after calibrate. Examples
that need what no test machine has (a GPU, hub weights or data, a path the reader fills in) or that take minutes by
design (bench, leaderboard --update/--check, which CI runs) are listed with the reason they are not run here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil

import pytest
from click.testing import CliRunner

from tokenbench.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HUB_MODELS = ("llava-1.5-7b", "llava-1.5-13b", "llava-next-7b", "llava-next-13b", "qwen2.5-vl-7b", "qwen2.5-vl-3b")
SHORTER = {"compare": ["--limit", "1", "--repeats", "1", "--warmup", "0", "-q"],
           "run": ["--limit", "1", "--repeats", "1", "--warmup", "0", "-q"],
           "calibrate": ["-n", "4", "--heldout", "2", "--epochs", "1"]}


def _readme_examples() -> list[str]:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        text = fh.read()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [re.split(r"\s#\s", line)[0].strip() for block in blocks for line in block.splitlines()
            if line.startswith("tokenbench ")]


def _help_examples() -> list[str]:
    import click

    out = []

    def visit(cmd: click.Command, path: list[str]) -> None:
        out.extend(re.split(r"\s#\s", line)[0].strip() for line in (cmd.help or "").splitlines()
                   if line.strip().startswith("tokenbench "))
        for name, sub in getattr(cmd, "commands", {}).items():
            visit(sub, [*path, name])

    visit(main, ["tokenbench"])
    return out


def why_not_run(example: str) -> str | None:
    words = shlex.split(example)
    if any(p in example for p in ("/path/", "/ckpt/", "~/")):
        return "a path the reader fills in"
    if "cuda" in words or "--device cuda" in example:
        return "needs a GPU"
    if words[1] == "bench":
        return "a real-size timing run by design (tests/cli/test_bench.py runs bench)"
    if words[1] == "leaderboard" and ("--update" in words or "--check" in words):
        return "runs the whole mini suite (CI runs `leaderboard --check`)"
    if words[1] in ("compare", "run", "calibrate"):
        model = next((words[i + 1] for i, w in enumerate(words[:-1]) if w in ("--model", "-M")), "mini-llava")
        task = next((words[i + 1] for i, w in enumerate(words[:-1]) if w in ("--task", "-t")), "synthetic")
        if model in HUB_MODELS:
            return f"needs {model}'s weights from the hub"
        if task != "synthetic":
            return f"needs the {task} data from the hub"
    return None


EXAMPLES = list(dict.fromkeys(_readme_examples() + _help_examples()))


def test_examples_were_found():
    assert len(EXAMPLES) > 20
    assert sum(why_not_run(e) is None for e in EXAMPLES) > 12


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A working directory with a copy of the leaderboards (render writes there) and a cache of its own."""
    d = tmp_path_factory.mktemp("examples")
    shutil.copytree(os.path.join(ROOT, "leaderboards"), d / "leaderboards")
    return d


@pytest.mark.parametrize("example", [e for e in EXAMPLES if why_not_run(e) is None])
def test_example_runs_as_written(example, scratch, monkeypatch):
    monkeypatch.chdir(scratch)
    env = {"TOKENBENCH_CACHE": str(scratch / "cache")}
    words = shlex.split(example)[1:]
    if words[0] == "results" and len(words) > 2 and words[2].isdigit():
        while _runs(env) < int(words[2]):  # the run the example names exists, as after the README's compares
            assert CliRunner().invoke(main, ["compare", "random", *SHORTER["compare"]], env=env).exit_code == 0
    if words[:2] == ["results", "merge"]:  # the shards' stores it merges exist, as after their compare --shard jobs
        for i, path in enumerate(words[3:]):
            if not os.path.exists(path):
                args = ["compare", "random", "--shard", f"{i}/{len(words) - 3}", "--store", path, *SHORTER["compare"]]
                assert CliRunner().invoke(main, args, env=env).exit_code == 0
    result = CliRunner().invoke(main, [*words, *SHORTER.get(words[0], [])], env=env)
    assert result.exit_code == 0, f"{example!r} exited {result.exit_code}:\n{result.output}"
    assert "error:" not in result.stderr and "Traceback" not in result.output


def _runs(env) -> int:
    from tokenbench.results.store import Store

    path = os.path.join(env["TOKENBENCH_CACHE"], "results.sqlite")
    return len(Store(path).runs()) if os.path.exists(path) else 0
