"""Calibration artefacts are checked by their contents, not only their metadata: a missing factor, one of the wrong
shape, NaN factors and a directory given as the path are each one `error:` line (exit 2) before any compute."""

from __future__ import annotations

import glob
import os

import pytest
from click.testing import CliRunner

from tokenbench.cli import main
from tokenbench.models.llava import MINI_LLAVA

SHIPPED = sorted(glob.glob(os.path.join(MINI_LLAVA, "calibration", "alvts", "*.safetensors")))[0]


def rewrite(path, change):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(SHIPPED, framework="pt") as fh:
        meta = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    change(tensors)
    save_file(tensors, path, metadata=meta)


def drop(t):
    t.pop(sorted(t)[0])


def reshape(t):
    k = sorted(t)[0]
    t[k] = t[k][:, :-1].contiguous()


def nan(t):
    k = sorted(t)[-1]
    t[k] = t[k].clone()
    t[k].view(-1)[0] = float("nan")


@pytest.mark.parametrize("change, fragment", [(drop, "has no tensor"), (reshape, "has shape"),
                                              (nan, "holds NaN or infinite values"), (None, "is a directory")])
def test_a_damaged_artefact_is_refused_with_the_reason(tmp_path, change, fragment):
    if change is None:
        path = str(tmp_path)
    else:
        path = str(tmp_path / "alvts.safetensors")
        rewrite(path, change)
    result = CliRunner().invoke(main, ["compare", "alvts", "-n", "2", "--repeats", "1", "--warmup", "0", "-q",
                                       "--no-store", "-a", f"alvts.calibration={path}"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: calibration artefact") and fragment in lines[0]


def test_the_shipped_artefact_still_loads(tmp_path):
    path = str(tmp_path / "copy.safetensors")
    rewrite(path, lambda t: None)
    result = CliRunner().invoke(main, ["compare", "alvts", "-n", "2", "--repeats", "1", "--warmup", "0", "-q",
                                       "--no-store", "-a", f"alvts.calibration={path}"])
    assert result.exit_code == 0, result.output
