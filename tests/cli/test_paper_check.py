"""scripts/paper-check.sh, the first real run (full on the 7B checkpoints beside their published scores), run here on
the tiny models and the task fixtures: every model and task runs and writes its rows; bad arguments stop it with
status 2 before anything runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from task_fixtures import write

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "paper-check.sh")


def _run(args, tmp_path, models="tiny-llava tiny-qwen2.5-vl"):
    env = {**os.environ, "PYTHON": sys.executable, "MODELS": models, "LIMIT": "2", "DEVICE": "cpu",
           "DTYPE": "float32", "OUT": str(tmp_path / "out")}
    return subprocess.run(["bash", SCRIPT, *args], env=env, capture_output=True, text=True, timeout=600)


def test_every_model_and_task_runs_and_writes_its_rows(tmp_path):
    paths = {t: write(t, str(tmp_path / t))["save_to_disk"] for t in ("pope", "textvqa")}
    done = _run([f"{t}={p}" for t, p in paths.items()], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    for model in ("tiny-llava", "tiny-qwen2.5-vl"):
        for task in ("pope", "textvqa"):
            rows = json.loads((tmp_path / "out" / f"{model}-{task}.json").read_text())
            rows = rows["rows"] if isinstance(rows, dict) else rows
            (full,) = rows
            assert full["method"] == "full" and full["task"] == task and full["n_samples"] == 2
            assert full["prompt_style"] == ("llava" if "llava" in model else "chat")
    assert "model=tiny-llava task=pope" in done.stdout


@pytest.mark.parametrize("args,message", [
    ([], "usage: scripts/paper-check.sh"),
    (["mmbench=/tmp"], "TASK one of pope, gqa, textvqa"),
    (["pope=/no/such/dir"], "no such path"),
    (["pope"], "no such path"),
])
def test_bad_arguments_stop_before_anything_runs(tmp_path, args, message):
    done = _run(args, tmp_path)
    assert done.returncode == 2 and message in done.stderr and not (tmp_path / "out").exists()
