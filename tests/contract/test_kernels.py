"""Kernels and host syncs: the counter on hand-built code whose launches are known, and the counts every built-in
method meets on every tiny model (counts, not times: exact on any machine). Inside the LLM layer loop no method
reads a value on the host; outside it a method adds at most two syncs to the prefill (the router's one check of the
selections, and nothing else), and ALVTS's routed layer launches at most 1.5x the kernels of the plain layer."""

from __future__ import annotations

import pytest
import torch

from conftest import make_method, method_names, tiny_model_names
from tokenbench import testing
from tokenbench.api import Prepared, Reduction
from tokenbench.measure.kernels import KernelCounter, count_prefill

MODELS = tiny_model_names()
SIZE = (392, 280)


def counted(fn) -> tuple[int, int]:
    with KernelCounter() as counter:
        fn()
    return counter.counts.kernels, counter.counts.syncs


# -- the counter ------------------------------------------------------------------------------------------------------------
def test_views_are_free_and_copies_count():
    x = torch.randn(4, 6)
    assert counted(lambda: (x.view(24), x.t(), x[1], x.expand(2, 4, 6), x.reshape(24), x.contiguous())) == (0, 0)
    assert counted(lambda: x.t().contiguous()) == (1, 0)  # a copy: one kernel
    assert counted(lambda: x.t().reshape(24)) == (1, 0)  # reshape that must copy
    assert counted(lambda: x.to(torch.float64)) == (1, 0)
    assert counted(lambda: x.to(torch.float32)) == (0, 0)  # already float32: no copy
    assert counted(lambda: x * 2 + 1) == (2, 0)
    assert counted(lambda: torch.nn.functional.linear(x, torch.ones(3, 6))) == (2, 0)  # ones, then one matmul


def test_host_syncs_are_the_reads_and_the_data_dependent_shapes():
    x = torch.randn(4, 6)
    mask = x > 0
    assert counted(lambda: bool(x.sum() > 0))[1] == 1  # a tensor used as a Python bool
    assert counted(lambda: x.sum().item())[1] == 1
    assert counted(lambda: int(x.argmax()))[1] == 1
    assert counted(lambda: x.nonzero())[1] == 1
    assert counted(lambda: x[mask])[1] == 1  # boolean-mask indexing has a data-dependent shape
    assert counted(lambda: x[torch.tensor([0, 2])])[1] == 0  # integer indexing does not
    assert counted(lambda: (x.topk(2).indices, x.argmax(1), torch.where(mask, x, 0.0)))[1] == 0


class _Layer(torch.nn.Module):
    """A hand-built layer: 2 kernels (a matmul, an add), plus a sync when ``sync``."""

    def __init__(self, sync: bool = False) -> None:
        super().__init__()
        self.lin, self.sync = torch.nn.Linear(4, 4, bias=False), sync

    def forward(self, x):
        if self.sync and bool(x.sum() > 1e9):  # sum, gt, is_nonzero (a sync)
            return x
        return self.lin(x) + x


def test_the_layers_count_apart_from_the_rest():
    layers = torch.nn.ModuleList([_Layer(), _Layer(sync=True), _Layer()])
    x = torch.randn(2, 4)

    def run():
        y = x * 3  # outside: 1 kernel
        for layer in layers:
            y = layer(y)
        return y

    counter = KernelCounter()
    with counter.watch(layers):
        start = counter.mark()
        run()
        end = counter.mark()
    got = end.minus(start)
    assert got.per_layer == {0: [2, 0], 1: [5, 1], 2: [2, 0]}
    assert got.outside == [1, 0]
    assert (got.kernels, got.syncs, got.layer_kernels, got.layer_syncs) == (10, 1, 9, 1)
    assert not layers[0]._forward_pre_hooks and not layers[0]._forward_hooks


# -- every built-in method on every tiny model -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sample():
    return testing.synthetic_samples(1, seed=1, size=SIZE)


def _prefill(adapter, method, keep, sample):
    batch = adapter.encode(sample)
    artefact = Prepared.of(method.prepare(adapter.weights())).artefact
    return count_prefill(adapter, batch, Reduction(method, keep, artefact=artefact))


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", method_names())
def test_no_method_syncs_inside_the_layer_loop(method, model, adapter_factory, sample):
    from tokenbench.errors import IncompatibleError

    adapter = adapter_factory(model)
    try:
        adapter.check_compatible(make_method(method))
    except IncompatibleError as exc:
        pytest.skip(f"refused by design: {exc}")
    n = adapter.layout(SIZE).n_visual
    full, _, _ = _prefill(adapter, make_method("full"), n, sample)
    counts, _, _ = _prefill(adapter, make_method(method), max(1, n // 9), sample)
    assert full.layer_syncs == 0
    assert counts.layer_syncs == 0, f"{method} forces {counts.layer_syncs} host syncs inside the LLM layers"
    assert counts.outside[1] - full.outside[1] <= 2, f"{method}: {counts.outside[1]} syncs outside the layers"
    again, _, _ = _prefill(adapter, make_method(method), max(1, n // 9), sample)
    assert (again.kernels, again.syncs) == (counts.kernels, counts.syncs)  # exact: a count, not a measurement


@pytest.mark.parametrize("model", MODELS)
def test_a_routed_layer_launches_at_most_half_again_a_plain_layer(model, adapter_factory, sample):
    adapter = adapter_factory(model)
    n = adapter.layout(SIZE).n_visual
    full, _, _ = _prefill(adapter, make_method("full"), n, sample)
    alvts, _, record = _prefill(adapter, make_method("alvts"), max(1, n // 9), sample)
    plain = full.per_layer[1][0]
    routed = alvts.per_layer[1][0]  # layer 0 also builds what every later layer reuses (the masks, once)
    assert len(record.picked) == adapter.n_layers
    config = adapter.text_config()
    # where a model groups its K/V heads, the selector's grouped queries are copied into place for one batched matmul
    # and its two up-projections cannot be one (+2); where the image's tokens are not one run (LLaVA-NeXT's newline
    # tokens), its columns are gathered rather than sliced (+1)
    allowance = 2 * (config.num_key_value_heads != config.num_attention_heads) + (batch_span(adapter, sample) is None)
    assert routed <= 1.5 * plain + allowance, f"{model}: a routed layer launches {routed} kernels, a plain one {plain}"


def batch_span(adapter, sample):
    return adapter.encode(sample).tokens.visual_span
