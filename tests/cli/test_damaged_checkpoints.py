"""Damaged or incomplete checkpoints, built from the shipped mini model: each is refused before any compute with one
`error:` line naming the file or the weights and what to do, exit status 2, no traceback, and never run with random
weights (the worst failure: a checkpoint missing lm_head loaded silently and scored 0 %)."""

from __future__ import annotations

import os
import shutil

import pytest
from click.testing import CliRunner

from tokenbench.cli import main
from tokenbench.models.llava import MINI_LLAVA

LM_HEAD = "language_model.lm_head.weight"


def _weights(d):
    from safetensors.torch import load_file

    return load_file(os.path.join(d, "model.safetensors"))


def _save(d, tensors):
    from safetensors.torch import save_file

    save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})


def missing_lm_head(d):
    t = _weights(d)
    t.pop(LM_HEAD)
    _save(d, t)


def truncated(d):
    from pathlib import Path

    path = Path(d) / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def random_bytes(d):
    with open(os.path.join(d, "model.safetensors"), "wb") as fh:
        fh.write(os.urandom(4096))


def wrong_shape(d):
    t = _weights(d)
    key = next(k for k in sorted(t) if k.endswith("q_proj.weight"))
    t[key] = t[key][:, :-1].contiguous()
    _save(d, t)


def unexpected(d):
    t = _weights(d)
    t["extra.weight"] = t[LM_HEAD].clone()
    _save(d, t)


def corrupt_config(d):
    with open(os.path.join(d, "config.json"), "w") as fh:
        fh.write('{"model_type": ')


def list_config(d):
    with open(os.path.join(d, "config.json"), "w") as fh:
        fh.write("[1, 2]")


def pickled_only(d):
    os.rename(os.path.join(d, "model.safetensors"), os.path.join(d, "pytorch_model.bin"))


def no_weights(d):
    os.remove(os.path.join(d, "model.safetensors"))


CASES = [
    (missing_lm_head, "", ["1 weight(s) missing from the weights files", "lm_head.weight"]),
    (truncated, "", ["model.safetensors' is damaged or not a safetensors file"]),
    (random_bytes, "", ["model.safetensors' is damaged or not a safetensors file"]),
    (wrong_shape, "", ["of the wrong shape", "q_proj.weight (file (64, 63), model (64, 64))"]),
    (unexpected, "", ["in the files but not in the model: extra.weight"]),
    (corrupt_config, "", ["config.json' is not valid JSON"]),
    (list_config, "", ["config.json' holds a JSON list, not an object"]),
    (pickled_only, "", ["has only pickled weights (pytorch_model.bin)", "safetensors only", "save_pretrained"]),
    (no_weights, "", ["has no weights (no .safetensors file)"]),
    (lambda d: None, "qwen2.5-vl:", ["holds a 'llava' checkpoint, which the 'qwen2.5-vl' family does not load"]),
    (lambda d: None, "llava-next:", ["holds a 'llava' checkpoint, which the 'llava-next' family does not load"]),
]


@pytest.mark.parametrize("damage, prefix, fragments", CASES, ids=[c[0].__name__ + c[1] for c in CASES])
def test_a_damaged_checkpoint_is_one_clear_error(tmp_path, damage, prefix, fragments):
    model = str(tmp_path / "ckpt")
    shutil.copytree(MINI_LLAVA, model, ignore=shutil.ignore_patterns("calibration"))
    damage(model)
    out = tmp_path / "rows.json"
    result = CliRunner().invoke(main, ["compare", "fastv", "-n", "2", "--repeats", "1", "--warmup", "0", "-q",
                                       "--no-store", "-M", prefix + model, "--json", str(out)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, (KeyError, TypeError, RuntimeError))
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0]
    assert not out.exists()  # refused before any compute: nothing written
