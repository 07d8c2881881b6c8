"""Data-parallel runs (tokenbench.harness.parallel): `accelerate launch` with 2 CPU processes (gloo) gives the rows of one
process; a rank killed mid-run loses only its unfinished batch and the rerun computes only what the store lacks; each
process computes its own batches; a parallel run without a store is one clear error."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tokenbench.cli import main

FAST = ["--repeats", "1", "--warmup", "0", "-q"]
#: 8 samples in batches of 2: 4 batches per cell, 2 for each of 2 processes
ARGS = ["compare", "fastv", "-M", "tiny-llava", "--limit", "8", "--batch-size", "2", *FAST]
N_STORED = 2 * 8  # full and fastv, 8 samples each
#: row fields that are not results: timings (measured afresh by every run, by one process: other threads here),
#: where samples came from (the store's path and counts, checked on their own), the machine and threads (provenance),
#: the processes that computed the samples, and the preparation's wall time
NOT_RESULTS = ("store", "provenance", "prepare_s", "peak_mem_mb", "timing_repeats", "processes")


def results_of(rows: list[dict]) -> list[dict]:
    def keep(k):
        return k not in NOT_RESULTS and not k.endswith("_ms") and not k.startswith(("speedup", "full_"))

    return [{k: v for k, v in r.items() if keep(k)} for r in rows]


def invoke(*args: str, env: dict | None = None):
    result = CliRunner().invoke(main, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*args: str) -> list[str]:
    """The README's command: accelerate launch with every setting on the command line (no config file)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port()), "-m", "tokenbench", *args]


def stored(path: str) -> dict[str, list[str]]:
    """cell -> its stored sample ids."""
    if not os.path.exists(path):
        return {}
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
            out: dict[str, list[str]] = {}
            for cell, sample in db.execute("SELECT cell, sample FROM samples ORDER BY cell, sample"):
                out.setdefault(cell, []).append(sample)
            return out
    except sqlite3.OperationalError:  # the tables are not created yet
        return {}


def runs(path: str) -> list[tuple[str, int]]:
    with sqlite3.connect(path) as db:
        return [(state, json.loads(spec).get("processes"))
                for state, spec in db.execute("SELECT state, spec FROM runs ORDER BY id")]


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> list[dict]:
    """The rows of one process, without a store."""
    out = tmp_path_factory.mktemp("single") / "rows.json"
    result = invoke(*ARGS, "--no-store", "--json", str(out))
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert [r["processes"] for r in rows] == [1, 1]
    return rows


def test_two_processes_give_the_rows_of_one(single, tmp_path):
    store, out = str(tmp_path / "s.sqlite"), str(tmp_path / "rows.json")
    proc = subprocess.run(launch(*ARGS, "--store", store, "--json", out), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(Path(out).read_text())
    assert results_of(rows) == results_of(single)
    assert [r["processes"] for r in rows] == [2, 2]
    # every sample computed by this run (by the two processes), none read back from an earlier one
    assert [(r["store"]["samples_reused"], r["store"]["samples_computed"]) for r in rows] == [(0, 8), (0, 8)]
    assert sum(map(len, stored(store).values())) == N_STORED
    assert runs(store) == [("finished", 2)]  # one run, the merge's; the processes' shares record none
    assert proc.stdout.count("| fastv ") == 1  # one table, printed by process 0


def test_each_process_computes_its_own_batches_and_the_merge_reads_them_back(single, tmp_path):
    """runner.compare's shard pass, in this process: process 1 of 2 stores exactly batches 1 and 3 of each cell."""
    from tokenbench.harness import compare as runner

    store = str(tmp_path / "s.sqlite")
    spec = runner.RunSpec(methods=(("fastv", {}),), model="tiny-llava", limit=8, batch_size=2, repeats=1, warmup=0,
                          store=store)
    ids = single[0]["sample_ids"]
    shares = []
    for rank in (1, 0):
        computed: dict[str, int] = {}
        assert runner.compare(spec, progress=False, shard=(rank, 2), computed=computed) == []
        shares.append(computed)
        if rank == 1:
            mine = sorted(ids[2:4] + ids[6:8])
            assert list(stored(store).values()) == [mine, mine]
            assert sorted(computed.values()) == [4, 4] and set(computed) == set(stored(store))
    assert not runs(store)  # no run recorded by a share
    total = {cell: shares[0][cell] + shares[1][cell] for cell in shares[0]}
    rows = runner.compare(dataclasses.replace(spec, processes=2), progress=False, computed=total)
    assert results_of(rows) == results_of(single)
    assert [(r["store"]["samples_reused"], r["store"]["samples_computed"]) for r in rows] == [(0, 8), (0, 8)]
    # run again (one process): everything is read back from the earlier run
    again = runner.compare(spec, progress=False)
    assert [(r["store"]["samples_reused"], r["store"]["samples_computed"]) for r in again] == [(8, 0), (8, 0)]


def _workers(launcher: int) -> dict[str, int]:
    """RANK -> pid of the launcher's tokenbench processes."""
    import psutil

    out = {}
    for child in psutil.Process(launcher).children(recursive=True):
        try:
            env = child.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if "RANK" in env and "tokenbench" in " ".join(child.cmdline()):
            out[env["RANK"]] = child.pid
    return out


def test_a_killed_rank_loses_only_unfinished_batches_and_the_rerun_computes_only_those(single, tmp_path):
    store, out = str(tmp_path / "s.sqlite"), str(tmp_path / "rows.json")
    proc = subprocess.Popen(launch(*ARGS, "--store", store, "--json", out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while sum(map(len, stored(store).values())) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        workers = _workers(proc.pid)
        assert "1" in workers, "rank 1 was not found (or the run finished before it could be killed)"
        os.kill(workers["1"], signal.SIGKILL)
        proc.wait(timeout=120)  # the launcher stops the other rank and fails
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0 and not os.path.exists(out)
    before = stored(store)
    n_before = sum(map(len, before.values()))
    assert 2 <= n_before < N_STORED, n_before  # killed mid-run: some batches stored, not all
    assert all(len(samples) % 2 == 0 for samples in before.values())  # whole batches only

    # the same command again, through the thin layer: --processes 2 runs it under accelerate launch
    rerun = subprocess.run([sys.executable, "-m", "tokenbench", *ARGS, "--store", store, "--json", out,
                            "--processes", "2"], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    rows = json.loads(Path(out).read_text())
    assert results_of(rows) == results_of(single)
    reused = sum(r["store"]["samples_reused"] for r in rows)
    computed = sum(r["store"]["samples_computed"] for r in rows)
    assert (reused, computed) == (n_before, N_STORED - n_before)  # only the missing samples computed
    after = stored(store)
    assert all(set(before[c]) <= set(after[c]) for c in before) and sum(map(len, after.values())) == N_STORED
    assert runs(store) == [("finished", 2)]


def test_a_parallel_run_without_a_store_is_one_error(tmp_path):
    for args, env in (([*ARGS, "--no-store", "--processes", "2"], None),  # before anything is launched
                      ([*ARGS, "--no-store"], {"WORLD_SIZE": "2"})):  # a process of a launch: before accelerate
        result = invoke(*args, env=env)
        assert result.exit_code == 2, result.output
        line = result.output.strip()
        assert line == ("error: 2 processes share their samples through the results store; pass --store PATH on a "
                        "filesystem every process sees, not --no-store")
    result = invoke(*ARGS, "--store", str(tmp_path / "s.sqlite"), "--device", "cuda:1", "--processes", "2")
    assert result.exit_code == 2 and "give --device cuda (each process uses its own GPU" in result.output


@pytest.mark.parametrize("variable", ["WORLD_SIZE", "PMI_SIZE"])
def test_a_stray_world_size_without_a_launcher_is_one_error(tmp_path, variable):
    """WORLD_SIZE or an MPI size left in a shell's environment, with nothing that launched the processes."""
    env = {variable: "2", "MASTER_ADDR": None, "MASTER_PORT": None}
    result = invoke(*ARGS, "--store", str(tmp_path / "s.sqlite"), env=env)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    line = result.output.strip()
    assert len(line.splitlines()) == 1 and "not where to meet them (MASTER_ADDR and MASTER_PORT unset)" in line
    assert "unset the stray variable" in line


@pytest.mark.skipif(__import__("torch").cuda.device_count() >= 2, reason="this machine has the GPUs")
def test_processes_on_gpus_this_machine_lacks_is_one_error_before_launching(tmp_path):
    result = invoke(*ARGS, "--store", str(tmp_path / "s.sqlite"), "--device", "cuda", "--processes", "2")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "--processes 2 --device cuda needs a GPU per process, and this machine has" in result.output
