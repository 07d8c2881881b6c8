"""Shared fixtures. Every test runs on CPU and offline: tiny models are built from configs into a temporary cache."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _tokenbench_cache(tmp_path_factory):
    """Build tiny models into a per-session directory, never into the user's cache."""
    path = os.environ.get("TOKENBENCH_TEST_CACHE") or str(tmp_path_factory.mktemp("tokenbench-cache"))
    old = os.environ.get("TOKENBENCH_CACHE")
    os.environ["TOKENBENCH_CACHE"] = path
    yield path
    if old is None:
        os.environ.pop("TOKENBENCH_CACHE", None)
    else:
        os.environ["TOKENBENCH_CACHE"] = old


def tiny_model_names() -> list[str]:
    from tokenbench.api import MODELS

    return [n for n in MODELS.names() if n.startswith("tiny-")]


def method_names() -> list[str]:
    """Every registered method, plus the variants the contract suite also covers (``VARIANTS``)."""
    from tokenbench.api import METHODS

    return [*METHODS.names(), *VARIANTS]


#: method configurations that change what the engine does, run through the contract suite as their own entries:
#: ALVTS's skipped tokens leaving the layer (the default keeps them as keys and values)
def _variants() -> dict:
    from tokenbench.results.suites import suite_variants  # the same variants the leaderboard shows as rows

    return suite_variants()


VARIANTS = _variants()


def make_method(spec: str):
    """A configured method from a name or a ``VARIANTS`` key."""
    from tokenbench.api import build_method

    name, options = VARIANTS.get(spec, (spec, {}))
    return build_method(name, options)


def pytest_collection_modifyitems(config, items):
    """`gpu` tests need CUDA; without it they are skipped with that reason (CI has no GPU)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is available here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


_ADAPTERS: dict = {}


@pytest.fixture
def adapter_factory():
    """Loaded adapters by name, shared across tests (they are read-only outside a Router)."""

    def get(name: str):
        if name not in _ADAPTERS:
            from tokenbench.hf.quiet import quiet_transformers as _quiet_transformers
            from tokenbench.harness.resolve import resolve_model

            _quiet_transformers()
            _ADAPTERS[name] = resolve_model(name).load()
        return _ADAPTERS[name]

    return get
