"""Result rows: the machine-readable record of one (method, budget) cell, with its provenance.

Rows are plain dicts (JSON objects) so other tools can read them; ``SCHEMA_VERSION`` changes when a field's meaning
does. :func:`write_rows` rewrites the file atomically after every finished row, so an interrupted or failed run keeps
everything computed before it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from typing import Any

from tokenbench.errors import ConfigError

SCHEMA_VERSION = 1

def provenance(device: str, seed: int) -> dict[str, Any]:
    import torch
    import transformers

    from tokenbench import __version__

    info: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "tokenbench": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "seed": seed,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
        info["driver"] = _nvidia_driver()
    info.update(git_info())
    return info


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The processor's model name (``AMD EPYC 7B13``, ``Apple M2``): ``cpuinfo``'s "model name" on Linux, sysctl's
    ``machdep.cpu.brand_string`` on macOS, else ``platform.processor()`` or the architecture. Never fails."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    try:
        out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine() or "unknown"


def hardware(row: dict[str, Any]) -> str:
    """What a row ran on, in words, from its provenance: ``NVIDIA H200, 139.8 GiB`` or ``AMD EPYC 7B13, 2 cores``;
    ``""`` for rows from before these fields."""
    prov = row.get("provenance") or {}
    if str(row.get("device", "cpu")).startswith("cuda"):
        memory = f", {prov['gpu_memory_gib']} GiB" if prov.get("gpu_memory_gib") else ""
        return f"{prov['gpu']}{memory}" if prov.get("gpu") else ""
    return f"{prov['cpu_model']}, {prov.get('cpu_cores', '?')} cores" if prov.get("cpu_model") else ""


def device_words(row: dict[str, Any]) -> str:
    """A row's device for a table header: ``cpu (AMD EPYC 7B13, 2 cores)``, ``cuda (NVIDIA H200, 139.8 GiB)``."""
    named = hardware(row)
    return f"{row.get('device', '?')} ({named})" if named else str(row.get("device", "?"))


def _nvidia_driver() -> str | None:
    """The NVIDIA driver version as nvidia-smi reports it (``None`` where it cannot be asked)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def git_info() -> dict[str, Any]:
    here = os.path.dirname(os.path.abspath(__file__))

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit, "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


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
