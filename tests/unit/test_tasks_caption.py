"""Captioning tasks (coco_cap, nocaps) and their scorer (tokenbench.data.scoring.caption): loading from every local form,
prompts, metrics worked out by hand, lmms-eval's own aggregation on the same predictions, and the edge cases.

Scoring runs pycocoevalcap's Java tools: the PTB tokenizer (a fraction of a second per call) and METEOR (seconds to
start, once per test process: the scorer keeps its process)."""

from __future__ import annotations

import math
import shutil
from types import SimpleNamespace

import datasets
import pytest

from task_fixtures import FIXTURES
from tokenbench.errors import ConfigError
from tokenbench.harness.resolve import build_task
from tokenbench.data.scoring import caption
from tokenbench.data.scoring.caption import METRICS, score_captions
from tokenbench.testing import write_task_data

TASKS = ("coco_cap", "nocaps")
PROMPT = "Provide a one-sentence caption for the provided image."
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap's tokenizer and METEOR need java")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Each fixture in every local form --data accepts: task -> {form: path}."""
    return {name: write_task_data(FIXTURES[name](), str(tmp_path_factory.mktemp(name))) for name in TASKS}


def samples_of(name, path, **options):
    return build_task(name, {"data": path, **options}, seed=0).samples()


# -- loading -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TASKS)
def test_every_local_form_gives_the_same_samples(name, written):
    def view(path):
        return [(s.id, s.question, s.answer, s.meta, tuple(s.image.size)) for s in samples_of(name, path)]

    first = view(written[name]["save_to_disk"])
    for form, path in written[name].items():
        assert view(path) == first, f"{name}: --data as {form} differs from save_to_disk"


def test_coco_samples_follow_the_rows(written):
    rows = FIXTURES["coco_cap"]()
    samples = samples_of("coco_cap", written["coco_cap"]["parquet"])
    assert [s.id for s in samples] == rows["question_id"] == ["000000397133.jpg", "000000037777.jpg",
                                                              "000000252219.jpg", "000000087038.jpg",
                                                              "000000174482.jpg", "000000403385.jpg"]
    assert [s.answer for s in samples] == rows["answer"] and all(len(s.answer) == 5 for s in samples)
    assert [s.meta["image_id"] for s in samples] == [397133, 37777, 252219, 87038, 174482, 403385]  # lmms-eval's rule
    assert [tuple(s.image.size) for s in samples] == list(zip(rows["width"], rows["height"]))
    assert {s.question for s in samples} == {PROMPT}  # the dataset's own "question" column is not used (as lmms-eval)
    assert [s.id for s in build_task("coco_cap", {"data": written["coco_cap"]["jsonl"]}, seed=0).samples(2)] == \
        rows["question_id"][:2]


def test_nocaps_samples_follow_the_rows(written):
    rows = FIXTURES["nocaps"]()
    samples = samples_of("nocaps", written["nocaps"]["jsonl"])
    assert [s.id for s in samples] == ["0", "1", "2", "3", "4"]
    assert [s.answer for s in samples] == rows["annotations_captions"] and all(len(s.answer) == 10 for s in samples)
    assert [s.meta["image_id"] for s in samples] == [0, 1, 2, 3, 4]
    assert [tuple(s.image.size) for s in samples] == list(zip(rows["image_width"], rows["image_height"]))


def test_task_settings_and_datasets():
    coco, nocaps = build_task("coco_cap", {}, seed=0), build_task("nocaps", {}, seed=0)
    for task in (coco, nocaps):
        assert (task.max_new_tokens, task.primary_metric, task.percent) == (64, "CIDEr", False)
    assert coco.dataset_ids() == ("lmms-lab-encoder/COCO-Caption2017", "lmms-lab/COCO-Caption2017")
    assert (coco.split, nocaps.split) == ("val", "validation")
    assert nocaps.dataset_ids() == ("lmms-lab-encoder/NoCaps", "lmms-lab/NoCaps")
    old = build_task("coco_cap", {"year": "2014"}, seed=0)
    assert old.dataset_ids() == ("lmms-lab-encoder/COCO-Caption", "lmms-lab/COCO-Caption")
    assert type(old).default_dataset().startswith("lmms-lab-encoder/COCO-Caption2017 ")  # the class keeps it
    assert old.version != coco.version
    with pytest.raises(ConfigError, match="'2017'.*'2014'"):
        build_task("coco_cap", {"year": "2015"}, seed=0)


def test_a_corrupt_image_gives_a_failed_sample(tmp_path):
    ds = FIXTURES["coco_cap"]().cast_column("image", datasets.Image(decode=False))
    ds = ds.map(lambda row, i: {"image": {"bytes": b"not an image" if i == 1 else row["image"]["bytes"], "path": None}},
                with_indices=True, features=ds.features)
    path = write_task_data(ds.cast_column("image", datasets.Image()), str(tmp_path), forms=("parquet",))["parquet"]
    samples = samples_of("coco_cap", path)
    assert samples[1].image is None and "decoded" in samples[1].meta["error"]
    assert samples[1].id == "000000037777.jpg" and len(samples[1].answer) == 5
    assert all(s.image is not None and "error" not in s.meta for i, s in enumerate(samples) if i != 1)


# -- prompts -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TASKS)
def test_prompt_snapshot(name, written):
    task = build_task(name, {"data": written[name]["save_to_disk"]}, seed=0)
    sample = task.samples(1)[0]
    # lmms-eval: coco_doc_to_text / nocaps' default prompt, no pre- or post-prompt for llava_hf or qwen2_5_vl
    assert task.prompt(sample, "llava") == "Provide a one-sentence caption for the provided image."
    assert task.prompt(sample, "llava-next") == "Provide a one-sentence caption for the provided image."
    assert task.prompt(sample, "qwen2.5-vl") == "Provide a one-sentence caption for the provided image."


# -- scoring by hand ---------------------------------------------------------------------------------------------------
@needs_java
def test_bleu_by_hand():
    refs = [["A cat sits on the mat.", "There is a cat on the mat."], ["A dog runs on the grass."]]
    preds = ["The cat the cat on the mat", "A dog runs!"]
    out = score_captions(refs, preds, metrics=("Bleu_1", "Bleu_2"))
    # Tokenized (lower case, punctuation dropped): image 0 "the cat the cat on the mat" (7 words) against
    # "a cat sits on the mat" (6) and "there is a cat on the mat" (7).
    # Clipped unigram matches: the 3 -> 1 (at most once in a reference), cat 2 -> 1, on 1, mat 1: 4 of 7.
    # Closest reference length 7 = candidate length: brevity penalty 1. BLEU-1 = 4/7.
    assert out.per_image["Bleu_1"][0] == pytest.approx(4 / 7, abs=1e-8)
    # Bigrams: the cat x2 (in no reference) -> 0, cat the -> 0, cat on 1, on the 1, the mat 1: 3 of 6.
    # BLEU-2 = sqrt(p1 * p2) = sqrt(4/7 * 1/2) = 0.5345.
    assert out.per_image["Bleu_2"][0] == pytest.approx(math.sqrt(4 / 7 * 1 / 2), abs=1e-8)
    # Image 1: "a dog runs" (3 words) all match: p1 = 1; reference "a dog runs on the grass" has 6 words, so the
    # brevity penalty is exp(1 - 6/3) = e^-1.
    assert out.per_image["Bleu_1"][1] == pytest.approx(math.exp(-1), abs=1e-8)
    # Corpus BLEU pools the counts: 4 + 3 = 7 matches of 7 + 3 = 10 words, candidate length 10 against closest
    # reference lengths 7 + 6 = 13: 7/10 * exp(1 - 13/10) = 0.5186 (not the mean of the per-image values).
    assert out.metrics["Bleu_1"] == pytest.approx(0.7 * math.exp(-0.3), abs=1e-8)


@needs_java
def test_rouge_l_by_hand():
    refs = [["a man is riding a horse"], ["A man is riding a horse.", "A horse."]]
    preds = ["a man riding a horse on the beach", "A man riding a horse on the beach."]
    out = score_captions(refs, preds, metrics=("ROUGE_L",))
    # Image 0: LCS("a man is riding a horse", "a man riding a horse on the beach") = "a man riding a horse" = 5 words;
    # P = 5/8 (candidate), R = 5/6 (reference); F = (1 + 1.2^2) P R / (R + 1.2^2 P) = (61/48) / (26/15) = 0.73317.
    assert out.per_image["ROUGE_L"][0] == pytest.approx(0.7331730769, abs=1e-8)
    # Image 1: pycocoevalcap takes the best precision and the best recall over the references separately:
    # "a horse" gives LCS 2, R = 2/2 = 1; the long reference gives P = 5/8. F = 2.44 * 5/8 / (1 + 1.44 * 5/8) = 0.80263.
    assert out.per_image["ROUGE_L"][1] == pytest.approx(0.8026315789, abs=1e-8)
    assert out.metrics["ROUGE_L"] == pytest.approx((0.7331730769 + 0.8026315789) / 2, abs=1e-8)  # corpus = mean


@needs_java
def test_cider_by_hand():
    out = score_captions([["A cat."], ["A dog."]], ["a cat", "a cat"], metrics=("CIDEr",))
    # Two images: IDF of an n-gram = log(2) - log(images whose references hold it). "a" is in both: weight 0;
    # "cat", "a cat", "dog", "a dog" each in one: weight log 2. Image 0: candidate and reference vectors are equal,
    # cosine 1 for n = 1 and 2, and 0 for n = 3, 4 (no such n-grams); equal lengths, no penalty.
    # CIDEr-D = 10 * mean over n = 10 * (1 + 1 + 0 + 0) / 4 = 5. Image 1: no shared weighted n-gram -> 0.
    assert out.per_image["CIDEr"] == pytest.approx([5.0, 0.0], abs=1e-9)
    assert out.metrics["CIDEr"] == pytest.approx(2.5, abs=1e-9)  # the corpus value is the mean of the per-image ones


@needs_java
def test_a_reference_copy_scores_above_a_wrong_caption(written):
    task = build_task("coco_cap", {"data": written["coco_cap"]["save_to_disk"]}, seed=0)
    samples = task.samples()
    right = task.evaluate(samples, [s.answer[0] for s in samples])
    wrong = task.evaluate(samples, ["A red car parked on the side of a road."] * len(samples))
    assert set(right.metrics) == set(METRICS) == set(wrong.metrics)
    for metric in METRICS:
        assert right.metrics[metric] > wrong.metrics[metric], metric
    assert right.metrics["CIDEr"] > 1.5 and wrong.metrics["CIDEr"] < 0.2
    assert right.metrics["Bleu_1"] > 0.8 and right.unparsed == {} and wrong.unparsed == {}
    for scored in (right, wrong):  # the per-sample score is the image's CIDEr: its mean is the corpus CIDEr
        assert sum(scored.per_sample) / len(samples) == pytest.approx(scored.metrics["CIDEr"], abs=1e-12)
    assert all(r > w for r, w in zip(right.per_sample, wrong.per_sample))


@needs_java
def test_one_sample_and_empty_captions(written):
    task = build_task("nocaps", {"data": written["nocaps"]["save_to_disk"]}, seed=0)
    samples = task.samples()
    one = task.evaluate(samples[:1], [samples[0].answer[2]])
    # With one image every n-gram's IDF is log(1) - log(1) = 0: CIDEr is 0 whatever the caption (pycocoevalcap's value)
    assert one.per_sample == [0.0] and one.metrics["CIDEr"] == 0.0
    assert one.metrics["Bleu_1"] == pytest.approx(1.0, abs=1e-6) and one.metrics["ROUGE_L"] == pytest.approx(1.0)
    assert one.metrics["METEOR"] == pytest.approx(1.0)
    empty = task.evaluate(samples[:3], ["", "   ", samples[2].answer[0]])
    assert empty.unparsed == {0: "empty caption", 1: "empty caption"}
    assert empty.per_sample[:2] == [0.0, 0.0] and empty.per_sample[2] > 0
    with pytest.raises(ValueError, match="2 predictions for 3 samples"):
        task.evaluate(samples[:3], ["a", "b"])
    with pytest.raises(NotImplementedError, match="whole split"):
        task.score(samples[0], "a caption")
    nothing = score_captions([], [])
    assert nothing.metrics == {m: 0.0 for m in METRICS} and nothing.per_image["CIDEr"] == []


@needs_java
def test_tokenizer_line_breaks_do_not_shift_captions():
    # Stanford's tokenizer ends a line at \r, \v, \f, U+2028 and U+2029: unreplaced, "a cat" and "on a mat" would be
    # two output lines and every later image would be scored with the caption before it.
    breaks = ("\r", "\r\n", "\x0b", "\x0c", "\u2028", "\u2029", "\n")
    refs = [["a cat on a mat"]] * len(breaks) + [["a dog in the park"]]
    preds = [f"A cat{br}on a mat." for br in breaks] + ["a dog in the park"]
    out = score_captions(refs, preds, metrics=("Bleu_1",))
    assert out.per_image["Bleu_1"] == pytest.approx([1.0] * len(preds), abs=1e-8)


def test_errors_without_java_or_references(monkeypatch):
    with pytest.raises(ConfigError, match="no list of reference captions"):
        score_captions([["a cat"], []], ["a cat", "a dog"])
    with pytest.raises(ConfigError, match="unknown caption metric 'SPICE'"):
        score_captions([["a cat"]], ["a cat"], metrics=("SPICE",))
    with pytest.raises(ValueError, match="one caption per image"):
        score_captions([["a cat"]], ["a cat", "a dog"])
    monkeypatch.setattr(caption.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="needs a Java runtime"):
        score_captions([["a cat"]], ["a cat"])


# -- against lmms-eval -------------------------------------------------------------------------------------------------
MESSY = [
    "A MAN IS IN A KITCHEN MAKING PIZZAS!!",  # a reference in capitals with extra punctuation
    "The dining table has a bowl of fruit on it, near the kitchen; it is clean.",
    "",  # nothing generated
    "a skateboarder doing a trick at a skate park\nwith people watching",  # a newline inside
    "  A blue bike is parked on the sidewalk next to a street.  ",
    "Bathroom.",
    "It's a man's (very) \"famous\" pizza-oven -- or isn't it?",
    "A café in Zürich — two people sit outside",
    "1 2 3 4 5",
    "a a a a a a a a a a a a a a a a",
    "This image shows a small kitchen with white cabinets, a table with a bowl of fruit, several chairs, a window "
    "letting in light, a refrigerator in the corner, and a few appliances on the counter next to the sink, all in a "
    "tidy room with tiled floors and a lamp hanging above the table in the evening.",
    "bike ||| parked",  # METEOR's field separator, removed from the hypothesis by pycocoevalcap
]


def _coco_docs():
    rows = FIXTURES["coco_cap"]().remove_columns("image").to_list()
    extra = [{**row, "question_id": f"{500000 + i:012d}.jpg", "id": 500000 + i,
              "answer": row["answer"][i % 3:i % 3 + 3]} for i, row in enumerate(rows)]  # six more, three references
    return rows + extra


def _nocaps_docs():
    rows = FIXTURES["nocaps"]().remove_columns("image").to_list()
    extra = [{**row, "image_id": 100 + i, "annotations_captions": row["annotations_captions"][::-2]}
             for i, row in enumerate(rows)]
    return rows + extra


@pytest.fixture()
def lmms_eval_runs(monkeypatch, tmp_path):
    """Patches an lmms-eval caption utils module to use the scorer's METEOR process (one JVM start, not one per metric)
    and a memo of the (deterministic) PTB tokenizer; returns the arguments for its aggregation functions."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    memo = {}

    class MemoTokenizer(PTBTokenizer):
        def tokenize(self, captions_for_image):
            key = repr(sorted((k, [c["caption"] for c in v]) for k, v in captions_for_image.items()))
            if key not in memo:
                memo[key] = super().tokenize(captions_for_image)
            return {k: list(v) for k, v in memo[key].items()}

    def patch(module):
        monkeypatch.setattr(module, "Meteor", caption._meteor)
        monkeypatch.setattr(module, "PTBTokenizer", MemoTokenizer)
        return SimpleNamespace(output_path=str(tmp_path))

    return patch


@needs_java
def test_same_numbers_as_lmms_eval_coco(lmms_eval_runs):
    utils = pytest.importorskip("lmms_eval.tasks.coco_cap.utils")
    args = lmms_eval_runs(utils)
    docs = _coco_docs()
    preds = MESSY[: len(docs)]
    results = [utils.coco_process_result(doc, [pred])["coco_CIDEr"] for doc, pred in zip(docs, preds)]
    theirs = {m: utils.coco_aggregation_result(results, m, args) for m in METRICS}

    task = build_task("coco_cap", {}, seed=0)
    samples = [task.row_sample(doc, i) for i, doc in enumerate(docs)]
    ours = task.evaluate(samples, preds)
    assert ours.metrics == pytest.approx(theirs, rel=1e-12, abs=1e-12)
    assert ours.metrics["CIDEr"] > 0 and ours.unparsed == {2: "empty caption"}


@needs_java
def test_same_numbers_as_lmms_eval_nocaps(lmms_eval_runs):
    utils = pytest.importorskip("lmms_eval.tasks.nocaps.utils")
    args = lmms_eval_runs(utils)
    docs = _nocaps_docs()
    preds = MESSY[::-1][: len(docs)]
    results = [utils.nocaps_process_result(doc, [pred])["nocaps_CIDEr"] for doc, pred in zip(docs, preds)]
    theirs = {m: utils.nocaps_aggregation_result(results, m, args) for m in METRICS}

    task = build_task("nocaps", {}, seed=0)
    ours = task.evaluate([task.row_sample(doc, i) for i, doc in enumerate(docs)], preds)
    assert ours.metrics == pytest.approx(theirs, rel=1e-12, abs=1e-12)
