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
    assert ci.rstrip().endswith("tokenbench leaderboard --check --quiet")  # and then the leaderboard drift check
    main_lines = [line for line in README.splitlines() if "pip install -e . &&" in line]
    assert len(main_lines) == 1 and main_lines[0].rstrip().endswith("tokenbench compare alvts fastv")
