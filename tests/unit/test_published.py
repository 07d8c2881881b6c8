"""Published full-model scores (``tokenbench/data/published.json``, :mod:`tokenbench.results.published`): the shipped
file loads and says what the sources say, a damaged one is one clear error, a row is recognised by its registered
model or its checkpoint, ``compare``'s table sets full's figure beside the published one, and ``tokenbench list
published`` prints them."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tokenbench.api import MODELS, TASKS
from tokenbench.cli import main
from tokenbench.contract.task import Sample
from tokenbench.errors import ConfigError
from tokenbench.results.published import default_path, load, model_of, published_all, published_for, shipped
from tokenbench.results.tables import format_table


def _entry(scores, model, task, metric):
    return next(e for e in scores.entries if (e.model, e.task, e.metric) == (model, task, metric))


# -- the shipped file --------------------------------------------------------------------------------------------------
def test_the_shipped_scores_are_the_sources_numbers_on_tokenbench_scale():
    scores = shipped()
    assert len(scores.entries) == 29
    pope = _entry(scores, "llava-1.5-7b", "pope", "f1_mean_categories")
    assert (pope.value, pope.published, pope.percent, pope.prompt) == (0.859, "85.9", True, "llava")
    assert pope.source.name == "LLaVA MODEL_ZOO" and "c121f0432da27facab705978f83c4ada465e46fd" in pope.source.url
    mme = _entry(scores, "llava-1.5-7b", "mme", "perception")
    assert (mme.value, mme.percent) == (1510.7, False)
    assert _entry(scores, "llava-1.5-7b", "textvqa", "accuracy").task_options == {"ocr": True}
    qwen = _entry(scores, "qwen2.5-vl-3b", "mme", "cognition")
    assert (qwen.value, qwen.prompt, qwen.source.key) == (614.28, "chat", "lmms-eval-0.4")
    assert {(e.model, e.published) for e in scores.entries if e.task == "gqa"} == {
        ("llava-1.5-7b", "62.0"), ("llava-next-7b", "64.2"), ("llava-next-mistral-7b", "64.8")}


def test_each_entry_names_a_registered_model_checkpoint_task_and_scale():
    scores = shipped()
    for name, facts in scores.models.items():
        assert MODELS.get(name)().source in facts["hub"], name  # the registered checkpoint is one the file knows
    for e in scores.entries:
        task = TASKS.get(e.task)
        assert task.percent == e.percent, (e.model, e.task)
        # the primary metric, or one the task reports beside it (checked below), or seed_all (never compared)
        assert e.metric in (task.primary_metric, "f1_mean_categories", "cognition", "seed_all"), e


def test_the_metrics_the_entries_name_are_the_ones_pope_and_mme_report():
    pope = TASKS.get("pope")()
    samples = [Sample(id=str(i), image=None, question="q", answer=a, meta={"category": c, "question_id": str(i)})
               for i, (a, c) in enumerate([("yes", "adversarial"), ("no", "popular"), ("yes", "random")])]
    assert "f1_mean_categories" in pope.evaluate(samples, ["yes", "no", "no"]).metrics
    mme = TASKS.get("mme")()
    samples = [Sample(id=str(i), image=None, question="q", answer=a, meta={"category": c, "question_id": f"{c}/0"})
               for i, (a, c) in enumerate([("Yes", "existence"), ("No", "existence"), ("Yes", "code_reasoning"),
                                           ("No", "code_reasoning")])]
    assert {"perception", "cognition"} <= set(mme.evaluate(samples, ["yes", "no", "yes", "yes"]).metrics)
    assert TASKS.get("seedbench").primary_metric == "seed_image"  # so the seed_all entry matches no row


# -- a damaged file ----------------------------------------------------------------------------------------------------
def _damaged(tmp_path, change) -> str:
    with open(default_path(), encoding="utf-8") as f:
        data = json.load(f)
    change(data)
    path = tmp_path / "published.json"
    path.write_text(json.dumps(data))
    return str(path)


def _first(**fields):
    return lambda data: data["entries"][0].update(fields)


@pytest.mark.parametrize("change, words", [
    (_first(value=62.0, published="6200.0"), ["entry 0", "not a share in [0, 1]", "0.859"]),
    (_first(published="61.0"), ["entry 0", "published 61.0 is not value 0.62"]),
    (_first(model="llava-1.5-8b"), ["model 'llava-1.5-8b' is not among 'models'"]),
    (_first(source="paper"), ["source 'paper' is not among 'sources'"]),
    (_first(prompt="vicuna"), ["prompt 'vicuna' is not one of llava, chat"]),
    (_first(percent="yes"), ["field 'percent'", "'yes' is not a boolean"]),
    (_first(value=True), ["field 'value'", "True is not a number"]),
    (_first(scorer=" "), ["field 'scorer'", "non-empty string"]),
    (_first(comment="x"), ["unknown field(s) comment"]),
    (lambda data: data["entries"][0].pop("metric"), ["field 'metric': missing"]),
    (lambda data: data["entries"].append(dict(data["entries"][0])), ["llava-1.5-7b gqa accuracy", "appears twice"]),
    (lambda data: data["models"]["llava-1.5-7b"].update(hub="llava-1.5-7b-hf"), ["model 'llava-1.5-7b'", "'hub'"]),
    (lambda data: data["sources"]["llava-model-zoo"].pop("url"), ["source 'llava-model-zoo'", "url"]),
    (lambda data: data.pop("entries"), ["'entries' (a list)"]),
])
def test_a_damaged_file_is_one_clear_error(tmp_path, change, words):
    path = _damaged(tmp_path, change)
    with pytest.raises(ConfigError) as caught:
        load(path)
    message = str(caught.value)
    assert message.startswith(f"published scores {path}")
    for word in words:
        assert word in message, (word, message)


def test_a_file_that_is_not_json_says_so(tmp_path):
    path = tmp_path / "published.json"
    path.write_text('{"entries": [')
    with pytest.raises(ConfigError, match="cannot be read"):
        load(str(path))


# -- matching a row ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("row, model", [
    ({"model": "llava-1.5-7b"}, "llava-1.5-7b"),
    ({"model": "llava:llava-hf/llava-1.5-7b-hf", "model_source": "llava-hf/llava-1.5-7b-hf"}, "llava-1.5-7b"),
    ({"model": "llava:llava-hf/llava-1.5-7b-hf"}, "llava-1.5-7b"),  # no model_source: the part after 'family:'
    ({"model": "llava:/data/llava-1.5-7b-hf/", "model_source": "/data/llava-1.5-7b-hf/"}, "llava-1.5-7b"),
    ({"model": "llava", "model_source": "/hf/hub/models--llava-hf--llava-1.5-7b-hf/snapshots/abc"}, "llava-1.5-7b"),
    ({"model": "llava-next:LLaVA-HF/llava-v1.6-mistral-7b-hf"}, "llava-next-mistral-7b"),
    ({"model": "qwen2.5-vl:Qwen/Qwen2.5-VL-3B-Instruct"}, "qwen2.5-vl-3b"),
    ({"model": "llava:llava-hf/llava-1.5-13b-hf"}, None),
    ({"model": "qwen2.5-vl-7b", "model_source": "Qwen/Qwen2.5-VL-7B-Instruct"}, None),
    ({"model": "mini-llava", "model_source": "/x/models/mini/llava-1.5"}, None),
    ({"model": "tiny-llava", "model_source": "/cache/models/tiny-llava-seed0"}, None),
])
def test_a_row_is_recognised_by_its_registered_name_or_its_checkpoint(row, model):
    assert model_of(row) == model


def test_an_entry_matches_model_task_and_a_metric_the_row_reports():
    row = {"model": "llava:llava-hf/llava-1.5-7b-hf", "task": "pope", "metric": "f1",
           "metrics": {"f1": 0.85, "f1_mean_categories": 0.84}}
    assert published_for(row).published == "85.9"
    assert published_for(dict(row, metrics={"f1": 0.85})) is None  # the published metric is not in the row
    assert published_for(dict(row, task="synthetic")) is None
    assert published_for(dict(row, model="llava-1.5-13b")) is None
    mme = {"model": "llava-next-7b", "task": "mme", "metric": "perception", "metrics": {"perception": 1400.0,
                                                                                         "cognition": 300.0}}
    assert [e.metric for e in published_all(mme)] == ["perception", "cognition"]
    assert published_for(dict(mme, metric="cognition")).metric == "cognition"  # the row's primary metric first
    seed = {"model": "llava-1.5-7b", "task": "seedbench", "metric": "seed_image", "metrics": {"seed_image": 0.66}}
    assert published_for(seed) is None


# -- the note under compare's table ------------------------------------------------------------------------------------
def _row(method: str, task: str, metrics: dict, model: str = "llava-1.5-7b", percent: bool = True, **extra) -> dict:
    primary = next(iter(metrics))
    return {"method": method, "model": model, "task": task, "n_samples": 300, "device": "cuda",
            "dtype": "bfloat16", "attn_implementation": "sdpa", "decode_tokens": 4, "timing_repeats": 5,
            "keep": 576 if method == "full" else 64, "budget": "all" if method == "full" else "64",
            "budget_kind": "kept", "metric": primary,
            "score": metrics[primary], "metric_percent": percent, "metrics": metrics, "accuracy": 0.5,
            "retention": 1.0, "agreement": 1.0, "kl_first_token": 0.0, "tokens_llm_input": 576,
            "tokens_avg_layer": 576.0, "flops_prefill": 1e12, "flops_ratio": 1.0, "speedup_prefill": 1.0,
            "warnings": [], **extra}


def _published_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("published:")]


def test_full_is_printed_beside_the_published_score_with_the_difference():
    pope = {"f1": 0.85, "f1_mean_categories": 0.841}
    rows = [_row("full", "pope", pope, model="llava:llava-hf/llava-1.5-7b-hf"),
            _row("fastv", "pope", {"f1": 0.80, "f1_mean_categories": 0.79})]
    lines = _published_lines(format_table(rows))
    assert len(lines) == 1
    assert lines[0].startswith("published: llava-1.5-7b pope f1_mean_categories 85.9 (LLaVA MODEL_ZOO, prompt llava, "
                               "LLaVA's eval_pope.py); full here 84.1 (-1.8) on 300 samples, prompt chat")
    assert "caveat: the mean of the three categories' F1" in lines[0]


def test_the_line_says_when_the_prompt_or_a_task_option_differs_from_the_published_ones():
    ocr_off = _row("full", "textvqa", {"accuracy": 0.5853}, task_options={"ocr": False})
    [line] = _published_lines(format_table([ocr_off]))
    assert "full here 58.5 (+0.3)" in line
    assert "prompt chat (differs from the published llava)" in line  # a row without prompt_style ran chat
    assert "task option ocr=false here, ocr=true published" in line
    same = dict(ocr_off, prompt_style="llava", task_options={"ocr": True})
    [line] = _published_lines(format_table([same]))
    assert "prompt llava (as published)" in line and "differs" not in line and "task option" not in line
    qwen = _row("full", "mme", {"perception": 1534.44, "cognition": 600.0}, model="qwen2.5-vl-3b", percent=False,
                prompt_style="chat")
    lines = _published_lines(format_table([qwen]))
    assert [line.split(";")[1].strip() for line in lines] == [
        "full here 1534.44 (+0.00) on 300 samples, prompt chat (as published)",
        "full here 600.00 (-14.28) on 300 samples, prompt chat (as published)"]


def test_nothing_is_added_where_nothing_is_published():
    mini = [_row("full", "synthetic", {"accuracy": 0.9}, model="mini-llava"),
            _row("alvts", "synthetic", {"accuracy": 0.8}, model="mini-llava")]
    assert "published" not in format_table(mini)
    no_full = [_row("fastv", "pope", {"f1": 0.8, "f1_mean_categories": 0.79})]  # full's row is the one compared
    assert "published" not in format_table(no_full)
    two_tasks = [_row("full", "pope", {"f1": 0.85, "f1_mean_categories": 0.841}),
                 _row("full", "synthetic", {"accuracy": 0.9})]
    text = format_table(two_tasks)
    assert len(_published_lines(text)) == 1 and text.index("published:") < text.index("task=synthetic")


# -- tokenbench list published -----------------------------------------------------------------------------------------
def test_list_published_prints_every_score_with_its_source():
    result = CliRunner().invoke(main, ["list", "published"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    pope = next(line for line in lines if line.startswith("llava-1.5-7b") and " pope " in line)
    assert pope.split()[:5] == ["llava-1.5-7b", "pope", "f1_mean_categories", "85.9", "llava"]
    assert any(line.split()[:4] == ["llava-1.5-7b", "gqa", "accuracy", "62.0"] for line in lines)  # as printed
    assert sum(1 for line in lines if line.split(" ")[0] in shipped().models) == 29  # table rows (caveats indent)
    assert "https://github.com/haotian-liu/LLaVA/blob/c121f0432da27facab705978f83c4ada465e46fd" in result.output
    assert "llava-1.5-7b: llava-hf/llava-1.5-7b-hf (published as liuhaotian/llava-v1.5-7b)" in result.output
    assert "llava-1.5-7b seedbench seed_all: LLaVA's SEED run covers image and video questions" in result.output
    bad = CliRunner().invoke(main, ["list", "publishd"])
    assert bad.exit_code == 2 and "published" in bad.output


def test_a_qwen_score_says_when_the_run_used_another_pixel_range():
    from tokenbench.results.published import published_for
    from tokenbench.results.tables import published_line

    row = {"model": "qwen2.5-vl-3b", "task": "ai2d", "method": "full", "metric": "exact_match",
           "metrics": {"exact_match": 0.75}, "n_samples": 10, "prompt_style": "chat"}
    for pixels, differs in (("lmms-eval", False), ("checkpoint", True)):
        entry = published_for({**row, "image_pixels": pixels})
        assert entry is not None and entry.image_pixels == "lmms-eval"
        line = published_line({**row, "image_pixels": pixels}, entry)
        assert ("image pixels checkpoint here, lmms-eval published" in line) is differs, line
