"""tokenbench: one interface, one harness and honest measurements for visual-token reduction in VLMs.

``import tokenbench`` is light: torch and transformers are imported only when a model is loaded or a method runs.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "compare", "evaluate"]


def __getattr__(name: str):  # lazy public API (no torch at import time)
    if name in ("compare", "evaluate"):
        from tokenbench.harness import compare as runner

        return getattr(runner, name)
    raise AttributeError(f"module 'tokenbench' has no attribute {name!r}")
