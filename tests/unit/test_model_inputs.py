"""How a model's input is made, chosen per run: the prompt style (the chat template, lmms-eval's default, or LLaVA's
own conversation template behind its published numbers) and Qwen2.5-VL's image pixel range (lmms-eval's by default,
the checkpoint's one option away). Rows record both, and the store never serves one's samples to the other."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tokenbench.cli import main
from tokenbench.errors import ConfigError
from tokenbench.harness.resolve import resolve_model

# LLaVA's llava/conversation.py (c121f04): conv_vicuna_v1, SeparatorStyle.TWO, sep " ", roles USER/ASSISTANT; one turn
# with the image token and a newline before the question (model_vqa_loader.py), the assistant's turn opened
VICUNA = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions. USER: <image>\nIs there a cat? ASSISTANT:")


def test_llava_style_is_llavas_conv_vicuna_v1_and_chat_is_the_default(adapter_factory):
    adapter = resolve_model("tiny-llava").configure(prompt_style="llava")
    assert adapter.styled("Is there a cat?") == VICUNA
    default = adapter_factory("tiny-llava")
    assert default.prompt_style == "chat" and default.chat("Is there a cat?") == "USER: <image>\nIs there a cat? ASSISTANT:"
    assert resolve_model("llava-next-7b").configure(prompt_style="llava").styled("Is there a cat?") == VICUNA
    mistral = resolve_model("llava-next-mistral-7b").configure(prompt_style="llava")
    assert mistral.styled("Is there a cat?") == "[INST] <image>\nIs there a cat? [/INST]"  # mistral_instruct


@pytest.mark.parametrize("pixels,counts", [
    ("lmms-eval", [276, 266, 391, 1980]),  # lmms-eval's min_pixels=256*28*28, max_pixels=2048*28*28
    ("checkpoint", [162, 234, 391, 2691]),  # the card's 3,136-12,845,056
])
def test_qwen_visual_tokens_follow_the_pixel_range(pixels, counts):
    adapter = resolve_model("qwen2.5-vl-7b").configure(image_pixels=pixels).load_config()
    assert [adapter.layout(s).n_visual for s in [(500, 243), (500, 375), (640, 480), (1920, 1080)]] == counts
    assert adapter.input_setup()["image_pixels"] == pixels


def test_the_default_is_lmms_evals_range_and_the_processor_resizes_into_it(adapter_factory):
    assert resolve_model("qwen2.5-vl-7b").image_pixels == "lmms-eval"
    from tokenbench.testing import synthetic_samples

    sample = synthetic_samples(1)[0]
    adapter = resolve_model("tiny-qwen2.5-vl").configure(image_pixels="lmms-eval").load()
    assert adapter.pixel_range() == (200704, 1605632)
    assert adapter.encode([sample]).layout.n_visual == adapter.layout_of(sample).n_visual == 256  # 336 px -> 448 px
    assert adapter_factory("tiny-qwen2.5-vl").layout_of(sample).n_visual == 144  # its own range: 336 px as given


@pytest.mark.parametrize("model,kw,message", [
    ("tiny-qwen2.5-vl", {"prompt_style": "llava"}, "has no prompt style 'llava'"),
    ("tiny-llava", {"image_pixels": "checkpoint"}, "resizes every image to one size"),
    ("tiny-qwen2.5-vl", {"image_pixels": "huge"}, "has no image pixel range 'huge'; it has lmms-eval, checkpoint"),
])
def test_a_setting_the_model_does_not_have_is_refused(model, kw, message):
    with pytest.raises(ConfigError, match=message):
        resolve_model(model).configure(**kw)


def _compare(tmp_path, *args):
    out = CliRunner().invoke(main, ["compare", "divprune", "-M", "tiny-llava", "-n", "2", "-k", "16", "--repeats", "1",
                                    "--warmup", "0", "-q", "--store", str(tmp_path / "s.sqlite"),
                                    "--json", str(tmp_path / "rows.json"), *args])
    assert out.exit_code == 0, out.output
    rows = json.loads((tmp_path / "rows.json").read_text())
    return {r["method"]: r for r in (rows["rows"] if isinstance(rows, dict) else rows)}


def test_rows_record_the_style_and_positions_and_the_store_keeps_styles_apart(tmp_path):
    chat = _compare(tmp_path)
    assert chat["full"]["prompt_style"] == "chat" and chat["divprune"]["positions"] == "contiguous"
    assert chat["full"]["positions"] == "original" and chat["full"]["n_visual_range"] == [576, 576]
    assert "image_pixels" not in chat["full"]  # LLaVA-1.5 has no range to choose
    llava = _compare(tmp_path, "--prompt-style", "llava")
    assert llava["full"]["prompt_style"] == "llava"
    assert llava["full"]["store"]["samples_computed"] == 2  # not chat's samples read back
    again = _compare(tmp_path, "--prompt-style", "llava")
    assert again["full"]["store"]["samples_reused"] == 2
    original = _compare(tmp_path, "-a", "divprune.positions=original")
    assert original["divprune"]["positions"] == "original"
