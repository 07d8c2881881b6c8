"""The latency protocol: a generation's clock marks are complete and ordered on every adapter, the stages derive from
them, every variant decodes the same number of tokens, and timing leaves the answers unchanged."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_model_names
from tokenbench import testing
from tokenbench.api import Reduction, build_method
from tokenbench.measure.latency import STAGES, stage_seconds, summary, time_variants
from tokenbench.measure.timing import Clock


@pytest.mark.parametrize("model", tiny_model_names())
def test_marks_are_complete_and_ordered(model, adapter_factory):
    adapter = adapter_factory(model)
    batch = adapter.encode(testing.synthetic_samples(1))
    clock = Clock("cpu")
    gen = adapter.generate(batch, 4, ignore_eos=True, clock=clock)
    m = gen.marks
    assert m["start"] <= m["vision_start"] <= m["vision_end"] <= m["first_token"] <= m["end"]
    assert gen.n_steps == 4 and len(gen.token_ids[0]) == 4  # the end token was ignored: exactly 4 tokens
    s = stage_seconds(gen, clock)
    assert s["prefill"] == m["first_token"] - m["start"] and s["e2e"] == m["end"] - m["start"]
    assert s["decode"] == pytest.approx((m["end"] - m["first_token"]) / 3)
    assert 0 < s["vision"] < s["prefill"] < s["e2e"] and s["overhead"] == 0.0
    plain = adapter.generate(batch, 4, ignore_eos=True)
    assert plain.marks is None and plain.token_ids == gen.token_ids  # the hooks change nothing


def test_time_variants_reports_every_stage_with_overhead_for_a_method(adapter_factory):
    adapter = adapter_factory("tiny-llava")
    batch = adapter.encode(testing.synthetic_samples(1))
    n = batch.layout.n_visual
    variants = {"full": Reduction(build_method("full"), n), "fastv": Reduction(build_method("fastv"), 64)}
    stats = time_variants(adapter, batch, variants, new_tokens=3, warmup=1, repeats=3)
    for name in variants:
        assert set(stats[name]) == set(STAGES) and all(s.n == 3 for s in stats[name].values())
    assert stats["full"]["overhead"].median_ms == 0.0 and stats["fastv"]["overhead"].median_ms > 0.0
    row = summary(stats["fastv"])
    assert row["decode_ms"] == stats["fastv"]["decode"].median_ms and row["vision_iqr_ms"] >= 0.0


def test_one_new_token_has_no_decode_stage(adapter_factory):
    adapter = adapter_factory("tiny-llava")
    batch = adapter.encode(testing.synthetic_samples(1))
    clock = Clock("cpu")
    gen = adapter.generate(batch, 1, clock=clock)
    assert "decode" not in stage_seconds(gen, clock)
    assert summary({})["decode_ms"] is None


@pytest.mark.gpu
def test_cuda_clock_uses_events():
    clock = Clock("cuda")
    a = clock.mark()
    torch.ones(1024, 1024, device="cuda").sum()
    b = clock.mark()
    assert isinstance(a, torch.cuda.Event) and clock.seconds(a, b) >= 0.0
