"""Where tokenbench keeps what it builds (tiny models, artefacts): ``$TOKENBENCH_CACHE`` or ``~/.cache/tokenbench``."""

from __future__ import annotations

import os


def cache_dir() -> str:
    return os.environ.get("TOKENBENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tokenbench")
