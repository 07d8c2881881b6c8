"""The README's promises, checked: its example method works as one file, and CI runs its test command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_readme_example_method_passes_the_contract(tmp_path):
    block = re.search(r"```python\n(# methods/lastrow.py\n.*?)```", README, re.S)
    assert block, "the README's method example is missing"
    (tmp_path / "lastrow.py").write_text(block.group(1))
    env = dict(os.environ, PYTHONPATH=str(tmp_path), TOKENBENCH_DISABLE_PLUGIN_AUTOLOAD="1")
    code = ("import lastrow; from tokenbench.testing import check_method; check_method('lastrow'); "
            "from tokenbench.api import METHODS; assert METHODS.get('lastrow') is lastrow.LastRow; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    test_lines = [line for line in README.splitlines() if 'pip install -e ".[test]"' in line]
    assert len(test_lines) == 1 and test_lines[0].rstrip().endswith("python -m pytest")
    assert "grep -m1 -F 'pip install -e \".[test]\"' README.md" in ci and 'eval "$cmd"' in ci
    # and then the leaderboard drift check, its suites side by side as the README says
    assert ci.rstrip().endswith("tokenbench leaderboard --check --quiet --jobs 3")
    assert "`tokenbench leaderboard --check --jobs 3`" in README
    main_lines = [line for line in README.splitlines() if "pip install -e . &&" in line]
    assert len(main_lines) == 1 and main_lines[0].rstrip().endswith("tokenbench compare alvts fastv")


def test_readme_example_task_passes_check_task(tmp_path):
    block = re.search(r"```python\n(# tasks/colorqa.py\n.*?)```", README, re.S)
    assert block, "the README's task example is missing"
    (tmp_path / "colorqa.py").write_text(block.group(1))
    code = (
        "import colorqa, datasets, sys\n"
        "from tokenbench.testing import check_task, fixture_image, write_task_data\n"
        "ds = datasets.Dataset.from_dict({'id': [1, 2], 'image': [fixture_image(0), fixture_image(1)],\n"
        "    'question': ['What colour?', 'Which colour?'], 'answer': ['red', 'blue']},\n"
        "    features=datasets.Features({'id': datasets.Value('int64'), 'image': datasets.Image(),\n"
        "    'question': datasets.Value('string'), 'answer': datasets.Value('string')}))\n"
        "path = write_task_data(ds, sys.argv[1])['parquet']\n"
        "check_task('colorqa', {'data': path})\n"
        "from tokenbench.harness.resolve import build_task\n"
        "t = build_task('colorqa', {'data': path}, 0); s = t.samples()\n"
        "assert t.prompt(s[0], 'llava') == 'What colour?\\nAnswer with one word.'\n"
        "assert t.evaluate(s, ['Red.', 'green']).metrics == {'accuracy': 0.5}\n"
        "print('ok')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path), TOKENBENCH_DISABLE_PLUGIN_AUTOLOAD="1")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "data")], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


def test_check_method_runs_on_models_with_fewer_visual_tokens_than_its_default_budgets():
    from tokenbench.testing import check_method

    check_method("fastv", model="mini-llava", n_samples=1)  # 144 visual tokens; defaults keep up to 575


def test_the_families_table_quotes_the_generated_page():
    """The README's retention-at-1/9 table across families is the committed families page's cells (without the
    ranks), so that regenerating the boards cannot leave the README quoting old numbers."""
    page = (ROOT / "leaderboards" / "synthetic--families.md").read_text()
    section = page.split("## Keep 1/9\n", 1)[1].split("\n## ", 1)[0]
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in section.splitlines()
             if row.startswith("| ")]
    generated = {r[0]: [re.sub(r" \(#\d+\)$", "", c) for c in r[1:]] for r in cells}
    header = generated.pop("method")
    table = README.split("**What three families show**", 1)[1].split("\n\n", 2)[1]
    rows = [[c.strip() for c in row.strip().strip("|").split("|")] for row in table.splitlines()]
    assert [re.sub(r"`| \(.*", "", c) for c in rows[0][1:]] == [h.strip("`") for h in header]
    quoted = {r[0]: r[1:] for r in rows[2:]}
    assert quoted == generated
