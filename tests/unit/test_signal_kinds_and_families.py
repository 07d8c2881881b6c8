"""A model family adds its signal kinds and its family key from models/ alone (issue 26): declare_signal, the kinds a
Need validates against before any model is loaded, and the one spelling of each family key."""

import subprocess
import sys

import pytest

from tokenbench.api import Need, declare_signal, model_family
from tokenbench.contract import signals
from tokenbench.errors import PluginValidationError


@pytest.fixture
def scratch_kind():
    """A kind name no module declares, removed again after the test (the registry is process-wide)."""
    name = "test_scratch_signal"
    yield name
    signals._KINDS.pop(name, None)
    signals.NEED_KINDS.pop(name, None)


def test_a_kind_a_model_module_declares_validates_in_a_fresh_process_without_torch():
    code = ("import sys; from tokenbench.api import Need; Need('vision_received'); Need('cls_attn'); "
            "from tokenbench.api import build_method; build_method('visionzip').steps(32); "
            "assert not any(m.split('.')[0] in ('torch', 'transformers') for m in sys.modules), 'heavy import'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_an_unknown_kind_is_refused_naming_every_valid_kind_core_and_declared():
    with pytest.raises(PluginValidationError, match="unknown need kind 'cls_atn'") as err:
        Need("cls_atn")
    for kind in ("attn", "keys", "visual_embeds", "cls_attn", "vision_received", "vision_features"):
        assert kind in str(err.value)


def test_declared_kinds_follow_their_stage(scratch_kind):
    kind = declare_signal(scratch_kind, "a test kind: (B, N)", "pre_llm")
    assert kind.declared_by == __name__ and signals.NEED_KINDS[scratch_kind] == "a test kind: (B, N)"
    assert scratch_kind in signals.PRE_LLM_NEEDS
    Need(scratch_kind)  # before the LLM: no layer
    with pytest.raises(PluginValidationError, match="computed before the LLM; give no layer"):
        Need(scratch_kind, layer=2)


def test_a_layer_kind_needs_its_layer(scratch_kind):
    declare_signal(scratch_kind, "a per-layer test kind", "layer")
    Need(scratch_kind, layer=1)
    with pytest.raises(PluginValidationError, match="needs the LLM layer"):
        Need(scratch_kind)


def test_declaring_a_kind_again_keeps_the_first_and_another_stage_is_refused(scratch_kind):
    first = declare_signal(scratch_kind, "first", "pre_llm")
    assert declare_signal(scratch_kind, "second", "pre_llm") is first and signals.NEED_KINDS[scratch_kind] == "first"
    with pytest.raises(PluginValidationError, match="before the LLM.*at an LLM layer.*another name"):
        declare_signal(scratch_kind, "third", "layer")
    with pytest.raises(PluginValidationError, match="declared by tokenbench.contract.signals"):
        declare_signal("attn", "a second meaning", "pre_llm")


@pytest.mark.parametrize("name, stage, fragment", [
    ("Bad-Name", "pre_llm", "lower case letters"), ("", "pre_llm", "lower case letters"),
    ("ok_name", "decoder", "stage 'decoder' is not one of layer, pre_llm"),
])
def test_bad_declarations_are_refused(name, stage, fragment):
    with pytest.raises(PluginValidationError, match=fragment):
        declare_signal(name, "x", stage)
    assert name not in signals.NEED_KINDS


def test_each_family_key_has_one_spelling_and_its_lmms_eval_model():
    for family, lmms in (("llava", "llava_hf"), ("llava-next", "llava_hf"), ("qwen2.5-vl", "qwen2_5_vl")):
        adapter = model_family(family)
        assert adapter.family == family and adapter.lmms_eval_model == lmms
    with pytest.raises(PluginValidationError, match="unknown model family 'llava_next'. Did you mean 'llava-next'"):
        model_family("llava_next")
