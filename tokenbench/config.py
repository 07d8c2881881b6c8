"""The one parser of user values: budgets, method and task options (``-a``/``-T``/``--data``), counts, image sizes,
store paths. Every value a user types is parsed and checked here, once, before anything loads; messages name the option
as the CLI spells it. No torch at import.
"""

from __future__ import annotations

import ast
import os
from typing import Any, Iterable

from tokenbench.api import TASKS
from tokenbench.budgets import DEFAULT_BUDGET, Budget
from tokenbench.errors import ConfigError


def parse_budgets(keep: str | None, keep_ratio: str | None, default: tuple[Budget, ...] | None = None
                  ) -> tuple[Budget, ...]:
    """``--keep`` / ``--keep-ratio`` as budgets; neither: ``default``, else 1/9 of each image's visual tokens. An empty
    value is a mistake (a shell variable that was not set), never the default."""
    for flag, raw in (("--keep", keep), ("--keep-ratio", keep_ratio)):
        if raw is not None and not raw.strip(" ,"):
            example = "64,128,192" if flag == "--keep" else "0.111,0.222"
            raise ConfigError(f"{flag} is empty; give a value or a comma-separated list (e.g. {flag} {example}), or "
                              "leave it out for the default (1/9 of each image's visual tokens)")
    if keep is not None and keep_ratio is not None:
        raise ConfigError("give either --keep or --keep-ratio, not both")
    if keep is not None:
        try:
            values = [int(v) for v in keep.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"--keep {keep!r} is not a number or comma-separated list of numbers "
                              "(e.g. 64,128,192)") from None
        if any(v < 1 for v in values):
            raise ConfigError(f"--keep {keep!r}: every value must be a positive number of visual tokens (e.g. 64)")
        return tuple(Budget(keep=v) for v in values)
    if keep_ratio is not None:
        try:
            ratios = [float(v) for v in keep_ratio.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"--keep-ratio {keep_ratio!r} is not a number or comma-separated list "
                              "(e.g. 0.111,0.25)") from None
        if any(not 0 < r <= 1 for r in ratios):
            raise ConfigError(f"--keep-ratio {keep_ratio!r}: every value must be in (0, 1] (e.g. 0.111 for 1/9)")
        return tuple(Budget(ratio=r) for r in ratios)
    return default or (DEFAULT_BUDGET,)  # the field's headline setting: 64 of 576 on LLaVA-1.5


def check_counts(**counts: tuple[int | None, int, int]) -> None:
    """Each ``name=(value, least, example)``: an int of at least ``least`` (None: not given); a seed also below 2**32,
    what torch, numpy and Python's random all take. The error names the option as the CLI spells it, with an example."""
    for name, (value, least, example) in counts.items():
        flag = "--" + name.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{flag} {value!r} must be a whole number; e.g. {flag} {example}")
        if name.endswith("seed") and not 0 <= value < 2**32:
            raise ConfigError(f"{flag} {value} must be in 0..{2**32 - 1}; e.g. {flag} {example}")
        if value < least:
            raise ConfigError(f"{flag} {value} must be at least {least}; e.g. {flag} {example}")


def parse_tasks(spec: str) -> list[str]:
    """``pope,textvqa`` -> the registered task names, each once (unknown names are refused)."""
    names = [t.strip() for t in spec.split(",") if t.strip()]
    if not names:
        raise ConfigError(f"--task {spec!r} names no task; give one or a comma-separated list (e.g. pope,textvqa)")
    repeated = sorted({t for t in names if names.count(t) > 1})
    if repeated:
        raise ConfigError(f"--task lists {repeated[0]!r} twice; name each task once")
    for t in names:
        TASKS.get(t)
    return names


def task_options(name: str, options: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The options of task ``name``: ``key`` applies to every listed task that has the option, ``task.key`` to one."""
    out = {}
    for key, value in options.items():
        owner, _, k = key.rpartition(".")
        if owner:
            if owner not in names:
                raise ConfigError(f"task option {key!r} names task {owner!r}, which is not in --task "
                                  f"({', '.join(names)})")
            if owner == name:
                out[k] = value
        elif k in task_option_names(name) or len(names) == 1:
            out[k] = value
        elif not any(k in task_option_names(t) for t in names):
            raise ConfigError(f"no task in --task ({', '.join(names)}) has option {k!r}; "
                              + "; ".join(f"{t}: {', '.join(task_option_names(t)) or '(none)'}" for t in names))
    return out


def task_option_names(name: str) -> list[str]:
    import dataclasses
    import inspect

    factory = TASKS.get(name)
    if dataclasses.is_dataclass(factory):
        return [f.name for f in dataclasses.fields(factory) if f.init]
    return [p for p in inspect.signature(factory).parameters if p != "self"]


def literal(raw: str) -> Any:
    if raw.lower() in ("true", "false"):  # shell users write true/false; Python writes True/False
        return raw.lower() == "true"
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw  # a bare word is a string


def method_options(methods: tuple[str, ...], args: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Check the named methods (known, each once) and parse their ``-a`` options, before anything loads."""
    from tokenbench.api import METHODS

    for name in methods:
        METHODS.get(name)  # unknown names fail here
    if len(set(methods)) != len(methods):
        raise ConfigError(f"a method is named twice in {list(methods)!r}; name each once")
    return parse_method_args(args, methods)


def store_path(store: str | None, no_store: bool) -> str | None:

    if no_store:
        if store is not None:
            raise ConfigError("give --store PATH or --no-store, not both")
        return None
    if store is not None and not store.strip():
        raise ConfigError("--store is empty; give a file path (e.g. runs.sqlite), or --no-store")
    from tokenbench.results.store import default_path

    return store if store is not None else default_path()


def data_args(data: tuple[str, ...]) -> dict[str, Any]:
    """``--data PATH`` -> the task option ``data``; ``--data pope=PATH`` -> ``pope.data`` (one task of several)."""


    out = {}
    for item in data:
        if not item.strip():
            raise ConfigError("--data is empty; give a path (a save_to_disk directory, a parquet/jsonl file or folder)")
        task, eq, path = item.partition("=")
        key, value = (f"{task}.data", path) if eq and not os.path.exists(item) else ("data", item)
        if key in out:
            raise ConfigError(f"--data is given twice for {key.split('.')[0] if '.' in key else 'the task'}; give it "
                              "once (with several tasks: --data pope=PATH --data gqa=PATH)")
        out[key] = value
    return out


def parse_task_args(args: tuple[str, ...]) -> dict[str, Any]:

    out = {}
    for item in args:
        if "=" not in item:
            raise ConfigError(f"task option {item!r} is not KEY=VALUE (e.g. -T n=500)")
        key, raw = item.split("=", 1)
        out[key] = literal(raw)
    return out


def parse_method_args(args: tuple[str, ...], methods: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``-a`` options as typed: ``key=value`` applies to every named method that has option ``key``,
    ``method.key=value`` to one; each value a Python literal (:func:`literal`). Checked as
    :func:`method_option_values`."""
    def typed():  # one at a time: the first mistake on the command line is the one reported
        for item in args:
            if "=" not in item:
                raise ConfigError(f"method option {item!r} is not KEY=VALUE (e.g. -a layer=3 or -a fastv.layer=3)")
            key, raw = item.split("=", 1)
            yield key, literal(raw), item

    return _assign_method_options(typed(), methods)


def method_option_values(options: dict[str, Any], methods: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Method options already typed (``key`` or ``method.key`` -> value, as the lmms-eval bridge receives them),
    assigned and checked as ``-a`` options are: method name -> its options."""
    return _assign_method_options([(key, value, f"{key}={value}") for key, value in options.items()], methods)


def _assign_method_options(options: Iterable[tuple[str, Any, str]], methods: tuple[str, ...]
                           ) -> dict[str, dict[str, Any]]:
    """(key, value, as the user spelled it) in order -> method name -> options; every method is built with its
    options, so each is type-checked now, before any model loads."""
    from tokenbench.api import METHODS, build_method

    out: dict[str, dict[str, Any]] = {}
    for key, value, item in options:
        if "." in key:
            method, key = key.split(".", 1)
            if method not in methods:
                raise ConfigError(f"option {item!r} names method {method!r}, which is not in this run: "
                                  f"{list(methods)}; add it to the methods named (e.g. {' '.join(methods)} {method}), "
                                  "or drop the option")
            targets = [method]
        else:
            targets = [m for m in methods if key in {f.name for f in METHODS.get(m).options()}]
            if not targets:
                import difflib

                known = {m: [f.name for f in METHODS.get(m).options()] for m in methods}
                close = difflib.get_close_matches(key, [k for ks in known.values() for k in ks], n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"no method in this run has option {key!r}.{hint} Options per method: {known}")
        for m in targets:
            out.setdefault(m, {})[key] = value
    for m, opts in out.items():
        build_method(m, opts)  # type-checks every option now, before any model loads
    return out


def image_size(raw: str | None) -> tuple[int, int] | None:

    if raw is None:
        return None
    try:
        w, h = (int(v) for v in raw.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--image-size {raw!r} is not WIDTHxHEIGHT in pixels (e.g. 1024x768)") from None
    if w < 1 or h < 1:
        raise ConfigError(f"--image-size {raw!r}: width and height must be positive")
    return w, h


def one_match(text: str):
    from tokenbench import budgets

    parsed = budgets.parse(text)
    if len(parsed) > 1:
        raise ConfigError(f"--match {text!r}: bench times one budget convention per run; give one (e.g. --match "
                          "nominal) and run bench again for the other")
    return parsed[0]
