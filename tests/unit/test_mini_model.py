"""tokenbench-mini: the shipped LLaVA-1.5 mini model loads through from_pretrained and keeps its documented accuracy."""

from __future__ import annotations

import json
import os

import pytest

from tokenbench.models.llava import MINI_LLAVA

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def test_shipped_files_are_safetensors_and_small():
    names = set(os.listdir(MINI_LLAVA))
    assert {"model.safetensors", "config.json", "tokenizer.json", "processor_config.json", "training.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl")) for n in names)  # nothing pickled
    assert os.path.getsize(os.path.join(MINI_LLAVA, "model.safetensors")) <= 10 * 2**20


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


def test_accuracy_on_100_held_out_samples_is_the_documented_figure():
    """Within 3 points of full's accuracy in the committed leaderboard results (500 held-out samples)."""
    from tokenbench.results.suites import MINI_SUITE, results_name
    from tokenbench.harness.compare import RunSpec, compare

    with open(os.path.join(ROOT, "leaderboards", "results", results_name(MINI_SUITE))) as f:
        documented = next(r["accuracy"] for r in json.load(f) if r["method"] == "full")
    (row,) = compare(RunSpec(methods=(), model="mini-llava", limit=100, batch_size=25, warmup=0, repeats=1,
                             task_options=dict(MINI_SUITE["task_options"])), progress=False)
    assert row["n_samples"] == 100
    assert row["accuracy"] == pytest.approx(documented, abs=0.03), (row["accuracy"], documented)
