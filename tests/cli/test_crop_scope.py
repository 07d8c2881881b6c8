"""``--budget-scope crop`` on LLaVA-NeXT: every built-in method either keeps each crop its share of the budget at
every step, or is refused before any compute (exit 2, one line, nothing on stdout). Method options that cannot work
at a budget or on an image are refused the same way, before the first row."""

from __future__ import annotations

import json

import pytest
import torch

from tests.cli.test_cli_errors import FAST, assert_cli_error, assert_user_error, invoke
from tokenbench.api import Reduction, METHODS, Prepared, Step, TokenReducer, build_method, split_budget


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tokenbench-cache"))

BUILTINS = sorted(name for name in METHODS.names() if name != "full")
#: methods that declare the crop scope (all run on LLaVA-NeXT: the CLS-based ones read each crop's CLS row)
CAN_SPLIT = [name for name in BUILTINS if "crop" in METHODS.get(name).budget_scopes]


@pytest.mark.parametrize("method", BUILTINS)
def test_every_builtin_runs_or_is_refused_before_compute(cache, tmp_path, method):
    out = tmp_path / "rows.json"
    result = invoke(cache, "compare", method, "-M", "tiny-llava-next", "--budget-scope", "crop",
                    "--json", str(out), *FAST)
    if method in CAN_SPLIT:
        assert result.exit_code == 0, result.output
        rows = json.loads(out.read_text())
        assert [r["method"] for r in rows] == ["full", method] and rows[1]["budget_scope"] == "crop"
    else:  # refused: one line naming the method and the fix, no row, no table
        line = assert_user_error(result.exit_code, result.stderr, result.stdout, method)
        assert "--budget-scope global" in line or "Pick another" in line, line
        assert not out.exists()


def _sample():
    """One synthetic sample whose 392 x 280 image gives LLaVA-NeXT a base image and several crops."""
    from tokenbench import testing

    return testing.synthetic_samples(1, seed=3, size=(392, 280))[0]


def _owner(layout):
    owner = torch.empty(layout.n_visual, dtype=torch.long)
    for i, region in enumerate(layout.crops):
        owner[region.indices()] = i
    return owner


@pytest.mark.parametrize("method", CAN_SPLIT)
def test_every_step_keeps_each_crop_its_share(method, adapter_factory):
    adapter = adapter_factory("tiny-llava-next")
    batch = adapter.encode([_sample()])
    layout, keep = batch.layout, 40
    assert len(layout.crops) > 1
    m = build_method(method, {"calibration": "svd"} if method == "alvts" else {})
    with adapter.reduction(Reduction(m, keep, artefact=Prepared.of(m.prepare(adapter.weights())).artefact,
                                     budget_scope="crop")) as r:
        adapter.generate(batch, 1, router=r)
    owner, active = _owner(layout), torch.arange(layout.n_visual)
    routes = m.stage == "route"
    for layer in sorted(r.record.selections):
        chosen = r.record.selections[layer][0]
        got = torch.bincount(owner[chosen], minlength=len(layout.crops)).tolist()
        want = split_budget(len(chosen), torch.bincount(owner[active], minlength=len(layout.crops)).tolist())
        assert got == want, (layer, got, want)
        if not routes:
            active = chosen
    if m.budget_kind == "kept":
        first = r.record.selections[min(r.record.selections)][0]
        assert len(first) == keep


def test_a_method_declaring_global_only_is_refused_before_compute(adapter_factory):
    """The pre-compute validation of compare (``check_method_plans``) refuses the pair, naming the method and the
    fix; on a one-region model the same method runs under either scope."""
    from tokenbench.errors import IncompatibleError
    from tokenbench.budgets import Budget
    from tokenbench.harness.plan import check_method_plans

    class WholeImage(TokenReducer):
        name = "whole_image"
        budget_scopes = ("global",)

        def steps(self, n_layers):
            return (Step(0),)

        def select(self, ctx):
            return ctx.topk(ctx.active.float())

    adapter = adapter_factory("tiny-llava-next")
    layout = adapter.encode([_sample()]).layout
    with pytest.raises(IncompatibleError, match=r"'whole_image'.*--budget-scope global"):
        check_method_plans(WholeImage(), adapter, [layout], (Budget(ratio=0.25),), "crop")
    check_method_plans(WholeImage(), adapter, [layout], (Budget(ratio=0.25),), "global")


@pytest.mark.parametrize("args, fragments", [
    pytest.param(["dart", "-a", "dart.pivot_text=10000"], ["pivot_text", "10000", "144", "Example: -a dart.pivot_text="],
                 id="dart-pivot-text"),
    pytest.param(["fastv", "sparsevlm", "-a", "sparsevlm.counts=500,200,100"], ["counts", "144", "Example"],
                 id="sparsevlm-counts-after-another-method"),
    pytest.param(["sparsevlm", "-a", "sparsevlm.heads=-1"], ["heads", "-1", "Example"], id="sparsevlm-heads"),
    pytest.param(["pdrop", "-a", "pdrop.layers=()"], ["layers", "()", "Example"], id="pdrop-no-layers"),
    pytest.param(["fastv", "dart", "-a", "dart.pivot_image=200"], ["pivot_image", "144", "Example"],
                 id="dart-pivots-after-another-method"),
])
def test_plan_errors_surface_before_the_first_row(cache, tmp_path, args, fragments):
    out = tmp_path / "rows.json"
    assert_cli_error(cache, ["compare", *args, "--json", str(out), *FAST], *fragments)  # nothing on stdout
    assert not out.exists()
