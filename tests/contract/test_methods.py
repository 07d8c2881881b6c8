"""The contract every registered method meets on every registered tiny model (a method or model added later is enrolled
here automatically): keep-all reproduces ``full`` exactly; budgets are exact; the router's result equals an
independent mask-based reference, for the prefill and for every cached decode step; a batch gives the same answers as
one sample at a time; the FLOPs the harness reports equal FlopCounterMode's measurement; the planned schedule is the
router's. Images are non-square (392 x 280), so LLaVA-NeXT unpads and Qwen2.5-VL resizes dynamically."""

from __future__ import annotations

import pytest
import torch

from conftest import make_method, method_names, tiny_model_names
from tokenbench import testing

MODELS = tiny_model_names()
METHODS = method_names()
REDUCING = [m for m in METHODS if make_method(m).reduces(1, 576)]
SIZE = (392, 280)


@pytest.fixture(scope="module")
def samples():
    return testing.synthetic_samples(3, seed=1, size=SIZE)


def compatible(method: str, adapter):
    """The adapter, after skipping a pair the adapter refuses up front (VisionZip needs a CLS token); the refusal
    itself is tested by test_incompatible_pairs_are_refused_before_compute."""
    from tokenbench.errors import IncompatibleError

    try:
        adapter.check_compatible(make_method(method))
    except IncompatibleError as exc:
        pytest.skip(f"refused by design: {exc}")
    return adapter


def n_visual(adapter) -> int:
    return adapter.layout(SIZE).n_visual


def budget(method: str, adapter) -> int:
    """About 1/9 of the visual tokens for a reducing method (the field's headline), all of them otherwise."""
    return max(1, n_visual(adapter) // 9) if method in REDUCING else n_visual(adapter)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", METHODS)
def test_keep_all_reproduces_full_exactly(method, model, adapter_factory, samples):
    adapter = compatible(method, adapter_factory(model))
    n = n_visual(adapter)
    ref, _, _ = testing.run(adapter, "full", n, samples, max_new_tokens=6)
    gen, _, _ = testing.run(adapter, make_method(method), n, samples, max_new_tokens=6)
    assert torch.equal(gen.first_logits, ref.first_logits)
    for ours, theirs in zip(gen.step_logits, ref.step_logits):
        assert torch.equal(ours, theirs)
    assert gen.token_ids == ref.token_ids


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", REDUCING)
@pytest.mark.parametrize("share", ["one", "ninth", "half", "all-but-one"])
def test_budget_is_honoured(method, model, share, adapter_factory, samples):
    """Every step keeps exactly what the method's plan says; a ``kept`` budget is the count left after the last
    reduction, a ``layer_mean`` budget is met to within one layer's worth of tokens (N / L), as the rows report."""
    adapter = compatible(method, adapter_factory(model))
    n, n_layers = n_visual(adapter), adapter.n_layers
    keep = {"one": 1, "ninth": n // 9, "half": n // 2, "all-but-one": n - 1}[share]
    m = make_method(method)
    _, record, _ = testing.run(adapter, m, keep, samples)
    planned = {s.layer: keep if s.keep is None else s.keep for s in m.plan(keep, n, n_layers)}
    assert set(record.selections) == set(planned)
    for layer, chosen in record.selections.items():
        assert chosen.shape == (len(samples), planned[layer]), f"layer {layer}: kept {tuple(chosen.shape)}"
        assert bool((chosen[:, 1:] > chosen[:, :-1]).all()), "kept indices must be unique and ascending"
    if m.budget_kind == "kept":
        assert record.selections, f"{method} made no selection"
        assert min(record.visual_per_layer) == keep
    else:
        assert abs(sum(record.visual_per_layer) / n_layers - keep) <= n / n_layers


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", REDUCING)
def test_router_equals_mask_reference_with_cache(method, model, adapter_factory, samples):
    """Prefill logits and every cached decode step equal a no-cache recomputation that masks instead of gathers."""
    adapter = compatible(method, adapter_factory(model))
    gen, record, batch = testing.run(adapter, make_method(method), max(1, n_visual(adapter) // 12), samples, max_new_tokens=5,
                                     ignore_eos=True)
    ref = testing.mask_reference(adapter, batch, record, gen.token_ids)
    assert ref.shape[1] >= 2, "the reference must cover at least one decode step"
    ours = torch.stack(gen.step_logits[: ref.shape[1]], dim=1)
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-4)
    full, _, _ = testing.run(adapter, "full", n_visual(adapter), samples, max_new_tokens=5)
    assert not torch.allclose(gen.first_logits, full.first_logits), "a reduction to 1/12 must change something"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", METHODS)
def test_batch_equals_one_by_one(method, model, adapter_factory):
    adapter = compatible(method, adapter_factory(model))
    samples = testing.synthetic_samples(4, seed=2, size=SIZE)  # questions of different lengths: left padded
    assert len({len(s.question) for s in samples}) > 1
    keep = budget(method, adapter)
    gen, record, _ = testing.run(adapter, make_method(method), keep, samples, max_new_tokens=5)
    for i, s in enumerate(samples):
        one, rec1, _ = testing.run(adapter, make_method(method), keep, [s], max_new_tokens=5)
        assert one.token_ids[0] == gen.token_ids[i]
        torch.testing.assert_close(one.first_logits[0], gen.first_logits[i], atol=1e-5, rtol=1e-4)
        if record is not None:
            for layer, chosen in record.selections.items():
                assert torch.equal(rec1.selections[layer][0], chosen[i])


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", METHODS)
def test_counted_flops_equal_flopcounter(method, model, adapter_factory, samples):
    """Every matmul is in the reported FLOPs, in the layer where it runs: the vision tower and projector/merger, the
    layers a method shrinks, its signals and its own select() work (and nothing it does not cause), and each decode
    step against the KV cache the prefill left (3 tokens generated: the prefill and 2 decode steps)."""
    adapter = compatible(method, adapter_factory(model))
    flops = testing.counted_vs_measured_flops(adapter, make_method(method), budget(method, adapter), samples[0], new_tokens=3)
    assert flops["total"][0] == flops["total"][1]
    for layer, (counted, measured) in enumerate(flops["layers"]):
        assert counted == measured, f"layer {layer}: counted {counted}, FlopCounterMode {measured}"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", METHODS)
def test_planned_schedule_equals_the_routers_record(method, model, adapter_factory, samples):
    """`tokenbench flops` plans from the steps alone; the plan must be what the router actually does."""
    from tokenbench.measure.accounting import plan, prefill_count

    adapter = compatible(method, adapter_factory(model))
    keep, n = budget(method, adapter), n_visual(adapter)
    m = make_method(method)
    _, record, batch = testing.run(adapter, m, keep, samples[:1])
    planned = plan(m, adapter.n_layers, n, keep)
    actual = record.visual_per_layer if record is not None else [n] * adapter.n_layers
    assert planned.visual_per_layer == actual
    args = (adapter.lm_dims(), adapter.encoder_macs(SIZE), batch.n_text[0])
    pre_llm = record.pre_llm_macs if record is not None else 0  # signals the adapter computes; the plan has no model
    assert (prefill_count(*args, planned.visual_per_layer, planned, m).total_macs + pre_llm
            == prefill_count(*args, actual, record, m).total_macs)


@pytest.mark.parametrize("model", MODELS)
def test_full_generation_equals_transformers_generate(model, adapter_factory, samples):
    """The harness's own greedy loop (explicit positions, M-RoPE on Qwen2.5-VL) is transformers' generate."""
    adapter = adapter_factory(model)
    batch = adapter.encode(samples[:1])
    ours = adapter.generate(batch, 6)
    with torch.inference_mode():
        out = adapter.model.generate(**batch.inputs, max_new_tokens=6, do_sample=False,
                                     pad_token_id=adapter.processor.tokenizer.pad_token_id)
    theirs = out[0, batch.inputs["input_ids"].shape[1]:].tolist()
    assert ours.token_ids[0] == theirs[: len(ours.token_ids[0])]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", METHODS)
def test_incompatible_pairs_are_refused_before_compute(method, model, adapter_factory):
    """A pair is either supported (the tests above run it) or refused by check_compatible with the reason; it never
    fails halfway through a run."""
    from tokenbench.errors import IncompatibleError

    adapter = adapter_factory(model)
    try:
        adapter.check_compatible(make_method(method))
    except IncompatibleError as exc:
        assert make_method(method).name in str(exc) and "cannot provide (" in str(exc), str(exc)
