"""Model resolution and loading: registered names, family:source, checkpoint directories, the tiny variant."""

from __future__ import annotations

import json
import os

import pytest
import torch

from tokenbench.errors import ConfigError, UnknownNameError
from tokenbench.harness.resolve import resolve_model


def test_tiny_llava_is_saved_as_safetensors_and_reloads_identically(adapter_factory):
    adapter = adapter_factory("tiny-llava")
    files = os.listdir(adapter.source)
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    with open(os.path.join(adapter.source, "config.json")) as fh:
        assert json.load(fh)["model_type"] == "llava"
    again = resolve_model(adapter.source).load()  # a plain directory, through from_pretrained
    assert type(again).__name__ == "LlavaAdapter" and again.source == adapter.source
    for (name, a), (_, b) in zip(adapter.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_family_source_and_presets():
    assert resolve_model("llava-1.5-7b").source == "llava-hf/llava-1.5-7b-hf"
    assert resolve_model("llava").source == "llava-hf/llava-1.5-7b-hf"
    assert resolve_model("llava:some-org/some-llava").source == "some-org/some-llava"
    with pytest.raises(ConfigError, match="does not take a source"):
        resolve_model("llava-1.5-7b:x/y")


def test_bad_model_specs():
    with pytest.raises(UnknownNameError, match="Did you mean 'tiny-llava'"):
        resolve_model("tiny-lava")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_model("./no/such/checkpoint")


def test_directory_without_known_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match="'bert'"):
        resolve_model(str(tmp_path))


def test_load_rejects_bad_device_and_dtype():
    with pytest.raises(ConfigError, match="dtype"):
        resolve_model("tiny-llava").load(dtype="float8")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"device 'cuda' is not available here \(no CUDA\); use --device cpu"):
            resolve_model("tiny-llava").load(device="cuda")
