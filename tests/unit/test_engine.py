"""The engine against independent references: HF generate, eager attention, and the mask reference for the two
stages no built-in method uses yet (route, pre_llm)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from tokenbench import testing
from tokenbench.api import Reduction, Need, Selection, Step, TokenReducer
from tokenbench.engine.router import Router
from tokenbench.errors import PluginValidationError


@pytest.fixture(scope="module")
def samples():
    return testing.synthetic_samples(3, seed=5)


def test_greedy_loop_equals_hf_generate(adapter_factory, samples):
    adapter = adapter_factory("tiny-llava")
    batch = adapter.encode(samples)
    ours = adapter.generate(batch, 6)
    with torch.inference_mode():
        hf = adapter.model.generate(**batch.inputs, max_new_tokens=6, do_sample=False, min_new_tokens=6)
    hf_new = hf[:, batch.inputs["input_ids"].shape[1]:].tolist()
    assert [row[: len(o)] for row, o in zip(hf_new, ours.token_ids)] == ours.token_ids


@pytest.mark.parametrize("keep", [16, 100])
def test_fastv_keeps_what_eager_attention_ranks_highest(adapter_factory, samples, keep):
    """FastV's kept set equals top-k of layer K-1's eager attention from the last token, mean over heads."""
    from tokenbench.harness.resolve import resolve_model

    eager = resolve_model("tiny-llava").load(attn_implementation="eager")
    adapter = adapter_factory("tiny-llava")
    _, record, batch = testing.run(adapter, "fastv", keep, samples)
    with torch.inference_mode():
        out = eager.model(**batch.inputs, output_attentions=True, use_cache=False,
                          position_ids=(batch.inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0))
    k = 1  # the default K = 2 of 32 layers sits at layer 1 of tiny-llava's 6 (schedule.at_depth)
    attn = out.attentions[k - 1]
    vis = batch.tokens.visual
    scores = attn[:, :, -1, :].mean(dim=1).gather(1, vis)
    expected = scores.topk(keep, dim=-1).indices.sort(dim=-1).values
    assert list(record.selections) == [k] and torch.equal(record.selections[k], expected)


@dataclass(frozen=True)
class RouteEveryOther(TokenReducer):
    """Test-only route method: before layers 1 and 3, a different random subset goes through the layer."""

    stage = "route"
    name = "route_test"

    def steps(self, n_layers):
        return (Step(1), Step(3, needs=(Need("attn", layer=3, queries="text"), Need("keys", layer=3))))

    def select(self, ctx):
        if ctx.layer == 3:
            attn = ctx.signal(Need("attn", layer=3, queries="text"))
            assert attn.shape[:1] == (ctx.batch_size,) and attn.shape[-1] == ctx.n_active
            assert ctx.text_query_mask.shape == attn.shape[:1] + attn.shape[2:3]
            keys = ctx.signal(Need("keys", layer=3))
            assert keys.shape[2] == ctx.n_active
        return torch.stack([torch.randperm(ctx.n_active, generator=g)[: ctx.keep] for g in ctx.generators])


@dataclass(frozen=True)
class MergeFirst(TokenReducer):
    """Test-only pre_llm method: keeps the first k tokens and replaces each with the mean of all visual tokens."""

    stage = "pre_llm"
    name = "merge_test"

    def steps(self, n_layers):
        return (Step(-1, needs=(Need("visual_embeds"),)),)

    def select(self, ctx):
        emb = ctx.signal(Need("visual_embeds"))
        idx = torch.arange(ctx.keep).expand(ctx.batch_size, -1)
        return Selection(idx, emb.mean(dim=1, keepdim=True).expand(-1, ctx.keep, -1))


def test_route_only_touches_its_layer(adapter_factory, samples):
    adapter = adapter_factory("tiny-llava")
    gen, record, batch = testing.run(adapter, RouteEveryOther(), 100, samples, max_new_tokens=5)
    assert record.visual_per_layer == [576, 100, 576, 100, 576, 576]
    assert not torch.equal(record.layer_visual[1], record.layer_visual[3])
    ref = testing.mask_reference(adapter, batch, record, gen.token_ids)
    torch.testing.assert_close(torch.stack(gen.step_logits[: ref.shape[1]], 1), ref, atol=2e-5, rtol=1e-4)


def test_pre_llm_merge_replaces_embeddings(adapter_factory, samples):
    adapter = adapter_factory("tiny-llava")
    gen, record, batch = testing.run(adapter, MergeFirst(), 8, samples, max_new_tokens=3)
    assert record.visual_per_layer == [8] * adapter.n_layers
    plain, rec2, _ = testing.run(adapter, "random", 8, samples, max_new_tokens=3)
    assert not torch.allclose(gen.first_logits, plain.first_logits)
    # the reference: the same kept positions with the merged embeddings written into the LLM input by hand
    with torch.inference_mode():
        embeds = adapter.model.model.get_input_embeddings()(batch.inputs["input_ids"])
        feats = adapter.model.model.get_image_features(pixel_values=batch.inputs["pixel_values"],
                                                       vision_feature_layer=-2,
                                                       vision_feature_select_strategy="default").pooler_output
        feats = torch.stack(list(feats))
        vis = batch.tokens.visual
        embeds = embeds.scatter(1, vis[..., None].expand(-1, -1, embeds.shape[-1]), feats)
        merged = feats.mean(dim=1, keepdim=True).expand(-1, 8, -1)
        embeds = embeds.scatter(1, vis[:, :8, None].expand(-1, -1, embeds.shape[-1]), merged)
        inputs = {k: v for k, v in batch.inputs.items() if k != "pixel_values"}
        inputs.pop("input_ids")
        mask = inputs["attention_mask"]
        pos = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
        with testing._masked_layers(adapter, batch, record.layer_visual, record.layer_keys):
            out = adapter.model(inputs_embeds=embeds, position_ids=pos, use_cache=False, **inputs)
    torch.testing.assert_close(gen.first_logits, out.logits[:, -1].float(), atol=2e-5, rtol=1e-4)


def test_router_rejects_bad_selections(adapter_factory, samples):
    adapter = adapter_factory("tiny-llava")

    @dataclass(frozen=True)
    class Dup(TokenReducer):
        stage = "prune"
        name = "dup"

        def steps(self, n_layers):
            return (Step(1),)

        def select(self, ctx):
            return torch.zeros(ctx.batch_size, ctx.keep, dtype=torch.long)

    with pytest.raises(PluginValidationError, match="duplicate indices"):
        testing.run(adapter, Dup(), 4, samples)
    with pytest.raises(PluginValidationError, match="belong to a pre_llm step"):
        Router(Reduction(type("Mixed", (RouteEveryOther,),
                              {"steps": lambda self, n: (Step(2, needs=(Need("cls_attn"),)),)})(), 4),
               adapter.decoder_layers(), adapter.language_model())
    with pytest.raises(PluginValidationError, match="step at layer 9"):
        Router(Reduction(type("Late", (RouteEveryOther,), {"steps": lambda self, n: (Step(9),)})(), 4),
               adapter.decoder_layers(), adapter.language_model())


def test_router_restores_the_model(adapter_factory, samples):
    adapter = adapter_factory("tiny-llava")
    testing.run(adapter, "fastv", 32, samples)
    assert all("forward" not in layer.__dict__ for layer in adapter.decoder_layers())
    assert not adapter.language_model()._forward_pre_hooks


@dataclass(frozen=True)
class ClsTop(TokenReducer):
    """Test-only pre_llm method: keep the patches the CLS token attends to most (FasterVLM's rule)."""

    stage = "pre_llm"
    name = "cls_test"

    def steps(self, n_layers):
        return (Step(-1, needs=(Need("cls_attn"),)),)

    def select(self, ctx):
        return ctx.signal(Need("cls_attn")).mean(dim=1).topk(ctx.keep, dim=-1).indices


def test_cls_attention_equals_eager_clip_attention(adapter_factory, samples):
    from tokenbench.harness.resolve import resolve_model

    adapter = adapter_factory("tiny-llava")
    _, record, batch = testing.run(adapter, ClsTop(), 40, samples)
    eager = resolve_model("tiny-llava").load(attn_implementation="eager")
    with torch.inference_mode():
        out = eager.model.model.vision_tower(batch.inputs["pixel_values"], output_attentions=True)
    cls = out.attentions[-2][:, :, 0, 1:].mean(dim=1)  # the layer whose output LLaVA feeds the projector
    expected = cls.topk(40, dim=-1).indices.sort(dim=-1).values
    assert torch.equal(record.selections[-1], expected)
    assert record.visual_per_layer == [40] * adapter.n_layers
    assert record.pre_llm_macs > 0  # its cost is counted


def test_a_need_the_adapter_cannot_provide_is_refused_before_compute(adapter_factory):
    from tokenbench.errors import IncompatibleError

    adapter = adapter_factory("tiny-llava")
    original = type(adapter).provides
    try:
        type(adapter).provides = original - {"cls_attn"}
        with pytest.raises(IncompatibleError, match="needs 'cls_attn'.*cannot provide"):
            adapter.check_compatible(ClsTop())
    finally:
        type(adapter).provides = original
    adapter.check_compatible(ClsTop())


@dataclass(frozen=True)
class WeightNorm(TokenReducer):
    """Test-only method with a preparation step: ranks tokens by their keys' norm under layer 1's W_K."""

    stage = "prune"
    name = "prep_test"

    def prepare(self, weights):
        return {"w_k": weights.layer_weight(1, "k_proj"), "model": weights.model_id}

    def steps(self, n_layers):
        return (Step(1, needs=(Need("normed", layer=1),)),)

    def select(self, ctx):
        x = ctx.signal(Need("normed", layer=1)).float()
        return (x @ ctx.artefact["w_k"].T).norm(dim=-1).topk(ctx.keep, dim=-1).indices


def test_prepare_reads_weights_and_feeds_select(adapter_factory, samples):
    adapter = adapter_factory("tiny-llava")
    weights = adapter.weights()
    w = weights.layer_weight(1, "k_proj")
    w.mul_(0)  # a copy: the model is untouched
    assert adapter.decoder_layers()[1].self_attn.k_proj.weight.abs().sum() > 0
    with pytest.raises(PluginValidationError, match="unknown weight"):
        weights.layer_weight(0, "w_q")
    _, record, batch = testing.run(adapter, WeightNorm(), 50, samples)
    layer = adapter.decoder_layers()[1]
    with torch.inference_mode():
        h = adapter.model(**batch.inputs, output_hidden_states=True, use_cache=False,
                          position_ids=(batch.inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)).hidden_states[1]
        x = layer.input_layernorm(h.gather(1, batch.tokens.visual[..., None].expand(-1, -1, h.shape[-1])))
        expected = layer.self_attn.k_proj(x).norm(dim=-1).topk(50, dim=-1).indices.sort(dim=-1).values
    assert torch.equal(record.selections[1], expected)
