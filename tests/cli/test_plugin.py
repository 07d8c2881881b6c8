"""A third-party method, installed from its own package through a `tokenbench.methods` entry point, runs end to end.

The package is built with pip (no network: --no-deps --no-build-isolation) into a private target directory that
only the subprocesses see through PYTHONPATH, so the test never changes the environment it runs in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "tb-plugin-demo"
version = "0.3.1"
requires-python = ">=3.10"

[project.entry-points."tokenbench.methods"]
keepfirst = "tb_plugin_demo:KeepFirst"

[tool.setuptools]
packages = ["tb_plugin_demo"]
"""

MODULE = '''\
"""keepfirst: keep the first `keep` visual tokens from layer `layer` on (a test plugin)."""

from dataclasses import dataclass

from tokenbench.api import Step, TokenReducer, register_method


@register_method("keepfirst")
@dataclass(frozen=True)
class KeepFirst(TokenReducer):
    stage = "prune"
    layer: int = 1

    def steps(self, n_layers):
        return (Step(self.layer),)

    def select(self, ctx):
        return ctx.active.new_tensor(range(ctx.keep)).expand(ctx.batch_size, -1)
'''


def install(root, package: str, pyproject: str, files: dict[str, str]) -> dict[str, str]:
    """Build ``package`` (``files`` in its module folder) with pip, offline, into ``root``/site; return the environment
    for subprocesses that see it (PYTHONPATH), with a private cache under ``root`` and plugin autoload on."""
    pkg = root / "pkg"
    (pkg / package).mkdir(parents=True)
    (pkg / "pyproject.toml").write_text(pyproject)
    for name, text in files.items():
        (pkg / package / name).write_text(text)
    site = root / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
         "--target", str(site), str(pkg)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"pip could not install the plugin package:\n{proc.stdout}\n{proc.stderr}"
    assert all((site / package / name).is_file() for name in files)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    env["TOKENBENCH_CACHE"] = str(root / "cache")
    env.pop("TOKENBENCH_DISABLE_PLUGIN_AUTOLOAD", None)
    return env


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """(env for subprocesses, work dir): the plugin installed into a private site directory, a private cache."""
    root = tmp_path_factory.mktemp("plugin")
    return install(root, "tb_plugin_demo", PYPROJECT, {"__init__.py": MODULE}), root


def tokenbench_cmd() -> list[str]:
    script = Path(sys.executable).with_name("tokenbench")  # the installed console script, as a user runs it
    return [str(script)] if script.is_file() else [sys.executable, "-m", "tokenbench"]


def run(env, *args, timeout=300):
    return subprocess.run([*tokenbench_cmd(), *args], capture_output=True, text=True, env=env, timeout=timeout)


def listed_methods(stdout: str) -> dict[str, str]:
    """name -> origin from the `tokenbench list methods` table."""
    out = {}
    for line in stdout.splitlines()[3:]:  # "methods:", header, rule
        if not line.strip():
            break
        cells = [c for c in line.split("  ") if c.strip()]
        out[cells[0].strip()] = cells[1].strip()
    return out


def test_plugin_is_listed_with_its_package_and_version(plugin):
    env, _ = plugin
    proc = run(env, "list", "methods")
    assert proc.returncode == 0, proc.stderr
    methods = listed_methods(proc.stdout)
    assert methods.get("keepfirst") == "tb-plugin-demo 0.3.1", proc.stdout
    assert methods.get("fastv") == "built-in"
    assert "tb_plugin_demo:KeepFirst" in proc.stdout


def test_listing_does_not_import_the_plugin(plugin):
    env, _ = plugin
    code = ("import sys, tokenbench.api as a; names = a.METHODS.names(); assert 'keepfirst' in names, names; "
            "assert 'tb_plugin_demo' not in sys.modules; cls = a.METHODS.get('keepfirst'); "
            "assert 'tb_plugin_demo' in sys.modules; assert cls.__module__ == 'tb_plugin_demo', cls; "
            "assert cls.name == 'keepfirst'; assert str(a.METHODS.origin('keepfirst')) == 'tb-plugin-demo 0.3.1'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_disable_plugin_autoload_hides_the_plugin(plugin):
    env, _ = plugin
    proc = run({**env, "TOKENBENCH_DISABLE_PLUGIN_AUTOLOAD": "1"}, "list", "methods")
    assert proc.returncode == 0, proc.stderr
    methods = listed_methods(proc.stdout)
    assert "keepfirst" not in methods and "tb-plugin-demo" not in proc.stdout
    assert {"fastv", "full", "random"} <= set(methods)


def test_plugin_runs_in_compare(plugin):
    env, root = plugin
    out = root / "rows.json"
    proc = run(env, "compare", "keepfirst", "--limit", "4", "--repeats", "1", "--warmup", "0", "--keep", "8",
               "--json", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    table = [line.split("|")[1].strip() for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert table == ["method", "full", "keepfirst"], proc.stdout

    rows = {r["method"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"full", "keepfirst"}
    kf = rows["keepfirst"]
    assert kf["keep"] == 8
    assert kf["params"] == {"layer": 1}
    assert kf["tokens_llm_input"] == 144  # layer 0 of the default mini-llava still sees every visual token
    # matched budgets (the default) hold for a plugin too: 12 layers pruned from layer 1 average (144 + 11 k') / 12,
    # at least 12.9 > 8 even at k' = 1, so the plugin keeps 1 and the row says so
    assert kf["match"] == "matched" and kf["method_keep"] == 1
    assert kf["tokens_avg_layer"] == pytest.approx((144 + 11 * 1) / 12)
    assert 0 < kf["flops_ratio"] < 1
    assert rows["full"]["tokens_avg_layer"] == 144


def test_plugin_options_are_typed_like_builtins(plugin):
    env, _ = plugin
    proc = run(env, "compare", "keepfirst", "-a", "layr=2", "--limit", "2", "--repeats", "1", "--warmup", "0", "-q")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1, proc.stderr
    proc = run(env, "compare", "keepfirst", "-a", "keepfirst.layr=2", "--limit", "2", "--repeats", "1",
               "--warmup", "0", "-q")
    assert proc.returncode == 2
    assert "Did you mean 'layer'" in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr

