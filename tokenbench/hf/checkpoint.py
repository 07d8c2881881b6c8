"""Checks of a local checkpoint directory, before and after ``from_pretrained``: the single point where a damaged or
incomplete checkpoint becomes one clear error instead of a traceback or, worse, a model with random weights.

Before loading (:func:`check_directory`): ``config.json`` is a readable JSON object with a ``model_type`` the adapter
loads; the weights are safetensors (pickled ``.bin`` weights are refused, with the conversion to run); every
safetensors file has a readable header. After loading (:func:`check_loading_info`): no weight the model needs is
missing from the files, none is left over, none has the wrong shape.
"""

from __future__ import annotations

import json
import os

from tokenbench.errors import ConfigError

CONVERT = ("convert them once with transformers: `python -c \"import transformers as t; "
           "t.AutoModelForImageTextToText.from_pretrained('DIR', use_safetensors=False).save_pretrained('DIR')\"` "
           "(only for weights you trust: a pickle can run code when it is loaded)")


def read_config(path: str) -> dict:
    """``path``/config.json as a dict, or a ConfigError saying what is wrong with it."""
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise ConfigError(f"model directory {path!r} has no config.json; give a directory written by save_pretrained"
                          + _mini_hint(path))
    try:
        with open(cfg_path, encoding="utf-8") as fh:
            config = json.load(fh)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{cfg_path!r} is not valid JSON ({exc}); restore it from the original checkpoint") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{cfg_path!r} holds a JSON {type(config).__name__}, not an object; restore it from the "
                          "original checkpoint")
    return config


def _mini_hint(path: str) -> str:
    """For a tokenbench-mini directory (``models/mini/<arch>``) without its checkpoint: how to train it."""
    import tokenbench.models.mini as mini

    if os.path.dirname(os.path.abspath(path)) != os.path.dirname(os.path.abspath(mini.__file__)):
        return ""
    arch = os.path.basename(os.path.abspath(path))
    return (f" (a tokenbench-mini model, not in this tree: train it with the commands models/mini/README.md gives for "
            f"{arch}/, `python -m tokenbench.models.mini.train --arch {arch} ...`, one or more stages)")


def check_directory(path: str, family: str, model_types: tuple[str, ...]) -> None:
    """Refuse, before loading, a local checkpoint that cannot be what ``family`` loads or whose files are damaged."""
    check_config(path, family, model_types)
    check_weights(path)


def check_config(path: str, family: str, model_types: tuple[str, ...]) -> None:
    """Refuse a directory whose config.json is damaged or is not a checkpoint ``family`` loads (all that a
    config-only count, ``tokenbench flops``, reads)."""
    model_type = read_config(path).get("model_type")
    if model_types and model_type not in model_types:
        raise ConfigError(
            f"model directory {path!r} holds a {model_type!r} checkpoint, which the {family!r} family does not load "
            f"(it loads {', '.join(model_types)}); give the directory alone (--model {path}) to pick the family from "
            "its config.json"
        )


def check_weights(path: str) -> None:
    """Refuse a directory without safetensors weights, or with a damaged weights file, naming the file."""
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not files:
        pickled = sorted(f for f in os.listdir(path) if f.endswith((".bin", ".pt", ".pth", ".ckpt")))
        if pickled:
            raise ConfigError(f"model directory {path!r} has only pickled weights ({', '.join(pickled)}); tokenbench "
                              f"loads safetensors only: {CONVERT}")
        raise ConfigError(f"model directory {path!r} has no weights (no .safetensors file); give a directory written "
                          "by save_pretrained")
    from safetensors import safe_open

    for name in files:
        file = os.path.join(path, name)
        try:
            with safe_open(file, framework="pt") as fh:
                fh.keys()
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file, whatever the library calls it
            raise ConfigError(f"weights file {file!r} is damaged or not a safetensors file ({exc}); restore it "
                              "from the original checkpoint") from None


def check_loading_info(path: str, info: dict) -> None:
    """Refuse a model that ``from_pretrained`` completed with random weights: missing, unexpected or mis-shaped."""
    problems = []
    for key, what in (("missing_keys", "missing from the weights files (they would be random)"),
                      ("unexpected_keys", "in the files but not in the model"),
                      ("mismatched_keys", "of the wrong shape")):
        names = sorted(f"{k[0]} (file {tuple(k[1])}, model {tuple(k[2])})" if isinstance(k, tuple) and len(k) == 3
                       else str(k[0] if isinstance(k, tuple) else k) for k in info.get(key) or ())
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            problems.append(f"{len(names)} weight(s) {what}: {shown}")
    if problems:
        raise ConfigError(f"model directory {path!r} does not match its config: {'; '.join(problems)}. Restore the "
                          "checkpoint's weights files, or give the directory they belong to")
