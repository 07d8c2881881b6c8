"""SCOPE's rule on hand-built cases whose kept set follows from the paper's rule by hand (greedy on coverage gain x CLS
saliency), built so that the likely wrong variants (saliency top-k, coverage alone, gain + saliency, max instead of
sum over the covered tokens, greedy order instead of raster order) give another answer; plus the contract on the
tiny models where the pair runs, and its refusal up front where it cannot."""

from __future__ import annotations

import pytest
import torch
from tokenbench.methods.scope import SCOPE, greedy

from tokenbench.api import Need, ReductionContext, Region, Selection, VisualLayout
from tokenbench.errors import ConfigError, IncompatibleError

# Five patch features in 2-D: cluster A = {0, 1} along +x, cluster B = {2, 3} along +y, C = {4} along -x. Cosine
# similarity is 1 inside a cluster, 0 between A and B or B and C, -1 between A and C:
#        0   1   2   3   4
#   0 [  1   1   0   0  -1 ]
#   1 [  1   1   0   0  -1 ]
#   2 [  0   0   1   1   0 ]
#   3 [  0   0   1   1   0 ]
#   4 [ -1  -1   0   0   1 ]
FEATS = [[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [-1.0, 0.0]]  # norms differ: only the direction counts


def _ctx(saliency, keep, n_structural=0):
    n = len(saliency)
    feats = torch.tensor([[9.0, 9.0]] + FEATS)[None]  # (1, 1 + N, 2): CLS row first, which SCOPE must drop
    sal = torch.tensor(saliency)[None]
    cls_attn = torch.stack([sal * 0.25, sal * 0.75], dim=1)  # two heads, summing to the saliency
    embeds = torch.arange(n, dtype=torch.float32)[None, :, None].expand(1, n, 3) * 10  # token i: (10i, 10i, 10i)
    layout = VisualLayout(n_visual=n, grid=(1, n), crops=(Region("image", 0, 1, n),), has_cls=True,
                          n_structural=n_structural)
    return ReductionContext(layer=-1, keep=keep, n_visual=n, n_layers=4, active=torch.arange(n)[None], layout=layout,
                            signals={Need("cls_attn"): cls_attn, Need("vision_features"): feats,
                                     Need("visual_embeds"): embeds})


def _kept(out) -> list[int]:
    return (out.indices if isinstance(out, Selection) else out)[0].tolist()


def test_scope_trades_coverage_gain_against_saliency():
    # saliency s = (.30, .34, .05, .06, .25). Coverage c = 0 at first, so the gain g_j = sum_i max(0, S_ij) is
    # 2 for A and B members (two tokens at similarity 1), 1 for C (token 4 alone; the -1s are clipped).
    # step 1: g * s = .60, .68, .10, .12, .25 -> token 1; c = max(0, S[1]) = (1, 1, 0, 0, 0)
    # step 2: A gains 0 (already covered); B: rows 2, 3 give 1 each -> 2; C: row 4 gives 1 -> 1
    #         g * s = 0, -, .10, .12, .25 -> token 4.   Kept {1, 4}.
    # Wrong variants: saliency top-2 keeps {0, 1}; coverage alone ties at 2 and keeps {0, 2}; gain + saliency keeps
    # {1, 3} (step 2: 2.05, 2.06, 1.25).
    assert _kept(SCOPE().select(_ctx([0.30, 0.34, 0.05, 0.06, 0.25], keep=2))) == [1, 4]


def test_scope_sums_the_gain_over_every_covered_token():
    # as above with token 4's saliency .08: step 1 still picks 1 (.60, .68, .10, .12, .08); step 2: B scores
    # 2 x .06 = .12 for token 3, C scores 1 x .08 = .08 -> token 3. Kept {1, 3}. Taking the max over the covered tokens
    # instead of the sum (gain 1 for B and C alike) would pick token 4 (.08 > .06).
    assert _kept(SCOPE().select(_ctx([0.30, 0.34, 0.05, 0.06, 0.08], keep=2))) == [1, 3]


def test_scope_alpha_zero_is_coverage_alone():
    # s ** 0 = 1: step 1 gains 2, 2, 2, 2, 1 -> the first maximum, token 0; step 2: B gains 2, C 1 -> token 2
    assert _kept(SCOPE(alpha=0.0).select(_ctx([0.30, 0.34, 0.05, 0.06, 0.25], keep=2))) == [0, 2]


def test_scope_keeps_raster_order_not_pick_order():
    # s = (.10, .15, .05, .05, .60): step 1: .20, .30, .10, .10, .60 -> token 4; c = max(0, S[4]) = (0, 0, 0, 0, 1)
    # step 2: A gains 2 (rows 0, 1; row 4 is -2, clipped) -> .20, .30; B gains 2 -> .10, .10 -> token 1.
    # Pick order (4, 1); the selection is returned in raster order (1, 4).
    ctx = _ctx([0.10, 0.15, 0.05, 0.05, 0.60], keep=2)
    feats = torch.nn.functional.normalize(torch.tensor(FEATS), dim=-1)
    sal = torch.tensor([[0.10, 0.15, 0.05, 0.05, 0.60]])
    assert greedy((feats @ feats.T)[None], sal, 2)[0].tolist() == [4, 1]
    assert _kept(SCOPE().select(ctx)) == [1, 4]


def test_scope_renumbers_by_default_and_keeps_original_positions_on_request():
    out = SCOPE().select(_ctx([0.30, 0.34, 0.05, 0.06, 0.25], keep=2))
    assert out.renumber and out.features is None and out.embeds is None  # the kept tokens' own embeddings
    assert _kept(out) == [1, 4] and out.macs == 5 * 5 * 2  # the N x N cosine similarity over Dv = 2
    plain = SCOPE(positions="original").select(_ctx([0.30, 0.34, 0.05, 0.06, 0.25], keep=2))
    assert not plain.renumber and plain.embeds is None and _kept(plain) == [1, 4] and plain.macs == 50
    # structural tokens in the image span (LLaVA-NeXT's newlines): renumbered too, as the official shorter sequence
    next_like = SCOPE().select(_ctx([0.30, 0.34, 0.05, 0.06, 0.25], keep=2, n_structural=1))
    assert next_like.renumber and _kept(next_like) == [1, 4]


def test_scope_batch_rows_are_independent():
    a, b = _ctx([0.30, 0.34, 0.05, 0.06, 0.25], 2), _ctx([0.30, 0.34, 0.05, 0.06, 0.08], 2)
    signals = {n: torch.cat([a.signals[n], b.signals[n]]) for n in a.signals}
    both = ReductionContext(layer=-1, keep=2, n_visual=5, n_layers=4, active=torch.arange(5).expand(2, -1),
                            layout=a.layout, signals=signals)
    assert SCOPE().select(both).indices.tolist() == [[1, 4], [1, 3]]


@pytest.mark.parametrize("alpha", [-0.5, 11.0])
def test_scope_alpha_out_of_range_is_one_clear_error(alpha):
    with pytest.raises(ConfigError, match=r"method 'scope': alpha=.* must be in \[0, 10\].*-a scope.alpha=1.0"):
        SCOPE(alpha=alpha).check(32)


def test_scope_keep_all_changes_nothing():
    assert not SCOPE().reduces(576, 576) and SCOPE().reduces(575, 576)


@pytest.mark.parametrize("model", ["tiny-qwen2.5-vl"])  # LLaVA-NeXT provides cls_attn (test_next_signals)
def test_scope_is_refused_up_front_without_cls_attention(model):
    from tokenbench.harness.resolve import resolve_model

    method = SCOPE()
    with pytest.raises(IncompatibleError, match="cls_attn"):
        resolve_model(model).check_compatible(method, steps=method.steps(4))


def test_scope_contract_on_tiny_llava():
    from tokenbench.testing import check_method

    check_method("scope", "tiny-llava")
