"""Row files: ``--json`` and every other file tokenbench writes its rows or records to, checked writable before any
compute and rewritten atomically, so an interrupted or failed run keeps everything computed before it.

Rows are plain dicts (JSON objects) so other tools can read them (their fields: :mod:`tokenbench.results.rows`).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from tokenbench.errors import ConfigError


def check_writable(path: str, option: str = "--json") -> None:
    """Fail before any compute if ``path`` (given as ``option``) cannot be written."""
    if not path or not path.strip():
        raise ConfigError(f"{option} is empty; give a file path (e.g. rows.json), or leave {option} out")
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ConfigError(f"cannot write {option} {path!r}: {directory!r} is a file, not a directory")
    if not os.path.isdir(directory):
        raise ConfigError(f"cannot write {option} {path!r}: directory {directory!r} does not exist; create it first")
    if os.path.isdir(path):
        raise ConfigError(f"cannot write {option} {path!r}: it is a directory; give a file name")
    if not os.access(directory, os.W_OK):
        raise ConfigError(f"cannot write {option} {path!r}: directory {directory!r} is not writable")


def write_rows(path: str, rows: list[dict[str, Any]], option: str = "--json") -> None:
    """Write ``rows`` to ``path`` as JSON, atomically (:func:`write_atomically`)."""
    def dump(fh) -> None:
        json.dump(rows, fh, indent=2, sort_keys=False)
        fh.write("\n")

    write_atomically(path, dump, option)


def write_atomically(path: str, write, option: str) -> None:
    """``write(fh)`` into a temporary file beside ``path``, synced and renamed over it. A failed write (a full disk, a
    vanished directory) removes the temporary file, leaves ``path`` as it was, and raises ConfigError naming
    ``option``."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tokenbench-", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "w") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise ConfigError(f"could not write {option} {path!r} ({exc.strerror or exc}); what it held before is "
                          "kept") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
