"""Harness overhead at keep-all: the plain transformers forward vs the harness's `full` and its routed path.

Run side by side with timing on:  python -m pytest tests/benchmarks -m benchmark --benchmark-enable
Not part of the default test run (the `benchmark` marker is deselected); each body asserts what it computed.
"""

from __future__ import annotations

import pytest
import torch

from tokenbench import testing
from tokenbench.api import Reduction, build_method
from tokenbench.engine.router import Router

pytestmark = pytest.mark.benchmark


@pytest.fixture(scope="module")
def setup(request):
    from tokenbench.hf.quiet import quiet_transformers as _quiet_transformers
    from tokenbench.harness.resolve import resolve_model

    _quiet_transformers()
    adapter = resolve_model("tiny-llava").load()
    batch = adapter.encode(testing.synthetic_samples(1))
    return adapter, batch


def test_plain_transformers_prefill(benchmark, setup):
    adapter, batch = setup

    def plain():
        with torch.inference_mode():
            return adapter.model(**batch.inputs, logits_to_keep=1).logits[:, -1]

    logits = benchmark(plain)
    assert torch.equal(logits.float(), adapter.generate(batch, 1).first_logits)


@pytest.mark.parametrize("method", ["full", "fastv", "random"])
def test_harness_prefill_keep_all(benchmark, setup, method):
    adapter, batch = setup
    m = build_method(method)
    n = adapter.layout().n_visual
    if m.reduces(n, n):
        with Router(Reduction(m, n), adapter.decoder_layers(), adapter.language_model()) as router:
            gen = benchmark(adapter.generate, batch, 1, router)
    else:
        gen = benchmark(adapter.generate, batch, 1)
    assert gen.first_logits.shape[0] == 1 and torch.isfinite(gen.first_logits).all()
