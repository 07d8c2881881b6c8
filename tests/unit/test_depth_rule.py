"""One rule places every method's layers, given for the 32-layer reference, at another depth (schedule.at_depth)."""

from __future__ import annotations

import pytest

from tokenbench.api import METHODS, build_method
from tokenbench.contract.schedule import at_depth


@pytest.mark.parametrize("layers,n_layers,expected", [
    ((2,), 32, (2,)), ((8, 16, 24), 32, (8, 16, 24)),        # the reference depth: unchanged
    ((2,), 12, (1,)), ((2,), 16, (1,)), ((2,), 6, (1,)),      # 0.75, 1.0, 0.375 -> kept >= 1
    ((2,), 28, (2,)), ((2,), 40, (3,)), ((2,), 36, (2,)),     # 1.75 -> 2, 2.5 -> 3 (halves up), 2.25 -> 2
    ((8, 16, 24), 12, (3, 6, 9)), ((8, 16, 24), 6, (2, 3, 5)),  # 1.5 -> 2, 3.0, 4.5 -> 5
    ((3, 7, 16), 12, (1, 3, 6)),                              # SparseVLM's (2, 6, 15) take effect one layer later
    ((0,), 12, (0,)), ((1, 2, 3), 4, (1, 2, 3)),              # 0 stays 0; collisions are pushed up by one
])
def test_at_depth_by_hand(layers, n_layers, expected):
    assert at_depth(layers, n_layers) == expected


def test_at_depth_refuses_what_does_not_fit():
    with pytest.raises(ValueError, match="cannot place"):
        at_depth((1, 2, 3, 4), 3)


@pytest.mark.parametrize("n_layers", [6, 12, 16, 28, 32, 40])
def test_every_default_schedule_uses_the_rule(n_layers):
    """FastV, DART (K=2), PyramidDrop (8/16/24), SparseVLM (outputs of 2/6/15) and ALVTS's static ablation (K=2)."""
    (k,) = at_depth((2,), n_layers)
    assert [s.layer for s in build_method("fastv").steps(n_layers)] == [k]
    assert [s.layer for s in build_method("dart").steps(n_layers)] == [k]
    assert [s.layer for s in build_method("alvts", {"static": True}).steps(n_layers)] == [k]
    assert [s.layer for s in build_method("pdrop").steps(n_layers)] == list(at_depth((8, 16, 24), n_layers))
    pruned = build_method("sparsevlm")._pruned(n_layers)
    assert tuple(x + 1 for x in pruned) == at_depth((3, 7, 16), n_layers)


def test_explicit_layers_are_taken_as_given():
    assert [s.layer for s in build_method("fastv", {"layer": 5}).steps(12)] == [5]
    assert [s.layer for s in build_method("dart", {"layer": 3}).steps(12)] == [3]
    assert [s.layer for s in build_method("pdrop", {"layers": (2, 4, 6)}).steps(12)] == [2, 4, 6]


def test_every_builtin_method_checks_at_small_depths():
    for name in METHODS.names():
        build_method(name).check(6)
