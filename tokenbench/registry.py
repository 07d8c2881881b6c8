"""Name -> object registries for methods, models and tasks.

Built-ins live in the ``tokenbench.methods`` / ``tokenbench.models`` / ``tokenbench.tasks`` packages and are found by
scanning those packages (no central list to edit); third-party packages declare entry points in the groups of the
same names. Entry points are listed without being imported (``ep.name`` is free), so ``tokenbench list`` stays fast,
and imported on first :meth:`Registry.get`.

Adding a method in one file::

    # methods/mymethod.py
    from dataclasses import dataclass
    from tokenbench.api import TokenReducer, Step, register_method

    @register_method("mymethod")
    @dataclass(frozen=True)
    class MyMethod(TokenReducer):
        stage = "prune"
        layer: int = 2

        def steps(self, n_layers):
            return (Step(self.layer),)

        def select(self, ctx):           # indices into ctx.active, one row per sample
            return ctx.active.argsort(dim=1, descending=True)[:, : ctx.keep]

Set ``TOKENBENCH_DISABLE_PLUGIN_AUTOLOAD=1`` to ignore third-party entry points.
"""

from __future__ import annotations

import difflib
import importlib
import os
import pkgutil
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, Generic, Iterator, TypeVar

from tokenbench.errors import PluginValidationError, UnknownNameError

T = TypeVar("T")

BUILTIN = "built-in"


@dataclass(frozen=True)
class Origin:
    """Where a registered name comes from: tokenbench itself, or a package (name and version)."""

    source: str  # "built-in" or the distribution name
    version: str
    location: str  # "module:qualname" or the entry point's value

    def __str__(self) -> str:
        return self.source if self.source == BUILTIN else f"{self.source} {self.version}".strip()


class Registry(Generic[T]):
    """A named collection with decorator registration, lazy entry points, collision errors and did-you-mean."""

    def __init__(
        self,
        kind: str,
        builtin_package: str | None = None,
        entry_point_group: str | None = None,
        validate: Callable[[str, Any], None] | None = None,
    ) -> None:
        self.kind = kind
        self.builtin_package = builtin_package
        self.entry_point_group = entry_point_group
        self._validate = validate
        self._items: dict[str, T] = {}
        self._lazy: dict[str, EntryPoint] = {}
        self._origins: dict[str, Origin] = {}
        self._discovered = False
        self._loading_builtins = False
        self._loading_ep: str | None = None  # the entry point being imported (it may register itself)
        self._frozen = False

    # -- registration ------------------------------------------------------------------------------------------------
    def register(self, name: str, obj: T | None = None, *, origin: Origin | None = None):
        """Register ``obj`` under ``name``; without ``obj`` returns a decorator."""

        def add(o: T) -> T:
            self._add(name, o, origin)
            return o

        return add if obj is None else add(obj)

    def _add(self, name: str, obj: T, origin: Origin | None) -> None:
        if self._frozen:
            raise PluginValidationError(f"the {self.kind} registry is frozen; {name!r} cannot be added now")
        if self._validate is not None:
            self._validate(name, obj)
        if origin is None:
            origin = self._origin_of(obj)
        existing = self._origins.get(name)
        if existing is not None and (
            name in self._items or (existing.location != origin.location and name != self._loading_ep)
        ):
            raise PluginValidationError(
                f"duplicate {self.kind} name {name!r}: already registered by {existing} ({existing.location}), "
                f"now again by {origin} ({origin.location}). Names must be unique; rename one of them."
            )
        self._items[name] = obj
        self._lazy.pop(name, None)
        self._origins[name] = origin

    def _origin_of(self, obj: Any) -> Origin:
        module = getattr(obj, "__module__", "") or ""
        location = f"{module}:{getattr(obj, '__qualname__', type(obj).__qualname__)}"
        if self.builtin_package and (module == self.builtin_package or module.startswith(self.builtin_package + ".")):
            return Origin(BUILTIN, _own_version(), location)
        if module.startswith("tokenbench."):
            return Origin(BUILTIN, _own_version(), location)
        dist = _distribution_of(module)
        return Origin(dist[0], dist[1], location) if dist else Origin(module.split(".")[0] or "?", "", location)

    # -- discovery ---------------------------------------------------------------------------------------------------
    def _discover(self) -> None:
        if self._discovered or self._loading_builtins:
            return
        self._loading_builtins = True
        try:
            if self.builtin_package:
                pkg = importlib.import_module(self.builtin_package)
                for info in pkgutil.iter_modules(pkg.__path__):
                    if not info.name.startswith("_"):
                        importlib.import_module(f"{self.builtin_package}.{info.name}")
            if self.entry_point_group and not os.environ.get("TOKENBENCH_DISABLE_PLUGIN_AUTOLOAD"):
                for ep in entry_points(group=self.entry_point_group):
                    origin = Origin(ep.dist.name if ep.dist else "?", ep.dist.version if ep.dist else "", ep.value)
                    existing = self._origins.get(ep.name)
                    if existing is not None:
                        raise PluginValidationError(
                            f"duplicate {self.kind} name {ep.name!r}: package {origin} declares it in entry-point "
                            f"group {self.entry_point_group!r} ({ep.value}), but it is already registered by "
                            f"{existing} ({existing.location}). Rename it in that package's pyproject.toml, or set "
                            "TOKENBENCH_DISABLE_PLUGIN_AUTOLOAD=1 to ignore third-party plugins."
                        )
                    self._lazy[ep.name] = ep
                    self._origins[ep.name] = origin
        finally:
            self._loading_builtins = False
        self._discovered = True

    # -- lookup ------------------------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        self._discover()
        return sorted(set(self._items) | set(self._lazy))

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def origin(self, name: str) -> Origin:
        self._require(name)
        return self._origins[name]

    def get(self, name: str) -> T:
        self._require(name)
        if name in self._lazy:
            ep = self._lazy[name]
            self._loading_ep = name
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin must say which plugin is broken
                raise PluginValidationError(
                    f"{self.kind} plugin {name!r} from {self._origins[name]} could not be imported ({ep.value}): "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            finally:
                self._loading_ep = None
            if name not in self._lazy and self._items[name] is not obj:
                raise PluginValidationError(
                    f"{self.kind} plugin {name!r}: its entry point ({ep.value}) gives {obj!r}, but importing it "
                    f"registered {self._items[name]!r} under that name; make them the same object"
                )
            if name in self._lazy:  # importing may have registered it through the decorator already
                origin = self._origins.pop(name)
                del self._lazy[name]
                self._add(name, obj, origin)
        return self._items[name]

    def _require(self, name: str) -> None:
        names = self.names()
        if name not in names:
            raise UnknownNameError(unknown_name_message(self.kind, name, names))

    # -- test helpers ------------------------------------------------------------------------------------------------
    def freeze(self) -> None:
        self._discover()
        self._frozen = True

    def _clear(self) -> None:
        self._items.clear()
        self._lazy.clear()
        self._origins.clear()
        self._discovered = False
        self._frozen = False


def unknown_name_message(kind: str, name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
    return f"unknown {kind} {name!r}.{hint} Available: {shown or '(none)'}. See `tokenbench list {kind}s`."


def _own_version() -> str:
    from tokenbench import __version__

    return __version__


def _distribution_of(module: str) -> tuple[str, str] | None:
    from importlib.metadata import packages_distributions, version

    top = module.split(".")[0]
    dists = packages_distributions().get(top)
    if not dists:
        return None
    return dists[0], version(dists[0])
