"""`tokenbench leaderboard --check --jobs N`: suites checked side by side in worker processes give the one-by-one
verdict; conflicting options are one error line; Ctrl-C and SIGTERM stop every worker and say so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tokenbench.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("args, says", [
    (["--update", "--jobs", "2"], "--update times every row for the board"),
    (["--jobs", "2"], "--jobs 2 applies to --check; rendering runs nothing"),
    (["--check", "--jobs", "0"], "0 is not in the range x>=1"),
])
def test_jobs_outside_check_or_below_one_is_one_error_line(tmp_path, args, says):
    result = CliRunner().invoke(main, ["leaderboard", *args, "--dir", str(tmp_path)])
    assert result.exit_code == 2 and "error:" in result.output and says in result.output, result.output
    assert "Traceback" not in result.output


def test_suites_checked_side_by_side_pass_and_a_changed_cell_fails(tmp_path, monkeypatch):
    from tokenbench.results import suites

    small = {**suites.COMMON, "task_options": {"n": 2}, "keep_ratio": (1 / 9,), "match": "matched",
             "methods": ["fastv", "vispruner"], "warmup": 0, "repeats": 1, "batch_size": 2}
    monkeypatch.setattr(suites, "MINI_SUITES", ({**small, "model": "tiny-llava"}, {**small, "model": "tiny-qwen2.5-vl"}))
    result = CliRunner().invoke(main, ["leaderboard", "--update", "-q", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["leaderboard", "--check", "--jobs", "2", "--dir", str(tmp_path)])
    assert result.exit_code == 0 and "leaderboard up to date: 6 rows of 2 board(s) match" in result.output, \
        result.output
    assert "tiny-llava: 3 rows run in" in result.output and "tiny-qwen2.5-vl: 3 rows run in" in result.output
    board = tmp_path / "tiny-llava--synthetic.md"
    text = board.read_text()
    (line,) = [ln for ln in text.splitlines() if ln.startswith("| fastv ")]
    cells = line.split("|")
    cells[4] = cells[4].replace(cells[4].strip(), "0.123")  # the accuracy column
    board.write_text(text.replace(line, "|".join(cells)))
    result = CliRunner().invoke(main, ["leaderboard", "--check", "-q", "--jobs", "2", "--dir", str(tmp_path)])
    assert result.exit_code == 1 and "fastv @ 1/9 (matched budgets): accuracy committed 0.123" in result.output, \
        result.output


def _workers(pid: int) -> list[int]:
    """The spawned worker processes of ``pid`` (not multiprocessing's resource tracker)."""
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline:
            found.append(int(child))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process tree from /proc")
@pytest.mark.parametrize("how, status, says", [
    ("sigterm", 143, "terminated (SIGTERM)"),
    ("ctrl-c", 130, "interrupted"),
    ("sigkill", -signal.SIGKILL, ""),  # nothing can be said; the workers notice their parent is gone and exit
])
def test_a_stopped_check_stops_its_workers_and_says_so(how, status, says):
    # SIGINT as a terminal leaves it (a shell runs background jobs with it ignored, and Python then never installs its
    # Ctrl-C handler), in a session of its own so that the "terminal's" Ctrl-C reaches only this command's processes
    proc = subprocess.Popen([sys.executable, "-m", "tokenbench", "leaderboard", "--check", "--jobs", "2", "-q"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while len(workers := _workers(proc.pid)) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        time.sleep(2)  # the workers are importing or running their suites
        if how in ("sigterm", "sigkill"):  # `kill PID`, a scheduler's time limit: the command's process only
            proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
        else:  # Ctrl-C in a terminal reaches the whole foreground process group
            os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == status and says in err and "Traceback" not in err, (out, err)
    deadline = time.monotonic() + 15
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(map(_alive, workers)), "a worker outlived the stopped check"
