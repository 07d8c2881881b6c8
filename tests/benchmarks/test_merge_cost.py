"""`tokenbench results merge` at a POPE-sized run: 9,000 samples of `full` and 3 methods at 3 budgets (10 cells, the
records of LLaVA-1.5-7B samples: test_store_cost.record), computed as 4 shards (every 4th batch of 8 from shard I on,
as `compare --shard I/4` splits them) into 4 stores, then merged. Prints the records moved, the merge's wall time and
the stores' sizes. Run: python -m pytest tests/benchmarks/test_merge_cost.py -m benchmark --benchmark-enable -s
"""

from __future__ import annotations

import os
import sqlite3

import pytest
from test_store_cost import record

from tokenbench.results.merge import merge_stores
from tokenbench.results.store import Store

pytestmark = pytest.mark.benchmark
SAMPLES, BATCH, SHARDS = 9000, 8, 4
CELLS = ["full"] + [f"{m}@{k}" for m in ("fastv", "alvts", "pdrop") for k in (64, 128, 192)]


def size_mib(path) -> float:
    return sum(os.path.getsize(f"{path}{s}") for s in ("", "-wal") if os.path.exists(f"{path}{s}")) / 2**20


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    recs = {c: record(c == "full") for c in CELLS}
    batches = [range(i, min(i + BATCH, SAMPLES)) for i in range(0, SAMPLES, BATCH)]
    paths = []
    for shard in range(SHARDS):
        store = Store(str(d / f"shard{shard}.sqlite"))
        for cell in CELLS:
            for batch in batches[shard::SHARDS]:
                store.put(cell, {"cell": cell}, {f"s{j}": recs[cell] for j in batch})
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store.close()
        paths.append(str(d / f"shard{shard}.sqlite"))
    return paths


def test_merge_four_shards_of_a_pope_sized_run(benchmark, shards, tmp_path):
    outs = iter(range(100))

    def merge():
        return merge_stores(str(tmp_path / f"merged{next(outs)}.sqlite"), shards)

    merged, seconds = benchmark.pedantic(merge, rounds=3, iterations=1)
    moved = sum(m.samples for m in merged)
    assert moved == SAMPLES * len(CELLS) and all(m.already == 0 for m in merged)
    with sqlite3.connect(tmp_path / "merged0.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == SAMPLES * len(CELLS)
    print(f"\n{moved} records of {len(CELLS)} cells moved from {SHARDS} stores "
          f"({', '.join(f'{size_mib(p):.1f}' for p in shards)} MiB) into one of "
          f"{size_mib(tmp_path / 'merged0.sqlite'):.1f} MiB; last merge {seconds:.2f} s")
