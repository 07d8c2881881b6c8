"""ALVTS: the selector against exact attention, routing per layer, the static ablation, calibration and artefacts.

The contract suite (tests/contract) already runs ALVTS like every method: keep-all equals full, exact budgets, router
equals the mask reference with a cache, batch equals one-by-one, counted FLOPs equal FlopCounterMode.
"""

from __future__ import annotations

import dataclasses

import os

import pytest
import torch

from tokenbench import artefacts, testing
from tokenbench.harness import calibrate as calibration
from tokenbench.api import Reduction, Need, Prepared, Step, build_method
from tokenbench.engine.subset import take as _take
from tokenbench.engine.router import Router
from tokenbench.errors import ConfigError
from tokenbench.methods.alvts import fit
from tokenbench.methods.alvts.selector import FACTORS, importance, selector_scores, svd_factors, svd_init

KEEP = 64


@pytest.fixture(scope="module")
def adapter():
    from tokenbench.harness.resolve import resolve_model

    return resolve_model("tiny-llava").load()


@pytest.fixture(scope="module")
def samples():
    return testing.synthetic_samples(3, seed=4)


@pytest.fixture(scope="module")
def frozen_signals(adapter, samples):
    """The unreduced model's per-layer inputs and exact attention rows, as calibration sees them."""
    visit = calibration.visitor(adapter, exact_steps(adapter.n_layers), {"s": samples}, batch_size=8)
    (batch,) = list(visit("s"))
    return batch


def exact_steps(n_layers):
    """Each layer's input and its exact attention rows (the probe's, independent of the selector's code)."""
    from tokenbench.api import Step

    return tuple(Step(layer, needs=(Need("layer_input", layer=layer), Need("attn", layer=layer, queries="visual"),
                                    Need("attn", layer=layer, queries="text"))) for layer in range(n_layers))


def _prepared(adapter, **opts):
    return Prepared.of(build_method("alvts", {"calibration": "svd", **opts}).prepare(adapter.weights()))


# -- the selector --------------------------------------------------------------------------------------------------------
def test_svd_factors_split_singular_values_as_square_roots():
    w = torch.randn(12, 20, dtype=torch.float64).float()
    u, v = svd_factors(w, 5)
    assert u.shape == (12, 5) and v.shape == (5, 20)
    s = torch.linalg.svdvals(w)[:5]
    torch.testing.assert_close(u.norm(dim=0), s.sqrt(), rtol=1e-5, atol=1e-6)  # U_R diag(sqrt s): column norms sqrt s
    torch.testing.assert_close(v.norm(dim=1), s.sqrt(), rtol=1e-5, atol=1e-6)
    full_u, full_v = svd_factors(w, 12)
    torch.testing.assert_close(full_u @ full_v, w, rtol=1e-4, atol=1e-5)


def test_full_rank_selector_equals_exact_attention_scores(adapter, frozen_signals):
    """With R = the full rank and no calibration, S~ equals S computed from the layer's exact attention."""
    _check_full_rank(adapter, frozen_signals)


def test_full_rank_selector_is_exact_on_qwen_with_its_biases_and_mrope(adapter_factory):
    """The same on Qwen2.5-VL: q/k biases (not factorised, added back) and 3-D M-RoPE positions."""
    qwen = adapter_factory("tiny-qwen2.5-vl")
    samples = testing.synthetic_samples(2, seed=4, size=(392, 280))
    visit = calibration.visitor(qwen, exact_steps(qwen.n_layers), {"s": samples}, 8)
    assert qwen.decoder_layers()[0].self_attn.q_proj.bias is not None
    _check_full_rank(qwen, next(iter(visit("s"))))


def _check_full_rank(adapter, frozen_signals):
    weights = adapter.weights()
    full = svd_init(weights, 10**6, range(adapter.n_layers))  # the rank is capped at each matrix's own rank
    low = svd_init(weights, 8, range(adapter.n_layers))
    for layer, ctx in frozen_signals.items():
        inp = ctx.signal(Need("layer_input", layer=layer))
        exact = importance(ctx.signal(Need("attn", layer=layer, queries="visual")),
                           ctx.signal(Need("attn", layer=layer, queries="text")), ctx.text_query_mask)
        ours = selector_scores(inp, tuple(full[f"{layer}.{n}"] for n in FACTORS))
        torch.testing.assert_close(ours, exact, rtol=1e-4, atol=1e-9)
        approx = selector_scores(inp, tuple(low[f"{layer}.{n}"] for n in FACTORS))
        assert not torch.allclose(approx, exact, rtol=1e-4, atol=1e-9), "rank 8 should only approximate the scores"


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_row_blocks_give_the_one_block_scores(adapter_factory, monkeypatch, pooling):
    """A long sequence is scored in row blocks, each seeing only the keys up to its end (causal): the same scores
    as the whole square at once, to float tolerance, for both poolings and with the stacked factors."""
    from tokenbench.methods.alvts import selector
    from tokenbench.methods.alvts.fit import stack

    adapter = adapter_factory("tiny-qwen2.5-vl")  # GQA, biases, M-RoPE
    samples = testing.synthetic_samples(2, seed=4, size=(392, 280))
    visit = calibration.visitor(adapter, exact_steps(adapter.n_layers), {"s": samples}, 8)
    ctx = next(iter(visit("s")))[1]
    inp = ctx.signal(Need("layer_input", layer=1))
    low = svd_init(adapter.weights(), 8, [1])
    factors = tuple(low[f"1.{n}"] for n in FACTORS)
    with torch.no_grad():
        whole = selector_scores(inp, (*factors, *stack(*factors)), pooling)
        monkeypatch.setattr(selector, "BLOCK_ELEMENTS", 16 * 4 * inp.normed.shape[1])  # 16-row blocks
        assert len(selector.row_blocks(inp.normed.shape[1], 4)) > 2
        blocks = selector_scores(dataclasses.replace(inp, memo={}), factors, pooling)
    torch.testing.assert_close(blocks, whole, rtol=1e-5, atol=1e-9)


def test_score_is_the_product_of_received_attention():
    v = torch.rand(1, 2, 3, 3)
    t = torch.rand(1, 2, 4, 3)
    valid = torch.tensor([[True, True, False, True]])
    expected = v.mean(1).mean(1) * t.mean(1)[:, [0, 1, 3]].mean(1)
    torch.testing.assert_close(importance(v, t, valid), expected)
    expected_max = v.amax(1).mean(1) * t.amax(1)[:, [0, 1, 3]].mean(1)
    torch.testing.assert_close(importance(v, t, valid, "max"), expected_max)


# -- routing ---------------------------------------------------------------------------------------------------------------
def test_keep_all_through_the_router_reproduces_full_exactly(adapter, samples):
    """r = 1 with the router installed (selector run, all tokens chosen) is the unmodified model, bit for bit."""
    routed = type("AlwaysRouted", (type(build_method("alvts")),), {"reduces": lambda self, keep, n: True})
    method = routed(calibration="svd")  # the harness would skip the router at r = 1; force it through here
    n = adapter.layout().n_visual
    ref, _, _ = testing.run(adapter, "full", n, samples, max_new_tokens=6)
    batch = adapter.encode(samples)
    art = Prepared.of(method.prepare(adapter.weights())).artefact
    with Router(Reduction(method, n, artefact=art), adapter.decoder_layers(), adapter.language_model()) as r:
        gen = adapter.generate(batch, 6, router=r)
    assert len(r.record.selections) == adapter.n_layers
    assert torch.equal(gen.first_logits, ref.first_logits)
    assert all(torch.equal(a, b) for a, b in zip(gen.step_logits, ref.step_logits))
    assert gen.token_ids == ref.token_ids


@pytest.mark.parametrize("skipped_as_kv", [True, False])
def test_each_layer_routes_exactly_k_and_the_choice_changes_across_layers(adapter_factory, skipped_as_kv):
    """On the trained mini-llava with its shipped calibration (random-weight tiny models score the same tokens highest
    at every layer, so only a trained model can show the choice moving), at 1/9."""
    from tokenbench.api import TASKS

    mini = adapter_factory("mini-llava")
    samples = TASKS.get("synthetic")(n=4, seed=0).samples(3)
    keep = mini.layout().n_visual // 9
    _, record, _ = testing.run(mini, build_method("alvts", {"skipped_as_kv": skipped_as_kv}), keep, samples)
    assert record.visual_per_layer == [keep] * mini.n_layers
    assert all(v.shape == (len(samples), keep) for v in record.layer_visual)
    distinct = [len({frozenset(v[b].tolist()) for v in record.layer_visual}) for b in range(len(samples))]
    assert min(distinct) > 1 and max(distinct) > mini.n_layers // 2, (
        f"a per-layer selector should pick different tokens at different layers; distinct sets per sample: {distinct}")


def test_the_router_routes_what_the_selector_ranks_highest(adapter, samples, frozen_signals):
    """Layer 0 sees the unreduced input, so its choice must be the top-k of the selector on the frozen signals."""
    prep = _prepared(adapter)
    _, record, _ = testing.run(adapter, build_method("alvts", {"calibration": "svd"}), KEEP, samples)
    inp = frozen_signals[0].signal(Need("layer_input", layer=0))
    scores = selector_scores(inp, prep.artefact.factors(0, like=inp.normed))
    expected = scores.topk(KEEP, dim=-1).indices.sort(dim=-1).values
    assert torch.equal(record.selections[0], expected)


@pytest.mark.parametrize("opts", [{}, {"skipped_as_kv": True}])
def test_skipped_tokens_are_unchanged_by_the_layer(adapter, samples, opts):
    seen = {}
    hooks = [layer.register_forward_hook(lambda m, a, kw, out, i=i: seen.__setitem__(i, (a[0] if a else
             kw["hidden_states"], out[0] if isinstance(out, tuple) else out)), with_kwargs=True)
             for i, layer in enumerate(adapter.decoder_layers())]
    try:
        batch = adapter.encode(samples)
        method = build_method("alvts", {"calibration": "svd", **opts})
        art = Prepared.of(method.prepare(adapter.weights())).artefact
        with adapter.reduction(Reduction(method, KEEP, artefact=art)) as r:
            with torch.inference_mode():
                adapter.prefill(batch, r)
    finally:
        for h in hooks:
            h.remove()
    t = batch.tokens
    for i, (x, y) in seen.items():
        routed = torch.zeros(len(samples), t.visual.shape[1], dtype=torch.bool)
        routed.scatter_(1, r.record.layer_visual[i], True)
        pos = t.visual[~routed].view(len(samples), -1)
        got, before = _take(y, pos), _take(x, pos)
        assert torch.equal(got, before), f"layer {i} changed tokens it skipped"
        moved = _take(y, t.visual.gather(1, r.record.layer_visual[i]))
        assert not torch.equal(moved, _take(x, t.visual.gather(1, r.record.layer_visual[i])))


@pytest.mark.parametrize("opts", [{"skipped_as_kv": True}, {"static": True}, {"layers": (1, 4)},
                                  {"pooling": "max", "causal": False, "rope": False}])
def test_variants_equal_the_mask_reference_with_cache(adapter, samples, opts):
    gen, record, batch = testing.run(adapter, build_method("alvts", {"calibration": "svd", **opts}), KEEP, samples,
                                     max_new_tokens=5)
    ref = testing.mask_reference(adapter, batch, record, gen.token_ids)
    torch.testing.assert_close(torch.stack(gen.step_logits[: ref.shape[1]], dim=1), ref, atol=2e-5, rtol=1e-4)


def test_variant_schedules(adapter, samples):
    n, layers = adapter.layout().n_visual, adapter.n_layers
    _, rec, _ = testing.run(adapter, build_method("alvts", {"calibration": "svd", "static": True}), KEEP, samples)
    assert layers == 6  # K=2 of 32 layers sits at layer 1 of 6 (schedule.at_depth)
    assert rec.visual_per_layer == [n] + [KEEP] * (layers - 1) and list(rec.selections) == [1]
    _, rec, _ = testing.run(adapter, build_method("alvts", {"calibration": "svd", "static": True, "static_layer": 2}),
                            KEEP, samples)
    assert rec.visual_per_layer == [n, n] + [KEEP] * (layers - 2) and list(rec.selections) == [2]
    _, rec, _ = testing.run(adapter, build_method("alvts", {"calibration": "svd", "layers": (1, 4)}), KEEP, samples)
    assert rec.visual_per_layer == [n if i not in (1, 4) else KEEP for i in range(layers)]
    _, rec, _ = testing.run(adapter, build_method("alvts", {"calibration": "svd", "skipped_as_kv": True}), KEEP,
                            samples)
    assert rec.visual_per_layer == [KEEP] * layers  # queries, o_proj and the MLP run on the routed tokens only
    assert rec.kv_per_layer == [n] * layers  # every visual token stays a key and value of every layer
    assert all(v.shape[1] == KEEP for v in rec.layer_visual) and all(k.shape[1] == n for k in rec.layer_keys)


@pytest.mark.parametrize("opts,match", [({"rank": -1}, "rank"), ({"pooling": "sum"}, "pooling"),
                                        ({"layers": (9,)}, "layers"), ({"static": True, "static_layer": 6}, "static"),
                                        ({"layers": ()}, "distinct")])
def test_bad_options_are_refused(opts, match):
    with pytest.raises(ConfigError, match=match):
        build_method("alvts", opts).check(6)


def test_selector_cost_is_in_the_flops(adapter, samples):
    counted, measured = testing.counted_vs_measured_flops(adapter, build_method("alvts", {"calibration": "svd"}),
                                                          KEEP, samples[0])["total"]
    assert counted == measured
    from tokenbench.measure.accounting import prefill_count

    _, record, batch = testing.run(adapter, build_method("alvts", {"calibration": "svd"}), KEEP, samples[:1])
    method = build_method("alvts")
    with_selector = prefill_count(adapter.lm_dims(), adapter.encoder_macs(), batch.n_text[0],
                                  record.visual_per_layer, record, method)
    assert with_selector.overhead == sum(method.select_macs(adapter.lm_dims(), batch.n_text[0], adapter.layout()
                                                            .n_visual, layer) for layer in range(adapter.n_layers))


# -- calibration and artefacts -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def calibrated(adapter, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("alvts") / "tiny.safetensors")
    out, meta = calibration.run("alvts", {}, "tiny-llava", "synthetic", {}, samples=16, heldout=8, epochs=2,
                                out=path, log=lambda m: None)
    return out, meta


def test_calibration_lowers_the_heldout_score_error(calibrated):
    _, meta = calibrated
    assert meta["score_error_after"] < meta["score_error_before"], meta


def test_artefact_round_trips_with_its_metadata(adapter, calibrated):
    path, meta = calibrated
    tensors, stored = artefacts.load(path)
    fp = adapter.weights().fingerprint()
    for key in ("config_hash", "weights_hash", "model_id"):
        assert stored[key] == fp[key]
    assert stored["rank"] == 8 and stored["layers"] == adapter.n_layers and stored["samples"] == 16
    assert stored["tokenbench_version"] and stored["score_error_after"] == meta["score_error_after"]
    prep = Prepared.of(build_method("alvts", {"calibration": path}).prepare(adapter.weights()))
    assert prep.info["calibration"] == os.path.abspath(path) and not prep.warning
    for k, v in tensors.items():
        assert torch.equal(prep.artefact.tensors[k].cpu(), v)
    svd = _prepared(adapter).artefact.tensors
    assert not torch.equal(svd["0.uq"], tensors["0.uq"]), "calibration must have moved the factors"


def test_mismatched_artefacts_are_refused(adapter, calibrated, tmp_path):
    path, _ = calibrated
    with pytest.raises(ConfigError, match="rank: artefact 8, this run 4"):
        build_method("alvts", {"calibration": path, "rank": 4}).prepare(adapter.weights())
    with pytest.raises(ConfigError, match="pooling"):
        build_method("alvts", {"calibration": path, "pooling": "max"}).prepare(adapter.weights())
    tensors, meta = artefacts.load(path)
    other = str(tmp_path / "other.safetensors")
    artefacts.save(other, tensors, {k: v for k, v in meta.items() if k not in ("format", "tokenbench_version",
                                                                                 "created")} | {"weights_hash": "0" * 16})
    with pytest.raises(ConfigError, match="weights_hash"):
        build_method("alvts", {"calibration": other}).prepare(adapter.weights())
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="not a readable"):
        build_method("alvts", {"calibration": str(junk)}).prepare(adapter.weights())
    with pytest.raises(ConfigError, match="does not exist"):
        build_method("alvts", {"calibration": str(tmp_path / "missing.safetensors")}).prepare(adapter.weights())


def test_auto_uses_the_default_location_or_says_it_runs_uncalibrated(adapter, calibrated):
    path, _ = calibrated
    method = build_method("alvts")
    prep = Prepared.of(method.prepare(adapter.weights()))
    default = artefacts.default_path("alvts", adapter.weights().fingerprint(), fit.tag(method, 8))
    if not os.path.exists(default):
        assert "SVD initialisation" in prep.warning and prep.info["calibration"] == "svd-init"
    os.makedirs(os.path.dirname(default), exist_ok=True)
    with open(path, "rb") as src, open(default, "wb") as dst:
        dst.write(src.read())
    try:
        prep = Prepared.of(method.prepare(adapter.weights()))
        assert prep.info["calibration"] == default and not prep.warning
    finally:
        os.remove(default)


# -- one artefact for every dtype ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def adapters_by_dtype(adapter):
    """tiny-llava's same weights loaded in each run dtype (float32 is the module's adapter)."""
    from tokenbench.harness.resolve import resolve_model

    return {"float32": adapter} | {dt: resolve_model("tiny-llava").load("cpu", dt) for dt in ("bfloat16", "float16")}


def test_the_weights_fingerprint_does_not_depend_on_the_run_dtype(adapters_by_dtype):
    fps = {dt: a.weights().fingerprint() for dt, a in adapters_by_dtype.items()}
    assert adapters_by_dtype["bfloat16"].decoder_layers()[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    assert adapters_by_dtype["float16"].decoder_layers()[0].self_attn.q_proj.weight.dtype == torch.float16
    assert fps["float32"] == fps["bfloat16"] == fps["float16"], fps


@pytest.mark.parametrize("layer,name", [(0, "q_proj"), (-1, "k_proj")])
def test_the_weights_fingerprint_changes_when_one_weight_flips_sign(adapter, layer, name):
    import copy

    from tokenbench.api import ModelWeights

    layers = copy.deepcopy(list(adapter.decoder_layers()))
    w = getattr(layers[layer].self_attn, name).weight
    i = int(w.detach().reshape(-1).abs().argmax())  # a clearly non-zero element
    with torch.no_grad():
        w.view(-1)[i] = -w.view(-1)[i]
    original = adapter.weights()
    flipped = ModelWeights(layers, adapter.text_config(), original.model_id)
    assert flipped.fingerprint()["config_hash"] == original.fingerprint()["config_hash"]
    assert flipped.fingerprint()["weights_hash"] != original.fingerprint()["weights_hash"]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_a_float32_artefact_is_accepted_by_runs_in_every_dtype(adapters_by_dtype, calibrated, samples, dtype):
    """The artefact was calibrated in float32; a bfloat16 or float16 run of the same weights loads it and runs."""
    path, meta = calibrated
    assert meta["dtype"] == "float32"
    run = adapters_by_dtype[dtype]
    method = build_method("alvts", {"calibration": path})
    prep = Prepared.of(method.prepare(run.weights()))
    assert prep.info["calibration"] == os.path.abspath(path) and not prep.warning
    _, record, _ = testing.run(run, method, KEEP, samples[:1], max_new_tokens=2)
    assert record.visual_per_layer == [KEEP] * run.n_layers


@pytest.mark.parametrize("pooling,causal", [("mean", True), ("max", True), ("mean", False)])
@pytest.mark.parametrize("model", ["tiny-llava", "tiny-llava-next", "tiny-qwen2.5-vl"])
def test_blockwise_selector_equals_the_old_implementation_on_contract_inputs(adapter_factory, model, pooling, causal):
    """The blockwise selector against the one it replaced (tests/alvts_reference.py, the T x T map), on the contract
    suite's inputs (three 392 x 280 samples, left padded in one batch), at every layer's unreduced input: the same
    top-k at 1/9, 1/12 and 1/2 of the visual tokens, and scores equal to float tolerance."""
    import alvts_reference

    from tokenbench.methods.alvts.selector import svd_init

    adapter = adapter_factory(model)
    samples = testing.synthetic_samples(3, seed=1, size=(392, 280))
    steps = tuple(Step(layer, needs=(Need("layer_input", layer=layer),)) for layer in range(adapter.n_layers))
    (batch,) = list(calibration.visitor(adapter, steps, {"s": samples}, batch_size=3)("s"))
    weights = adapter.weights()
    factors = svd_init(weights, build_method("alvts").resolved_rank(weights.text_config.hidden_size),
                       range(adapter.n_layers))
    for layer, ctx in batch.items():
        inp = ctx.signal(Need("layer_input", layer=layer))
        f = tuple(factors[f"{layer}.{n}"] for n in FACTORS)
        ours = selector_scores(inp, f, pooling, causal)
        theirs = alvts_reference.selector_scores(inp, f, pooling, causal)
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-10)
        n = ours.shape[-1]
        for k in (n // 9, n // 12, n // 2):
            for b in range(ours.shape[0]):
                mine, ref = set(ours[b].topk(k).indices.tolist()), set(theirs[b].topk(k).indices.tolist())
                # identical, except where two tokens tie at the cut to float precision (random-weight models score
                # the white background's tokens alike): then either order of arithmetic may pick either
                cut = theirs[b].topk(k).values[-1]
                swapped = torch.tensor(sorted(mine ^ ref), dtype=torch.long)
                assert not swapped.numel() or torch.allclose(theirs[b][swapped], cut.expand(len(swapped)),
                                                             rtol=1e-5, atol=0), (layer, k, b, swapped)
