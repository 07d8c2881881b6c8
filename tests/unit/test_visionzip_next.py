"""VisionZip on LLaVA-NeXT (one tower pass per region): the official rule inside each crop on its share of the budget,
placed in the model's own layout. Hand-built: every expected slot and merged feature below follows from the rule by
hand, and the likely wrong variants (one global ranking, merging across crops, a contextual token at the end of the
image or at a joined token's slot, a crop's CLS row taken as a patch) give other answers."""

from __future__ import annotations

import torch

from tokenbench.api import Need, Region, ReductionContext, VisualLayout, split_budget
from tokenbench.methods.visionzip import VisionZip

#: a 2 x 2 base image, then two 3 x 2 crops side by side in a grid 4 wide (newlines not numbered): 16 visual tokens
LAYOUT = VisualLayout(n_visual=16, crops=(Region("base", 0, 2, 2), Region("crop 0,0", 4, 3, 2, stride=4),
                                          Region("crop 0,1", 6, 3, 2, stride=4)), n_structural=3)
PASSES = 3  # the base image and two crops: three CLS rows before the patches in vision_features


def signals():
    """CLS attention (2 heads), keys (2 heads, 2-d) and features (3 CLS rows + 16 patches, 4-d) for one image."""
    cls = torch.full((16,), 0.01)
    cls[[1, 3]] = torch.tensor([0.9, 0.2])  # base: token 1 dominant
    cls[[5, 12, 4, 8]] = torch.tensor([0.8, 0.7, 0.6, 0.5])  # crop 0,0: 5 and 12 dominant
    cls[[10, 15, 7]] = torch.tensor([0.05, 0.04, 0.03])  # crop 0,1: weak everywhere, still its own 10 and 15
    cls_attn = torch.stack([cls * 0.25, cls * 0.75])[None]  # (1, 2, 16): the head sum is `cls`
    direction = {0: (1, 0), 2: (1, 0.1), 3: (0, 1),  # base: targets 0; 2 and 3 join it (its only target)
                 4: (1, 0), 9: (0, 1), 8: (1, 0.2), 13: (0.1, 1),  # crop 0,0: 8 joins 4 and 13 joins 9
                 6: (1, 0), 11: (0, 1), 7: (0.1, 1), 14: (1, 0.1)}  # crop 0,1: 7 joins 11 and 14 joins 6
    keys = torch.zeros(16, 2)
    for token, d in direction.items():
        keys[token] = torch.tensor(d, dtype=torch.float)
    keys = torch.stack([keys, 3 * keys])[None]  # (1, 2, 16, 2): the head mean points the same way
    patches = torch.arange(16 * 4, dtype=torch.float).view(16, 4)
    feats = torch.cat([torch.full((PASSES, 4), 1000.0), patches])[None]  # (1, 3 + 16, 4), CLS rows first
    return cls_attn, keys, feats, patches


def context(keep, scope="global"):
    cls_attn, keys, feats, _ = signals()
    return ReductionContext(layer=-1, keep=keep, n_visual=16, n_layers=4, active=torch.arange(16)[None],
                            layout=LAYOUT, budget=keep, budget_scope=scope,
                            signals={Need("cls_attn"): cls_attn, Need("vision_keys"): keys,
                                     Need("vision_features"): feats})


def test_each_crop_keeps_its_dominant_tokens_and_merges_at_its_targets():
    """keep 10 over regions of 4, 6, 6 tokens: shares 2, 4, 4; dominant_share 0.5: 1+1, 2+2, 2+2.
    base: dominant 1; the rest 0, 2, 3 (one target, stride 3: token 0) -> slot 0 = f0 + mean(f2, f3).
    crop 0,0: dominant 5, 12; the rest 4, 8, 9, 13 (two targets, stride 2: 4 and 9) -> 8 joins 4, 13 joins 9.
    crop 0,1: dominant 10, 15 (its own best, though weaker than any dominant token elsewhere); the rest 6, 7, 11, 14:
    targets 6 and 11 -> 14 joins 6, 7 joins 11."""
    out = VisionZip(dominant_share=0.5).select(context(10))
    _, _, _, f = signals()
    expected = {1: f[1], 5: f[5], 12: f[12], 10: f[10], 15: f[15],
                0: f[0] + (f[2] + f[3]) / 2, 4: f[4] + f[8], 9: f[9] + f[13], 6: f[6] + f[14], 11: f[11] + f[7]}
    got = dict(zip(out.indices[0].tolist(), out.features[0]))
    assert sorted(got) == sorted(expected)
    for slot, row in expected.items():
        torch.testing.assert_close(got[slot], row, msg=f"slot {slot}")
    assert out.renumber and out.embeds is None  # positions=auto: a shorter sequence, read in slot order
    assert out.indices[0].tolist() == sorted(out.indices[0].tolist())
    kept = VisionZip(dominant_share=0.5, positions="original").select(context(10))
    assert not kept.renumber and sorted(kept.indices[0].tolist()) == sorted(expected)
    assert out.macs == (2 * 1 * 2 + 1 * 2 * 4) + 2 * (2 * 2 * 2 + 2 * 2 * 4)  # each crop's similarity and merge


def test_the_budget_is_shared_by_region_size_under_either_scope():
    for scope in ("global", "crop"):
        for keep in (1, 3, 7, 15):
            out = VisionZip().select(context(keep, scope))
            owner = torch.tensor([i for i, r in enumerate(LAYOUT.crops) for _ in r.indices()])
            order = torch.tensor([t for r in LAYOUT.crops for t in r.indices()])
            region_of = torch.empty(16, dtype=torch.long)
            region_of[order] = owner
            got = torch.bincount(region_of[out.indices[0]], minlength=3).tolist()
            assert got == split_budget(keep, [4, 6, 6]) and len(set(out.indices[0].tolist())) == keep


def test_a_crop_kept_whole_keeps_its_own_features():
    """keep 15: the base and crop 0,0 keep all their tokens (no token left to merge), crop 0,1 drops one."""
    out = VisionZip().select(context(15))
    _, _, _, f = signals()
    got = dict(zip(out.indices[0].tolist(), out.features[0]))
    for slot in range(10):  # base and crop 0,0 hold 0..5 and 8, 9, 12, 13; all unchanged
        if slot in (0, 1, 2, 3, 4, 5, 8, 9):
            torch.testing.assert_close(got[slot], f[slot])


def test_on_tiny_llava_next_each_region_gets_its_share_and_merged_rows_reach_the_llm(adapter_factory):
    from tokenbench import testing

    adapter = adapter_factory("tiny-llava-next")
    sample = testing.synthetic_samples(1, seed=3, size=(392, 280))[0]
    layout = adapter.layout((392, 280))
    _, record, batch = testing.run(adapter, VisionZip(), 40, [sample])
    chosen = record.selections[-1][0]
    region_of = torch.empty(layout.n_visual, dtype=torch.long)
    for i, region in enumerate(layout.crops):
        region_of[region.indices()] = i
    assert torch.bincount(region_of[chosen], minlength=len(layout.crops)).tolist() == split_budget(
        40, [r.size for r in layout.crops])
    # the image span as the model builds it (newlines included): VisionZip changes only its contextual slots
    with torch.inference_mode():
        own = torch.cat(adapter.model.model.get_image_features(batch.inputs["pixel_values"],
                                                               batch.inputs["image_sizes"]).pooler_output)
    image = batch.inputs["input_ids"][0] == adapter.model.config.image_token_id
    changed = (record.pre_llm_embeds[0][image] - own).abs().amax(dim=-1) > 1e-4
    contextual = sum(q - VisionZip().split(q)[0] for q in split_budget(40, [r.size for r in layout.crops]))
    span_of = torch.cumsum(image.long(), 0)[batch.tokens.visual[0]] - 1  # each visual token's place in the span
    assert int(changed.sum()) == contextual and bool(changed[span_of[chosen]].sum() == contextual)
