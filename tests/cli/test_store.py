"""The results store: a run killed with SIGKILL resumes without recomputing a stored sample and ends with the rows of an
uninterrupted run; changed specs miss; `full` is computed once across compares; two processes share one store; a
damaged store is one clear error; `tokenbench results` lists, shows, exports and deletes; failed writes lose nothing."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from tokenbench.cli import main

FAST = ["--repeats", "1", "--warmup", "0", "-q"]
#: row fields that are measured afresh by every run (timings) or say where samples came from: not results
NOT_RESULTS = ("store", "provenance", "prepare_s", "peak_mem_mb", "timing_repeats")


def results_of(rows: list[dict]) -> list[dict]:
    def keep(k):
        return k not in NOT_RESULTS and not k.endswith("_ms") and not k.startswith(("speedup", "full_"))

    return [{k: v for k, v in r.items() if keep(k)} for r in rows]


def invoke(*args: str):
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def stored_samples(path: str) -> int:
    if not os.path.exists(path):
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
            return db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
    except sqlite3.OperationalError:  # the tables are not created yet
        return 0


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tokenbench", *args]


def test_a_run_killed_with_sigkill_resumes_without_recomputing_and_ends_as_an_uninterrupted_run(tmp_path):
    args = ["compare", "fastv", "random", "-n", "48", "--batch-size", "4", *FAST]
    store, out = str(tmp_path / "store.sqlite"), str(tmp_path / "rows.json")
    proc = subprocess.Popen(cli(*args, "--store", store, "--json", out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while stored_samples(store) < 12 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    before = stored_samples(store)
    assert 12 <= before < 3 * 48  # killed mid-run: some batches stored, not all
    assert before % 4 == 0  # whole batches only: each is one transaction

    listed = invoke("results", "list", "--store", store)
    assert listed.exit_code == 0 and " killed " in listed.output  # marked running, its process gone
    resumed = invoke(*args, "--store", store, "--json", out)
    assert resumed.exit_code == 0, resumed.output
    rows = json.loads((tmp_path / "rows.json").read_text())
    reused = sum(r["store"]["samples_reused"] for r in rows)
    computed = sum(r["store"]["samples_computed"] for r in rows)
    assert reused == before  # every stored sample read back
    assert computed == 3 * 48 - before  # and only the missing ones computed: nothing recomputed
    assert stored_samples(store) == 3 * 48

    fresh = invoke(*args, "--no-store", "--json", str(tmp_path / "fresh.json"))
    assert fresh.exit_code == 0, fresh.output
    uninterrupted = json.loads((tmp_path / "fresh.json").read_text())
    assert results_of(rows) == results_of(uninterrupted)
    assert all(r["store"] is None for r in uninterrupted)


def test_a_run_stopped_with_sigterm_says_so_is_marked_interrupted_and_resumes(tmp_path):
    """A plain `kill` or a scheduler's time limit: one line, exit 143, the run marked interrupted (not left
    "running"), its finished rows printed and written, its stored samples kept; the rerun computes only the rest."""
    args = ["compare", "fastv", "random", "-n", "48", "--batch-size", "4", *FAST]
    store, out = str(tmp_path / "store.sqlite"), str(tmp_path / "rows.json")
    proc = subprocess.Popen(cli(*args, "--store", store, "--json", out), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while stored_samples(store) < 12 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    output, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (output, err)
    assert err.strip().splitlines()[-1].startswith("terminated (SIGTERM): what finished is kept") and \
        "Traceback" not in err
    before = stored_samples(store)
    assert 12 <= before < 3 * 48 and before % 4 == 0  # whole batches kept, not all of them
    listed = invoke("results", "list", "--store", store)
    assert listed.exit_code == 0 and " interrupted " in listed.output, listed.output
    resumed = invoke(*args, "--store", store, "--json", out)
    assert resumed.exit_code == 0, resumed.output
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert sum(r["store"]["samples_computed"] for r in rows) == 3 * 48 - before


def test_full_is_computed_once_and_a_changed_option_misses(tmp_path):
    store = str(tmp_path / "s.sqlite")
    first = tmp_path / "a.json"
    assert invoke("compare", "fastv", "-n", "8", *FAST, "--store", store, "--json", str(first)).exit_code == 0
    second = tmp_path / "b.json"
    assert invoke("compare", "fastv", "pdrop", "-n", "8", *FAST, "--store", store, "--json",
                  str(second)).exit_code == 0
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    assert [r["store"]["samples_computed"] for r in a] == [8, 8]
    assert [(r["label"], r["store"]["samples_reused"], r["store"]["samples_computed"]) for r in b] == [
        ("full", 8, 0), ("fastv", 8, 0), ("pdrop", 0, 8)]
    assert results_of(a) == results_of(b)[:2]
    third = tmp_path / "c.json"
    assert invoke("compare", "fastv", "-n", "8", "-a", "layer=3", *FAST, "--store", store, "--json",
                  str(third)).exit_code == 0
    c = json.loads(third.read_text())
    assert [(r["label"], r["store"]["samples_computed"]) for r in c] == [("full", 0), ("fastv[layer=3]", 8)]
    fourth = tmp_path / "d.json"  # another task option: another task, nothing reused
    assert invoke("compare", "fastv", "-n", "8", "-T", "seed=5", *FAST, "--store", store, "--json",
                  str(fourth)).exit_code == 0
    d = json.loads(fourth.read_text())
    assert [r["store"]["samples_computed"] for r in d] == [8, 8] and d[0]["task_options"]["seed"] == 5


def test_two_processes_write_one_store_at_once(tmp_path):
    store = str(tmp_path / "shared.sqlite")
    # one torch thread each: two processes of two threads on a 2-core machine spin against each other (81 s against 20 s here)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cli("compare", m, "-n", "24", "--batch-size", "2", *FAST, "--store", store, "--json",
                                  str(tmp_path / f"{m}.json")), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env=env)
             for m in ("fastv", "random")]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-2000:]
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) FROM runs WHERE state = 'finished'").fetchone()[0] == 2
    # full ran in both (at once) and holds each sample once; each method holds its own
    assert stored_samples(store) == 3 * 24
    rerun = tmp_path / "both.json"
    assert invoke("compare", "fastv", "random", "-n", "24", "--batch-size", "2", *FAST, "--store", store, "--json",
                  str(rerun)).exit_code == 0
    assert all(r["store"]["samples_computed"] == 0 for r in json.loads(rerun.read_text()))


def test_a_damaged_store_is_one_error_naming_the_file_and_the_way_out(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database, but it is long enough to have a header" * 20)
    result = invoke("compare", "fastv", "-n", "2", *FAST, "--store", str(bad))
    assert result.exit_code == 2
    line = result.output.strip()
    assert line.startswith("error: results store") and str(bad) in line and "start afresh" in line
    assert "Traceback" not in result.output and len(line.splitlines()) == 1
    assert invoke("results", "list", "--store", str(bad)).exit_code == 2


def test_results_list_show_export_delete_and_a_leaderboard_from_the_export(tmp_path):
    store = str(tmp_path / "s.sqlite")
    assert invoke("compare", "fastv", "-n", "8", *FAST, "--store", store).exit_code == 0
    listed = invoke("results", "list", "--store", store)
    assert listed.exit_code == 0 and "mini-llava" in listed.output and "finished" in listed.output
    shown = invoke("results", "show", "1", "--store", store)
    assert shown.exit_code == 0 and "fastv" in shown.output and "retention %" in shown.output
    os.makedirs(tmp_path / "board" / "results")
    rows_path = tmp_path / "board" / "results" / "run1.json"
    samples_path = tmp_path / "samples.jsonl"
    exported = invoke("results", "export", "1", "--store", store, "--json", str(rows_path), "--samples",
                      str(samples_path))
    assert exported.exit_code == 0, exported.output
    rows = json.loads(rows_path.read_text())
    assert [r["label"] for r in rows] == ["full", "fastv"]
    records = [json.loads(line) for line in samples_path.read_text().splitlines()]
    assert len(records) == 16 and {"answer", "visual_per_layer", "flops", "kl", "sample"} <= set(records[0])
    board = invoke("leaderboard", "--dir", str(tmp_path / "board"))
    assert board.exit_code == 0, board.output
    assert (tmp_path / "board" / "mini-llava--synthetic.md").exists()
    assert invoke("results", "show", "9", "--store", store).exit_code == 2
    deleted = invoke("results", "delete", "1", "--store", store)
    assert deleted.exit_code == 0 and "16 stored samples" in deleted.output
    assert stored_samples(store) == 0


def test_a_failed_json_write_keeps_what_was_written_and_says_so(tmp_path, monkeypatch):
    import tokenbench.results.files as results

    out = tmp_path / "rows.json"
    real = results.json.dump
    calls = []

    def dump(obj, fh, **kw):
        calls.append(len(obj))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(obj, fh, **kw)

    monkeypatch.setattr(results.json, "dump", dump)
    result = invoke("compare", "fastv", "random", "-n", "4", *FAST, "--no-store", "--json", str(out))
    assert result.exit_code == 2
    assert "error: could not write --json" in result.output and "No space left on device" in result.output
    assert "wrote 1 rows" in result.output
    assert len(json.loads(out.read_text())) == 1
    assert sorted(os.listdir(tmp_path)) == ["rows.json"]  # no temporary file left behind


@pytest.mark.parametrize("args", [["compare", "fastv", "--json", ""], ["flops", "fastv", "--json", ""],
                                  ["compare", "fastv", "--store", ""]])
def test_empty_paths_are_errors(args):
    result = invoke(*args)
    assert result.exit_code == 2 and "is empty" in result.output


def test_flops_checks_its_json_path_before_it_runs(tmp_path):
    target = tmp_path / "missing" / "x.json"
    result = invoke("flops", "fastv", "--json", str(target))
    assert result.exit_code == 2 and "does not exist" in result.output
    assert os.listdir(tmp_path) == []


def test_export_to_one_file_twice_and_a_negative_run_id_are_one_error_line(tmp_path):
    store = str(tmp_path / "s.sqlite")
    assert invoke("compare", "fastv", "-n", "2", *FAST, "--store", store).exit_code == 0
    same = str(tmp_path / "out.json")
    result = invoke("results", "export", "1", "--store", store, "--json", same, "--samples", same)
    assert result.exit_code == 2 and "--json and --samples both name" in result.output
    assert not os.path.exists(same)  # refused before anything is written
    result = invoke("results", "show", "-1", "--store", store)
    assert result.exit_code == 2 and "has no run -1; its runs: 1" in result.output, result.output


@pytest.mark.parametrize("table, column", [("samples", "record"), ("runs", "spec"), ("runs", "rows")])
def test_a_store_with_a_damaged_record_is_one_error_line_in_compare_and_results(tmp_path, table, column):
    store = str(tmp_path / "s.sqlite")
    assert invoke("compare", "fastv", "-n", "2", *FAST, "--store", store).exit_code == 0
    with sqlite3.connect(store) as db:
        db.execute(f"UPDATE {table} SET {column} = '{{not json'")
    readers = [["compare", "fastv", "-n", "2", *FAST]] if table == "samples" else [["results", "list"],
                                                                                  ["results", "show", "1"]]
    for args in readers:  # what reads the damaged part: compare the samples, the results commands the runs
        result = invoke(*args, "--store", store)
        assert result.exit_code == 2 and "Traceback" not in result.output, (args, result.output)
        line = result.output.strip().splitlines()[-1]
        assert line.startswith(f"error: results store {store!r} holds damaged data (") and "is not JSON" in line
