"""VisionZip's official Qwen2.5-VL variant: the rule by hand, the adapter's signals against the model's own eager
attention, original M-RoPE positions, and the engine's choice of need set by model."""

from __future__ import annotations

import pytest
import torch

from tokenbench import testing
from tokenbench.api import Reduction, Need, ReductionContext, Region, Step, VisualLayout, build_method, resolve_needs
from tokenbench.errors import IncompatibleError

SIZE = (392, 280)  # 28 x 20 patches, 14 x 10 visual tokens: the 4 x 4 windows do not tile it (a real permutation)


# -- the rule by hand ---------------------------------------------------------------------------------------------------
def _ctx(keep, received, keys, embeds):
    n = received.shape[-1]
    layout = VisualLayout(n_visual=n, grid=(2, n // 2), crops=(Region("image", 0, 2, n // 2),))
    signals = {Need("vision_received"): received, Need("vision_keys"): keys, Need("visual_embeds"): embeds}
    return ReductionContext(layer=-1, keep=keep, n_visual=n, n_layers=4, active=torch.arange(n)[None], layout=layout,
                            signals=signals)


def test_the_qwen_rule_by_hand():
    """N = 8 tokens, 2 heads, keep 5 with dominant_share 0.6: 3 dominant + 2 contextual.

    Received attention per head (tokens 0..7): head 0 = 5 0 1 9 0 2 8 0, head 1 = 5 6 1 0 7 2 0 3. Head mean:
    5, 3, 1, 4.5, 3.5, 2, 4, 1.5 -> dominant {0, 3, 6}. (Head 0 alone gives {0, 3, 6} too but head 1 alone gives
    {0, 1, 4}; the per-head maximum gives {3, 6, 4}.) Rest, raster order: 1 2 4 5 7; step 5 // 2 = 2, targets rest[0]
    = 1 and rest[2] = 4. Head-mean keys (2-D): token 2 -> (1, 0.1) joins 1 (1, 0), token 5 -> (0, 1) joins 4 (0.1, 1),
    token 7 -> (0.9, 0.2) joins 1. Head 0's keys alone would send 5 to 1 (see below). Embeddings: token i = (i, 10 i).
    Contextual rows: token 1 + mean(2, 7) = (1 + 4.5, 10 + 45); token 4 + token 5 = (4 + 5, 40 + 50).
    Kept slots {0, 1, 3, 4, 6} with rows: 0, 3, 6 unchanged, 1 and 4 merged; no renumbering (M-RoPE ids kept)."""
    received = torch.tensor([[[5., 0, 1, 9, 0, 2, 8, 0], [5, 6, 1, 0, 7, 2, 0, 3]]])
    mean_keys = torch.tensor([[1, 0], [1, 0], [1, 0.1], [0, 0], [0.1, 1], [0, 1], [0, 0], [0.9, 0.2]])
    offset = torch.tensor([[0, 0], [0, 0], [0, 0], [0, 0], [0, 0], [2, -1], [0, 0], [0, 0]])  # cancels in the mean
    keys = torch.stack([mean_keys + offset, mean_keys - offset])[None]  # (1, 2 heads, 8, 2)
    embeds = torch.stack([torch.arange(8.), 10 * torch.arange(8.)], dim=1)[None]  # (1, 8, 2)
    out = build_method("visionzip", {"dominant_share": 0.6}).select(_ctx(5, received, keys, embeds))
    assert out.features is None and not out.renumber  # merged after the merger, positions kept
    rows = dict(zip(out.indices[0].tolist(), out.embeds[0].tolist()))
    assert sorted(rows) == [0, 1, 3, 4, 6]
    assert rows[0] == [0, 0] and rows[3] == [3, 30] and rows[6] == [6, 60]
    assert rows[1] == pytest.approx([5.5, 55.0]) and rows[4] == pytest.approx([9.0, 90.0])
    assert out.macs == 3 * 2 * 2 + 2 * 3 * 2  # similarities (3 joiners x 2 targets x hd) + merge (x D)
    head0 = torch.nn.functional.normalize(keys[0, 0], dim=-1)
    assert (head0[5] @ head0[1]) > (head0[5] @ head0[4])  # with head 0's keys alone token 5 would join 1


# -- the adapter's signals against the model's own attention --------------------------------------------------------------
def test_received_attention_and_keys_equal_the_eager_attention_of_the_last_block(monkeypatch):
    """The last block's attention probabilities and post-RoPE keys as the model's own eager attention computes them
    (captured from ``eager_attention_forward``), summed over queries, averaged over each merger group of 4 consecutive
    patches, and put in raster order by matching the merger's rows (window order) to the tower's output (raster
    order): what the adapter gives as ``vision_received`` and ``vision_keys``."""
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as qwen

    from tokenbench.harness.resolve import resolve_model

    adapter = resolve_model("tiny-qwen2.5-vl").load(attn_implementation="eager")
    samples = testing.synthetic_samples(2, seed=4, size=SIZE)
    batch = adapter.encode(samples)
    tower = adapter.model.model.visual
    last = tower.blocks[-1].attn
    seen: dict = {"weights": [], "keys": []}
    original = qwen.eager_attention_forward

    def recording(module, query, key, value, attention_mask, scaling, dropout=0.0, **kw):
        out, weights = original(module, query, key, value, attention_mask, scaling, dropout, **kw)
        if module is last:
            seen["weights"].append(weights[0])  # (heads, L, L), one per attention span (image)
            seen["keys"].append(key[0])  # (heads, L, hd)
        return out, weights

    monkeypatch.setattr(qwen, "eager_attention_forward", recording)
    handles = [tower.merger.register_forward_hook(lambda m, a, o: seen.__setitem__("merger", o)),
               tower.register_forward_hook(lambda m, a, o: seen.__setitem__("tower", o.pooler_output))]
    try:
        with adapter.pre_llm_signals({"vision_received", "vision_keys"}) as providers:
            adapter.generate(batch, 1)
            received, macs = providers["vision_received"]()
            keys, _ = providers["vision_keys"]()
    finally:
        for h in handles:
            h.remove()
    window_rows, raster_rows = seen["merger"], seen["tower"]
    perm = torch.stack([(window_rows == row).all(dim=1).nonzero()[0, 0] for row in raster_rows])  # raster -> window
    assert not torch.equal(perm, torch.arange(len(perm))), "the window order must differ from raster order here"
    per_patch = torch.cat([w.sum(dim=1) for w in seen["weights"]], dim=1)  # (heads, T) received, window order
    key_patch = torch.cat(seen["keys"], dim=1)  # (heads, T, hd)
    heads, t = per_patch.shape
    want = per_patch.view(heads, t // 4, 4).mean(dim=2)[:, perm]  # (heads, B * N)
    want_keys = key_patch.view(heads, t // 4, 4, -1).mean(dim=2)[:, perm]
    n = batch.layout.n_visual
    assert received.shape == (2, heads, n) and keys.shape == (2, heads, n, key_patch.shape[-1])
    torch.testing.assert_close(received, want.view(heads, 2, n).transpose(0, 1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(keys, want_keys.view(heads, 2, n, -1).transpose(0, 1), rtol=1e-5, atol=1e-6)
    first_patch = per_patch.view(heads, t // 4, 4)[..., 0][:, perm].view(heads, 2, n).transpose(0, 1)
    assert not torch.allclose(received, first_patch, rtol=1e-3), "a group's first patch alone must differ"
    unmapped = per_patch.view(heads, t // 4, 4).mean(dim=2).view(heads, 2, n).transpose(0, 1)
    assert not torch.allclose(received, unmapped, rtol=1e-3), "window order must differ from raster order"
    vc = adapter.config.vision_config
    assert macs == 2 * t * vc.hidden_size ** 2 + 2 * (t // 2) ** 2 * vc.hidden_size  # q, k; q k^T per image


def test_kept_tokens_keep_their_original_mrope_rotation(adapter_factory):
    """Under VisionZip on Qwen2.5-VL every token layer 0 processes has the rotation it has in the full sequence (its
    own t/h/w ids: no renumbering), and each kept slot holds the method's row (merged ones where targets were)."""
    adapter = adapter_factory("tiny-qwen2.5-vl")
    batch = adapter.encode(testing.synthetic_samples(1, seed=3, size=SIZE))
    seen = []
    layer0 = adapter.decoder_layers()[0].self_attn
    handle = layer0.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["position_embeddings"][0][0].clone()), with_kwargs=True)
    try:
        adapter.generate(batch, 1)
        with adapter.reduction(Reduction(build_method("visionzip"), 15)) as r:
            adapter.generate(batch, 1, router=r)
    finally:
        handle.remove()
    full_cos, cos = seen[0], seen[1]
    t = batch.tokens
    kept = r.record.selections[-1][0]
    positions = torch.cat([t.other[0], t.visual[0][kept]]).sort().values
    assert cos.shape[0] == positions.numel() < full_cos.shape[0]
    assert torch.equal(cos, full_cos[positions])
    assert r.record.position_ids is None and r.record.pre_llm_embeds is not None  # merged, not renumbered


# -- the engine's choice of need set ----------------------------------------------------------------------------------------
def test_visionzip_picks_its_signals_by_model(adapter_factory):
    """One plan, two need sets: CLS attention where the tower has CLS, received attention on Qwen2.5-VL."""
    step = build_method("visionzip").steps(4)[0]
    llava, qwen = adapter_factory("tiny-llava"), adapter_factory("tiny-qwen2.5-vl")
    assert Need("cls_attn") in resolve_needs(step, llava.provides)
    assert Need("vision_received") in resolve_needs(step, qwen.provides)
    for adapter in (llava, qwen):
        adapter.check_compatible(build_method("visionzip"))
    _, record, _ = testing.run(qwen, "visionzip", 20, testing.synthetic_samples(1, seed=1, size=SIZE))
    assert record.selections[-1].shape == (1, 20) and record.pre_llm_macs > 0


@pytest.mark.parametrize("method", ["vispruner", "scope"])
def test_cls_methods_stay_refused_on_qwen(method, adapter_factory):
    with pytest.raises(IncompatibleError, match="no CLS token"):
        adapter_factory("tiny-qwen2.5-vl").check_compatible(build_method(method))


def test_alternatives_are_for_pre_llm_signals_only():
    from tokenbench.errors import PluginValidationError

    with pytest.raises(PluginValidationError, match="pre-LLM"):
        Step(2, needs=(Need("keys", layer=1),), alternatives=((Need("hidden", layer=1),),))
    with pytest.raises(PluginValidationError, match="pre-LLM"):
        Step(-1, needs=(Need("cls_attn"),), alternatives=((Need("hidden", layer=0),),))
    step = Step(-1, needs=(Need("cls_attn"),), alternatives=((Need("vision_received"),), (Need("visual_embeds"),)))
    assert resolve_needs(step, {"visual_embeds"}) == (Need("visual_embeds"),)
    assert resolve_needs(step, set()) == (Need("cls_attn"),)  # none provided: the refusal names the first set


def test_check_method_on_tiny_qwen():
    """The contract and the FLOPs (FlopCounterMode) for VisionZip on Qwen2.5-VL."""
    testing.check_method("visionzip", model="tiny-qwen2.5-vl", keeps=(1, 16, 100), n_samples=2)
