"""One plugin never takes down the others (issue 18, class 4), and a traceback says whose bug it is.

One package, installed once with pip into a private directory (as in test_plugin.py), declares every kind of bad
plugin at once: an entry point that collides with the built-in `fastv`, a method and a model whose import fails, a
method registered only through its entry point (no decorator), a method whose select() raises (when TB_ISO_RAISE is
set) and a task whose evaluate() raises. Each test checks that the bad one is named with its package and cause and
that everything else still works.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from test_plugin import install, run

from tokenbench.cli import main

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "tb-plugin-iso"
version = "1.2.0"
requires-python = ">=3.10"

[project.urls]
Issues = "https://example.org/tb-plugin-iso/issues"

[project.entry-points."tokenbench.methods"]
fastv = "tb_plugin_iso.collide:Fast"
isobroken = "tb_plugin_iso.broken:Broken"
epname = "tb_plugin_iso.methods:EpOnly"
raiser = "tb_plugin_iso.methods:Raiser"

[project.entry-points."tokenbench.models"]
isobrokenmodel = "tb_plugin_iso.badmodel:factory"

[project.entry-points."tokenbench.tasks"]
badeval = "tb_plugin_iso.tasks:BadEval"

[tool.setuptools]
packages = ["tb_plugin_iso"]
"""

FILES = {
    "__init__.py": "",
    "collide.py": "class Fast:  # never imported: its name is taken by the built-in\n    pass\n",
    "broken.py": "import tb_plugin_iso_missing_dependency  # noqa: F401\n",
    "badmodel.py": "raise RuntimeError('this model plugin is broken on purpose')\n",
    "methods.py": '''\
import os
from dataclasses import dataclass

from tokenbench.api import Step, TokenReducer


@dataclass(frozen=True)
class EpOnly(TokenReducer):  # no @register_method: its name comes from its entry point
    stage = "prune"
    layer: int = 1

    def steps(self, n_layers):
        return (Step(self.layer),)

    def select(self, ctx):
        return ctx.active.new_tensor(range(ctx.keep)).expand(ctx.batch_size, -1)


def score_tokens(ctx):
    raise ValueError("boom in select")


@dataclass(frozen=True)
class Raiser(EpOnly):
    def select(self, ctx):
        if os.environ.get("TB_ISO_RAISE"):
            return score_tokens(ctx)
        return super().select(ctx)
''',
    "tasks.py": '''\
from dataclasses import dataclass

from tokenbench.tasks.synthetic import SyntheticTask


@dataclass(frozen=True)
class BadEval(SyntheticTask):
    name = "badeval"

    def evaluate(self, samples, predictions):
        raise ValueError("boom in evaluate")
''',
}

FAST = ("--limit", "2", "--repeats", "1", "--warmup", "0", "--keep", "8", "-q")
BUG = "error: this is a bug in plugin tb-plugin-iso 1.2.0"


@pytest.fixture(scope="module")
def plugins(tmp_path_factory):
    """(env for subprocesses, work dir) with tb-plugin-iso installed in a private site directory, a private cache."""
    root = tmp_path_factory.mktemp("plugin-iso")
    env = install(root, "tb_plugin_iso", PYPROJECT, FILES)
    env.pop("TB_ISO_RAISE", None)
    return env, root


def one_error(proc, *words):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def table(stdout: str, section: str) -> list[list[str]]:
    """The rows of one section of `tokenbench list` as cells (name, origin, status, defined at)."""
    lines = stdout.split(f"{section}:\n", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    return [[c.strip() for c in line.split("  ") if c.strip()] for line in lines]


def test_list_shows_every_plugin_with_its_status(plugins):
    env, _ = plugins
    proc = run(env, "list")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    methods = {(r[0], r[1]): r[2] for r in table(proc.stdout, "methods")}
    assert methods[("fastv", "tb-plugin-iso 1.2.0")] == "skipped: duplicate of built-in fastv"
    assert methods[("fastv", "built-in")] == "ok (a plugin's duplicate is skipped)"
    assert methods[("isobroken", "tb-plugin-iso 1.2.0")].startswith(
        "broken: ModuleNotFoundError: No module named 'tb_plugin_iso_missing_dependency'")
    assert methods[("epname", "tb-plugin-iso 1.2.0")] == "ok"
    assert methods[("random", "built-in")] == "ok"
    models = {r[0]: r[2] for r in table(proc.stdout, "models")}
    assert models["isobrokenmodel"] == "broken: RuntimeError: this model plugin is broken on purpose"
    assert models["mini-llava"] == "ok"
    assert any(r[0] == "badeval" and "ok" in r for r in table(proc.stdout, "tasks"))


def test_a_colliding_name_runs_the_builtin_and_a_broken_one_is_one_error_naming_the_package(plugins):
    env, _ = plugins
    proc = run(env, "compare", "fastv", *FAST)  # a plugin cannot replace a built-in: the built-in runs, and says so
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 1 and "tb-plugin-iso 1.2.0" in warned[0] and "tb_plugin_iso.collide:Fast" in warned[0]
    assert "the built-in runs" in warned[0], warned
    one_error(run(env, "compare", "isobroken", *FAST), "'isobroken'", "tb-plugin-iso 1.2.0", "broken",
              "ModuleNotFoundError", "tb_plugin_iso_missing_dependency")
    one_error(run(env, "compare", "random", "--model", "isobrokenmodel", *FAST), "tb-plugin-iso 1.2.0",
              "RuntimeError: this model plugin is broken on purpose")


def test_other_methods_compare_and_an_entry_point_only_method_is_named_after_it(plugins):
    env, root = plugins
    out = root / "rows.json"
    proc = run(env, "compare", "epname", "random", *FAST, "--json", str(out))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    rows = json.loads(out.read_text())
    assert {r["method"] for r in rows} == {"full", "epname", "random"}, [r["method"] for r in rows]
    assert "''" not in proc.stdout


def test_a_model_directory_resolves_past_a_broken_model_plugin(plugins):
    from tokenbench.models.llava import MINI_LLAVA

    env, _ = plugins
    proc = run(env, "compare", "random", "--model", MINI_LLAVA, *FAST)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "isobrokenmodel" in warnings[0] and "tb-plugin-iso 1.2.0" in warnings[0], warnings


def test_bench_without_methods_skips_the_broken_ones_with_a_warning(plugins):
    env, root = plugins
    out = root / "bench.json"  # the CPU defaults, fastv and alvts: the built-in fastv runs (the plugin's is skipped)
    proc = run(env, "bench", "-M", "tiny-llava", "--device", "cpu", "-k", "16", "--repeats", "1", "--warmup", "0",
               "--new-tokens", "1", "--json", str(out))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 1 and "method 'fastv'" in warned[0] and "tb-plugin-iso 1.2.0" in warned[0], proc.stderr
    assert {r["method"] for r in json.loads(out.read_text())} == {"full", "fastv", "alvts"}

    # every registered method (the GPU default), checked from the config alone: the broken ones are left out
    code = ("from tokenbench.harness.bench import BenchSpec, _methods_for; from tokenbench.harness.resolve import resolve_model; "
            "a = resolve_model('mini-llava').load_config(); "
            "print(sorted(m.name for m in _methods_for(a, BenchSpec(models=('mini-llava',)), 12, print)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    names = ast.literal_eval(proc.stdout.strip().splitlines()[-1])
    assert {"random", "epname", "raiser", "pdrop", "fastv"} <= set(names) and "isobroken" not in names, names
    warned = [line for line in proc.stderr.splitlines() if line.startswith("warning: skipped method")]
    assert len(warned) == 1 and "'isobroken'" in warned[0], proc.stderr


def bug_line(proc) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" in proc.stderr
    return proc.stderr.strip().splitlines()[-1]


def test_an_exception_in_a_plugins_select_names_the_plugin(plugins):
    env, _ = plugins
    last = bug_line(run({**env, "TB_ISO_RAISE": "1"}, "compare", "raiser", *FAST))
    assert last.startswith(BUG), last
    assert "raiser = tb_plugin_iso.methods:Raiser" in last and "ValueError: boom in select" in last
    assert "https://example.org/tb-plugin-iso/issues" in last


def test_an_exception_in_a_plugin_tasks_evaluate_names_the_plugin(plugins):
    env, _ = plugins
    last = bug_line(run(env, "compare", "random", "--task", "badeval", *FAST))
    assert last.startswith(BUG) and "ValueError: boom in evaluate" in last, last
    assert "badeval = tb_plugin_iso.tasks:BadEval" in last


# -- tokenbench's own bugs and Ctrl-C (in process) ------------------------------------------------------------------
def test_an_unexpected_exception_in_tokenbench_says_it_is_a_bug_in_tokenbench(monkeypatch):
    from tokenbench import __version__

    def boom(*args, **kwargs):
        raise RuntimeError("an internal\nfailure")

    monkeypatch.setattr("tokenbench.cli.listing._task_facts", boom)
    result = CliRunner().invoke(main, ["list", "tasks"])
    assert result.exit_code == 1, result.output
    assert "Traceback" in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"error: this is a bug in tokenbench {__version__}: RuntimeError: an internal failure; "
                           "please report it "), last
    assert "with the traceback above" in last


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("tokenbench.cli.listing._task_facts", interrupt)
    result = CliRunner().invoke(main, ["list", "tasks"])
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == "interrupted"
