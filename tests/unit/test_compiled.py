"""The compiled path (``--compile``, tokenbench.engine.compiled) computes what the eager path does, to float tolerance,
on every tiny model: keep-all (the layers' own forward, compiled) and ALVTS at 1/9 (the routed layers' core,
compiled); and it leaves the layers as it found them."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_model_names
from tokenbench import testing
from tokenbench.api import Prepared, Reduction, build_method
from tokenbench.engine.compiled import compiled_layers

SIZE = (392, 280)


def _generate(adapter, batch, method, keep):
    artefact = Prepared.of(method.prepare(adapter.weights())).artefact
    with adapter.reduction(Reduction(method, keep, artefact=artefact)) as router:
        return adapter.generate(batch, 3, router=router, ignore_eos=True)


@pytest.mark.parametrize("model", tiny_model_names())
def test_compiled_equals_eager(model, adapter_factory):
    adapter = adapter_factory(model)
    batch = adapter.encode(testing.synthetic_samples(1, seed=1, size=SIZE))
    n = batch.layout.n_visual
    cases = [(build_method("full"), n), (build_method("alvts", {"calibration": "svd"}), max(1, n // 9))]
    eager = [_generate(adapter, batch, m, k) for m, k in cases]
    with compiled_layers(adapter.decoder_layers(), adapter.device):
        assert all("forward" in layer.__dict__ for layer in adapter.decoder_layers())
        compiled = [_generate(adapter, batch, m, k) for m, k in cases]
    assert not any("forward" in layer.__dict__ or "_tokenbench_compile" in layer.__dict__
                   for layer in adapter.decoder_layers())
    for (method, _), a, b in zip(cases, eager, compiled):
        for x, y in zip(a.step_logits, b.step_logits):
            torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-5, msg=lambda m: f"{method.name}: {m}")
        assert a.token_ids == b.token_ids


def test_a_router_inside_compiled_layers_restores_them():
    """The router wraps a compiled forward and gives it back on exit; a second router inside the first is refused."""
    from tokenbench.engine.router import Router

    layers = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(8)])
    compiled_forward = layers[0].forward
    layers[0].forward = compiled_forward  # stands in for engine.compiled's instance forward
    method = build_method("fastv")
    lm = torch.nn.Module()
    with Router(Reduction(method, 1), layers, lm):
        assert layers[0].forward is not compiled_forward
        with pytest.raises(RuntimeError, match="nested routers"):
            Router(Reduction(method, 1), layers, lm).__enter__()
    assert layers[0].__dict__["forward"] is compiled_forward


def test_a_compiler_failure_is_one_clear_error_and_the_layers_are_restored(adapter_factory, monkeypatch):
    """torch.compile failing (no C compiler, an unsupported op) stops the timing with a message that says what failed
    and what to do (no traceback at the CLI), and leaves the layers as they were."""
    from tokenbench.engine import compiled
    from tokenbench.errors import TokenbenchError
    from tokenbench.measure.latency import time_with_full

    def broken(fn, mode):
        def fail(*args, **kwargs):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")
        return fail

    monkeypatch.setattr(compiled, "compiled", broken)
    adapter = adapter_factory("tiny-llava")
    batch = adapter.encode(testing.synthetic_samples(1, seed=1))
    variants = {"full": Reduction(build_method("full"), batch.layout.n_visual)}
    with pytest.raises(TokenbenchError, match=r"--compile: torch.compile failed .*InvalidCxxCompiler.*without --compile"):
        time_with_full(adapter, batch, variants, 2, 0, 1, compile=True)
    assert not any("forward" in layer.__dict__ for layer in adapter.decoder_layers())
