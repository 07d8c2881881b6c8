"""VisPruner's ``choose`` against an independent re-implementation of the official selection (Theia-4869/VisPruner at
aefa01a, ``llava/model/llava_arch.py::encode_images``, lines 148-181), its indexing and failures included: the same kept
set where the official loop runs and keeps T tokens (on inputs without ties), the official failures exactly at the
budgets the module docstring names while tokenbench keeps T distinct tokens there, and the stable tie order pinned on a
hand-built case."""

from __future__ import annotations

import pytest
import torch
from tokenbench.methods.vispruner import VisPruner

N = 576  # LLaVA-1.5's patches


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Thousands of tiny ops: one thread is fastest, and several stall on a busy machine (seconds become minutes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def default_argsort(scores):
    return scores.argsort(dim=-1, descending=True)  # torch's default sort, as the official code calls it


def official_selection(attn, unit, keep, ratio, argsort=default_argsort, distinct=False, per_round=8):
    """The official ``encode_images`` selection (not its mask) for ``attn`` (B, N) head-averaged CLS attention and
    ``unit`` (B, N, C) normalised features, written again here with the same tensor operations, so that it fails where
    the official code fails: the ``ceil(R/2) - r`` surviving even entries are indexed with a batch index sized
    ``R // 2 - r`` (the same size only for even R and ``r <= R / 2``; elsewhere torch raises or broadcasts).
    ``argsort`` stands in for both of its default (descending) sorts and ``per_round`` for its 8 (other values only
    for hand-built cases); ``distinct`` asserts that no sort meets an exact tie, so that the tie order cannot matter."""
    batch = attn.shape[0]
    n_imp = int(keep * ratio)
    n_div = keep - n_imp
    if distinct:
        assert all(row.unique().numel() == row.numel() for row in attn), "tied CLS attention"
    ranked = argsort(attn)
    important, rest = ranked[:, :n_imp], ranked[:, n_imp:]
    rows = torch.arange(batch)[:, None]
    while n_div > 0:
        size = rest.shape[1]
        drop = min(per_round, size - n_div)
        if drop <= 0:
            break
        feats = unit[rows.expand(-1, size), rest]
        evens, odds = feats[:, 0::2], feats[:, 1::2]
        score = torch.einsum("bic,bjc->bij", evens, odds).amax(dim=-1)  # each even entry's most similar odd one
        if distinct:
            assert all(row.unique().numel() == row.numel() for row in score), "tied similarity scores"
        survivors = argsort(score)[:, drop:]
        even_ids = rest[:, 0::2][rows.expand(-1, size // 2 - drop), survivors]  # the official index size
        rest = torch.cat([even_ids, rest[:, 1::2]], dim=-1)
    return torch.cat([important, rest], dim=-1) if n_div > 0 else important


def _inputs(batch=2, n=N, dim=64, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    attn = torch.rand(batch, n, generator=g, dtype=dtype)
    unit = torch.nn.functional.normalize(torch.randn(batch, n, dim, generator=g, dtype=dtype), dim=-1)
    return attn, unit


def _check_counts(method, attn, chosen, keep):
    """``chosen`` (B, keep) from ``choose``: ``keep`` distinct tokens, the first T_imp the CLS top, T_div others."""
    n_imp, n_div = method.split(keep)
    assert chosen.shape == (attn.shape[0], keep)
    for b in range(attn.shape[0]):
        row = chosen[b].tolist()
        assert len(set(row)) == keep
        assert set(row[:n_imp]) == set(attn[b].topk(n_imp).indices.tolist())
        assert len(set(row[n_imp:])) == n_div and not set(row[n_imp:]) & set(row[:n_imp])


# -- (a) the same kept set as the official loop, without ties ----------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.5, 0.75])
@pytest.mark.parametrize("keep", [64, 128, 192])
def test_same_set_as_the_official_loop(keep, ratio):
    attn, unit = _inputs()
    ours, _ = VisPruner(important_ratio=ratio).choose(attn, unit, keep)
    theirs = official_selection(attn, unit, keep, ratio, distinct=True)
    _check_counts(VisPruner(important_ratio=ratio), attn, ours, keep)
    assert theirs.shape == (2, keep)
    for b in range(2):
        assert set(ours[b].tolist()) == set(theirs[b].tolist()), b
    # not a trivial agreement: the CLS top-T alone (ratio 1) keeps another set
    top = attn.topk(keep, dim=1).indices
    assert any(set(ours[b].tolist()) != set(top[b].tolist()) for b in range(2))


# -- (b) the official failure cases, and what tokenbench returns there -------------------------------------------------
@pytest.mark.parametrize("keep,ratio,error", [
    (16, 0.75, RuntimeError),   # 12 important, 4 diverse: a round with R = 12, r = 8 against 6 even entries
    (1, 0.5, RuntimeError),     # 0 important, 1 diverse: R = 8, r = 7 against 4 even entries
    (1, 0.75, RuntimeError),
    (8, 0.5, RuntimeError),     # 4 + 4: R = 12, r = 8
    (4, 0.5, RuntimeError),     # 2 + 2: R = 14, r = 8 drops all 7 evens silently, then R = 7, r = 5
    (3, 0.5, IndexError),       # T_imp = 1: R = 575, odd, from the first round
    (66, 0.5, IndexError),      # T_imp = 33
    (130, 0.75, IndexError),    # T_imp = 97
])
def test_official_fails_where_the_docstring_says_and_tokenbench_keeps_t(keep, ratio, error):
    attn, unit = _inputs()
    # RuntimeError: expand(-1, R // 2 - r) to a negative size (its message varies with torch's version)
    with pytest.raises(error, match="shape mismatch" if error is IndexError else None):
        official_selection(attn, unit, keep, ratio)
    method = VisPruner(important_ratio=ratio)
    chosen, _ = method.choose(attn, unit, keep)
    _check_counts(method, attn, chosen, keep)


def test_official_keeps_one_token_short_at_14_of_576_at_ratio_075():
    # 10 important, 4 diverse: R = 14, r = 8 (all 7 evens go, R = 7); then r = 3 = R // 2 drops all 4 evens: R = 3
    attn, unit = _inputs()
    theirs = official_selection(attn, unit, 14, 0.75)
    assert theirs.shape == (2, 13)
    method = VisPruner(important_ratio=0.75)
    ours, _ = method.choose(attn, unit, 14)
    _check_counts(method, attn, ours, 14)
    for b in range(2):
        assert set(theirs[b].tolist()) < set(ours[b].tolist())  # the official 13 are among tokenbench's 14


# the module docstring's list of raising budgets with an even T_imp (576 tokens), and of budgets kept one short
RAISES_EVEN_T_IMP = {0.5: {1, 4, 8}, 0.75: {1, 3, 6, 8, 9, 16, 24}}
ONE_SHORT = {0.5: set(), 0.75: {14}}


@pytest.mark.parametrize("ratio", [0.5, 0.75])
def test_every_budget_of_576(ratio):
    """The budgets of 576 tokens up to 64, every one with an odd T_imp and every 5th other one (all 575 take ~5x as
    long; they were checked once, with the same result): the official loop raises exactly at odd T_imp and at the
    listed budgets, and keeps T - 1 exactly at the listed ones (sizes decide both, not the data); tokenbench keeps T
    tokens, the official set wherever the official loop keeps T."""
    attn, unit = _inputs(batch=1, dim=16, seed=1, dtype=torch.float64)  # float32 at 16 dims meets exact ties
    method = VisPruner(important_ratio=ratio)
    odd_t_imp = {t for t in range(1, N) if int(t * ratio) % 2}
    budgets = [t for t in range(1, N) if t <= 64 or t % 5 == 0 or t in odd_t_imp]
    raised, short = set(), set()
    for keep in budgets:
        compare = keep <= 64 or keep % 5 == 0
        try:
            theirs = official_selection(attn, unit, keep, ratio, distinct=True)
        except (RuntimeError, IndexError):
            raised.add(keep)
            theirs = None
        if theirs is not None and theirs.shape[1] != keep:
            short.add(keep)
        if compare:
            ours, _ = method.choose(attn, unit, keep)
            _check_counts(method, attn, ours, keep)
            if theirs is not None and theirs.shape[1] == keep:
                assert set(theirs[0].tolist()) == set(ours[0].tolist()), keep
    assert raised == (odd_t_imp | RAISES_EVEN_T_IMP[ratio]) & set(budgets)
    assert short == ONE_SHORT[ratio]
    assert not raised & {64, 128, 192}  # the README's budgets run


# -- (c) ties: the stable order, pinned --------------------------------------------------------------------------------
# Six tokens, all with the same CLS attention, one-hot features t0 = t1 = e0, t2 = t3 = e1, t4 = t5 = e2; diversity only
# (ratio 0), keep 4, one duplicate per round (VisPruner(per_round=1)).
# Stable: the CLS ranking is 0..5. Round 1: evens 0, 2, 4 all score 1 (each has its twin among the odds): the first,
#   t0, goes; survivors [2, 4] in their order; residual [2, 4, 1, 3, 5]. Round 2: evens 2, 1, 5 vs odds 4, 3: t2 1
#   (t3), t1 0, t5 1 (t4): tied t2 and t5, the first, t2, goes; survivors [5, 1]; residual [5, 1, 4, 3].
# Ties broken the other way (later entry first, in both sorts) keep {0, 2, 3, 5} instead.
TIED_UNIT = torch.eye(3)[[0, 0, 1, 1, 2, 2]][None]
TIED_ATTN = torch.full((1, 6), 1 / 6)


def _later_first(scores):
    """A descending sort that breaks ties the other way (the later entry first)."""
    return scores.flip(-1).argsort(dim=-1, descending=True, stable=True).neg().add(scores.shape[-1] - 1)


def _stable(scores):
    return scores.argsort(dim=-1, descending=True, stable=True)


def test_tied_scores_are_broken_stably():
    method = VisPruner(important_ratio=0.0, per_round=1)
    chosen, macs = method.choose(TIED_ATTN, TIED_UNIT, 4)
    assert chosen.tolist() == [[5, 1, 4, 3]]
    assert macs == (3 * 3 + 3 * 2) * 3
    again = method.choose(TIED_ATTN.expand(3, -1), TIED_UNIT.expand(3, -1, -1), 4)[0]
    assert again.tolist() == [[5, 1, 4, 3]] * 3  # deterministic, whatever the batch


def test_tie_order_decides_the_set():
    scores = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    assert _stable(scores).tolist() == [[0, 2, 3, 1]]
    assert _later_first(scores).tolist() == [[3, 2, 0, 1]]
    # the official loop (one drop per round here) with stable sorts keeps tokenbench's list, in its order; with ties
    # broken later-first it keeps another set, so the official default sort may give either on tied inputs
    stable = official_selection(TIED_ATTN, TIED_UNIT, 4, 0.0, argsort=_stable, per_round=1)
    assert stable.tolist() == [[5, 1, 4, 3]]
    later = official_selection(TIED_ATTN, TIED_UNIT, 4, 0.0, argsort=_later_first, per_round=1)
    assert sorted(later[0].tolist()) == [0, 2, 3, 5]


def test_tied_cls_attention_takes_the_lower_index():
    attn = torch.tensor([[0.1, 0.3, 0.3, 0.3, 0.0, 0.2]])
    chosen, macs = VisPruner(important_ratio=1.0).choose(attn, TIED_UNIT, 2)
    assert chosen.tolist() == [[1, 2]] and macs == 0
