"""Loading a transformers checkpoint for an adapter: the device and dtype checks, a local directory or hub id through
``from_pretrained`` (safetensors only, damaged directories refused by :mod:`tokenbench.hf.checkpoint`), and the config
alone for counts that need no weights (with the copies shipped in ``models/configs/`` for the registered hub ids).
No torch at import."""

from __future__ import annotations

import inspect
import os
import re

from tokenbench.errors import ConfigError

DTYPES = ("float32", "bfloat16", "float16")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_device(device: str) -> None:
    """Refuse a device this process cannot use, naming what it can: ``cpu``, ``cuda``/``cuda:N`` with CUDA and N below
    the device count, ``mps`` where torch was built with it and the machine has it."""
    import torch

    kind, _, index = device.partition(":")
    usable = ["cpu"] + (["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
                        if torch.cuda.is_available() else []) + (["mps"] if torch.backends.mps.is_available() else [])
    if device in usable:
        return
    if kind not in ("cpu", "cuda", "mps") or (index and (kind != "cuda" or not index.isdigit())):
        why = f"unknown device {device!r}"
    elif kind == "cuda" and torch.cuda.is_available():
        why = f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
    else:
        why = f"device {device!r} is not available here ({'no CUDA' if kind == 'cuda' else 'this torch has no MPS'})"
    raise ConfigError(f"{why}; use {' or '.join(f'--device {d}' for d in usable[:3])}")


def check_target(device: str, dtype: str) -> None:
    """Refuse an unknown dtype or an unusable device, before anything is read."""
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    check_device(device)


def loaded(adapter, device: str, dtype: str, attn_implementation: str):
    """Finish loading ``adapter`` (its ``model`` set): record the target, switch to eval mode, and find the name the
    model's forward takes its cache under (``cache`` in transformers 5.24, ``past_key_values`` in 5.17)."""
    adapter.device, adapter.dtype, adapter.attn_implementation = device, dtype, attn_implementation
    adapter.model.eval()
    fwd = inspect.signature(type(adapter.model).forward).parameters
    adapter._cache_kw = "cache" if "cache" in fwd else "past_key_values"
    return adapter


def load(adapter, device: str, dtype: str, attn_implementation: str):
    """Load ``adapter``'s checkpoint (its ``prepare_source()``: a local directory or a hub id) onto ``device``."""
    import torch

    check_target(device, dtype)
    path = os.path.expanduser(adapter.prepare_source())
    if not os.path.isdir(path) and not HUB_ID.match(path):
        raise ConfigError(
            f"model path {path!r} does not exist. Give a directory written by save_pretrained, "
            f"or a hub id such as {adapter.default_source!r}"
        )
    if os.path.isdir(path):  # a damaged or foreign checkpoint is refused here, with what is wrong
        from tokenbench.hf.checkpoint import check_directory

        check_directory(path, adapter.family, adapter.model_types)
    try:
        adapter._load(path, device, getattr(torch, dtype), attn_implementation)
    except OSError as exc:  # not a local directory, and the hub could not provide it
        raise ConfigError(
            f"could not load model {path!r}: it is not a local directory and the hub could not provide it "
            f"({str(exc).splitlines()[0]}). Pass a local directory saved with save_pretrained."
        ) from exc
    return loaded(adapter, device, dtype, attn_implementation)


def pretrained(model_class, path: str, **kw):
    """``model_class.from_pretrained(path)`` from safetensors only, refusing (for a local directory) weights that
    are missing, left over or of the wrong shape instead of running with random ones."""
    from tokenbench.hf.checkpoint import check_loading_info

    local = os.path.isdir(path)
    try:  # a local directory's wrong shapes are loaded aside and reported by name (check_loading_info)
        model, info = model_class.from_pretrained(path, use_safetensors=True, output_loading_info=True,
                                                  **({"ignore_mismatched_sizes": True} if local else {}), **kw)
    except (RuntimeError, ValueError) as exc:
        if not local:
            raise
        raise ConfigError(f"could not load model directory {path!r}: {str(exc).strip().splitlines()[0]}. Restore "
                          "the checkpoint's files, or give the directory they belong to") from None
    if local:
        check_loading_info(path, info)
    return model


def read_config(adapter):
    """``adapter``'s HF config without weights: from the source directory, from the copy shipped in
    ``models/configs/`` for the registered hub ids (the counts only need the shapes, and the hub is often out of
    reach), or from the hub."""
    from transformers import AutoConfig

    path = os.path.expanduser(adapter.prepare_source())
    if os.path.isdir(path):  # a damaged or foreign config is refused here, as load() refuses it
        from tokenbench.hf.checkpoint import check_config

        check_config(path, adapter.family, adapter.model_types)
    shipped = shipped_file(path, ".json")
    if not os.path.isdir(path) and adapter.revision is None and os.path.isfile(shipped):
        return AutoConfig.from_pretrained(shipped)  # no network round trip for a known hub id
    try:
        return AutoConfig.from_pretrained(path, revision=adapter.revision)
    except OSError:
        raise ConfigError(f"could not read the config of {path!r} (not a local directory, and the hub could not "
                          "provide it); pass a local checkpoint directory") from None


def shipped_file(source: str, suffix: str) -> str:
    """The copy in ``models/configs/`` of a registered hub id's file (``.json``: config.json; ``.preprocessor.json``:
    preprocessor_config.json); it may not exist."""
    from importlib.resources import files

    return str(files("tokenbench.models") / "configs" / f"{source.replace('/', '--')}{suffix}")
