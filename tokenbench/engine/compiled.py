"""The compiled path (``--compile``): in the prefill, each decoder layer's own ``forward`` and the routed layer's core
(:func:`tokenbench.engine.subset.routed_core`) run through ``torch.compile``. Decode steps stay eager: under static
shapes every step's longer KV cache would be one more graph to compile (a static cache would be the way there).

The router's bookkeeping (which tokens a layer computes, the checks of a selection) stays eager Python around the
compiled layers; a route step's ``select`` (run at every layer) is compiled too, a pruning step's (run once) is not. A
method needs nothing to be compiled, and every method gets the same treatment. Shapes are static (``dynamic=False``): each distinct token count a layer sees is one compiled graph (one for
``full``, two for FastV, one per stage for PyramidDrop), compiled on first use; :func:`warm` makes that happen outside
the timed rounds and reports how long it took. Backend: inductor; on CUDA in the ``reduce-overhead`` mode, which
captures CUDA graphs where the shapes are static (kernels replayed without a launch each); on a CPU in the default
mode (gcc compiles the kernels).
"""

from __future__ import annotations

import contextlib
import functools
import time
import types

#: how many graphs one function may compile before dynamo gives up and runs it eagerly: every (method, stage) shape of a
#: comparison, with room to spare (torch's default, 8, would silently fall back to eager part-way through a bench)
RECOMPILE_LIMIT = 256


def compiled_for(layer, fn):
    """``fn`` compiled in the mode ``layer`` was compiled in (:func:`compiled_layers`), or ``fn`` itself where it was
    not."""
    mode = getattr(layer, "_tokenbench_compile", None)
    return fn if mode is None else compiled(fn, mode or None)


def mode_for(device: str) -> str | None:
    """The torch.compile mode for ``device``: CUDA graphs on CUDA, inductor's default elsewhere."""
    return "reduce-overhead" if str(device).startswith("cuda") else None


@functools.cache
def compiled(fn, mode: str | None):
    """``fn`` through torch.compile (static shapes), once per process and mode."""
    import torch

    return torch.compile(fn, mode=mode, dynamic=False)


def _prefill_compiled(forward, mode):
    """``forward`` compiled for the prefill (several tokens), eager for a decode step (one token): under static shapes
    each decode step's longer KV cache would be a new graph to compile."""
    fast = compiled(forward, mode)

    def dispatch(self, hidden_states, *args, **kwargs):
        run = fast if hidden_states.shape[1] > 1 else forward
        return run(self, hidden_states, *args, **kwargs)

    return dispatch


def _raise_limits() -> dict:
    import torch._dynamo.config as config

    old = {}
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(config, name):
            old[name] = getattr(config, name)
            setattr(config, name, max(RECOMPILE_LIMIT, old[name]))
    return old


@contextlib.contextmanager
def compiled_layers(layers, device: str):
    """For the ``with`` block, every layer of ``layers`` runs its own forward compiled, and a router installed inside
    compiles its routed layers' core and its route steps' ``select`` in the same mode (the layers carry the mode as
    ``_tokenbench_compile``). Everything is restored on exit (compiled code stays cached for the next block)."""
    import torch._dynamo.config as config

    mode = mode_for(device)
    old = _raise_limits()
    saved = []
    try:
        for layer in layers:
            if "forward" in layer.__dict__:
                raise RuntimeError("compile the layers before a router is installed on them, not inside it")
            saved.append(layer)
            layer.forward = types.MethodType(_prefill_compiled(type(layer).forward, mode), layer)
            layer._tokenbench_compile = mode or ""  # the router compiles the routed core and select in this mode
        yield
    finally:
        for layer in saved:
            layer.__dict__.pop("forward", None)
            layer.__dict__.pop("_tokenbench_compile", None)
        for name, value in old.items():
            setattr(config, name, value)


def warm(run) -> float:
    """Call ``run()`` (one generation under the compiled layers) and return its seconds: the compile time of every
    shape it meets, kept out of the timed rounds."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start
