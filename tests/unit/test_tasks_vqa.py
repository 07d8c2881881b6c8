"""The VQA-accuracy tasks (textvqa, okvqa, vizwiz_vqa, vqav2): loading every local form, prompts, the EvalAI answer
normalisation and VQA accuracy worked out by hand, agreement with lmms-eval's own functions, options, bad images."""

from __future__ import annotations

import copy

import datasets
import pytest

from task_fixtures import FIXTURES, write
from tokenbench.api import TASKS
from tokenbench.errors import ConfigError
from tokenbench.harness.resolve import build_task
from tokenbench.data.scoring.vqa import (
    CONTRACTIONS,
    mean_by_group,
    normalize_answer,
    normalize_answer_vqav2,
    process_punctuation,
    score_evalai,
    score_vqav2,
    vqa_accuracy,
)
from tokenbench.testing import check_task, write_task_data

TASK_NAMES = ("textvqa", "okvqa", "vizwiz_vqa", "vqav2")
UNANSWERABLE = "\nWhen the provided information is insufficient, respond with 'Unanswerable'."
SHORT = "\nAnswer the question using a single word or phrase."


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, dict[str, str]]:
    """task -> {form: path} of its fixture written in every local form (save_to_disk, parquet, jsonl, hub copy)."""
    return {name: write(name, str(tmp_path_factory.mktemp(name))) for name in TASK_NAMES}


def load(name: str, path: str, **options):
    task = build_task(name, {"data": path, **options}, seed=0)
    return task, task.samples()


# -- loading -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_local_form_gives_the_same_samples(name, written):
    seen = {}
    for form, path in written[name].items():
        _, samples = load(name, path)
        seen[form] = [(s.id, s.question, s.answer, s.image.size, s.meta) for s in samples]
    assert set(seen) == {"save_to_disk", "parquet", "jsonl", "hub"}
    assert all(v == seen["save_to_disk"] for v in seen.values())
    rows = FIXTURES[name]()
    assert [x[0] for x in seen["parquet"]] == [str(q) for q in rows["question_id"]]
    assert [x[3] for x in seen["parquet"]] == [im.size for im in rows["image"]]


def test_samples_carry_the_rows_answers_and_ids(written):
    _, tv = load("textvqa", written["textvqa"]["parquet"])
    assert tv[0].id == "34602" and tv[0].answer[:3] == ["dakota", "dakota", "clos du bois"] and len(tv[0].answer) == 10
    assert tv[2].question == "What number is on the player's jersey?"  # str.capitalize, as lmms-eval
    _, vz = load("vizwiz_vqa", written["vizwiz_vqa"]["parquet"])
    assert vz[0].id == "VizWiz_val_00000000.jpg" and vz[0].meta == {"category": "unanswerable"}
    _, v2 = load("vqav2", written["vqav2"]["parquet"])
    assert v2[0].id == "262148000" and v2[0].answer[2] == "at table"
    assert v2[0].meta["answer_type"] == "other" and v2[0].meta["answer_records"][:2] == [("maybe", 1), ("yes", 2)]
    _, ok = load("okvqa", written["okvqa"]["parquet"])
    assert ok[0].question == "What sport can you use this for?" and ok[0].meta["question_type"] == "one"


@pytest.mark.parametrize("name", TASK_NAMES)
def test_contract(name, written):
    check_task(name, {"data": written[name]["save_to_disk"]}, limit=4)
    assert name in TASKS.names()


def test_missing_column_is_a_config_error(tmp_path):
    ds = FIXTURES["textvqa"]().remove_columns(["ocr_tokens"])
    path = write_task_data(ds, str(tmp_path), forms=("parquet",))["parquet"]
    assert len(load("textvqa", path)[1]) == 6  # without ocr the column is not needed
    with pytest.raises(ConfigError, match="ocr_tokens"):
        load("textvqa", path, ocr=True)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_corrupt_image_gives_a_sample_without_image(name, tmp_path):
    raw = FIXTURES[name]().cast_column("image", datasets.Image(decode=False))
    rows = raw.to_list()
    rows[1]["image"] = {"bytes": b"\x89PNG\r\n\x1a\n this is not a png", "path": None}
    path = write_task_data(datasets.Dataset.from_list(rows, features=raw.features), str(tmp_path),
                           forms=("save_to_disk",))["save_to_disk"]
    _, samples = load(name, path)
    assert samples[1].image is None and "cannot be decoded" in samples[1].meta["error"]
    assert samples[0].image is not None and "error" not in samples[0].meta
    assert samples[1].id == str(rows[1]["question_id"]) and len(samples[1].answer) == 10


# -- prompts (snapshots) -----------------------------------------------------------------------------------------------
def test_prompt_snapshots(written):
    expected = {
        "textvqa": "What number is on the player's jersey?\nAnswer the question using a single word or phrase.",
        "okvqa": "How many people can ride this at once?\nWhen the provided information is insufficient, respond "
                 "with 'Unanswerable'.\nAnswer the question using a single word or phrase.",
        "vizwiz_vqa": "How many pills are in this bottle?\nWhen the provided information is insufficient, respond "
                      "with 'Unanswerable'.\nAnswer the question using a single word or phrase.",
        "vqav2": "Is this a man's bike?\nAnswer the question using a single word or phrase.",
    }
    for name, text in expected.items():
        task, samples = load(name, written[name]["parquet"])
        sample = samples[2] if name == "textvqa" else samples[3]
        for family in ("llava", "llava-next", "qwen2.5-vl"):
            assert task.prompt(sample, family) == text, (name, family)


def test_textvqa_ocr_prompt_snapshot(written):
    task, samples = load("textvqa", written["textvqa"]["parquet"], ocr=True)
    assert task.prompt(samples[2], "llava") == (
        "What number is on the player's jersey?\nReference OCR token: 22, ADIDAS\n"
        "Answer the question using a single word or phrase.")
    assert task.prompt(samples[2], "qwen2.5-vl") == task.prompt(samples[2], "llava")
    assert task.prompt(samples[4], "llava") == (  # no OCR tokens: the label stays, with its trailing space
        "Who is the author of the book?\nReference OCR token: \nAnswer the question using a single word or phrase.")


def test_prompts_equal_lmms_evals_doc_to_text():
    tv = pytest.importorskip("lmms_eval.tasks.textvqa.utils")
    ok = pytest.importorskip("lmms_eval.tasks.ok_vqa.utils")
    vz = pytest.importorskip("lmms_eval.tasks.vizwiz_vqa.utils")
    v2 = pytest.importorskip("lmms_eval.tasks.vqav2.utils")
    cases = [("textvqa", {}, tv.textvqa_doc_to_text, {"pre_prompt": "", "post_prompt": SHORT, "ocr": False}),
             ("textvqa", {"ocr": True}, tv.textvqa_doc_to_text, {"pre_prompt": "", "post_prompt": SHORT, "ocr": True}),
             ("okvqa", {}, ok.ok_vqa_doc_to_text, {"pre_prompt": "", "post_prompt": UNANSWERABLE + SHORT}),
             ("vizwiz_vqa", {}, vz.vizwiz_vqa_doc_to_text, {"pre_prompt": "", "post_prompt": UNANSWERABLE + SHORT}),
             ("vqav2", {}, v2.vqav2_doc_to_text, {"pre_prompt": "", "post_prompt": SHORT})]
    for name, options, doc_to_text, kwargs in cases:
        ds = FIXTURES[name]()
        task = build_task(name, options, seed=0)
        for row in ds:
            sample = task.row_sample(row, 0)
            assert task.prompt(sample, "llava") == doc_to_text(row, kwargs), (name, options, row["question"])


# -- normalisation, worked by hand ---------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, normalised", [
    # articles dropped word by word, not inside words
    ("the cat", "cat"), ("A dog", "dog"), ("an apple", "apple"), ("theater", "theater"), ("the the", ""),
    # number words to digits (zero..ten and none), others kept
    ("two", "2"), ("Two dogs", "2 dogs"), ("none", "0"), ("ten", "10"), ("eleven", "eleven"),
    ("twenty two", "twenty 2"),
    # punctuation: blanked out when glued to words, deleted when next to a space
    ("coca-cola", "coca cola"), ("(frisbee)", "frisbee"), ("yes!", "yes"), ("x-ray -", "xray"), ("x/y", "x y"),
    ("x / y", "x y"), ("under_score", "under score"),
    # commas and question marks deleted first (word_tokenize): "1,000" -> "1000", "what?" -> "what"
    ("1,000", "1000"), ("what?", "what"), ("yes, it is", "yes it is"),
    # periods deleted unless a digit follows
    ("dog.", "dog"), ("1.5", "1.5"), ("1.5.", "1.5"), ("J.K. Rowling", "jk rowling"), ("10.10", "10.10"),
    # only the first 32 periods go (the official re.sub(..., re.UNICODE) sets count=32)
    ("." * 40 + "x", "." * 8 + "x"),
    # contractions restored; "'s" split off by word_tokenize, so "what's" and "whats" differ on this path
    ("dont", "don't"), ("wont", "won't"), ("whats", "what's"), ("what's", "what 's"), ("its", "its"),
    ("somebody'd", "somebodyd"), ("Im", "im"),
    # case, whitespace
    ("  Dakota\n", "dakota"), ("UNANSWERABLE.", "unanswerable"), ("frisbee\tdisc", "frisbee disc"), ("", ""),
])
def test_normalize_answer_by_hand(raw, normalised):
    assert normalize_answer(raw) == normalised


@pytest.mark.parametrize("raw, normalised", [
    # lmms-eval's VQAv2 path: no word_tokenize, so "'s" stays, and , ? go through the punctuation rule
    ("man's", "man's"), ("what's", "what's"), ("whats", "what's"), ("what?", "what"), ("Frisbee.", "frisbee"),
    ("1,000", "1000"),  # a digit-comma-digit: every punctuation mark is deleted
    ("3, 5", "3 5"), ("3,b", "3 b"), ("A Frisbee", "frisbee"), ("Two", "2"), (" down\n", "down"),
])
def test_normalize_answer_vqav2_by_hand(raw, normalised):
    assert normalize_answer_vqav2(raw) == normalised


def test_punctuation_rule_decides_on_the_incoming_text():
    # "-" is next to a space somewhere, so every "-" is deleted (not blanked): "e-mail" joins into "email"
    assert process_punctuation("e-mail - now") == "email  now"
    assert process_punctuation("e-mail now") == "e mail now"
    # a digit-comma-digit anywhere deletes all punctuation, glued or not
    assert process_punctuation("1,5 (x)") == "15 x"


# -- VQA accuracy, worked by hand ------------------------------------------------------------------------------------
def test_vqa_accuracy_by_hand():
    def answers(k):  # k of 10 answers are "cat"
        return ["cat"] * k + ["dog"] * (10 - k)

    # 0 matches: every subset has 0 -> 0
    assert vqa_accuracy("cat", answers(0)) == 0.0
    # 1 match: leaving it out leaves 0 (1 subset), leaving out a "dog" leaves 1 -> 1/3 (9 subsets): 9/3/10 = 0.3
    assert vqa_accuracy("cat", answers(1)) == pytest.approx(0.3)
    # 2 matches: leaving out a match leaves 1 -> 1/3 (2 subsets); leaving out a "dog" leaves 2 -> 2/3 (8 subsets):
    # (8 * 2/3 + 2 * 1/3) / 10 = (16/3 + 2/3) / 10 = 6 / 10 = 0.6
    assert vqa_accuracy("cat", answers(2)) == pytest.approx(0.6)
    # 3 matches: leaving out a match leaves 2 -> 2/3 (3 subsets); leaving out a "dog" leaves 3 -> 1 (7 subsets):
    # (3 * 2/3 + 7 * 1) / 10 = (2 + 7) / 10 = 0.9
    assert vqa_accuracy("cat", answers(3)) == pytest.approx(0.9)
    # 4 matches: leaving out a match leaves 3 -> 1 (4 subsets); leaving out a "dog" leaves 4 -> min(1, 4/3) = 1: 1.0
    assert vqa_accuracy("cat", answers(4)) == 1.0
    assert vqa_accuracy("cat", answers(10)) == 1.0
    # the order of the answers does not matter
    assert vqa_accuracy("cat", ["dog", "cat", "dog", "dog", "cat", "dog", "dog", "dog", "dog", "dog"]) == \
        pytest.approx(0.6)
    assert vqa_accuracy("cat", []) == 0.0


def test_vqa_accuracy_with_equal_records():
    # answers a, a, a, b with identities 1, 1, 2, 3: leaving out an identity-1 answer drops both identity-1 answers.
    # pos 0 and 1: others [a (id 2), b] -> 1 match -> 1/3; pos 2: others [a, a, b] -> 2 -> 2/3;
    # pos 3: others [a, a, a] -> 3 -> 1. Mean (1/3 + 1/3 + 2/3 + 1) / 4 = (7/3) / 4 = 7/12.
    assert vqa_accuracy("a", ["a", "a", "a", "b"], [1, 1, 2, 3]) == pytest.approx(7 / 12)
    # distinct identities: the positional rule: pos 0..2 leave 2 -> 2/3, pos 3 leaves 3 -> 1: (3*2/3 + 1)/4 = 0.75
    assert vqa_accuracy("a", ["a", "a", "a", "b"], [1, 2, 3, 4]) == pytest.approx(0.75)
    assert vqa_accuracy("a", ["a", "a", "a", "b"]) == pytest.approx(0.75)


def test_scores_after_normalisation_by_hand():
    # 2 of 10 gold answers normalise to "coca cola" ("Coca-Cola", "the coca cola"): 0.6 as above
    gold = ["Coca-Cola", "the coca cola", "coke", "coke", "pepsi", "coke", "coke", "cola", "coke", "coke"]
    assert score_evalai("Coca Cola.", gold) == pytest.approx(0.6)
    # "Two" -> "2"; three gold answers are "2"/"two"/"2." -> 3 matches -> 0.9
    assert score_evalai("Two", ["2", "two", "2.", "3", "3", "3", "3", "3", "3", "3"]) == pytest.approx(0.9)
    # "Unanswerable." -> "unanswerable", 7 of 10 gold answers -> 1.0
    assert score_evalai("Unanswerable.", ["unanswerable"] * 7 + ["wall"] * 3) == 1.0
    assert score_evalai("I cannot tell", ["unanswerable"] * 7 + ["wall"] * 3) == 0.0
    assert score_evalai("x", None) == 0.0
    # VQAv2 path: "man's" stays "man's" on both sides: 4 matches -> 1.0 (the EvalAI path agrees: both "man 's")
    assert score_vqav2("Man's", ["man's"] * 4 + ["womans"] * 6) == 1.0
    # "whats" vs "what's": equal on the VQAv2 path (contraction restored), not on the EvalAI path ("what 's")
    assert score_vqav2("whats", ["what's"] * 4 + ["no"] * 6) == 1.0
    assert score_evalai("whats", ["what's"] * 4 + ["no"] * 6) == 0.0


def test_mean_by_group():
    assert mean_by_group([1.0, 0.0, 0.5, 0.3], ["yes/no", "yes/no", "other", None], "answer_type") == {
        "answer_type/other": 0.5, "answer_type/yes_no": 0.5}


# -- task evaluate, worked by hand -----------------------------------------------------------------------------------
def test_textvqa_evaluate_by_hand(written):
    task, s = load("textvqa", written["textvqa"]["parquet"])
    # s0: dakota x7 -> 1.0; s1: copenhagen x9 -> 1.0 ("Copenhagen." normalises to it); s2: "twenty two" ->
    # "twenty 2", one gold answer -> 0.3; s3: "ALE." -> "ale", gold "Ale", "ale", "ale", "ale" -> 4 -> 1.0;
    # s4: "J.K. Rowling" -> "jk rowling", gold "J.K. Rowling", "jk rowling", "j.k. rowling" x3 -> 5 -> 1.0;
    # s5: "" -> unparsed, 0.
    scored = task.evaluate(s, ["Dakota", "Copenhagen.", "twenty two", "ALE.", "J.K. Rowling", ""])
    assert scored.per_sample == pytest.approx([1.0, 1.0, 0.3, 1.0, 1.0, 0.0])
    assert scored.metrics == {"accuracy": pytest.approx(4.3 / 6)}
    assert scored.unparsed == {5: "the answer is empty once normalised"}
    # s0: "dakota digital" x2 -> 0.6; "clos du bois" x1 -> 0.3
    assert task.evaluate(s[:2], ["Dakota Digital", "clos du bois"]).per_sample == pytest.approx([0.6, 0.0])
    assert task.evaluate(s[:1], ["clos du bois"]).per_sample == pytest.approx([0.3])


def test_okvqa_evaluate_by_hand(written):
    task, s = load("okvqa", written["okvqa"]["parquet"])
    # s0: "motocross" x2 -> 0.6; s1: "Unanswerable" matches nothing -> 0; s2: "a stuffed animal" -> "stuffed
    # animal" x6 -> 1.0; s3: "two" -> "2", gold "2" x4 + "two" x2 -> 6 -> 1.0; s4: "NY" -> "ny" x4 -> 1.0
    scored = task.evaluate(s, ["motocross", "Unanswerable", "a stuffed animal", "two", "NY"])
    assert scored.per_sample == pytest.approx([0.6, 0.0, 1.0, 1.0, 1.0])
    assert scored.metrics == {"accuracy": pytest.approx(3.6 / 5)}
    assert scored.unparsed == {}


def test_vizwiz_evaluate_by_hand(written):
    task, s = load("vizwiz_vqa", written["vizwiz_vqa"]["parquet"])
    # s0: "Unanswerable." -> unanswerable x7 -> 1.0; s1: "unanswerable" x2 -> 0.6; s2: "No." x2 -> 0.6;
    # s3: "thirty" is no number word (zero..ten only) -> "thirty" x2 -> 0.6; s4: "Navy Blue" x3 -> 0.9
    scored = task.evaluate(s, ["Unanswerable.", "unanswerable", "No.", "thirty", "Navy Blue"])
    assert scored.per_sample == pytest.approx([1.0, 0.6, 0.6, 0.6, 0.9])
    assert scored.metrics == pytest.approx({
        "accuracy": 3.7 / 5, "category/unanswerable": 1.0, "category/other": (0.6 + 0.9) / 2,
        "category/yes_no": 0.6, "category/number": 0.6})
    # s3 again: "unanswerable" x3 -> 0.9, "30" x3 -> 0.9, "unsuitable" x2 -> 0.6
    assert [task.evaluate([s[3]], [p]).per_sample[0] for p in ("Unanswerable", "30", "unsuitable")] == \
        pytest.approx([0.9, 0.9, 0.6])


def test_vqav2_evaluate_by_hand(written):
    task, s = load("vqav2", written["vqav2"]["parquet"])
    # s0: "Down." -> "down" x7 -> 1.0; s1: "spectating" x2 -> 0.6; s2: "3" x1 -> 0.3;
    # s3: "Yes" x9 -> 1.0; s4: "disc" x1 -> 0.3; s5: "Ten Ten" -> "10 10", as the gold "ten ten" (1 of 10) -> 0.3
    scored = task.evaluate(s, ["Down.", "spectating", "3", "Yes", "disc", "Ten Ten"])
    assert scored.per_sample == pytest.approx([1.0, 0.6, 0.3, 1.0, 0.3, 0.3])
    assert scored.metrics == pytest.approx({
        "accuracy": 3.5 / 6, "answer_type/other": (1.0 + 0.6 + 0.3 + 0.3) / 4, "answer_type/number": 0.3,
        "answer_type/yes_no": 1.0})
    # s4: "Frisbee", "a frisbee", "frisbee." all normalise to "frisbee" (8 of 10), as "A Frisbee!" does -> 1.0
    assert task.evaluate([s[4]], ["A Frisbee!"]).per_sample == [1.0]


# -- agreement with lmms-eval ------------------------------------------------------------------------------------
MESSY = [
    "Dakota", "dakota.", "DAKOTA!", "The Dakota", "dakota digital", "Dakota Digital.", "a dakota", "  dakota\n",
    "22", "twenty two", "Twenty-two", "22.", "22.0", "2", "two", "Two.", "none", "None of them", "0", "10:10",
    "10.10", "ten past ten", "J.K. Rowling", "jk rowling", "J. K. Rowling.", "j.k.rowling", "rowling's book", "Ale",
    "ALE.", "self-righteous", "self - righteous", "Stone Ale", "unanswerable", "Unanswerable.", "UNANSWERABLE",
    "I cannot tell", "", " ", ".", "?", "!!!", "yes", "Yes.", "no", "Yes, it is.", "race", "Racing", "racing.",
    "Stuffed animal", "a stuffed animal", "teddy-bear", "New York", "new york city", "NY", "N.Y.", "1,000", "1, 000",
    "3,5", "don't know", "dont", "its a dog", "it's a dog", "man's", "mans", "frisbee", "Frisbee.", "a frisbee",
    "(frisbee)", "[frisbee]", "\"frisbee\"", "frisbee;", "frisbee\tdisc", "watching", "The people are watching.",
    "down", "Down.", "looking down", "somebody'd", "30", "thirty", "Thirty.", "ranch dressing", "ranch-dressing",
    "Ranch Dressing!", "Navy Blue", "navy-blue", "dark_blue", "unsuitable", "at table", "at the table", "1.5.",
    "a.b.c", "e - mail", "50%", "$5", "Answer: vine", "bamboo?", "ten ten", "10 : 10", "two dogs", "<frisbee>",
    "x=y", "a+b", "back\\slash", "`tick`", "I'm", "wont", "y'all", "oclock", "'twas", "." * 40 + "x", "a. " * 40,
    "There are two dogs in the picture.", "copenhagen", "vine", "spectating", "3",
]


def _theirs(name):
    module = {"textvqa": "textvqa", "okvqa": "ok_vqa", "vizwiz_vqa": "vizwiz_vqa", "vqav2": "vqav2"}[name]
    utils = pytest.importorskip(f"lmms_eval.tasks.{module}.utils")
    return {"textvqa": getattr(utils, "textvqa_process_results", None),
            "okvqa": getattr(utils, "ok_vqa_process_results", None),
            "vizwiz_vqa": getattr(utils, "vizwiz_vqa_process_results", None),
            "vqav2": getattr(utils, "vqav2_process_results", None)}[name]


@pytest.mark.parametrize("name", TASK_NAMES)
def test_scores_equal_lmms_evals_process_results(name, written):
    process_results = _theirs(name)
    task, samples = load(name, written[name]["parquet"])
    docs = [{k: v for k, v in row.items() if k != "image"} for row in FIXTURES[name]()]
    assert len(MESSY) >= 100
    distinct = set()
    for sample, doc in zip(samples, docs):
        ours = task.evaluate([sample] * len(MESSY), MESSY).per_sample
        theirs = [process_results(copy.deepcopy(doc), [p])["exact_match"] for p in MESSY]  # theirs edits the doc
        assert ours == theirs, [(p, a, b) for p, a, b in zip(MESSY, ours, theirs) if a != b]
        distinct.update(ours)
    assert {0.0, 1.0} <= distinct and len(distinct) >= 3  # right, wrong and partly right answers among the cases


def test_normalisation_equals_lmms_evals_processor():
    metric = pytest.importorskip("lmms_eval.tasks._task_utils.vqa_eval_metric")
    processor = metric.EvalAIAnswerProcessor()
    for text in MESSY:
        assert normalize_answer(text) == processor(text), text
        stripped = text.replace("\n", " ").replace("\t", " ").strip()
        assert normalize_answer_vqav2(text) == processor.process_digit_article(processor.process_punctuation(stripped))
    # the contraction table is the official one, less its two identity entries
    theirs = dict(metric.EvalAIAnswerProcessor.CONTRACTIONS)
    assert {k: v for k, v in theirs.items() if k != v} == CONTRACTIONS


# -- options -------------------------------------------------------------------------------------------------------
def test_textvqa_ocr_option(written):
    path = written["textvqa"]["parquet"]
    plain = build_task("textvqa", {"data": path}, seed=0)
    with_ocr = build_task("textvqa", {"data": path, "ocr": True}, seed=0)
    plain.samples(), with_ocr.samples()
    assert plain.version != with_ocr.version and plain.version.split("-")[0] == with_ocr.version.split("-")[0]
    with pytest.raises(ConfigError, match="ocr"):
        TASKS.get("textvqa")(ocr="yes")


def test_vqav2_subset_option(written):
    path = written["vqav2"]["parquet"]
    every = [s.id for s in load("vqav2", path)[1]]
    three = [s.id for s in load("vqav2", path, subset=3)[1]]
    assert len(three) == 3 and set(three) < set(every)
    assert three == [i for i in every if i in three]  # kept in the split's order
    assert three == [s.id for s in load("vqav2", path, subset=3)[1]]  # deterministic
    assert set(three) < set(s.id for s in load("vqav2", path, subset=4)[1])  # subsets of one seed are nested
    draws = {tuple(s.id for s in load("vqav2", path, subset=3, seed=seed)[1]) for seed in range(6)}
    assert len(draws) > 1  # the seed picks another subset
    assert [s.id for s in load("vqav2", path, subset=100)[1]] == every  # more than the split: all of it
    limited = build_task("vqav2", {"data": path, "subset": 3}, seed=0)
    assert [s.id for s in limited.samples(2)] == three[:2]
    # the image of a subset sample is its own row's
    sub = load("vqav2", path, subset=3)[1]
    full = {s.id: s for s in load("vqav2", path)[1]}
    assert all(s.image.open().tobytes() == full[s.id].image.open().tobytes() for s in sub)


def test_vqav2_subset_changes_the_version(written):
    path = written["vqav2"]["parquet"]

    def version(**options):
        task = build_task("vqav2", {"data": path, **options}, seed=0)
        task.samples()
        return task.version

    assert version() == version(seed=5)  # without a subset the seed changes nothing
    assert len({version(), version(subset=3), version(subset=4), version(subset=3, seed=1)}) == 4
    with pytest.raises(ConfigError, match="subset"):
        build_task("vqav2", {"subset": -1}, seed=0)
    with pytest.raises(ConfigError, match="subset"):
        build_task("vqav2", {"subset": "many"}, seed=0)
