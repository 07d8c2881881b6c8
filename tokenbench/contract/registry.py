"""Name -> object registries for methods, models and tasks.

Built-ins live in the ``tokenbench.methods`` / ``tokenbench.models`` / ``tokenbench.tasks`` packages and are found by
scanning those packages (no central list to edit); third-party packages declare entry points in the groups of the
same names. Entry points are listed without being imported (``ep.name`` is free) and imported on first
:meth:`Registry.get`.

One plugin never takes down the others. A plugin that cannot be imported or breaks the contract is *broken*; an entry
point whose name is already taken (by a built-in or another package) is *skipped*, and the name it claims is left
unusable rather than resolved by a guess. Using such a name is one error naming the package, its version, the entry
point and the cause; code that goes over every name (:meth:`Registry.available`) leaves it out with one warning line;
``tokenbench list`` shows each entry's status (:meth:`Registry.status`, :meth:`Registry.skipped`). A method class
registered only through its entry point is named after it.

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
import sys
import weakref
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


@dataclass(frozen=True)
class Problem:
    """A plugin entry that is not usable: what ``tokenbench list`` shows, and the error its use gives."""

    name: str
    origin: Origin
    status: str  # "broken: <cause>", "skipped: duplicate of ..." or "ambiguous: also declared by ..."
    message: str  # one line: the package, the entry point, the cause and the fix


_REGISTRIES: weakref.WeakSet[Registry] = weakref.WeakSet()


def one_line(text: str) -> str:
    return " ".join(str(text).split())


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
        self._entry_points: list[tuple[EntryPoint, Origin]] = []  # every entry point seen, skipped ones included
        self._broken: dict[str, Problem] = {}  # names that cannot be used, and why
        self._skipped: list[Problem] = []  # entry points that lost a name collision
        self._shadowed: dict[str, str] = {}  # built-in names a plugin also declares: the built-in runs, with a warning
        self._warned: set[str] = set()
        _REGISTRIES.add(self)

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
                    self._entry_points.append((ep, origin))
                    existing = self._origins.get(ep.name)
                    if existing is None:
                        self._lazy[ep.name] = ep
                        self._origins[ep.name] = origin
                        continue
                    dup = f"built-in {ep.name}" if existing.source == BUILTIN else f"{ep.name} from {existing}"
                    if existing.source == BUILTIN:  # tokenbench's own names always mean its own, faithful method
                        message = (f"package {origin} also declares {self.kind} {ep.name!r} (entry point {ep.name} = "
                                   f"{ep.value}); a plugin cannot replace a built-in, so the built-in runs. Ask that "
                                   "package's authors to rename its entry point")
                        self._skipped.append(Problem(ep.name, origin, f"skipped: duplicate of {dup}", message))
                        self._shadowed[ep.name] = message
                        continue
                    first = f"{existing}"
                    message = (
                        f"{self.kind} {ep.name!r} is declared twice: by {first} ({existing.location}) and by package "
                        f"{origin} (entry point {ep.name} = {ep.value} in group {self.entry_point_group!r}); "
                        f"tokenbench will not guess which one you mean, so {ep.name!r} is unusable while both are "
                        f"installed (every other {self.kind} works). Fix: uninstall one (pip uninstall "
                        f"{origin.source}), ask that package's authors to rename its entry point, or set "
                        "TOKENBENCH_DISABLE_PLUGIN_AUTOLOAD=1 to ignore third-party plugins"
                    )
                    self._skipped.append(Problem(ep.name, origin, f"skipped: duplicate of {dup}", message))
                    self._broken[ep.name] = Problem(ep.name, existing, f"ambiguous: also declared by {origin}", message)
        finally:
            self._loading_builtins = False
        self._discovered = True

    # -- lookup ------------------------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Every known name, broken ones included (entry points are not imported to list them)."""
        self._discover()
        return sorted(set(self._items) | set(self._lazy) | set(self._broken))

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def origin(self, name: str) -> Origin:
        self._require(name)
        return self._origins[name]

    def get(self, name: str) -> T:
        """The object registered as ``name``, importing its plugin on first use; a broken, ambiguous or unknown
        name raises :class:`PluginValidationError` / :class:`UnknownNameError` (one line)."""
        if name in self._shadowed and name not in self._warned and name in self.names():
            self._warned.add(name)
            print(f"warning: {self._shadowed[name]}", file=sys.stderr)
        return self._resolve(name)

    def _resolve(self, name: str) -> T:
        self._require(name)
        if name in self._lazy:
            self._load(name)
        if name in self._broken:
            raise PluginValidationError(self._broken[name].message)
        return self._items[name]

    def status(self, name: str) -> str:
        """``ok``, or why ``name`` cannot be used (``broken: ...``, ``ambiguous: ...``); imports its plugin."""
        try:
            self._resolve(name)
        except PluginValidationError:
            return self._broken[name].status
        return "ok" if name not in self._shadowed else "ok (a plugin's duplicate is skipped)"

    def skipped(self) -> list[Problem]:
        """The entry points left out because their name was already taken."""
        self._discover()
        return list(self._skipped)

    def available(self) -> list[str]:
        """The names that can be used, for code that goes over all of them (bench without methods, finding the
        adapter of a model directory): each broken or ambiguous one is left out with one warning line on stderr."""
        return [name for name in self.names() if self.usable(name)]

    def usable(self, name: str) -> bool:
        """True if ``name`` can be used; else False, after one warning line on stderr (once per name) that says why.
        For names the user did not ask for (defaults, every name); a name the user gave goes through :meth:`get`."""
        if self.status(name).startswith("ok"):
            return True
        if name not in self._warned:
            self._warned.add(name)
            print(f"warning: skipped {self.kind} {name!r}: {self._broken[name].message}", file=sys.stderr)
        return False

    def import_entry_points(self) -> None:
        """Import every entry point not imported yet, for what their import declares beside the name (a model
        family's signal kinds); a broken one is recorded (:meth:`status`), never raised, and warns nobody."""
        for name in self.names():
            if name in self._lazy:
                self.status(name)

    def _load(self, name: str) -> None:
        """Import the entry point of ``name``; on any failure record it as broken (the others are untouched)."""
        ep = self._lazy[name]
        origin = self._origins[name]
        self._loading_ep = name
        try:
            obj = ep.load()
            if name not in self._lazy and self._items[name] is not obj:
                raise PluginValidationError(
                    f"its entry point ({ep.value}) gives {obj!r}, but importing it registered {self._items[name]!r} "
                    "under that name; make them the same object"
                )
            if name in self._lazy:  # importing may have registered it through the decorator already
                del self._lazy[name]
                del self._origins[name]
                self._add(name, obj, origin)
        except Exception as exc:  # noqa: BLE001 - a broken plugin is recorded and named, never fatal to the others
            self._items.pop(name, None)
            self._lazy.pop(name, None)
            self._origins[name] = origin
            cause = str(exc) if isinstance(exc, PluginValidationError) else f"{type(exc).__name__}: {exc}"
            cause = one_line(cause)
            package = f"package {origin}" if origin.source != "?" else "an unknown package"
            remove = f" (pip uninstall {origin.source})" if origin.source != "?" else ""
            self._broken[name] = Problem(
                name, origin, f"broken: {cause}",
                f"{self.kind} plugin {name!r} from {package} (entry point {name} = {ep.value}) is broken and was "
                f"skipped: {cause}. Every other {self.kind} works; report it to that package's authors, update it "
                f"or remove it{remove}",
            )
        finally:
            self._loading_ep = None

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
        self._entry_points.clear()
        self._broken.clear()
        self._skipped.clear()
        self._shadowed.clear()
        self._warned.clear()
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


def plugin_of(frames: list[tuple[str, str]]) -> tuple[Origin, str] | None:
    """Whose code raised, from a traceback's frames as (module, qualname), innermost first: the plugin package
    (origin, and its entry point as ``group: name = value``) whose module holds the innermost frame that is tokenbench's
    or a plugin's; None when that frame is tokenbench's or no plugin's. Of the package's entry points, the one whose
    module and object the plugin's frames are in is named."""
    eps = [(ep, origin) for reg in list(_REGISTRIES) for ep, origin in reg._entry_points]

    def top(module: str) -> str:
        return module.split(".")[0]

    for module, _ in frames:
        if top(module) == "tokenbench":
            return None
        mine = [(ep, origin) for ep, origin in eps if top(ep.module) == top(module)]
        if mine:
            break
    else:
        return None
    ours = [(m, q) for m, q in frames if top(m) == top(module)]

    def fit(ep: EntryPoint) -> int:
        return max(2 * (m == ep.module) + (q == ep.attr or q.startswith(f"{ep.attr}.")) for m, q in ours)

    ep, origin = max(mine, key=lambda pair: fit(pair[0]))  # the first of equals: the order entry points were seen
    return origin, f"{ep.group}: {ep.name} = {ep.value}"


def project_url(dist: str) -> str | None:
    """Where to report a problem with distribution ``dist``: its issue tracker, else its home page (its metadata)."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        meta = metadata(dist)
    except PackageNotFoundError:
        return None
    urls = [u.split(",", 1) for u in meta.get_all("Project-URL") or [] if "," in u]
    for label, url in urls:
        if any(w in label.lower() for w in ("issue", "bug", "tracker")):
            return url.strip()
    home = meta.get("Home-page")
    if home and home.strip().upper() != "UNKNOWN":
        return home.strip()
    return urls[0][1].strip() if urls else None
