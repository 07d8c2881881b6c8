"""LLaVA-NeXT's vision-tower signals (``cls_attn``, ``vision_keys``, ``vision_features``) in the LLM's own visual-token
numbering, checked against an independent recomputation: the model's own eager CLIP tower run on each crop's
pixel values (``output_attentions``), and transformers' own ``pack_image_features`` telling where each crop's patch
lands after unpadding (fed labelled tokens, as test_adapters does for the layout)."""

from __future__ import annotations

import pytest
import torch

from tokenbench import testing

SIZES = [(392, 280), (120, 500)]  # unpadding removes rows of patches; columns (a whole column of crops for 120 x 500)


@pytest.fixture(scope="module")
def eager():
    """The same tiny LLaVA-NeXT (same cached weights) with eager attention, whose tower returns its attentions."""
    from tokenbench.harness.resolve import resolve_model

    return resolve_model("tiny-llava-next").load(attn_implementation="eager")


def where_tokens_come_from(adapter, size, n_crops):
    """(crop, patch) of every visual token, in visual-token order, as transformers' pack_image_features places them."""
    g = adapter.model.config.vision_config.image_size // adapter.model.config.vision_config.patch_size
    labels = torch.stack([torch.arange(n_crops)[:, None].expand(-1, g * g),
                          torch.arange(g * g)[None].expand(n_crops, -1)], dim=-1).float()
    (packed,), _ = adapter.model.model.pack_image_features([labels], torch.tensor([[size[1], size[0]]]), "default",
                                                           torch.full((2,), -1.0))
    visual = packed[~(packed == -1).all(-1)].long()
    return visual[:, 0], visual[:, 1]


@pytest.mark.parametrize("size", SIZES)
def test_each_crops_signals_land_where_the_llm_reads_them(size, adapter_factory, eager):
    adapter = adapter_factory("tiny-llava-next")
    samples = testing.synthetic_samples(2, seed=4, size=size)
    batch = adapter.encode(samples)
    layout = batch.layout
    _, ny, nx, _, _ = adapter._geometry(size)
    n_crops = 1 + ny * nx
    with adapter.pre_llm_signals({"cls_attn", "vision_keys", "vision_features"}) as signals, torch.inference_mode():
        adapter.model(**batch.inputs)
        cls, cls_macs = signals["cls_attn"]()
        keys, _ = signals["vision_keys"]()
        feats, _ = signals["vision_features"]()
    n = layout.n_visual
    crop, patch = where_tokens_come_from(adapter, size, n_crops)
    assert len(crop) == n and crop[: layout.crops[0].size].eq(0).all(), "the base image comes first"
    g2 = adapter.model.config.vision_config.image_size ** 2 // adapter.model.config.vision_config.patch_size ** 2
    assert len(set(zip(crop.tolist(), patch.tolist()))) == n < n_crops * g2, "unpadding must remove some patches"
    tower = eager.model.model.vision_tower
    layer = tower.encoder.layers[eager.model.config.vision_feature_layer]
    assert cls.shape == (2, tower.config.num_attention_heads, n) and feats.shape == (2, n_crops + n, 64)
    for b in range(2):
        with torch.inference_mode():  # the model's own attention, one crop at a time
            out = [tower(batch.inputs["pixel_values"][b, c:c + 1], output_attentions=True, output_hidden_states=True)
                   for c in range(n_crops)]
        attn = torch.cat([o.attentions[eager.model.config.vision_feature_layer] for o in out])  # (crops, h, 1+P, 1+P)
        hidden = torch.cat([o.hidden_states[eager.model.config.vision_feature_layer] for o in out])  # layer's output
        before = torch.cat([o.hidden_states[eager.model.config.vision_feature_layer - 1] for o in out])  # its input
        with torch.inference_mode():
            k = layer.self_attn.k_proj(layer.layer_norm1(before)).view(n_crops, 1 + g2, -1, layer.self_attn.head_dim)
        torch.testing.assert_close(cls[b], attn[crop, :, 0, 1 + patch].T, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(keys[b], k[crop, 1 + patch].transpose(0, 1), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(feats[b, n_crops:], hidden[crop, 1 + patch], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(feats[b, :n_crops], hidden[:, 0], atol=1e-5, rtol=1e-5)  # each pass's CLS row
    # every pass's CLS row and keys are counted, the crops that unpadding removes too
    d, tokens = tower.config.hidden_size, 1 + g2
    assert cls_macs == n_crops * (d * d + tokens * d + tokens * d * d)


def test_the_base_region_is_the_base_passes_patches_in_order(adapter_factory):
    """A wrong map that shifts every crop by one pass, or reads the base image's rows column-wise, fails here."""
    adapter = adapter_factory("tiny-llava-next")
    size = (392, 280)
    src = adapter._token_map({"sizes": torch.tensor([[size[1], size[0]]])}, 5)[0]
    g2 = adapter.layout(size).crops[0].size
    assert src[:g2].tolist() == list(range(g2))
    crop, patch = where_tokens_come_from(adapter, size, 5)
    assert src.tolist() == (crop * g2 + patch).tolist()


def test_llava_next_provides_the_cls_signals(adapter_factory):
    adapter = adapter_factory("tiny-llava-next")
    assert {"cls_attn", "vision_keys", "vision_features"} <= adapter.provides
