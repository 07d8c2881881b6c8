"""The baselines' selection rules on small hand-built cases whose right answer is derived by hand from each paper's rule
(the expected indices are literals; the comments give the derivation), plus their budget schedules."""

from __future__ import annotations

import math

import pytest
import torch

from tokenbench.api import LayerInput, Need, ReductionContext, Region, Selection, VisualLayout
from tokenbench.methods.dart import DART
from tokenbench.methods.fitprune import FitPrune
from tokenbench.methods.pdrop import PyramidDrop
from tokenbench.methods.pool import Pool, cells
from tokenbench.methods.sparsevlm import SparseVLM
from tokenbench.methods.vtw import VTW
from tokenbench.contract.schedule import layer_mean

N, L = 576, 32  # LLaVA-1.5: 576 visual tokens, 32 layers; a layer-mean budget is met to within N / L = 18


def _ctx(layer, keep, n, signals, text_after_image=None, grid=(2, 3)):
    layout = VisualLayout(n_visual=n, grid=grid, crops=(Region("image", 0, *grid),))
    after = None if text_after_image is None else torch.tensor([text_after_image])
    return ReductionContext(layer=layer, keep=keep, n_visual=n, n_layers=L, active=torch.arange(n)[None],
                            layout=layout, signals=signals, text_query_mask=None if after is None else after.clone(),
                            text_after_image=after)


def _kept(out) -> list[int]:
    out = out.indices if isinstance(out, Selection) else out
    return sorted(out[0].tolist())


def _stages(steps):
    return [(s.layer, s.keep) for s in steps]


# -- PyramidDrop ------------------------------------------------------------------------------------------------------
def test_pdrop_keeps_top_k_of_head_mean_last_query_attention():
    # head-mean = [.20, .16, .17, .14, .045, .075] -> top 3 = {0, 2, 1}; head 0 alone would give {0, 3, 2}
    attn = torch.tensor([[[0.40, 0.02, 0.10, 0.20, 0.03, 0.05]],
                         [[0.00, 0.30, 0.24, 0.08, 0.06, 0.10]]])[None]  # (1, 2 heads, 1 query, 6)
    ctx = _ctx(8, 3, 6, {Need("attn", layer=8, queries="last"): attn})
    assert _kept(PyramidDrop().select(ctx)) == [0, 1, 2]


def test_pdrop_paper_schedule_without_fit():
    # layers 8/16/24 of 32, stage s keeps int(576 * 0.5^s): 288, 144, 72 (whatever the budget)
    assert _stages(PyramidDrop(fit_budget=False).plan(192, N, L)) == [(8, 288), (16, 144), (24, 72)]


@pytest.mark.parametrize("budget", [192, 128, 64])
def test_pdrop_fitted_schedule_meets_layer_mean(budget):
    steps = PyramidDrop().plan(budget, N, L)
    assert abs(layer_mean(N, L, _stages(steps)) - budget) <= N / L


def test_pdrop_low_budget_moves_stages_earlier():
    # layers 0..7 at 576 alone average 8 * 576 / 32 = 144 > 64, so the first stage must come before layer 8
    steps = PyramidDrop().plan(64, N, L)
    assert steps[0].layer < 8 and [s.layer for s in steps] == sorted({s.layer for s in steps})


# -- DART -------------------------------------------------------------------------------------------------------------
def _unit(deg):
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


# final-norm directions of the 6 image tokens (degrees); v2 is the image pivot (see the keys below)
V_DEG = [180, 45, 0, 260, 150, 300]


def _dart(keep, text_deg, system_deg=270.0, other_text_deg=200.0):
    # keys (1 KV head, head_dim 2). L1 norms: v2 = |-1| + |1| = 2.0 is the largest; v1 = (1.8, 0) has the largest L2
    # norm (1.8 > 1.41) but L1 1.8, so the image pivot is v2 by the L1 rule.
    keys_v = torch.tensor([[0.5, 0.5], [1.8, 0.0], [-1.0, 1.0], [0.3, -0.3], [0.6, 0.6], [-0.4, 0.4]])[None, None]
    # text tokens: t0 system prompt (L1 10, largest, but not after the image), t1 (L1 1), t2 (L1 2): text pivot = t2
    keys_t = torch.tensor([[5.0, 5.0], [0.5, -0.5], [-1.0, -1.0]])[None, None]
    h_v = torch.tensor([_unit(d) for d in V_DEG])[None] * torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0, 1.5])[None, :, None]
    h_t = torch.tensor([_unit(system_deg), _unit(other_text_deg), _unit(text_deg)])[None]
    signals = {Need("keys", layer=1): keys_v, Need("keys", layer=1, tokens="text"): keys_t,
               Need("final_normed", layer=2): h_v, Need("final_normed", layer=2, tokens="text"): h_t}
    ctx = _ctx(2, keep, 6, signals, text_after_image=[False, True, True])
    return _kept(DART(layer=2, pivot_image=1, pivot_text=1).select(ctx))


def test_dart_pivots_then_least_similar_image_pivot_first():
    # keep 3 = pivot v2 + 2 picks, one per pivot (image pivot v2 at 0 deg, then text pivot t2 at 32 deg).
    # Angles away from v2 (0): v0 180, v4 150, v3 100, v5 60, v1 45 -> image pivot picks v0.
    # Angles away from t2 (32): v0 148, v3 132, v4 118, v5 92, v1 13 -> v0 taken -> t2 picks v3.  Kept {0, 2, 3}.
    # (text pivot first would give t2 -> v0, v2 -> v4: {0, 2, 4}; the system token t0 (270 deg) as text pivot would
    # pick v1 (135 away): {0, 1, 2}; v1 as image pivot (45 deg) would pick v3 (145 away) first.)
    assert _dart(keep=3, text_deg=32) == [0, 2, 3]


def test_dart_extra_pick_goes_to_the_first_pivot():
    # keep 4: 3 picks over 2 pivots -> image pivot 2, text pivot 1. Text pivot t2 at 90 deg.
    # v2 (0 deg) picks v0 (180), v4 (150); t2 (90) ranks v3 170, v5 150, ... -> v3. Kept {0, 2, 3, 4}.
    # (shares 1/2 would give v0; v3, v5 -> {0, 2, 3, 5})
    assert _dart(keep=4, text_deg=90) == [0, 2, 3, 4]


def test_dart_picks_exclude_pivots_and_earlier_picks():
    # text pivot t2 at 180 deg: least similar to it is the image pivot v2 (180 away, excluded), then v0 is itself
    # (taken by v2's pick anyway); among the rest: v1 135, v5 120, v3 80, v4 30 -> v1. Kept {0, 1, 2}.
    assert _dart(keep=3, text_deg=180) == [0, 1, 2]


# -- VTW --------------------------------------------------------------------------------------------------------------
def test_vtw_withdraws_at_round_budget_times_depth_over_n():
    # K = round(144 * 32 / 576) = 8; K = round(100 * 32 / 576) = round(5.56) = 6
    assert _stages(VTW().plan(144, N, L)) == [(8, 0)]
    assert _stages(VTW().plan(100, N, L)) == [(6, 0)]


def test_vtw_full_budget_has_no_step():
    assert VTW().plan(N, N, L) == ()  # K = round(576 * 32 / 576) = 32 = L: nothing withdrawn


def test_vtw_select_keeps_nothing():
    assert VTW().select(_ctx(8, 0, 6, {})).shape == (1, 0)


# -- SparseVLM --------------------------------------------------------------------------------------------------------
# Text rows: t0 system prompt (not after the image), t1, t2, t3 after it. Layer-0 hidden states (D = 2): every visual
# token (1, 0); t1 = t2 = (2, 0), t3 = (0, 0), t0 = (10, 0). Over the text after the image V.T^T = [2, 2, 0] for every
# visual token, softmax = [e^2, e^2, 1] / (2 e^2 + 1) = [.468, .468, .063], mean 1/3 -> raters {t1, t2}; t3 is not a
# rater. (Counting t0 as text, its logit 10 would make it the only rater.)
ATTN_T = torch.tensor([
    # head 0 (rater mass .85 + .85 = 1.70)     head 1 (rater mass .82 + .80 = 1.62)
    [[0.00, 0.90, 0.00, 0.00], [0.00, 0.90, 0.00, 0.00]],  # t0 system prompt: big on v1
    [[0.30, 0.25, 0.20, 0.10], [0.00, 0.00, 0.12, 0.70]],  # t1 rater
    [[0.20, 0.30, 0.25, 0.10], [0.00, 0.00, 0.10, 0.70]],  # t2 rater
    [[0.00, 0.00, 0.00, 0.00], [0.90, 0.00, 0.00, 0.00]],  # t3 non-rater: big on v0 (head 1)
]).permute(1, 0, 2)[None]  # (1, 2 heads, 4 text rows, 4 visual)


def _sparsevlm_ctx():
    n, text = 4, [False, True, True, True]
    v0 = torch.tensor([[1.0, 0.0]] * n)[None]
    t0 = torch.tensor([[10.0, 0.0], [2.0, 0.0], [2.0, 0.0], [0.0, 0.0]])[None]
    # sequence: t0 | v0..v3 | t1 t2 t3 ; identity rotation: RoPE-only logit = ones.ones / sqrt(4) = 2 everywhere
    inp = LayerInput(normed=torch.zeros(1, 8, 8), positions=torch.arange(8)[None], valid=torch.ones(1, 8, dtype=bool),
                     visual=torch.tensor([[1, 2, 3, 4]]), text=torch.tensor([[0, 5, 6, 7]]), rope=lambda x: x,
                     n_heads=2, n_kv_heads=2, head_dim=4, scaling=0.5)
    signals = {Need("hidden", layer=0): v0, Need("hidden", layer=0, tokens="text"): t0,
               Need("attn", layer=2, queries="text"): ATTN_T, Need("layer_input", layer=2): inp}
    return _ctx(3, 2, n, signals, text_after_image=text, grid=(2, 2))


def test_sparsevlm_v1_head_mean_over_raters_only():
    # head-mean rows: t1 [.15, .125, .16, .40], t2 [.10, .15, .175, .40]; mean over raters [.125, .1375, .1675, .40]
    # -> top 2 {3, 2}. (Counting non-rater t3 ([.45, 0, 0, 0]) would give [.233, .092, .112, .267] -> {0, 3}.)
    assert _kept(SparseVLM(version="1.0").select(_sparsevlm_ctx())) == [2, 3]


def test_sparsevlm_v2_keeps_heads_with_most_rater_mass():
    # constant correction (/2) changes no ranking; rater mass head 0 1.70 > head 1 1.62 (t3's .90 on head 1 is not
    # counted, else head 1 would win) -> head 0 only: rater mean [.25, .275, .225, .10] -> top 2 {1, 0}.
    assert _kept(SparseVLM(heads=1).select(_sparsevlm_ctx())) == [0, 1]


@pytest.mark.parametrize("budget", [192, 128, 64])
def test_sparsevlm_plan_meets_layer_mean(budget):
    assert abs(layer_mean(N, L, _stages(SparseVLM().plan(budget, N, L))) - budget) <= N / L


def test_sparsevlm_stage_drops_at_least_one_token_as_the_official_code_does():
    """score.py keeps topk(min(count, v_token_num - 1)): a count that reaches the tokens left still drops one, at every
    stage (an uncapped schedule would keep 576 at the first two stages here)."""
    def counts(method, keep):
        return [k for _, k in _stages(method.plan(keep, 576, 32))]

    assert counts(SparseVLM(counts=(576, 576, 500)), 575) == [575, 574, 500]
    assert counts(SparseVLM(counts=(300, 200, 118)), 192) == [300, 200, 118]  # an official row is unchanged
    fitted = counts(SparseVLM(), 575)
    assert all(b < a for a, b in zip([576, *fitted], fitted)), fitted


# -- FitPrune ---------------------------------------------------------------------------------------------------------
def test_fitprune_head_max_cross_times_self_after_image_text_only():
    # visual rows, both heads equal, every row [.5, .1, .25, .25]: self = column sums / 4 = [.5, .1, .25, .25]
    a_vis = torch.tensor([[0.5, 0.1, 0.25, 0.25]]).expand(4, 4)[None, None].expand(1, 2, 4, 4)
    a_text = torch.tensor([
        [[0.00, 0.00, 0.50, 0.00], [0.00, 0.00, 0.50, 0.00]],  # t0 system prompt (heads 0, 1)
        [[0.30, 0.10, 0.20, 0.60], [0.30, 0.10, 0.30, 0.00]],  # t1
        [[0.30, 0.10, 0.20, 0.10], [0.30, 0.10, 0.30, 0.00]],  # t2
    ]).permute(1, 0, 2)[None]  # (1, 2 heads, 3 rows, 4 visual)
    # head max: t1 [.3, .1, .3, .6], t2 [.3, .1, .3, .1] -> cross [.6, .2, .6, .7]; x self = [.30, .02, .15, .175]
    # -> keep 2 = {0, 3}. Head mean: cross [.6, .2, .5, .35] -> [.30, .02, .125, .0875] -> {0, 2}. Counting t0 (max
    # .5 on v2): cross [.6, .2, 1.1, .7] -> [.30, .02, .275, .175] -> {0, 2}.
    signals = {Need("attn", layer=4, queries="text"): a_text, Need("attn", layer=4, queries="visual"): a_vis}
    ctx = _ctx(5, 2, 4, signals, text_after_image=[False, True, True], grid=(2, 2))
    assert _kept(FitPrune().select(ctx)) == [0, 3]


@pytest.mark.parametrize("budget", [192, 128, 64])
def test_fitprune_plan_deletes_monotonically_to_layer_mean(budget):
    stages = _stages(FitPrune().plan(budget, N, L))
    counts = [c for _, c in stages]
    assert [x for x, _ in stages] == sorted({x for x, _ in stages}) and counts == sorted(counts, reverse=True)
    assert abs(layer_mean(N, L, stages) - budget) <= N / L


# -- pool -------------------------------------------------------------------------------------------------------------
def _pool_ctx(keep):
    i = torch.arange(16, dtype=torch.float32)
    embeds = torch.stack([i, i * i], dim=-1)[None]  # token i has embedding (i, i^2)
    layout = VisualLayout(n_visual=16, grid=(4, 4), crops=(Region("image", 0, 4, 4),))
    return ReductionContext(layer=-1, keep=keep, n_visual=16, n_layers=L, active=torch.arange(16)[None],
                            layout=layout, signals={Need("visual_embeds"): embeds})


def test_pool_center_keeps_each_blocks_centre_slot():
    # keep 4 on 4x4: 2x2 blocks {0,1,4,5}, {2,3,6,7}, {8,9,12,13}, {10,11,14,15}; slot len // 2 = 2 in row-major
    # order is the block's lower-left token: 4, 6, 12, 14
    out = Pool(mode="center").select(_pool_ctx(4))
    assert out.indices[0].tolist() == [4, 6, 12, 14] and out.embeds is None and out.renumber


def test_pool_avg_is_block_mean_at_centre_slot():
    out = Pool(mode="avg").select(_pool_ctx(4))
    assert out.indices[0].tolist() == [4, 6, 12, 14]
    # means of (i, i^2): (0+1+4+5)/4 = 2.5, (0+1+16+25)/4 = 10.5; (2+3+6+7)/4 = 4.5, (4+9+36+49)/4 = 24.5;
    # (8+9+12+13)/4 = 10.5, (64+81+144+169)/4 = 114.5; (10+11+14+15)/4 = 12.5, (100+121+196+225)/4 = 160.5
    expected = torch.tensor([[2.5, 10.5], [4.5, 24.5], [10.5, 114.5], [12.5, 160.5]])
    torch.testing.assert_close(out.embeds[0], expected)


def test_pool_prime_budget_gives_exactly_k_cells_covering_grid():
    # k = 5 on 4x4: round(sqrt(5 * 4 / 4)) = 2 bands (rows 0-1, 2-3); 3 cells then 2; column edges round(linspace):
    # [0, 1, 3, 4] and [0, 2, 4] -> cell sizes 2, 4, 2, 4, 4
    got = cells(4, 4, 5)
    assert [len(c) for c in got] == [2, 4, 2, 4, 4]
    assert sorted(p for c in got for p in c) == [(y, x) for y in range(4) for x in range(4)]
    # centre slots: [(0,0),(1,0)] -> 4; [(0,1),(0,2),(1,1),(1,2)] -> 5; [(0,3),(1,3)] -> 7; then 12, 14
    assert Pool(mode="center").select(_pool_ctx(5)).indices[0].tolist() == [4, 5, 7, 12, 14]


def test_pdrop_fitted_schedule_at_the_papers_own_mean_is_the_papers_schedule():
    """At the budget the paper's lambda = 0.5 gives (270 on 576 tokens, 32 layers), fitting changes nothing: stages
    8/16/24 keep 288/144/72 (int(576 * 0.5^s))."""
    steps = PyramidDrop().plan(270, 576, 32)
    assert [(s.layer, s.keep) for s in steps] == [(8, 288), (16, 144), (24, 72)]
