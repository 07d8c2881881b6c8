"""Scheduler arrays: `compare --shard I/N` into a store per shard, `results merge`, then the ordinary compare on the
merged store computes nothing and gives one process's rows; bad shards, bad stores and conflicting records are one
error line each, and a refused merge merges nothing."""

from __future__ import annotations

import json
import sqlite3

import pytest
from test_parallel import ARGS, invoke, results_of

from tokenbench.harness.shards import parse_shard


def samples_of(path) -> dict[tuple[str, str], dict]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return {(c, s): json.loads(r) for c, s, r in db.execute("SELECT cell, sample, record FROM samples")}


def test_four_shards_merged_give_the_rows_and_records_of_one_process(tmp_path):
    single = invoke(*ARGS, "--store", str(tmp_path / "one.sqlite"), "--json", str(tmp_path / "one.json"))
    assert single.exit_code == 0, single.output
    shards = [str(tmp_path / f"shard{i}.sqlite") for i in range(4)]
    for i, store in enumerate(shards):  # 8 samples in batches of 2: one batch of each cell per shard
        result = invoke(*ARGS, "--shard", f"{i}/4", "--store", store)
        assert result.exit_code == 0, result.output
        assert f"shard {i}/4: 4 samples of 2 cells computed into {store} (none scored)" in result.output
        assert "retention" not in result.output  # no table: nothing is scored
    out = tmp_path / "merged.sqlite"
    merged = invoke("results", "merge", str(out), *shards)
    assert merged.exit_code == 0 and f"merged 4 stores into {out}" in merged.output and ": 16 samples" in merged.output
    assert samples_of(out) == samples_of(tmp_path / "one.sqlite")  # every record, bit for bit
    rows = invoke(*ARGS, "--store", str(out), "--json", str(tmp_path / "merged.json"))
    assert rows.exit_code == 0, rows.output
    from_shards = json.loads((tmp_path / "merged.json").read_text())
    assert all(r["store"]["samples_computed"] == 0 for r in from_shards)
    assert results_of(from_shards) == results_of(json.loads((tmp_path / "one.json").read_text()))
    again = invoke("results", "merge", str(out), shards[0])  # merging a store twice adds nothing
    assert again.exit_code == 0 and "0 samples (0 cells) new, 4 already in" in again.output
    rerun = invoke(*ARGS, "--shard", "1/4", "--store", shards[1])  # a shard run again computes nothing
    assert rerun.exit_code == 0 and "shard 1/4: 0 samples of 2 cells computed" in rerun.output


def _store_with(path, record: dict) -> str:
    from tokenbench.results.store import Store

    store = Store(str(path))
    store.put("cell-key", {"model": "m"}, {"s1": record, f"only-{path.stem}": record})
    store.close()
    return str(path)


def test_a_conflicting_record_is_refused_naming_both_files_and_nothing_is_merged(tmp_path):
    a = _store_with(tmp_path / "a.sqlite", {"answer": "yes"})
    b = _store_with(tmp_path / "b.sqlite", {"answer": "no"})
    out = tmp_path / "out.sqlite"
    result = invoke("results", "merge", str(out), a, b)
    assert result.exit_code == 2 and "Traceback" not in result.output
    line = result.output.strip()
    assert len(line.splitlines()) == 1 and line.startswith("error: ")
    assert f"{b!r} and {a!r} hold different records of sample 's1'" in line and "nothing was merged" in line
    assert samples_of(out) == {}  # a's samples are not left behind either


@pytest.mark.parametrize("inputs, says", [
    ([], "give the stores to merge after OUT"),
    (["OUT"], "is both OUT and an input"),
    (["good", "good"], "is named twice"),
    (["missing"], "no results store at"),
    (["garbage"], "cannot be read (DatabaseError: file is not a database); nothing was merged"),
    (["other"], "is not a tokenbench results store"),
])
def test_bad_stores_to_merge_are_one_error_line(tmp_path, inputs, says):
    (tmp_path / "garbage").write_bytes(b"not a database at all, but long enough to have a header" * 20)
    with sqlite3.connect(tmp_path / "other") as db:
        db.execute("CREATE TABLE t (x)")
    _store_with(tmp_path / "good", {"answer": "yes"})
    out = tmp_path / "OUT"
    result = invoke("results", "merge", str(out), *[str(tmp_path / name) for name in inputs])
    assert result.exit_code == 2 and says in result.output and "Traceback" not in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("shard, extra, env, says", [
    ("4/4", [], {}, "I must be 0 to N-1"),
    ("1/0", [], {}, "I must be 0 to N-1"),
    ("half", [], {}, "is not I/N (e.g. --shard 0/4"),
    ("slurm", [], {"SLURM_ARRAY_TASK_ID": None, "SLURM_ARRAY_TASK_COUNT": None}, "and SLURM_ARRAY_TASK_ID and "
                                                                                  "SLURM_ARRAY_TASK_COUNT are not set"),
    ("slurm", [], {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"},
     "task 5 of an array of 4 starting at 1 is not one of its shards"),
    ("slurm", [], {"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "4"}, "is not a whole number"),
    ("0/2", ["--no-store"], {}, "--no-store gives none"),
    ("0/2", ["--json", "rows.json"], {}, "writes no rows: drop --json"),
    ("0/2", ["--processes", "2"], {}, "with several processes"),
])
def test_bad_shards_are_one_error_line_before_any_compute(tmp_path, shard, extra, env, says):
    store = [] if "--no-store" in extra else ["--store", str(tmp_path / "s.sqlite")]
    result = invoke(*ARGS, "--shard", shard, *store, *extra, env=env)
    assert result.exit_code == 2 and says in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "s.sqlite").exists()  # refused before the store is opened


def test_slurm_arrays_starting_at_0_or_1_give_the_same_shards():
    env = {"SLURM_ARRAY_TASK_COUNT": "4"}
    assert parse_shard("slurm", {**env, "SLURM_ARRAY_TASK_ID": "2"}) == (2, 4)
    assert parse_shard("slurm", {**env, "SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1"}) == (2, 4)
    assert parse_shard(" 3 / 4 ") == (3, 4)
