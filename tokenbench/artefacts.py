"""Calibration artefacts: where they live, how they are saved, loaded and checked (the helpers a method's ``prepare``
uses; fitting one is :mod:`tokenbench.harness.calibrate`).

The harness runs the model over the calibration samples and hands the method the signals it declared in
``calibration_steps`` (:class:`tokenbench.api.CalibrationData`); the method fits and returns tensors and a report
(:class:`tokenbench.api.Calibrated`). Artefacts are safetensors files whose metadata names the model they were fitted
on (id, revision, architecture hash, weights hash), the method's settings, the sample count and the report, so a run
can refuse an artefact made for another model or setting. Nothing is ever unpickled.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from typing import Any

from tokenbench.errors import ConfigError

FORMAT = "tokenbench-calibration/1"


# -- where artefacts live ------------------------------------------------------------------------------------------------
def default_path(method: str, fingerprint: dict[str, str], tag: str) -> str:
    """``$TOKENBENCH_CACHE/calibration/<method>/<model name>-<arch hash>-<weights hash>/<tag>.safetensors``."""
    from tokenbench.paths import cache_dir

    name = re.sub(r"[^A-Za-z0-9._-]+", "_", fingerprint["model_id"].split("@")[0]) or "model"
    key = f"{name}-{fingerprint['config_hash'][:8]}-{fingerprint['weights_hash'][:8]}"
    return os.path.join(cache_dir(), "calibration", method, key, f"{tag}.safetensors")


# -- save / load ---------------------------------------------------------------------------------------------------------
def save(path: str, tensors: dict, meta: dict[str, Any]) -> str:
    """Write ``tensors`` and ``meta`` (JSON-able) atomically as safetensors; returns the path."""
    from safetensors.torch import save_file

    import tokenbench

    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path):
        raise ConfigError(f"--out {path!r} is a directory; give a file name ending in .safetensors")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    header = {"format": FORMAT, "tokenbench_version": tokenbench.__version__,
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    metadata = {k: json.dumps(v) for k, v in {**header, **meta}.items()}
    tmp = f"{path}.tmp-{os.getpid()}"
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
    os.replace(tmp, path)
    return path


def load(path: str) -> tuple[dict, dict[str, Any]]:
    """Read an artefact written by :func:`save`: (tensors on CPU, metadata)."""
    from safetensors import SafetensorError, safe_open

    path = os.path.expanduser(path)
    if os.path.isdir(path):
        raise ConfigError(f"calibration artefact {path!r} is a directory; give the .safetensors file inside it")
    if not os.path.isfile(path):
        raise ConfigError(f"calibration artefact {path!r} does not exist; make one with `tokenbench calibrate`")
    try:
        with safe_open(path, framework="pt") as fh:
            raw = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ConfigError(f"{path!r} is not a readable safetensors calibration artefact ({exc}); make it again with "
                          "`tokenbench calibrate`, or give another file") from None
    try:
        meta = {k: json.loads(v) for k, v in raw.items()}
    except json.JSONDecodeError:
        meta = {}
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{path!r} is not a tokenbench calibration artefact (no {FORMAT!r} metadata)")
    return tensors, meta


def check(path: str, meta: dict[str, Any], expected: dict[str, Any]) -> None:
    """Refuse an artefact whose metadata differs from ``expected`` on any key, naming each difference and the fix."""
    diffs = [f"{k}: artefact {meta.get(k)!r}, this run {v!r}" for k, v in expected.items() if meta.get(k) != v]
    if diffs:
        raise ConfigError(
            f"calibration artefact {path!r} does not fit this run ({'; '.join(diffs)}). Calibrate for this model "
            f"and setting with `tokenbench calibrate {meta.get('method', '<method>')} --model ...`, or pass "
            "calibration=svd to run on the SVD initialisation"
        )
