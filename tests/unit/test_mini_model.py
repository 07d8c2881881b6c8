"""tokenbench-mini: the shipped mini models (LLaVA-1.5, LLaVA-NeXT, Qwen2.5-VL) load through from_pretrained, are
small and unpickled, and keep their documented accuracy (at least 0.95 on held-out samples)."""

from __future__ import annotations

import json
import os

import pytest

from tokenbench.models.llava import MINI_LLAVA
from tokenbench.models.llava_next import MINI_LLAVA_NEXT
from tokenbench.models.qwen2_5_vl import MINI_QWEN

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
#: the shipped minis
MINIS = {"mini-llava": MINI_LLAVA, "mini-llava-next": MINI_LLAVA_NEXT, "mini-qwen2.5-vl": MINI_QWEN}


@pytest.mark.parametrize("arch", ["llava-1.5", "llava-next", "qwen2.5-vl"])
def test_a_mini_not_in_the_tree_says_how_to_train_it(arch, tmp_path, monkeypatch):
    """A registered mini whose checkpoint is absent (not trained yet, a sparse checkout: here a models/mini/ without
    checkpoints) is one error pointing at the commands that train it."""
    import tokenbench.models.mini as mini
    from tokenbench.errors import ConfigError
    from tokenbench.hf.checkpoint import read_config

    sparse = tmp_path / "mini"
    (sparse / arch).mkdir(parents=True)
    monkeypatch.setattr(mini, "__file__", str(sparse / "__init__.py"))
    with pytest.raises(ConfigError, match=f"train it with the commands models/mini/README.md gives for {arch}/, "
                                          f"`python -m tokenbench.models.mini.train --arch {arch} ...`"):
        read_config(str(sparse / arch))
    with pytest.raises(ConfigError, match="has no config.json; give a directory written by save_pretrained$"):
        read_config(str(tmp_path))  # any other directory: no hint


@pytest.mark.parametrize("name", MINIS)
def test_shipped_files_are_safetensors_and_small(name):
    directory = MINIS[name]
    names = set(os.listdir(directory))
    assert {"model.safetensors", "config.json", "tokenizer.json", "training.json"} <= names
    # the processor's settings: LLaVA's processor writes processor_config.json, Qwen2.5-VL's preprocessor_config.json
    assert names & {"processor_config.json", "preprocessor_config.json"}
    assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl")) for n in names)  # nothing pickled
    assert os.path.getsize(os.path.join(directory, "model.safetensors")) <= 10 * 2**20
    assert os.path.isfile(os.path.join(directory, "calibration", "alvts", "rank4-mean.safetensors"))
    assert not os.path.exists(os.path.join(directory, ".train-state"))  # a finished run


def test_every_task_word_is_one_known_token():
    from tokenbench.models.mini.tokenizer import word_tokenizer
    from tokenbench.tasks.synthetic import SyntheticTask

    tok = word_tokenizer()
    for s in SyntheticTask(n=64).samples():
        ids = tok(f"USER: {s.question} ASSISTANT: {s.answer}")["input_ids"]
        assert tok.unk_token_id not in ids, s.question
        assert tok.convert_ids_to_tokens(ids[-1]) == s.answer  # each answer is a single token


def test_loads_through_from_pretrained_and_answers():
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from tokenbench.tasks.synthetic import SyntheticTask

    model = LlavaForConditionalGeneration.from_pretrained(MINI_LLAVA, use_safetensors=True).eval()
    processor = AutoProcessor.from_pretrained(MINI_LLAVA)
    samples = SyntheticTask(n=8).samples()
    enc = processor(images=[s.image for s in samples], text=[f"USER: <image>\n{s.question} ASSISTANT:" for s in samples],
                    return_tensors="pt", padding=True)
    assert (enc["input_ids"] == model.config.image_token_id).sum(1).tolist() == [144] * 8  # 12 x 12 patches of 28 px
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=3, do_sample=False)
    answers = processor.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert sum(a.strip() == s.answer for a, s in zip(answers, samples)) >= 6, answers


@pytest.mark.parametrize("name", MINIS)
def test_accuracy_on_held_out_samples_is_the_documented_figure(name):
    """The committed board's `full` accuracy is at least 0.95, and a fresh run of the first samples (100; 50 on the
    two mixed-aspect minis) answers them as the committed per-sample results say, within 2 samples (batches of
    other sizes pad differently)."""
    from tokenbench.harness.compare import RunSpec, compare
    from tokenbench.results.suites import results_name, suite_of

    suite = suite_of(name)
    with open(os.path.join(ROOT, "leaderboards", "results", results_name(suite))) as f:
        documented = next(r for r in json.load(f) if r["method"] == "full")
    assert documented["accuracy"] >= 0.95 and documented["n_samples"] == suite["task_options"]["n"]
    limit = 100 if name == "mini-llava" else 50
    (row,) = compare(RunSpec(methods=(), model=name, limit=limit, batch_size=25, warmup=0, repeats=1,
                             task_options=dict(suite["task_options"])), progress=False)
    expected = documented["per_sample_correct"][:limit].count("1") / limit
    assert row["n_samples"] == limit
    assert row["accuracy"] == pytest.approx(expected, abs=2 / limit + 1e-9), (row["accuracy"], expected)
