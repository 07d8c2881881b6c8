"""Budget conventions (tokenbench.budgets): matched, nominal and flops=METHOD, each worked out by hand."""

from __future__ import annotations

import pytest

from tokenbench.api import build_method
from tokenbench.budgets import MATCHED, NOMINAL, Convention, layer_mean, method_keep, parse, variant
from tokenbench.errors import ConfigError, UnknownNameError


# -- matched -------------------------------------------------------------------------------------------------------------
def test_matched_fastv_keeps_the_count_whose_layer_mean_is_the_budget():
    fastv = build_method("fastv")
    # 12 layers (FastV's K=2 of 32 placed at 1), 144 tokens: layer 0 sees 144, layers 1..11 see k'.
    # mean = (144 + 11 k') / 12 = 16  ->  k' = 4.36: 4 gives 15.67, 5 gives 16.58; 4 is closer
    assert method_keep(fastv, 16, 144, 12, MATCHED) == 4
    assert layer_mean(fastv, 4, 144, 12) == pytest.approx((144 + 11 * 4) / 12)
    # 32 layers, K = 2, 576 tokens, 64: (2 * 576 + 30 k') / 32 = 64 -> 29.87: 30 (64.125) beats 29 (63.19)
    assert method_keep(fastv, 64, 576, 32, MATCHED) == 30
    assert method_keep(fastv, 64, 576, 32, NOMINAL) == 64  # nominal: FastV's own meaning, k from its layer on


def test_matched_keeps_one_when_the_layers_before_the_method_exceed_the_budget():
    late = build_method("fastv", {"layer": 6})  # layers 0..5 see all 144: a mean of at least 72 on 12 layers
    assert method_keep(late, 16, 144, 12, MATCHED) == 1
    assert layer_mean(late, 1, 144, 12) == pytest.approx((6 * 144 + 6) / 12)


@pytest.mark.parametrize("name", ["visionzip", "alvts", "random", "cdpruner", "divprune", "pool"])
def test_matched_leaves_methods_that_act_at_every_layer_or_before_the_llm_alone(name):
    m = build_method(name)
    assert method_keep(m, 16, 144, 12, MATCHED) == 16
    assert layer_mean(m, 16, 144, 12) == 16


@pytest.mark.parametrize("name", ["sparsevlm", "pdrop", "fitprune", "vtw"])
def test_matched_passes_a_layer_mean_budget_to_methods_that_fit_one(name):
    m = build_method(name)
    assert m.budget_kind == "layer_mean"
    assert method_keep(m, 16, 144, 12, MATCHED) == 16
    assert variant(m, MATCHED) is m


def test_keeping_everything_is_never_converted():
    for name in ("fastv", "sparsevlm", "alvts"):
        for c in (MATCHED, NOMINAL, Convention("flops", "alvts")):
            assert method_keep(build_method(name), 144, 144, 12, c, cost=lambda m, k: 0.0) == 144


# -- nominal -------------------------------------------------------------------------------------------------------------
def _stages(method, keep, n_visual=576, n_layers=32):
    return [(s.layer, s.keep) for s in method.plan(keep, n_visual, n_layers)]


@pytest.mark.parametrize("keep, rows", [(64, (66, 34, 20)), (128, (238, 108, 60)), (192, (300, 200, 118))])
def test_nominal_sparsevlm_runs_the_official_rows_after_layers_2_6_15(keep, rows):
    nominal = variant(build_method("sparsevlm"), NOMINAL)
    assert nominal.official is True
    assert _stages(nominal, keep) == list(zip((3, 7, 16), rows))  # pruning after layer l takes effect before l + 1
    matched = _stages(build_method("sparsevlm"), keep)
    assert matched != _stages(nominal, keep)  # the layer-mean fit keeps far fewer (24/12/7 at 64)


def test_nominal_sparsevlm_64_is_a_real_layer_mean_of_81_8():
    nominal = variant(build_method("sparsevlm"), NOMINAL)
    # layers 0-2 see 576, 3-6 see 66, 7-15 see 34, 16-31 see 20
    assert layer_mean(nominal, 64, 576, 32) == pytest.approx((3 * 576 + 4 * 66 + 9 * 34 + 16 * 20) / 32)


def test_nominal_sparsevlm_scales_the_nearest_official_row_by_keep_over_its_budget():
    nominal = variant(build_method("sparsevlm"), NOMINAL)
    # 16 of 144 is the 64-of-576 share: 66/34/20 x 16/64 = 16.5/8.5/5 -> round: 16/8/5 (layers 2/6/15 at 12 -> 1/3/6)
    assert [k for _, k in _stages(nominal, 16, 144, 12)] == [16, 8, 5]


def test_nominal_pdrop_is_the_paper_pyramid_ending_at_the_budget():
    nominal = variant(build_method("pdrop"), NOMINAL)
    lam = (64 / 576) ** (1 / 3)  # lambda^3 = 64/576: int(576 lam) = 276, int(576 lam^2) = 133, then exactly 64
    assert _stages(nominal, 64) == [(8, int(576 * lam)), (16, int(576 * lam ** 2)), (24, 64)] == [(8, 276), (16, 133),
                                                                                                    (24, 64)]
    assert _stages(build_method("pdrop"), 64)[0][0] < 8  # matched moves the pyramid earlier instead


def test_nominal_keeps_explicit_schedules_as_given():
    fixed = build_method("sparsevlm", {"counts": (300, 200, 118)})
    assert variant(fixed, NOMINAL) is fixed
    paper = build_method("pdrop", {"fit_budget": False})
    assert variant(paper, NOMINAL) is paper


# -- flops=METHOD ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llava_7b_cost():
    from tokenbench.budgets import flops_cost
    from tokenbench.harness.resolve import resolve_model

    adapter = resolve_model("llava-1.5-7b").load_config()  # the config shipped with the package: no hub
    return flops_cost(adapter, 60, {576: None})(576)


@pytest.mark.parametrize("name", ["fastv", "sparsevlm", "visionzip", "pdrop"])
def test_flops_match_picks_the_budget_closest_to_the_reference_flops(name, llava_7b_cost):
    cost = llava_7b_cost
    m = build_method(name)
    target = cost(build_method("alvts"), 64)
    k = method_keep(m, 64, 576, 32, Convention("flops", "alvts"), cost)
    gap = abs(cost(m, k) - target)
    assert all(gap <= abs(cost(m, j) - target) for j in (k - 1, k + 1) if 1 <= j <= 576)
    assert gap / target < 0.01  # within one token step of ALVTS@64's FLOPs: about 1 %
    assert k > 64  # ALVTS@64 costs more than 64 tokens of a pruning method (its skipped tokens stay keys)


# -- parsing -------------------------------------------------------------------------------------------------------------
def test_parse_reads_lists_and_flops_references():
    assert parse(None) == (MATCHED,)
    assert parse("matched, nominal") == (MATCHED, NOMINAL)
    assert parse("flops=alvts")[0].label == "flops=alvts"


@pytest.mark.parametrize("text, words", [
    ("", "--match is empty"), ("fair", "'fair' is not a budget convention"), ("flops", "flops=METHOD"),
    ("nominal=fastv", "not a budget convention"), ("matched,matched", "twice"),
])
def test_parse_refuses_what_is_not_a_convention(text, words):
    with pytest.raises(ConfigError, match=words):
        parse(text)


def test_parse_refuses_an_unknown_reference_method():
    with pytest.raises(UnknownNameError, match="fastvv"):
        parse("flops=fastvv")

