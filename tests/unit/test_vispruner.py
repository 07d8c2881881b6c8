"""VisPruner's rule on hand-built cases whose kept set is derived by hand from the official rule (important tokens by
head-averaged CLS attention, then rounds of even/odd duplicate removal over the rest in descending-attention order,
survivors re-ordered by score), each built so that a likely wrong variant keeps another set; plus its cost, options,
crop scope, refusals and the contract on tiny-llava."""

from __future__ import annotations

import math
import re

import pytest
import torch
from tokenbench.methods.vispruner import VisPruner, dedup_macs

from tokenbench.api import Need, ReductionContext, Region, Selection, VisualLayout
from tokenbench.errors import ConfigError, IncompatibleError


def _unit(angles_deg):
    """2-D unit features at these angles: the cosine of two is cos(difference), so within [0, 180) the most similar
    is the one at the smallest angular distance."""
    rad = torch.tensor(angles_deg, dtype=torch.float32) * math.pi / 180
    return torch.stack([rad.cos(), rad.sin()], dim=-1)


def _ctx(keep, heads, angles, crops=None, scope="global"):
    n = len(angles)
    cls = torch.tensor(heads, dtype=torch.float32)[None]  # (1, heads, N)
    feats = torch.cat([torch.zeros(1, 2), _unit(angles)])[None] * 3.0  # CLS first, unnormalised
    embeds = torch.arange(n * 4, dtype=torch.float32).view(1, n, 4)  # token i's embedding: 4i .. 4i+3
    crops = crops or (Region("image", 0, 1, n),)
    layout = VisualLayout(n_visual=n, grid=(1, n), crops=crops, has_cls=True)
    signals = {Need("cls_attn"): cls, Need("vision_features"): feats, Need("visual_embeds"): embeds}
    return ReductionContext(layer=-1, keep=keep, n_visual=n, n_layers=4, active=torch.arange(n)[None],
                            layout=layout, signals=signals, budget_scope=scope)


# Case 1: diversity only (important_ratio 0), one duplicate dropped per round, N = 6, keep 3.
# Angles t0..t5 = 125, 25, 5, 85, 140, 175. CLS attention order (descending): 2, 5, 0, 3, 1, 4.
# Round 1, residual [2,5,0,3,1,4]: evens 2,0,1 vs odds 5,3,4; nearest-odd distances t2 80 (to 85), t0 15 (to 140),
#   t1 60 (to 85); drop t0; survivors by descending similarity [1, 2]; residual [1,2,5,3,4].
# Round 2: evens 1,5,4 vs odds 2,3: t1 20 (to 5), t5 90 (to 85), t4 55 (to 85); drop t1; survivors [4, 5];
#   residual [4,5,2,3].
# Round 3: evens 4,2 vs odds 5,3: t4 35 (to 175), t2 80 (to 85); drop t4; residual [2,5,3] = 3 left: kept {2,3,5}.
# Wrong variants: survivors kept in list order -> {1,3,4}; dropping the least duplicated -> {0,3,4}; the residual in
# raster order instead of attention order -> {1,3,5}.
ANGLES_1 = [125, 25, 5, 85, 140, 175]
ATTN_1 = [[0.4, 0.2, 0.6, 0.3, 0.1, 0.5]]


def test_rounds_follow_the_official_order_of_survivors():
    out = VisPruner(important_ratio=0.0, per_round=1).select(_ctx(3, ATTN_1, ANGLES_1))
    assert isinstance(out, Selection)
    assert out.indices[0].tolist() == [2, 3, 5]  # ascending: the original raster order
    # three rounds on R = 6, 5, 4 residual tokens: 3x3 + 3x2 + 2x2 similarities of 2-D features
    assert out.macs == (9 + 6 + 4) * 2 == dedup_macs(6, 3, 2, per_round=1)


def test_kept_tokens_are_a_shorter_image_of_their_own_embeddings():
    out = VisPruner(important_ratio=0.0, per_round=1).select(_ctx(3, ATTN_1, ANGLES_1))
    assert out.renumber  # LLaVA reads the masked features as a shorter image: contiguous positions
    assert out.embeds is None and out.features is None  # the kept tokens' own embeddings, unchanged
    assert out.indices[0].tolist() == [2, 3, 5]
    kept = VisPruner(important_ratio=0.0, per_round=1, positions="original").select(_ctx(3, ATTN_1, ANGLES_1))
    assert not kept.renumber and kept.indices[0].tolist() == [2, 3, 5]


# Case 2: the defaults (ratio 0.5, 8 per round), N = 8, keep 3: T_imp = int(3 * 0.5) = 1, T_div = 2.
# Head-averaged CLS attention ranks t6 (0.30) first, then t1, t3, t0, t7, t2, t5, t4; head 0 alone ranks t1 first.
# Important {6}. Residual [1,3,0,7,2,5,4] (R = 7, odd): drop min(8, 7 - 2) = 5, but only the 4 evens 1,0,2,4 exist:
#   all dropped; residual [3,7,5]. Round 2: drop 1; evens 3 (10 deg), 5 (80 deg) vs odd 7 (50 deg): distances 40 and
#   30; drop t5; residual [3,7]. Kept {3,6,7}.
# Wrong variants: head 0 only -> important {1}; round(1.5) = 2 important -> {1,6} + one; dropping the least
#   duplicated -> {5,6,7}; raster-order residual -> 7 is dropped in round 1.
MEAN_2 = [0.12, 0.20, 0.06, 0.15, 0.03, 0.04, 0.30, 0.10]
HEADS_2 = [[*MEAN_2[:6], 0.01, MEAN_2[7]], [*MEAN_2[:6], 0.59, MEAN_2[7]]]
ANGLES_2 = [100, 120, 140, 10, 160, 80, 170, 50]


def test_defaults_split_by_int_and_rank_by_head_mean():
    out = VisPruner().select(_ctx(3, HEADS_2, ANGLES_2))
    assert out.indices[0].tolist() == [3, 6, 7]
    assert out.macs == (4 * 3 + 2 * 1) * 2 == dedup_macs(7, 2, 2)


def test_ratio_one_is_cls_attention_top_k_and_costs_nothing():
    out = VisPruner(important_ratio=1.0).select(_ctx(3, HEADS_2, ANGLES_2))
    assert out.indices[0].tolist() == [1, 3, 6] and out.macs == 0


# Case 3: --budget-scope crop, two regions of 4 (t0-t3, t4-t7), keep 4 -> 2 each: 1 important + 1 diverse per crop.
# Attention t0..t7 = .9 .8 .7 .6 .1 .2 .3 .4. Crop A: important {0}; residual [1,2,3]; drop min(8, 2) = 2 = both
# evens 1,3 -> {2}. Crop B: order 7,6,5,4; important {7}; residual [6,5,4]; evens 6,4 dropped -> {5}. Kept {0,2,5,7}.
# The global rule would take t0 and t1 as the important tokens.
CROPS = (Region("crop 0,0", 0, 1, 4), Region("crop 0,1", 4, 1, 4))


def test_crop_scope_runs_the_rule_inside_each_crop():
    ctx = _ctx(4, [[0.9, 0.8, 0.7, 0.6, 0.1, 0.2, 0.3, 0.4]], [0, 20, 45, 70, 90, 110, 135, 160], CROPS, "crop")
    out = VisPruner().select(ctx)
    assert out.indices[0].tolist() == [0, 2, 5, 7]
    assert out.macs == 2 * (2 * 1 * 2)  # one round of 2 x 1 similarities in each crop
    glob = VisPruner().select(_ctx(4, ctx.signals[Need("cls_attn")][0].tolist(), [0, 20, 45, 70, 90, 110, 135, 160],
                                   CROPS))
    assert {0, 1} <= set(glob.indices[0].tolist())


def test_batch_rows_are_independent():
    a, b = _ctx(3, ATTN_1, ANGLES_1), _ctx(3, [ATTN_1[0][::-1]], ANGLES_1[::-1])
    batch = ReductionContext(layer=-1, keep=3, n_visual=6, n_layers=4, active=torch.arange(6).expand(2, -1),
                             layout=a.layout, signals={k: torch.cat([a.signals[k], b.signals[k]]) for k in a.signals})
    m = VisPruner(important_ratio=0.0, per_round=1)
    out = m.select(batch).indices
    assert out[0].tolist() == m.select(a).indices[0].tolist() == [2, 3, 5]
    assert out[1].tolist() == m.select(b).indices[0].tolist()


def test_cost_on_llava_1_5():
    # 576 patches of CLIP-L (1024 dims); T = 64 at 0.5: 544 residual down to 32, 8 per round, the last round 0
    assert dedup_macs(544, 32, 1024) == sum(((r + 1) // 2) * (r // 2) for r in range(544, 32, -8)) * 1024


@pytest.mark.parametrize("option,value,words", [("important_ratio", 1.5, "[0, 1]"), ("important_ratio", -0.1, "[0, 1]"),
                                                ("per_round", 0, "at least 1")])
def test_options_are_range_checked(option, value, words):
    with pytest.raises(ConfigError, match=rf"vispruner.*{option}.*{re.escape(words)}.*Example: -a vispruner\.{option}="):
        VisPruner(**{option: value}).check(4)


@pytest.mark.parametrize("model", ["tiny-qwen2.5-vl"])  # LLaVA-NeXT provides cls_attn (test_next_signals)
def test_refused_without_cls_attention(model):
    from tokenbench.harness.resolve import resolve_model

    method = VisPruner()
    with pytest.raises(IncompatibleError, match="cls_attn"):
        resolve_model(model).check_compatible(method, steps=method.steps(4))


def test_contract_on_tiny_llava():
    from tokenbench import testing

    testing.check_method("vispruner")
