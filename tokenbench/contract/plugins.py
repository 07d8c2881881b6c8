"""The three plugin registries (:data:`METHODS`, :data:`MODELS`, :data:`TASKS`), the decorators that fill them, the
contract checks a plugin passes when it registers, and building a configured method from typed options
(:func:`build_method`, :func:`coerce_option`). How names are found (built-in packages, entry points) is
:mod:`tokenbench.contract.registry`. No torch here.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

from tokenbench.contract.method import BUDGET_KINDS, STAGES, TokenReducer
from tokenbench.contract.registry import Registry
from tokenbench.errors import ConfigError, PluginValidationError

# -- registries --------------------------------------------------------------------------------------------------------
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_MODEL_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def _where(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


def _validate_method(name: str, cls: Any) -> None:
    def fail(rule: str, fix: str) -> None:
        raise PluginValidationError(f"method {name!r} ({_where(cls)}) is invalid: {rule}. Fix: {fix}")

    if not _NAME_RE.match(name):
        fail(f"the name {name!r} does not match ^[a-z][a-z0-9_]*$", "use lower case letters, digits and '_'")
    if not (isinstance(cls, type) and issubclass(cls, TokenReducer)):
        fail("it is not a subclass of tokenbench.api.TokenReducer", "subclass TokenReducer")
    if not cls.__dict__.get("name"):  # registered through its entry point alone: rows and errors use that name
        cls.name = name
    if cls.name != name:
        fail(f"its name attribute is {cls.name!r}, not the name {name!r} it is registered under",
             "remove the name attribute (register_method and the entry point set it)")
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:
        fail("it is not a frozen dataclass", "decorate it with @dataclass(frozen=True) below @register_method")
    if cls.stage not in STAGES:
        fail(f"stage {cls.stage!r} is not one of {STAGES}", "set the class attribute stage")
    if cls.budget_kind not in BUDGET_KINDS:
        fail(f"budget_kind {cls.budget_kind!r} is not one of {BUDGET_KINDS}", "set the class attribute budget_kind")
    for meth in ("steps", "select"):
        if getattr(cls, meth) is getattr(TokenReducer, meth):
            fail(f"it does not implement {meth}()", f"define {meth}() on the class")
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            fail(f"option {f.name!r} has no default", "give every option a documented default")


def _validate_named(kind: str) -> Any:
    def check(name: str, obj: Any) -> None:
        if not _MODEL_NAME_RE.match(name):
            raise PluginValidationError(
                f"{kind} name {name!r} ({_where(obj)}) must match ^[a-z0-9][a-z0-9._-]*$"
            )
        if not callable(obj):
            raise PluginValidationError(f"{kind} {name!r} ({_where(obj)}) must be a class or factory function")

    return check


METHODS: Registry[type[TokenReducer]] = Registry(
    "method", "tokenbench.methods", "tokenbench.methods", validate=_validate_method
)
MODELS: Registry[Any] = Registry("model", "tokenbench.models", "tokenbench.models", validate=_validate_named("model"))
TASKS: Registry[Any] = Registry("task", "tokenbench.tasks", "tokenbench.tasks", validate=_validate_named("task"))


def register_method(name: str):
    """Class decorator: validate ``cls`` against the contract and register it as method ``name``.

    Put it *above* ``@dataclass(frozen=True)`` so that it sees the finished dataclass.
    """

    def deco(cls):
        cls.name = name
        METHODS.register(name, cls)
        return cls

    return deco


def register_model(name: str):
    """Register a model: a class or factory ``(**options) -> ModelAdapter``."""
    return MODELS.register(name)


def register_task(name: str):
    """Register a task: a class or factory ``(**options) -> Task``."""
    return TASKS.register(name)


# -- building a configured method from typed key=value options ---------------------------------------------------------
def build_method(name: str, options: dict[str, Any] | None = None) -> TokenReducer:
    """Instantiate method ``name`` with ``options`` (already parsed), rejecting unknown keys and wrong types."""
    import difflib

    cls = METHODS.get(name)
    fields = {f.name: f for f in cls.options()}
    kwargs: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            valid = ", ".join(f"{k} ({_type_name(f)}, default {f.default!r})" for k, f in fields.items())
            raise ConfigError(f"method {name!r} has no option {key!r}.{hint} Options: {valid or '(none)'}")
        kwargs[key] = coerce_option(name, fields[key], value)
    return instantiate("method", name, cls, kwargs)


def instantiate(kind: str, name: str, factory: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """``factory(**kwargs)`` for plugin ``name`` of ``kind`` (method, task), its options already type-checked: a value
    the plugin itself refuses (TypeError or ValueError from its constructor or ``__post_init__``) becomes the user's
    one-line ConfigError naming the plugin."""
    try:
        return factory(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{kind} {name!r}: {exc}") from exc


def _type_name(f: dataclasses.Field) -> str:
    t = f.type
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def _example(t: str, default: Any) -> str:
    """A value of type ``t`` as a user types it after ``-a key=``: the default where it is one, never ``None``."""
    if t.startswith("tuple"):
        return ",".join(map(str, default)) if isinstance(default, tuple) and default else "2,6"
    if t == "bool":
        return str(not default) if isinstance(default, bool) else "True"  # the value that changes something
    kinds = {"int": (int, 3), "float": (float, 0.5), "str": (str, "text")}
    kind, fallback = kinds.get(t, (object, default))
    return str(default if isinstance(default, kind) and default not in (None, "") else fallback)


def coerce_option(method: str, f: dataclasses.Field, value: Any, kind: str = "method", flag: str = "-a") -> Any:
    """Check ``value`` against the field's declared type (``int``, ``float``, ``bool``, ``str`` or a tuple of ints);
    ``kind``/``flag`` name the owner in the message (``"task"``, ``"-T"`` for a task's options)."""
    t = _type_name(f).replace(" ", "")
    ok = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "tuple[int,...]": lambda v: isinstance(v, (tuple, list)) and all(isinstance(x, int) for x in v),
        "int|None": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
        "tuple[int,...]|None": lambda v: v is None
        or (isinstance(v, (tuple, list)) and all(isinstance(x, int) for x in v)),
    }.get(t)
    if t.startswith("tuple") and isinstance(value, int) and not isinstance(value, bool):
        value = (value,)  # -a layers=8: one element, as the shell user wrote it
    if ok is not None and not ok(value):
        example = _example(t.replace("|None", ""), f.default)
        prefix = f"{method}." if kind == "method" else ""
        raise ConfigError(
            f"{kind} {method!r} option {f.name!r} expects {t}, got {value!r} ({type(value).__name__}). "
            f"Example: {flag} {prefix}{f.name}={example}"
        )
    if t == "float":
        return float(value)
    if t.startswith("tuple") and value is not None:
        return tuple(value)
    return value


def discover_models(third_party: bool = False) -> None:
    """Import the model modules that may declare a signal kind or a model family: the first-party ones (light: they
    import no torch at module level), and with ``third_party`` every model plugin's entry point too (a broken one is
    recorded as broken, not raised). Each is imported once."""
    MODELS.names()
    if third_party:
        MODELS.import_entry_points()
