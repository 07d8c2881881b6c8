"""Every built-in method refuses every out-of-range option with a ConfigError naming the option, before any compute.

Options against the model's depth are refused by ``check(n_layers)``, options against the image's tokens or the budget
by ``plan(keep, n_visual, n_layers)``; the harness calls both for every layout and budget before the first run
(``runner.check_method_plans``). Where the message gives an ``Example: -a ...``, following it works.
"""

from __future__ import annotations

import re

import pytest

from tokenbench.api import (METHODS, Need, ReductionContext, Region, Step, TokenReducer, VisualLayout, build_method,
                            check_budget_scope, split_budget)
from tokenbench.errors import ConfigError, IncompatibleError

L, N, KEEP = 6, 144, 16  # depth, visual tokens, budget of the checks below (tiny-llava's depth, mini-llava's tokens)


def _run_checks(method, n_layers=L, keep=KEEP, n_visual=N):
    method.check(n_layers)
    return method.plan(keep, n_visual, n_layers)


# (method, options, the option the message must name, follow the message's example)
BAD = [
    ("fastv", {"layer": 0}, "layer", True),
    ("fastv", {"layer": L}, "layer", True),
    ("fastv", {"layer": -2}, "layer", True),
    ("random", {"layer": -1}, "layer", True),
    ("random", {"layer": L}, "layer", True),
    ("pool", {"mode": "max"}, "mode", True),
    *[(m, {"positions": "shorter"}, "positions", True)
      for m in ("pool", "divprune", "cdpruner", "vispruner", "scope", "visionzip")],
    ("visionzip", {"dominant_share": 0.0}, "dominant_share", True),
    ("visionzip", {"dominant_share": 1.5}, "dominant_share", True),
    ("vtw", {"layer": -1}, "layer", True),
    ("vtw", {"layer": L}, "layer", True),
    ("pdrop", {"layers": ()}, "layers", True),
    ("pdrop", {"layers": (3, 2)}, "layers", True),
    ("pdrop", {"layers": (0, L)}, "layers", True),
    ("pdrop", {"layers": (-1, 2)}, "layers", True),
    ("pdrop", {"lam": 0.0}, "lam", True),
    ("pdrop", {"lam": 1.5}, "lam", True),
    ("pdrop", {"lam": 1.0, "fit_budget": False}, "lam", True),
    ("sparsevlm", {"heads": -1}, "heads", True),
    ("sparsevlm", {"version": "3.0"}, "version", True),
    ("sparsevlm", {"layers": ()}, "layers", True),
    ("sparsevlm", {"layers": (6, 2, 15)}, "layers", True),
    ("sparsevlm", {"layers": (-1, 6, 15)}, "layers", True),
    ("sparsevlm", {"layers": (2, 6, 40)}, "layers", True),
    ("sparsevlm", {"counts": (30,)}, "counts", True),
    ("sparsevlm", {"counts": (10, 20, 30)}, "counts", True),  # growing: more than the tokens left
    ("sparsevlm", {"counts": (10, 0, 0)}, "counts", True),
    ("sparsevlm", {"counts": (500, 200, 100)}, "counts", True),  # more than the image's 144 tokens (plan)
    ("dart", {"layer": 0}, "layer", True),
    ("dart", {"layer": L}, "layer", True),
    ("dart", {"pivot_image": 0}, "pivot_image", True),
    ("dart", {"pivot_text": -1}, "pivot_text", True),
    ("dart", {"pivot_text": 10000}, "pivot_text", True),  # more pivots than image tokens to pick (plan)
    ("dart", {"pivot_image": N + 1}, "pivot_image", True),  # more than the image's tokens (plan)
    ("cdpruner", {"theta": 1.0}, "theta", True),
    ("cdpruner", {"theta": -0.1}, "theta", True),
    ("vispruner", {"important_ratio": 1.5}, "important_ratio", True),
    ("vispruner", {"important_ratio": -0.5}, "important_ratio", True),
    ("vispruner", {"per_round": 0}, "per_round", True),
    ("scope", {"alpha": -1.0}, "alpha", True),
    ("scope", {"alpha": 11.0}, "alpha", True),
    ("alvts", {"rank": -1}, "rank", True),
    ("alvts", {"pooling": "min"}, "pooling", True),
    ("alvts", {"layers": ()}, "layers", True),
    ("alvts", {"layers": (1, 1)}, "layers", True),
    ("alvts", {"layers": (0, L)}, "layers", True),
    ("alvts", {"static": True, "static_layer": L}, "static_layer", True),
    ("alvts", {"static_layer": 2}, "static_layer", False),  # ignored without static: said, with the flag to add
    ("alvts", {"static": True, "layers": (1, 2)}, "layers", False),
]


def _example(message: str, name: str) -> tuple[str, object]:
    """The option and value of the message's ``Example: -a name.option=value``, as the command line would read it."""
    from tokenbench.config import literal as _literal

    match = re.search(rf'Example: -a "?{name}\.(\w+)=(.+?)"?$', message)
    assert match, f"no '-a {name}.option=value' example in {message!r}"
    return match.group(1), _literal(match.group(2))


@pytest.mark.parametrize("name, options, option, follow", BAD,
                         ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for n, o, _, _ in BAD])
def test_a_bad_option_is_refused_naming_it(name, options, option, follow):
    with pytest.raises(ConfigError) as info:  # the type is right: only the value is out of range
        _run_checks(build_method(name, options))  # refused when built (positions) or when checked (the rest)
    message = str(info.value)
    value = options[option]
    assert f"{option!r}" in message or f"{option}=" in message or f"{name}.{option}" in message, message
    typed = ",".join(map(str, value)) if isinstance(value, tuple) else None  # a tuple as the user types it
    assert repr(value) in message or str(value) in message or (typed is not None and typed in message), message
    if follow:  # the example, put in place of the bad value, works
        key, value = _example(message, name)
        assert key == option, message
        _run_checks(build_method(name, {**options, key: value}))


def test_every_method_with_options_has_a_bad_case():
    covered = {name for name, *_ in BAD}
    with_options = {name for name in METHODS.names() if METHODS.get(name).options()}
    assert with_options <= covered, f"add bad-option cases for {sorted(with_options - covered)}"


@pytest.mark.parametrize("name, options, option", [
    ("fastv", {}, "fastv.layer"), ("dart", {}, "dart.layer"), ("alvts", {"static": True}, "alvts.static_layer"),
])
def test_a_default_layer_that_does_not_fit_the_depth_names_the_option_and_the_depth(name, options, option):
    with pytest.raises(ConfigError, match=rf"{re.escape(option)}: .*1-layer model.*at least 2 decoder layers"):
        build_method(name, options).check(1)


@pytest.mark.parametrize("name, n_layers, need", [("pdrop", 3, 4), ("sparsevlm", 3, 4)])
def test_default_stages_that_do_not_fit_name_the_option_and_the_depth(name, n_layers, need):
    with pytest.raises(ConfigError, match=rf"{name}\.layers: .*at least {need} decoder layers"):
        build_method(name).check(n_layers)
    build_method(name).check(need)  # and that depth is enough


@pytest.mark.parametrize("name", sorted(METHODS.names()))
@pytest.mark.parametrize("n_layers", [4, 6, 12, 32])
@pytest.mark.parametrize("n_visual", [16, 144, 576])
def test_defaults_pass_every_check_at_every_budget(name, n_layers, n_visual):
    method = build_method(name)
    for keep in (1, 4, 16, n_visual // 2, n_visual):
        _run_checks(method, n_layers, keep, n_visual)


# -- the budget scope ---------------------------------------------------------------------------------------------------
TWO_CROPS = VisualLayout(n_visual=10, crops=(Region("base", 0, 2, 2), Region("crop 0,0", 4, 2, 3)))
ONE_REGION = VisualLayout(n_visual=10, grid=(2, 5), crops=(Region("image", 0, 2, 5),))


class _Declared(TokenReducer):
    name = "declared"

    def steps(self, n_layers):
        return (Step(1),)

    def select(self, ctx):
        return ctx.topk(ctx.active.float())


def test_a_method_declaring_global_only_is_refused_under_crop_on_several_crops():
    class GlobalOnly(_Declared):
        budget_scopes = ("global",)

    with pytest.raises(IncompatibleError, match=r"'declared'.*crop.*--budget-scope global"):
        check_budget_scope(GlobalOnly(), "crop", TWO_CROPS)
    check_budget_scope(GlobalOnly(), "global", TWO_CROPS)  # the default scope
    check_budget_scope(GlobalOnly(), "crop", ONE_REGION)  # one region: the scopes are the same


def test_an_undeclared_method_is_left_to_the_router_and_builtins_declare():
    check_budget_scope(_Declared(), "crop", TWO_CROPS)  # None: allowed, each selection is checked as it runs
    for name in METHODS.names():
        scopes = METHODS.get(name).budget_scopes
        assert scopes is not None and "global" in scopes, name
    assert "crop" not in METHODS.get("divprune").budget_scopes


@pytest.mark.parametrize("keep", range(0, 11))
def test_topk_under_crop_gives_each_crop_its_share_even_keeping_none(keep):
    import torch

    active = torch.arange(10).expand(2, 10)
    ctx = ReductionContext(layer=1, keep=keep, n_visual=10, n_layers=L, active=active, layout=TWO_CROPS,
                           budget_scope="crop")
    picked = ctx.topk(torch.rand(2, 10, generator=torch.Generator().manual_seed(keep)))
    assert picked.shape == (2, keep)
    owner, quotas = ctx.crop_shares(keep)
    for b in range(2):
        assert torch.bincount(owner[b][picked[b]], minlength=2).tolist() == quotas[b]
    assert quotas[0] == split_budget(keep, [4, 6])


def test_dart_under_crop_keeps_each_crop_its_share_and_is_unchanged_globally():
    import torch

    g = torch.Generator().manual_seed(0)
    n, d = 10, 8
    signals = {Need("keys", layer=1): torch.randn(1, 2, n, 4, generator=g),
               Need("keys", layer=1, tokens="text"): torch.randn(1, 2, 6, 4, generator=g),
               Need("final_normed", layer=2): torch.randn(1, n, d, generator=g),
               Need("final_normed", layer=2, tokens="text"): torch.randn(1, 6, d, generator=g)}
    after = torch.tensor([[False, False, True, True, True, True]])
    dart = build_method("dart", {"layer": 2, "pivot_image": 2, "pivot_text": 2})
    for keep in range(2, 11):
        common = dict(layer=2, keep=keep, n_visual=n, n_layers=L, active=torch.arange(n)[None], signals=signals,
                      text_after_image=after, text_query_mask=torch.ones(1, 6, dtype=torch.bool))
        crop = ReductionContext(layout=TWO_CROPS, budget_scope="crop", **common)
        picked = dart.select(crop)
        owner, quotas = crop.crop_shares(keep)
        assert picked.shape == (1, keep) and len(set(picked[0].tolist())) == keep
        assert torch.bincount(owner[0][picked[0]], minlength=2).tolist() == quotas[0]
        glob = ReductionContext(layout=TWO_CROPS, **common)  # the global scope: one group, the rule as before
        assert dart.select(glob).shape == (1, keep)
