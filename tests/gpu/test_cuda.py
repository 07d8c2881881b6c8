"""On a GPU (skipped elsewhere): the same exactness contract in float32 and a bf16 smoke run with CUDA timing."""

from __future__ import annotations

import pytest
import torch

from tokenbench import testing

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda_adapter():
    from tokenbench.harness.resolve import resolve_model

    return resolve_model("tiny-llava").load(device="cuda", dtype="float32")


@pytest.mark.parametrize("method", ["fastv", "random"])
def test_keep_all_equals_full_on_cuda(cuda_adapter, method):
    samples = testing.synthetic_samples(3)
    n = cuda_adapter.layout().n_visual
    ref, _, _ = testing.run(cuda_adapter, "full", n, samples, max_new_tokens=5)
    gen, _, _ = testing.run(cuda_adapter, method, n, samples, max_new_tokens=5)
    assert torch.equal(gen.first_logits, ref.first_logits) and gen.token_ids == ref.token_ids


def test_bf16_compare_runs_and_reports_cuda_memory(tmp_path):
    from tokenbench.budgets import Budget
    from tokenbench.harness.compare import RunSpec, compare

    rows = compare(RunSpec(methods=(("fastv", {}),), budgets=(Budget(keep=64),), limit=8, device="cuda",
                           dtype="bfloat16", repeats=3, warmup=1), progress=False)
    assert [r["method"] for r in rows] == ["full", "fastv"]
    assert all(r["peak_mem_mb"] > 0 for r in rows) and rows[1]["flops_ratio"] < 1
    assert rows[0]["provenance"]["gpu"]


def test_bench_on_cuda_times_with_events_and_records_the_machine():
    from tokenbench.harness.bench import BenchSpec, bench
    from tokenbench.budgets import Budget

    rows = bench(BenchSpec(methods=(("fastv", {}),), models=("tiny-llava",), budgets=(Budget(keep=64),),
                           device="cuda", dtype="bfloat16", repeats=3, warmup=1, new_tokens=4))
    full, fastv = rows
    assert fastv["predicted_speedup_prefill"] > 1 and fastv["speedup_prefill"] > 0 and fastv["vision_ms"] > 0
    assert all(r["peak_mem_mb"] > 0 for r in rows) and fastv["sdpa_kernels_enabled"]
    assert full["provenance"]["gpu"] and "driver" in full["provenance"]


@pytest.mark.parametrize("method", ["alvts", "fastv", "cdpruner", "visionzip", "pdrop"])
def test_no_host_sync_inside_the_layers_on_cuda(cuda_adapter, method):
    """On CUDA a copy to the host is visible too (on a CPU it is not): still no sync inside the LLM layers."""
    from tokenbench.api import Prepared, Reduction, build_method
    from tokenbench.measure.kernels import count_prefill

    batch = cuda_adapter.encode(testing.synthetic_samples(1))
    m = build_method(method, {"calibration": "svd"} if method == "alvts" else {})
    art = Prepared.of(m.prepare(cuda_adapter.weights())).artefact
    counts, _, _ = count_prefill(cuda_adapter, batch, Reduction(m, batch.layout.n_visual // 9, artefact=art))
    assert counts.layer_syncs == 0


def test_compiled_path_equals_eager_on_cuda(cuda_adapter):
    """--compile on CUDA (inductor, CUDA graphs): the same logits as eager, to float tolerance."""
    from tokenbench.api import Prepared, Reduction, build_method
    from tokenbench.engine.compiled import compiled_layers

    batch = cuda_adapter.encode(testing.synthetic_samples(1))
    n = batch.layout.n_visual
    for m, keep in ((build_method("full"), n), (build_method("alvts", {"calibration": "svd"}), n // 9)):
        art = Prepared.of(m.prepare(cuda_adapter.weights())).artefact
        with cuda_adapter.reduction(Reduction(m, keep, artefact=art)) as r:
            eager = cuda_adapter.generate(batch, 3, router=r, ignore_eos=True)
        with compiled_layers(cuda_adapter.decoder_layers(), cuda_adapter.device):
            for _ in range(2):  # the second run replays what the first compiled (and captured)
                with cuda_adapter.reduction(Reduction(m, keep, artefact=art)) as r:
                    comp = cuda_adapter.generate(batch, 3, router=r, ignore_eos=True)
        for a, b in zip(eager.step_logits, comp.step_logits):
            torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)
