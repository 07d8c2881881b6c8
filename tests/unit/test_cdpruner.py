"""CDPruner: hand-built rule tests (conditional DPP, greedy MAP, instruction rows, order) and the contract.

Most tests use five unit vectors in R^3 and one instruction token along e1, so each visual token's relevance r is
its first coordinate and the DPP's second pick maximises q_j^2 (1 - S_0j^2) after the first pick 0:

    index  vector              r       q (min-max, +1e-6)
    0      (0, 0, 1)           0       ~0
    1      (0.8, 0.6, 0)       0.8     0.8
    2      (0.995, 0.0999, 0)  0.995   0.995      near-duplicate of token 4
    3      (0.1, 0.995, 0)     0.1     0.1
    4      (1, 0, 0)           1       1          the most relevant token, last in sequence order
"""

from __future__ import annotations

import math

import pytest
import torch

from tokenbench.api import Need, ReductionContext, Region, VisualLayout, build_method, check_budget_scope
from tokenbench.errors import ConfigError, IncompatibleError
from tokenbench.methods.cdpruner import greedy_map

NEEDS = (Need("visual_embeds"), Need("text_embeds"))
E1, E2 = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]


def _vis():
    return torch.tensor([[0.0, 0.0, 1.0], [0.8, 0.6, 0.0], [0.995, math.sqrt(1 - 0.995**2), 0.0],
                         [0.1, math.sqrt(1 - 0.01), 0.0], [1.0, 0.0, 0.0]])


def _ctx(keep, vis, text, after=None):
    n = vis.shape[0]
    layout = VisualLayout(n_visual=n, grid=(1, n), crops=(Region("image", 0, 1, n),))
    after_t = torch.tensor([after if after is not None else [True] * len(text)])
    signals = {NEEDS[0]: vis[None] * 3.0, NEEDS[1]: torch.tensor([text]) * 0.5}  # scaled: cosine must not care
    return ReductionContext(layer=-1, keep=keep, n_visual=n, n_layers=4, active=torch.arange(n)[None], layout=layout,
                            signals=signals, text_query_mask=torch.ones_like(after_t), text_after_image=after_t)


def _select(keep, text=(E1,), after=None, vis=None, **options):
    out = build_method("cdpruner", options).select(_ctx(keep, _vis() if vis is None else vis, list(text), after))
    assert out.renumber and out.embeds is None  # positions=auto on a 1-D layout: a shorter image
    return out.indices[0].tolist()


def test_conditional_dpp_keeps_relevant_and_diverse_not_top_relevance():
    # pick 1: max q^2 -> token 4. pick 2: gains q_j^2 (1 - S_4j^2): token 1: 0.64 x 0.36 = 0.230; token 2 (the
    # near-duplicate): 0.990 x 0.010 = 0.0099; token 3: 0.01 x 0.99 = 0.0099; token 0: ~1e-12 -> token 1.
    # Top-2 relevance would keep {2, 4} (the duplicate); a DPP without the instruction (q = 1) would take token 0 or 3
    # (orthogonal to token 4) second.
    assert _select(2) == [1, 4]


def test_kept_tokens_are_in_original_order():
    # picked in the order 4, 1: returned ascending
    out = build_method("cdpruner").select(_ctx(2, _vis(), [E1]))
    assert out.indices.tolist() == [[1, 4]]


def test_relevance_uses_only_the_instruction_after_the_image():
    # a system-prompt row along e2 before the image is ignored: the same answer as the question alone.
    assert _select(2, text=(E2, E1), after=[False, True]) == [1, 4]
    # were it averaged in, r = (x + y) / 2: token 1 (0.7) first, then token 3 (q 0.78, S_13 = 0.677: 0.609 x 0.542
    # = 0.33) beats token 4 (q 0.714, S_14 = 0.8: 0.51 x 0.36 = 0.18): {1, 3}
    assert _select(2, text=(E2, E1), after=[True, True]) == [1, 3]


def test_theta_mixing_follows_the_official_exp_form():
    # theta = 0.5: alpha = 0.5, q = exp(0.5 q) = 1.6487, 1.4918, 1.6446, 1.0513, ~1.0; pick 1: token 4; pick 2:
    # token 3: 1.105 x 0.99 = 1.094 > token 0: 1.0 x 1 = 1.0 > token 1: 2.226 x 0.36 = 0.80
    assert _select(2, theta=0.5) == [3, 4]


def test_negate_is_the_official_clip_sign():
    # r' = -r: q = 1, 0.2, 0.005, 0.9, ~0; pick 1: token 0; pick 2: token 3 (0.81 x 1) beats token 1 (0.04 x 1)
    assert _select(2, negate=True) == [0, 3]


def test_rank_exhaustion_falls_back_to_relevance_without_nan():
    # D = 2, so the kernel has rank 2: picks 0 (q 1) then 2 (0.36 x 0.64 = 0.230 > token 3: 0.81 x 0.19 = 0.154);
    # the third pick has no residual left anywhere and takes the most relevant unpicked token, 3 (q 0.9 > 1e-6)
    vis = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.9, math.sqrt(1 - 0.81)]])
    assert _select(3, text=([1.0, 0.0],), vis=vis) == [0, 2, 3]


def test_greedy_matches_a_naive_log_det_greedy():
    g = torch.Generator().manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(12, 8, generator=g, dtype=torch.float64), dim=-1)
    q = torch.rand(12, generator=g, dtype=torch.float64) + 0.1
    kernel = q[:, None] * (feats @ feats.T) * q[None, :]
    picked: list[int] = []
    for _ in range(5):  # each step: the token whose addition gives the largest det(L_Y)
        rest = [j for j in range(12) if j not in picked]
        picked.append(max(rest, key=lambda j: torch.linalg.det(kernel[picked + [j]][:, picked + [j]]).item()))
    assert greedy_map(kernel, q, 5).tolist() == picked


def test_options_are_range_checked():
    with pytest.raises(ConfigError, match=r"theta=1\.0 must be in \[0, 1\).*-a cdpruner\.theta=0\.5"):
        build_method("cdpruner", {"theta": 1.0}).check(32)
    with pytest.raises(ConfigError, match="theta=-0.1"):
        build_method("cdpruner", {"theta": -0.1}).check(32)
    build_method("cdpruner", {"theta": 0.5}).check(32)


def test_plan_prunes_before_the_llm_and_refuses_per_crop_budgets():
    m = build_method("cdpruner")
    (step,) = m.plan(64, 576, 32)
    assert m.stage == "pre_llm" and step.layer == -1 and set(step.needs) == set(NEEDS)
    assert m.reduces(575, 576) and not m.reduces(576, 576)
    two = VisualLayout(n_visual=8, crops=(Region("base", 0, 2, 2), Region("crop 0,0", 4, 2, 2)))
    with pytest.raises(IncompatibleError, match="--budget-scope global"):
        check_budget_scope(m, "crop", two)
    check_budget_scope(m, "global", two)


def test_select_macs_counts_similarity_and_relevance_matmuls():
    from types import SimpleNamespace

    m = build_method("cdpruner")
    assert m.select_macs(SimpleNamespace(hidden=4096), 60, 576, 0, 576) == 576 * 576 * 4096 + 576 * 60 * 4096


def test_contract_on_tiny_llava():
    from tokenbench.testing import check_method

    check_method("cdpruner")
