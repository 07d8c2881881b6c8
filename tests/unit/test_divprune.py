"""DivPrune's rule on hand-built cases whose kept set follows by hand from the paper's rule (greedy max-min cosine
distance over the LLM input embeddings, the most isolated token first), each built so that the likely wrong variant
(first pick by index or by summed distance, max-sum or last-pick-only instead of max-min, Euclidean instead of cosine
distance, pick order instead of sequence order) gives another answer; plus its plan, its FLOPs and the contract."""

from __future__ import annotations

import math

import pytest
import torch

from tokenbench.api import Need, ReductionContext, Region, Step, VisualLayout
from tokenbench.methods.divprune import DivPrune, max_min_diverse

# Six 2-D embeddings at these angles (degrees) with these norms. Cosine distance 1 - cos(angle between) depends on the
# angle alone and grows with it up to 180, so the rule can be followed with angles (the norms only mislead a
# Euclidean variant).
ANGLES = [20, 80, 120, 270, 320, 340]
NORMS = [4.0, 1.0, 2.0, 2.0, 0.5, 1.0]


def _embeds(angles=ANGLES, norms=NORMS) -> torch.Tensor:
    return torch.tensor([[r * math.cos(math.radians(a)), r * math.sin(math.radians(a))]
                         for a, r in zip(angles, norms)])[None]  # (1, N, 2)


def _ctx(embeds: torch.Tensor, keep: int) -> ReductionContext:
    b, n, _ = embeds.shape
    layout = VisualLayout(n_visual=n, grid=(2, n // 2), crops=(Region("image", 0, 2, n // 2),))
    return ReductionContext(layer=-1, keep=keep, n_visual=n, n_layers=4, active=torch.arange(n).expand(b, n),
                            layout=layout, signals={Need("visual_embeds"): embeds})


def _wrong(x: torch.Tensor, keep: int, first="isolated", agg="min", metric="cosine") -> list[int]:
    """A variant of the rule (x: (N, D)); the picks in pick order."""
    x = x.double()
    if metric == "cosine":
        u = x / x.norm(dim=1, keepdim=True)
        d = 1 - u @ u.T
    else:
        d = torch.cdist(x, x)
    n = len(x)
    s = {"isolated": (d + torch.eye(n, dtype=d.dtype) * 1e9).min(dim=0).values, "sum": d.sum(dim=0),
         "index": -torch.arange(n, dtype=d.dtype)}[first]
    picks: list[int] = []
    for _ in range(keep):
        j = int(s.masked_fill(torch.isin(torch.arange(n), torch.tensor(picks, dtype=torch.long)), -1e18).argmax())
        picks.append(j)
        s = {"min": d[picks].min(dim=0).values, "sum": d[picks].sum(dim=0), "last": d[j]}[agg]
    return picks


def test_first_pick_is_the_token_whose_nearest_neighbour_is_farthest():
    # nearest-neighbour angles: t0 (20): 40 to t5 (340); t1 (80): 40 to t2; t2 (120): 40; t3 (270): 50 to t4;
    # t4 (320): 20; t5 (340): 20. The most isolated is t3.
    x = _embeds()
    assert DivPrune().select(_ctx(x, 1)).indices[0].tolist() == [3]
    assert _wrong(x[0], 1, first="sum") != [3]  # the token farthest from all the others in sum: t0
    assert _wrong(x[0], 1, first="index") != [3]  # starting from the first token
    assert _wrong(x[0], 1, metric="euclidean") != [3]


def test_later_picks_maximise_the_distance_to_the_nearest_kept_token():
    # 1st: t3 (270), as above. 2nd: the angle to 270 is t0 110, t1 170, t2 150, t4 50, t5 70 -> t1 (80).
    # 3rd: the angle to the nearer of {270, 80}: t0 min(110, 60) = 60, t2 min(150, 40) = 40, t4 min(50, 120) = 50,
    # t5 min(70, 100) = 70 -> t5. Kept {1, 3, 5}, returned in sequence order (picked as 3, 1, 5).
    x = _embeds()
    out = DivPrune().select(_ctx(x, 3)).indices
    assert out[0].tolist() == [1, 3, 5]
    assert _wrong(x[0], 3) == [3, 1, 5]  # the rule itself, in pick order: the order is the only difference
    for variant in ({"first": "sum"}, {"first": "index"}, {"agg": "sum"}, {"agg": "last"},
                    {"metric": "euclidean"}):
        assert sorted(_wrong(x[0], 3, **variant)) != [1, 3, 5], variant


def test_cosine_distance_ignores_each_token_s_norm():
    # the same directions with other norms keep the same tokens; a Euclidean rule would not (see above)
    x = _embeds(norms=[1.0] * 6)
    assert DivPrune().select(_ctx(x, 3)).indices[0].tolist() == [1, 3, 5]
    assert DivPrune().select(_ctx(x * 7.5, 3)).indices[0].tolist() == [1, 3, 5]


def test_duplicates_never_give_a_token_twice():
    # t0..t2 are one direction, t3 another: t3 is the most isolated, then t0 (distance 1 to t3); every remaining token
    # duplicates t0 (distance 0 to the kept set), and the lowest index not yet kept, t1, is next. The official loop
    # would pick t0 again here (argmax over all-zero scores).
    x = _embeds(angles=[0, 0, 0, 90], norms=[1.0, 2.0, 3.0, 1.0])
    assert DivPrune().select(_ctx(x, 3)).indices[0].tolist() == [0, 1, 3]


def test_each_sample_is_selected_on_its_own():
    a, b = _embeds(), _embeds(angles=[a + 180 for a in ANGLES])  # b: a rotated, the same angles between tokens
    c = _embeds(angles=[0, 10, 20, 90, 100, 200], norms=[1.0] * 6)
    batch = torch.cat([a, b, c])
    out = DivPrune().select(_ctx(batch, 3)).indices
    assert out.tolist() == [max_min_diverse(s[None], 3)[0].tolist() for s in batch]
    assert out[0].tolist() == out[1].tolist() == [1, 3, 5]


def test_plan_is_one_pre_llm_step_on_the_llm_input_embeddings():
    m = DivPrune()
    assert m.stage == "pre_llm" and m.budget_scopes == ("global",)
    assert m.steps(32) == (Step(-1, needs=(Need("visual_embeds"),)),)
    assert m.reduces(64, 576) and not m.reduces(576, 576)
    assert m.params() == {"positions": "auto"}


def test_selection_macs_are_the_pairwise_cosine_matrix():
    from tokenbench.measure.flops import LMDims

    lm = LMDims(hidden=4096, intermediate=11008, n_layers=32, n_heads=32, n_kv_heads=32, head_dim=128, vocab=32000)
    assert DivPrune().select_macs(lm, n_text=40, n_active=576, layer=-1, n_visual=576) == 576 * 576 * 4096


@pytest.mark.parametrize("model", ["tiny-llava", "tiny-llava-next", "tiny-qwen2.5-vl"])
def test_contract_and_flops(model):
    from tokenbench.testing import check_method

    check_method("divprune", model, n_samples=2)
