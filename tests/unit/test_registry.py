"""Registries: registration, collisions, did-you-mean, the method contract, typed options, lazy entry points."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
from dataclasses import dataclass
from importlib.metadata import EntryPoint

import pytest

import tokenbench.contract.registry as registry_mod
from tokenbench.api import METHODS, Step, TokenReducer, _validate_method, build_method
from tokenbench.errors import ConfigError, PluginValidationError, TokenbenchError, UnknownNameError
from tokenbench.contract.registry import BUILTIN, Registry

GROUP = "tokenbench.tests.things"


def fresh() -> Registry:
    return Registry("thing", builtin_package=None, entry_point_group=None)


def method_registry() -> Registry:
    return Registry("method", None, None, validate=_validate_method)


class Alpha:
    pass


class Beta:
    pass


# -- registration and lookup ---------------------------------------------------------------------------------------
def test_decorator_registration_returns_the_object_and_get_finds_it():
    reg = fresh()

    @reg.register("zeta")
    class Zeta:
        pass

    assert isinstance(Zeta, type) and Zeta.__name__ == "Zeta"  # the decorator hands the class back unchanged
    assert reg.get("zeta") is Zeta
    assert "zeta" in reg


def test_direct_registration_and_sorted_names():
    reg = fresh()
    assert reg.register("mid", Alpha) is Alpha
    reg.register("aaa", Beta)

    def factory():
        return 1

    reg.register("zzz", factory)
    assert reg.get("mid") is Alpha
    assert reg.get("aaa") is Beta
    assert reg.get("zzz") is factory
    assert reg.names() == ["aaa", "mid", "zzz"]
    assert list(reg) == ["aaa", "mid", "zzz"]


def test_origin_of_a_third_party_object_records_its_location():
    reg = fresh()
    reg.register("alpha", Alpha)
    origin = reg.origin("alpha")
    assert origin.source != BUILTIN
    assert origin.location == f"{Alpha.__module__}:Alpha"


def test_duplicate_name_names_both_locations():
    reg = fresh()
    reg.register("dup", Alpha)
    with pytest.raises(PluginValidationError) as info:
        reg.register("dup", Beta)
    msg = str(info.value)
    assert "'dup'" in msg
    assert f"{Alpha.__module__}:Alpha" in msg
    assert f"{Beta.__module__}:Beta" in msg
    assert reg.get("dup") is Alpha  # the first registration is kept


def test_registering_the_same_object_twice_is_still_a_duplicate():
    reg = fresh()
    reg.register("dup", Alpha)
    with pytest.raises(PluginValidationError, match="duplicate thing name 'dup'"):
        reg.register("dup", Alpha)


def test_unknown_name_has_did_you_mean_and_lists_available():
    reg = fresh()
    reg.register("fastv", Alpha)
    reg.register("random", Beta)
    with pytest.raises(UnknownNameError) as info:
        reg.get("fastvv")
    msg = str(info.value)
    assert "Did you mean 'fastv'" in msg
    assert "Available: fastv, random" in msg
    assert "'fastvv'" in msg
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, TokenbenchError)
    # str() of the error is the message as written, not KeyError's quoted repr
    assert not msg.startswith(("'", '"'))


def test_unknown_name_is_a_key_error_for_origin_too():
    reg = fresh()
    reg.register("fastv", Alpha)
    with pytest.raises(KeyError):
        reg.origin("nothing_like_it")


def test_unknown_name_without_close_match_has_no_hint():
    reg = fresh()
    reg.register("fastv", Alpha)
    with pytest.raises(UnknownNameError) as info:
        reg.get("qqqqqqqqqq")
    assert "Did you mean" not in str(info.value)
    assert "Available: fastv" in str(info.value)


def test_empty_registry_says_none_available():
    with pytest.raises(UnknownNameError, match=r"Available: \(none\)"):
        fresh().get("anything")


# -- the method contract -------------------------------------------------------------------------------------------
def _good_method():
    @dataclass(frozen=True)
    class Good(TokenReducer):
        stage = "prune"
        layer: int = 1

        def steps(self, n_layers):
            return (Step(self.layer),)

        def select(self, ctx):
            return ctx.active[:, : ctx.keep]

    return Good


def test_valid_method_registers():
    reg = method_registry()
    cls = _good_method()
    reg.register("good_one", cls)
    assert reg.get("good_one") is cls


def test_method_must_be_a_frozen_dataclass():
    @dataclass
    class NotFrozen(TokenReducer):
        layer: int = 1

        def steps(self, n_layers):
            return ()

        def select(self, ctx):
            return None

    class NotADataclass(TokenReducer):
        def steps(self, n_layers):
            return ()

        def select(self, ctx):
            return None

    reg = method_registry()
    for cls in (NotFrozen, NotADataclass):
        with pytest.raises(PluginValidationError, match="not a frozen dataclass") as info:
            reg.register("m", cls)
        assert cls.__qualname__ in str(info.value)
    assert reg.names() == []


def test_method_must_subclass_token_reducer():
    @dataclass(frozen=True)
    class Plain:
        stage = "prune"
        layer: int = 1

        def steps(self, n_layers):
            return ()

        def select(self, ctx):
            return None

    with pytest.raises(PluginValidationError, match="not a subclass of tokenbench.api.TokenReducer"):
        method_registry().register("plain", Plain)
    with pytest.raises(PluginValidationError, match="not a subclass"):
        method_registry().register("fn", lambda ctx: None)


def test_method_stage_must_be_known():
    @dataclass(frozen=True)
    class Middle(TokenReducer):
        stage = "middle"

        def steps(self, n_layers):
            return ()

        def select(self, ctx):
            return None

    with pytest.raises(PluginValidationError, match="stage 'middle' is not one of"):
        method_registry().register("middle", Middle)


def test_method_must_implement_select():
    @dataclass(frozen=True)
    class NoSelect(TokenReducer):
        stage = "prune"

        def steps(self, n_layers):
            return ()

    with pytest.raises(PluginValidationError, match=r"does not implement select\(\)"):
        method_registry().register("no_select", NoSelect)


def test_method_must_implement_steps():
    @dataclass(frozen=True)
    class NoSteps(TokenReducer):
        stage = "prune"

        def select(self, ctx):
            return None

    with pytest.raises(PluginValidationError, match=r"does not implement steps\(\)"):
        method_registry().register("no_steps", NoSteps)


def test_method_option_needs_a_default():
    @dataclass(frozen=True)
    class NoDefault(TokenReducer):
        stage = "prune"
        layer: int

        def steps(self, n_layers):
            return ()

        def select(self, ctx):
            return None

    with pytest.raises(PluginValidationError, match="option 'layer' has no default"):
        method_registry().register("no_default", NoDefault)


@pytest.mark.parametrize("bad", ["Bad-Name", "1fast", "fast v", "", "FastV"])
def test_method_name_must_be_lower_snake(bad):
    reg = method_registry()
    with pytest.raises(PluginValidationError, match="does not match") as info:
        reg.register(bad, _good_method())
    assert repr(bad) in str(info.value)
    assert reg.names() == []


def test_builtin_origin():
    origin = METHODS.origin("fastv")
    assert origin.source == BUILTIN
    assert str(origin) == "built-in"
    assert origin.location == "tokenbench.methods.fastv:FastV"


# -- typed method options ------------------------------------------------------------------------------------------
def test_build_method_with_valid_options():
    m = build_method("fastv", {"layer": 3})
    assert m.layer == 3 and m.name == "fastv"
    assert build_method("fastv").layer is None  # K=2 of 32 layers, placed at the model's depth (schedule.at_depth)


def test_build_method_rejects_wrong_type():
    with pytest.raises(ConfigError) as info:
        build_method("fastv", {"layer": "x"})
    msg = str(info.value)
    assert "'layer'" in msg and "int" in msg and "'x'" in msg


def test_build_method_rejects_bool_for_int():
    with pytest.raises(ConfigError, match="'layer' expects int"):
        build_method("fastv", {"layer": True})


def test_build_method_rejects_float_for_int():
    with pytest.raises(ConfigError, match="'layer' expects int"):
        build_method("fastv", {"layer": 2.0})


def test_build_method_unknown_option_did_you_mean():
    with pytest.raises(ConfigError) as info:
        build_method("fastv", {"layr": 3})
    msg = str(info.value)
    assert "Did you mean 'layer'" in msg
    assert "'layr'" in msg


def test_build_method_unknown_method():
    with pytest.raises(UnknownNameError, match="Did you mean 'fastv'"):
        build_method("fastvv")


# -- entry points --------------------------------------------------------------------------------------------------
@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    """An importable module ``tbtest_ep_plugin`` (fresh name per test) whose import is observable."""
    name = f"tbtest_ep_plugin_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        class Obj:
            pass
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def fake_entry_points(monkeypatch, *eps: EntryPoint):
    def entry_points(*, group=None, **kw):
        assert not kw
        return [ep for ep in eps if ep.group == group]

    monkeypatch.setattr(registry_mod, "entry_points", entry_points)


def ep_registry() -> Registry:
    return Registry("thing", builtin_package=None, entry_point_group=GROUP)


def test_entry_point_is_listed_without_import_and_imported_on_get(monkeypatch, plugin_module):
    ep = EntryPoint(name="plug", value=f"{plugin_module}:Obj", group=GROUP)
    other = EntryPoint(name="elsewhere", value=f"{plugin_module}:Obj", group="some.other.group")
    fake_entry_points(monkeypatch, ep, other)
    reg = ep_registry()
    reg.register("local", Alpha)
    assert reg.names() == ["local", "plug"]
    assert "plug" in reg
    assert plugin_module not in sys.modules  # listing never imports a plugin
    assert reg.origin("plug").location == f"{plugin_module}:Obj"
    assert plugin_module not in sys.modules

    obj = reg.get("plug")
    assert plugin_module in sys.modules
    assert obj is sys.modules[plugin_module].Obj
    assert reg.get("plug") is obj  # now a normal registered item
    assert reg.names() == ["local", "plug"]


def test_entry_point_colliding_with_a_registered_name(monkeypatch, plugin_module):
    fake_entry_points(monkeypatch, EntryPoint(name="local", value=f"{plugin_module}:Obj", group=GROUP))
    reg = ep_registry()
    reg.register("local", Alpha)
    assert reg.names() == ["local"]  # the collision is recorded, not fatal: the registry still lists and serves
    assert [(p.name, p.status) for p in reg.skipped()] == [("local", "skipped: duplicate of local from test_registry")]
    with pytest.raises(PluginValidationError) as info:
        reg.get("local")  # ambiguous: neither is guessed
    msg = str(info.value)
    assert "'local'" in msg
    assert f"{plugin_module}:Obj" in msg
    assert f"{Alpha.__module__}:Alpha" in msg
    assert "TOKENBENCH_DISABLE_PLUGIN_AUTOLOAD" in msg
    assert plugin_module not in sys.modules


def test_disable_plugin_autoload_hides_entry_points(monkeypatch, plugin_module):
    fake_entry_points(monkeypatch, EntryPoint(name="plug", value=f"{plugin_module}:Obj", group=GROUP))
    monkeypatch.setenv("TOKENBENCH_DISABLE_PLUGIN_AUTOLOAD", "1")
    reg = ep_registry()
    reg.register("local", Alpha)
    assert reg.names() == ["local"]
    with pytest.raises(UnknownNameError):
        reg.get("plug")
    assert plugin_module not in sys.modules
    monkeypatch.delenv("TOKENBENCH_DISABLE_PLUGIN_AUTOLOAD")
    assert ep_registry().names() == ["plug"]  # the same entry point is seen when autoload is on


def test_broken_entry_point_names_the_plugin(monkeypatch):
    fake_entry_points(monkeypatch, EntryPoint(name="broken", value="tbtest_no_such_module_xyz:Obj", group=GROUP))
    reg = ep_registry()
    assert reg.names() == ["broken"]
    with pytest.raises(PluginValidationError, match="'broken'.*tbtest_no_such_module_xyz:Obj.*ModuleNotFoundError"):
        reg.get("broken")


@pytest.fixture
def holder(monkeypatch):
    """A module a plugin can import to find the fresh registry it registers itself into."""
    mod = types.ModuleType("tbtest_registry_holder")
    mod.REG = ep_registry()
    monkeypatch.setitem(sys.modules, "tbtest_registry_holder", mod)
    return mod


def test_entry_point_module_that_registers_itself(monkeypatch, tmp_path, holder):
    name = f"tbtest_selfreg_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        from tbtest_registry_holder import REG

        @REG.register("selfreg")
        class Obj:
            pass
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    fake_entry_points(monkeypatch, EntryPoint(name="selfreg", value=f"{name}:Obj", group=GROUP))
    try:
        reg = holder.REG
        assert reg.names() == ["selfreg"]
        assert name not in sys.modules
        obj = reg.get("selfreg")
        assert obj is sys.modules[name].Obj
        assert reg.origin("selfreg").location == f"{name}:Obj"
    finally:
        sys.modules.pop(name, None)


def test_entry_point_to_a_reexported_class_that_registers_itself(monkeypatch, tmp_path, holder):
    pkg = f"tbtest_reexport_{tmp_path.name.replace('-', '_')}"
    (tmp_path / pkg).mkdir()
    (tmp_path / pkg / "__init__.py").write_text(f"from {pkg}.impl import Obj\n")
    (tmp_path / pkg / "impl.py").write_text(textwrap.dedent("""
        from tbtest_registry_holder import REG

        @REG.register("reexported")
        class Obj:
            pass
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    fake_entry_points(monkeypatch, EntryPoint(name="reexported", value=f"{pkg}:Obj", group=GROUP))
    try:
        obj = holder.REG.get("reexported")
        assert obj is sys.modules[f"{pkg}.impl"].Obj
    finally:
        sys.modules.pop(pkg, None)
        sys.modules.pop(f"{pkg}.impl", None)


# -- import cost ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "code",
    [
        "import sys, tokenbench; assert 'torch' not in sys.modules, 'tokenbench imported torch'",
        "import sys, tokenbench.api as a; a.METHODS.names(); a.MODELS.names(); a.TASKS.names(); "
        "assert a.METHODS.names(), 'no methods'; "
        "assert 'torch' not in sys.modules, 'listing imported torch'; "
        "assert 'transformers' not in sys.modules, 'listing imported transformers'",
    ],
)
def test_import_and_listing_do_not_import_torch(code):
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
