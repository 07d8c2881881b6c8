"""The results store's cost: one batch of 8 samples written in one transaction, with the record of a LLaVA-1.5-7B
sample (32 layers; for `full`, its 256 most likely first tokens of a 32k vocabulary), and the file's size per 1,000
samples. Run: python -m pytest tests/benchmarks/test_store_cost.py -m benchmark --benchmark-enable -s
"""

from __future__ import annotations

import itertools
import json
import os
import random

import pytest
import torch

from tokenbench.results.store import Store

pytestmark = pytest.mark.benchmark
BATCH = 8


def record(full: bool) -> dict:
    rng = random.Random(0)
    rec = {"answer": "Yes", "visual_per_layer": [576] * 2 + [64] * 30, "keep": 64, "n_visual": 576,
           "flops": {"vision": 3 * 10**11, "projector": 10**10, "llm": 0, "lm_head": 10**8, "overhead": 10**7,
                     "per_layer": [rng.randrange(10**9, 10**10) for _ in range(32)]},
           "decode_flops": [10**10, 10**9], "fastv_formula": 10**12, "kv_bytes": 3.3e8, "kl": 0.0123}
    if full:
        top = torch.log_softmax(torch.randn(32064, generator=torch.Generator().manual_seed(0)) * 3, -1).topk(256)
        rec |= {"top_ids": top.indices.tolist(), "top_logprobs": top.values.tolist()}
    return rec


@pytest.mark.parametrize("kind", ["full", "method"])
def test_store_put_batch(benchmark, tmp_path, kind):
    store = Store(str(tmp_path / "s.sqlite"))
    rec = record(kind == "full")
    counter = itertools.count()

    def put():
        b = next(counter)
        store.put("cell", {"spec": 1}, {f"s{b * BATCH + j}": rec for j in range(BATCH)})

    benchmark(put)
    n = next(counter) * BATCH
    assert len(store.records("cell")) == n  # every batch written
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = sum(os.path.getsize(tmp_path / f) for f in os.listdir(tmp_path))
    print(f"\n{kind}: {len(json.dumps(rec))} bytes per record, {size / n * 1000 / 2**20:.2f} MiB per 1,000 samples "
          f"({n} samples written)")
