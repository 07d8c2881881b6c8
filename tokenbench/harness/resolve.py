"""Models and tasks by the names users give: a registered name, ``family:<hub id or directory>``, a checkpoint directory
(models); a registered task with typed options."""

from __future__ import annotations

import os
from typing import Any

from tokenbench.api import MODELS, TASKS
from tokenbench.config import task_option_names
from tokenbench.contract.plugins import instantiate
from tokenbench.contract.registry import unknown_name_message
from tokenbench.errors import ConfigError, UnknownNameError


def resolve_model(spec: str):
    """A registered name, ``name:<hub id or directory>``, or an existing directory (family from its config.json)."""
    if ":" in spec and not os.path.exists(spec):
        name, source = spec.split(":", 1)
        factory = MODELS.get(name)
        try:
            return factory(source=source)
        except TypeError:
            raise ConfigError(f"model {name!r} does not take a source; use it alone (--model {name})") from None
    if spec in MODELS.names():
        return MODELS.get(spec)()
    if os.path.isdir(spec):
        return _adapter_for_directory(spec)
    if "/" in spec or os.sep in spec or spec.startswith("."):
        raise ConfigError(
            f"model path {spec!r} does not exist. Give an existing directory saved with save_pretrained, a registered "
            f"name (see `tokenbench list models`), or family:<hub id> (e.g. llava:llava-hf/llava-1.5-13b-hf)"
        )
    raise UnknownNameError(unknown_name_message("model", spec, MODELS.names()))


def build_task(name: str, options: dict[str, Any], seed: int):
    """Instantiate task ``name`` with typed ``options`` (checked against its dataclass fields as a method's are);
    ``--seed`` seeds its split unless ``options`` set ``seed`` explicitly."""
    import dataclasses
    import difflib

    from tokenbench.api import coerce_option

    factory = TASKS.get(name)
    params = task_option_names(name)
    unknown = [k for k in options if k not in params]
    if unknown:
        close = difflib.get_close_matches(unknown[0], params, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"task {name!r} has no option {unknown[0]!r}.{hint} Its options: "
                          f"{', '.join(params) or '(none)'}")
    if dataclasses.is_dataclass(factory):
        fields = {f.name: f for f in dataclasses.fields(factory)}
        options = {k: coerce_option(name, fields[k], v, kind="task", flag="-T") for k, v in options.items()}
    if "seed" in params and "seed" not in options:
        options = {**options, "seed": seed}
    return instantiate("task", name, factory, options)


def _adapter_for_directory(path: str):
    from tokenbench.hf.checkpoint import read_config

    model_type = read_config(path).get("model_type")
    for name in MODELS.available():  # a broken model plugin is skipped with a warning, not fatal
        factory = MODELS.get(name)
        if model_type in getattr(factory, "model_types", ()):  # family factories declare what they load
            return factory(source=path)
    raise ConfigError(f"model directory {path!r} has model_type {model_type!r}, which no registered adapter loads")
