"""Provenance: where and how a row was measured (versions, platform, processor model and cores, threads, GPU and
driver, git commit and dirty flag, seed), and the words tables use for the machine.

``SCHEMA_VERSION`` (in every row's provenance) changes when a row field's meaning does.
"""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any


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

