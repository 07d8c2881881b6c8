"""The multiple-choice tasks (scienceqa_img, ai2d, mmbench_en, seedbench, realworldqa): loading every local form,
prompts, the scoring rules worked by hand, and agreement with lmms-eval's own functions."""

from __future__ import annotations

import random

import datasets
import pytest

from task_fixtures.choice import (FIXTURES, MMBENCH_QUESTIONS, mmbench_en_string_index, mmbench_rows,
                                   with_corrupt_image)
from task_fixtures import write
from tokenbench.api import TASKS
from tokenbench.data.scoring import choice as ch
from tokenbench.contract.task import Sample
from tokenbench.testing import write_task_data

datasets.disable_progress_bars()
TASK_NAMES = sorted(FIXTURES)


def _key(samples):
    return [(s.id, s.question, s.answer, s.image.size if s.image is not None else None) for s in samples]


# -- (a) loading -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_local_form_gives_the_same_samples(name, tmp_path):
    paths = write(name, str(tmp_path))
    assert {"save_to_disk", "parquet", "jsonl", "hub"} <= set(paths)
    got = {form: _key(TASKS.get(name)(data=p).samples()) for form, p in paths.items()}
    assert all(v == got["save_to_disk"] for v in got.values())
    assert all(size is not None for *_, size in got["parquet"])
    two = TASKS.get(name)(data=paths["parquet"]).samples(limit=2)
    assert _key(two) == got["parquet"][:2]


def test_loaders_read_what_each_dataset_encodes(tmp_path):
    paths = {n: write_task_data(FIXTURES[n](), str(tmp_path / n), forms=("parquet",))["parquet"] for n in TASK_NAMES}
    sqa = TASKS.get("scienceqa_img")(data=paths["scienceqa_img"]).samples()
    assert [s.answer for s in sqa] == ["A", "A", "B", "A", "E"]  # answer index 0, 0, 1, 0, 4
    ai2d = TASKS.get("ai2d")(data=paths["ai2d"]).samples()
    assert [s.answer for s in ai2d] == ["B", "D", "A", "A", "C"]  # answer "1", "3", "0", "0", "2"
    rwqa = TASKS.get("realworldqa")(data=paths["realworldqa"]).samples()
    assert [s.answer for s in rwqa] == ["C", "2", "A", "Downhill", "D"]
    # SEED-Bench: the two video rows (positions 1 and 4) are skipped; the ids are the question ids
    seed = TASKS.get("seedbench")(data=paths["seedbench"]).samples()
    assert [s.id for s in seed] == ["101669", "101671", "101672", "101674"]
    assert [s.answer for s in seed] == ["A", "B", "D", "C"]
    assert TASKS.get("seedbench")(data=paths["seedbench"]).samples(limit=2)[1].id == "101671"
    # MMBench: hub order is mains then rotations; samples come grouped by question, main row first
    mmb = TASKS.get("mmbench_en")(data=paths["mmbench_en"]).samples()
    assert [s.id for s in mmb] == ["0", "1000000", "2000000", "3000000", "1", "1000001", "2", "1000002", "2000002"]
    # question 0: options teddy bear/rabbit/cat/dog, right one teddy bear (A); rotation k shifts by k:
    # k=1 rabbit/cat/dog/teddy bear -> D, k=2 -> C, k=3 -> B
    assert [s.answer for s in mmb[:4]] == ["A", "D", "C", "B"]
    assert mmb[1].meta["choices"] == {"A": "rabbit", "B": "cat", "C": "dog", "D": "teddy bear"}
    assert mmb[4].meta["choices"] == {"A": "left", "B": "right"}  # C, D are None: not options
    assert mmb[5].answer == "A"  # 2 options, right one "right" (B); shifted by 1 -> A


def _mmb_key(samples):
    return [(s.id, s.question, s.answer, s.meta, s.image.size) for s in samples]


def test_mmbench_string_index_as_the_hub_en_config_has_it(tmp_path):
    # the hub's en config stores index as a string of digits (cn: int64); in string order "1000000" < "2", so a
    # grouping that did not read the digits as a number would order (or group) the rows differently
    ints, strs = FIXTURES["mmbench_en"](), mmbench_en_string_index()
    assert ints.features["index"].dtype == "int64" and strs.features["index"].dtype == "string"
    assert strs["index"] == [str(i) for i in ints["index"]] and strs["index"][2:4] == ["2", "1000000"]
    task = TASKS.get("mmbench_en")
    want = task(data=write_task_data(ints, str(tmp_path / "int"), forms=("parquet",))["parquet"]).samples()
    assert [s.id for s in want] == ["0", "1000000", "2000000", "3000000", "1", "1000001", "2", "1000002", "2000002"]
    paths = write_task_data(strs, str(tmp_path / "str"), config="en", split="dev")
    assert {"save_to_disk", "parquet", "jsonl", "hub"} <= set(paths)
    preds = [s.answer for s in want]
    preds[5] = "B"  # question 1's rotation wrong: question 1 fails CircularEval
    expected = task().evaluate(want, preds)
    assert expected.metrics["circular_accuracy"] == pytest.approx(2 / 3)
    for form, path in paths.items():
        got = task(data=path).samples()
        assert _mmb_key(got) == _mmb_key(want), form  # same rows, grouped the same, same ids and meta (int index)
        assert all(isinstance(s.meta["index"], int) for s in got)
        assert _mmb_key(task(data=path).samples(limit=5)) == _mmb_key(want[:5]), form
        scored = task().evaluate(got, preds)
        assert scored.per_sample == expected.per_sample and scored.metrics == expected.metrics, form


@pytest.mark.parametrize("bad", ["q17", "1e6", "", None])
def test_mmbench_non_digit_string_index_is_a_config_error(bad, tmp_path):
    from tokenbench.errors import ConfigError

    ds = mmbench_en_string_index()
    rows = ds.to_list()
    rows[4]["index"] = bad
    path = write_task_data(datasets.Dataset.from_list(rows, features=ds.features), str(tmp_path),
                           forms=("parquet",))["parquet"]
    with pytest.raises(ConfigError, match=r"mmbench_en.*'index' column must hold integers"):
        TASKS.get("mmbench_en")(data=path).samples()


# -- (b) prompts -------------------------------------------------------------------------------------------------------
PROMPTS = {
    "scienceqa_img": (1, "Context: Ducks live near water. Their feet are adapted for swimming.\n"
                         "Which animal's feet are also adapted for swimming?\nA. duck\nB. tokay gecko\n"
                         "Answer with the option's letter from the given choices directly."),
    "ai2d": (1, "What stage is represented by label E?\nA. egg\nB. pupa\nC. larva\nD. adult\n"
                "Answer with the option's letter from the given choices directly."),
    "mmbench_en": (4, "The picture shows a road sign. Which direction is the arrow pointing? There are several "
                      "options:\nA. left\nB. right\n\nAnswer with the option's letter from the given choices "
                      "directly."),
    "seedbench": (0, "How many towels are in the image?\nA. One\nB. Two\nC. Three\nD. Four\n"
                     "Answer with the option's letter from the given choices directly."),
    "realworldqa": (1, "How many lanes are there on this road?\n\nPlease answer directly with a single word or "
                       "number."),
}


@pytest.mark.parametrize("name", TASK_NAMES)
def test_prompt_snapshot(name, tmp_path):
    path = write_task_data(FIXTURES[name](), str(tmp_path), forms=("parquet",))["parquet"]
    task = TASKS.get(name)(data=path)
    position, expected = PROMPTS[name]
    sample = task.samples()[position]
    assert task.prompt(sample, "llava") == expected
    assert task.prompt(sample, "qwen2.5-vl") == expected  # lmms-eval's yamls give these models the default kwargs


def test_prompts_match_lmms_eval_doc_to_text():
    sqa = pytest.importorskip("lmms_eval.tasks.scienceqa.utils")
    ai2d = pytest.importorskip("lmms_eval.tasks.ai2d.utils")
    seed = pytest.importorskip("lmms_eval.tasks.seedbench.utils")
    rwqa = pytest.importorskip("lmms_eval.tasks.realworldqa.utils")
    mmb = pytest.importorskip("lmms_eval.tasks.mmbench.en_utils")
    post = "\nAnswer with the option's letter from the given choices directly."
    cases = {
        "scienceqa_img": (sqa.sqa_doc_to_text, {"format": "default", "pre_prompt": "", "post_prompt": post}),
        "ai2d": (ai2d.ai2d_doc_to_text, {"prompt_format": "mcq", "pre_prompt": "", "post_prompt": post}),
        "seedbench": (lambda doc, kw: seed.seed_doc_to_text(doc), None),
        "realworldqa": (rwqa.realworldqa_doc_to_text, {"pre_prompt": "", "post_prompt": ""}),
        "mmbench_en": (mmb.mmbench_doc_to_text, {"pre_prompt": "", "post_prompt": post}),
    }
    for name, (doc_to_text, kwargs) in cases.items():
        ds = FIXTURES[name]().remove_columns("image")
        task = TASKS.get(name)()
        for i, row in enumerate(ds):
            if name == "seedbench" and row["data_type"] != "image":
                continue
            ours = task.prompt(task.row_sample(row, i), "llava")
            assert ours == doc_to_text(row, kwargs), (name, i)


# -- (c) scoring worked by hand ----------------------------------------------------------------------------------------
# gold letter B throughout; each rule's reading of the messy answers
MESSY = ["(B)", "B.", "The answer is B", "b", "B", " B ", "B. tokay gecko", "b.", "B)", "Bird", "I cannot tell"]


def test_scienceqa_rule_by_hand():
    # right: lower-cased answer == "b" ("b", "B", " B " stripped), or "<capital>." with capital B ("B.", "B. tokay...")
    expect = [0, 1, 0, 1, 1, 1, 1, 0, 0, 0, 0]
    assert [int(ch.judge_scienceqa(p, "B").correct) for p in MESSY] == expect
    assert ch.judge_scienceqa("A. duck", "B") == ch.Judgement(False, "A")
    assert ch.judge_scienceqa("b", "B").letter == "B"
    for p in ("(B)", "The answer is B", "b.", "B)", "Bird", "I cannot tell", ""):
        assert ch.judge_scienceqa(p, "B").reason, p


def test_ai2d_rule_by_hand():
    # filter: "^\s*[A-Z]\." -> the letter; then strip, lower, drop punctuation, compare with "b":
    # "(B)" -> "b" right; "B." -> "B" right; "The answer is B" -> "the answer is b" wrong; "b" right; "B. tokay" -> "B";
    # "b." -> no filter match (lower case), "b." -> "b" right; "B)" -> "b" right; "Bird" -> "bird" wrong
    expect = [1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 0]
    assert [int(ch.judge_ai2d(p, "B").correct) for p in MESSY] == expect
    assert not ch.judge_ai2d("B cat", "B").correct and ch.judge_ai2d("B cat", "B").reason  # "b cat" != "b"
    assert ch.judge_ai2d("C.", "B") == ch.Judgement(False, "C")


def test_seed_rule_by_hand():
    # the first character of the stripped answer, case-insensitively: "(" "B" "T" "b" "B" "B" "B" "b" "B" "B" "I"
    expect = [0, 1, 0, 1, 1, 1, 1, 1, 1, 1, 0]
    assert [int(ch.judge_seed(p, "B").correct) for p in MESSY] == expect
    assert ch.judge_seed("(B)", "B").reason and ch.judge_seed("The answer is B", "B").reason
    assert ch.judge_seed("I cannot tell", "B").reason  # "I" is not one of A-D
    assert ch.judge_seed("", "B") == ch.Judgement(False, None, "empty answer")
    assert ch.judge_seed("d) sofa", "D").correct


def test_realworldqa_rule_by_hand():
    # extract_mcq_answer, upper-case letters only: "(B)" parentheses; "B." -> stripped of "." -> "B" start;
    # "The answer is B" -> "B" at the end; "b" nothing; "B. tokay gecko" -> "B" start; "b." -> nothing;
    # "B)" -> start; "Bird" -> "B" only as a last resort (fallback) -> B; "I cannot tell" -> no A-D at all
    expect = [1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0]
    assert [int(ch.judge_realworldqa(p, "B").correct) for p in MESSY] == expect
    assert ch.judge_realworldqa("b", "B").reason and ch.judge_realworldqa("I cannot tell", "B").reason
    # "I think A is wrong, the answer is C": phrase "the answer is" -> C (priority 7) beats "A " (space, 2) -> C
    assert ch.judge_realworldqa("I think A is wrong, the answer is C", "C").correct
    # open answers: lower-cased, trailing full stops dropped
    assert ch.judge_realworldqa("Downhill.", "Downhill").correct
    assert ch.judge_realworldqa(" 2 ", "2").correct
    assert not ch.judge_realworldqa("two", "2").correct
    assert not ch.judge_realworldqa("2 lanes", "2").reason  # open answers are never "unparsed"


CHOICES4 = {"A": "teddy bear", "B": "rabbit", "C": "cat", "D": "dog"}


def test_mmbench_row_rule_by_hand():
    # can_infer_option: exactly one of A-E as a word -> it; "(B)", "B." forms; else can_infer_text: one option's
    # text inside the answer; else extract_mcq_answer with choices A-D
    assert ch.judge_mmbench("(B)", "B", CHOICES4).correct
    assert ch.judge_mmbench("B.", "B", CHOICES4).correct
    assert ch.judge_mmbench("The answer is B", "B", CHOICES4).correct  # "B" is the only letter word
    assert ch.judge_mmbench("It is a rabbit", "B", CHOICES4).correct  # option text
    assert not ch.judge_mmbench("b", "B", CHOICES4).correct  # not a letter word, no option text, no A-D
    assert ch.judge_mmbench("b", "B", CHOICES4).reason
    assert ch.judge_mmbench("I cannot tell", "B", CHOICES4).reason
    # "A cat is on the mat": "A" is a word but with > 3 words may be the article -> no letter; the text "cat" -> C
    assert ch.judge_mmbench("A cat is on the mat", "C", CHOICES4).correct
    # "cat or dog": two options' texts -> none; extract_mcq_answer finds no upper-case A-D -> unparsed
    assert ch.judge_mmbench("cat or dog", "C", CHOICES4).reason
    assert ch.judge_mmbench("E", "B", CHOICES4) == ch.Judgement(False, "E")  # E counts as a letter, and is wrong


def _mmb_samples(groups: dict[int, int]) -> list[Sample]:
    """Rows for questions ``q`` with ``groups[q]`` rotations each, gold A for all."""
    out = []
    for q, n in groups.items():
        for k in range(n):
            out.append(Sample(str(k * 1_000_000 + q), None, "?", "A",
                              {"index": k * 1_000_000 + q, "choices": dict(zip("ABCD", "wxyz"[:n])),
                               "category": f"cat{q % 2}", "l2_category": "l2"}))
    return out


def test_mmbench_circular_needs_every_rotation_by_hand():
    task = TASKS.get("mmbench_en")()
    samples = _mmb_samples({0: 4, 1: 4})
    preds = ["A"] * 8
    preds[6] = "B"  # question 1, rotation 2: wrong
    s = task.evaluate(samples, preds)
    # question 0: 4/4 right -> 1; question 1: 3/4 right -> 0; circular = (1 + 0) / 2 = 0.5; vanilla = 7/8
    assert s.metrics["circular_accuracy"] == 0.5
    assert s.metrics["vanilla_accuracy"] == 7 / 8
    # per sample: N=8 rows, G=2 questions, 4 rows each: right question's rows get 8 / (2 * 4) = 1.0, others 0
    assert s.per_sample == [1.0] * 4 + [0.0] * 4
    assert sum(s.per_sample) / 8 == s.metrics["circular_accuracy"]
    assert s.metrics["category/cat0"] == 1.0 and s.metrics["category/cat1"] == 0.0
    assert s.metrics["l2_category/l2"] == 0.5
    assert s.unparsed == {}


def test_mmbench_circular_uneven_groups_by_hand():
    task = TASKS.get("mmbench_en")()
    samples = _mmb_samples({0: 4, 1: 2, 2: 3})
    preds = ["A", "A", "A", "A", "A", "(A)", "A", "nothing here", "A"]
    s = task.evaluate(samples, preds)
    # q0 4/4, q1 2/2 right; q2's rotation 1 is unparsed (wrong): circular = 2/3; vanilla = 8/9
    assert s.metrics["circular_accuracy"] == pytest.approx(2 / 3)
    assert s.metrics["vanilla_accuracy"] == pytest.approx(8 / 9)
    # N=9, G=3: q0 rows 9/(3*4) = 0.75 (x4 = 3), q1 rows 9/(3*2) = 1.5 (x2 = 3), q2 rows 0 -> mean 6/9 = 2/3
    assert s.per_sample == [0.75] * 4 + [1.5] * 2 + [0.0] * 3
    assert sum(s.per_sample) / 9 == pytest.approx(s.metrics["circular_accuracy"])
    assert set(s.unparsed) == {7}


def test_mmbench_rotation_without_its_main_row_is_skipped():
    task = TASKS.get("mmbench_en")()
    samples = _mmb_samples({0: 2})
    orphan = Sample("1000005", None, "?", "A", {"index": 1_000_005, "choices": {"A": "w", "B": "x"},
                                                 "category": "c", "l2_category": "l"})
    s = task.evaluate(samples + [orphan], ["A", "A", "A"])
    # one question (0), right: circular 1/1; the orphan (question 5 has no main row) counts nowhere but vanilla
    assert s.metrics["circular_accuracy"] == 1.0
    assert s.per_sample == [1.5, 1.5, 0.0]  # N=3, G=1, n=2: 3 / (1 * 2)
    assert s.metrics["vanilla_accuracy"] == 1.0


def test_extract_mcq_answer_by_hand():
    # stripped of the final ".": "The correct answer is (B)"; found: "(B)" (priority 6), "B)" (3), B after the phrase
    # "answer is" (7); not at the start or end (")" is last) -> the phrase's B
    assert ch.extract_mcq_answer("The correct answer is (B).") == "B"
    assert ch.extract_mcq_answer("A. no, B.", ["A", "B"]) == "A"  # "A" at the start (10) beats "B" at the end (9)
    assert ch.extract_mcq_answer("") == ""
    assert ch.extract_mcq_answer("xyz") == ""
    assert ch.extract_mcq_answer("Hmm, D", ["A", "B", "C", "D"]) == "D"  # ends with D
    assert ch.extract_mcq_answer("AB", ["A", "B"]) == "B"  # no form matches; fallback: last position wins -> B


# -- (d) agreement with lmms-eval --------------------------------------------------------------------------------------
_POOL = ["A", "B", "C", "D", "E", "a", "b", "c", "d", "(A)", "(B)", "(C)", "B.", "C.", "D.", "A)", "b)", "B:", ":C",
         "(D).", "C,", "**B**", "The", "the answer is", "The correct answer is", "Answer:", "option", "I", "think",
         "it's", "is", "cat", "dog", "teddy bear", "rabbit", "Rabbit.", "Cat", "None", "of", "these", "E.", "答案是B",
         "left", "right", "Downhill", "downhill.", "2", "two", "A cat", "\n", "...", "!", "?", "'B'", '"C"', "Bird",
         "AB", "CD.", "Answer", "with", "letter", "Option B", "Failed to obtain answer via API"]


def _messy_predictions(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = list(MESSY) + ["", "   ", "B\n", "\nB", " (B) ", "The answer is (C).", "A. teddy bear", "b. rabbit"]
    while len(out) < n:
        words = [rng.choice(_POOL) for _ in range(rng.randint(1, 6))]
        text = rng.choice([" ", "", "\n", ", "]).join(words)
        if rng.random() < 0.2:
            text = rng.choice([" ", "\n", "  "]) + text + rng.choice(["", " ", ".", "\n"])
        out.append(text)
    return out


PREDICTIONS = _messy_predictions()


def test_unparsed_answers_are_always_wrong():
    for p in PREDICTIONS:
        for gold in "ABCD":
            for j in (ch.judge_scienceqa(p, gold), ch.judge_ai2d(p, gold), ch.judge_seed(p, gold),
                      ch.judge_realworldqa(p, gold), ch.judge_mmbench(p, gold, CHOICES4)):
                assert (j.letter is None) == (j.reason is not None)
                assert not (j.reason and j.correct), (p, gold, j)


def test_scienceqa_matches_lmms_eval():
    sqa = pytest.importorskip("lmms_eval.tasks.scienceqa.utils")
    for choices, answer in ((["duck", "gecko"], 1), (["w", "x", "y", "z", "v"], 2), (["a", "b", "c"], 0)):
        doc = {"choices": choices, "answer": answer}
        gold = sqa.sqa_doc_to_target(doc)
        for p in PREDICTIONS:
            theirs = sqa.sqa_process_results(doc, [p.strip()])["exact_match"]
            assert float(ch.judge_scienceqa(p, gold).correct) == theirs, (p, gold)


def test_ai2d_matches_lmms_eval():
    ai2d = pytest.importorskip("lmms_eval.tasks.ai2d.utils")
    metrics = pytest.importorskip("lmms_eval.api.metrics")
    filt = ai2d.MultiChoiceRegexFilter(regex_pattern=r"([A-Z])\.", group_select=0, ignore_case=True,
                                       ignore_punctuation=True)
    for answer in ("0", "1", "3"):
        doc = {"question": "q", "options": ["w", "x", "y", "z"], "answer": answer}
        gold = ai2d.ai2d_doc_to_target(doc, "mcq")
        filtered = filt.apply([[p] for p in PREDICTIONS], [doc] * len(PREDICTIONS))
        for p, f in zip(PREDICTIONS, filtered):
            theirs = metrics.exact_match_hf_evaluate(predictions=[f.strip()], references=[gold], ignore_case=True,
                                                     ignore_punctuation=True)["exact_match"]
            assert float(ch.judge_ai2d(p, gold).correct) == theirs, (p, gold)


def test_seed_matches_lmms_eval():
    seed = pytest.importorskip("lmms_eval.tasks.seedbench.utils")
    for answer in ("A", "B", "D"):
        doc = {"answer": answer, "data_type": "image", "question_id": "1"}
        for p in PREDICTIONS:
            result = seed.seed_process_result(doc, [p.strip()])
            theirs = seed.seed_aggregation_result([result["seed_image"]])
            assert float(ch.judge_seed(p, answer).correct) == theirs, (p, answer)


def test_realworldqa_matches_lmms_eval():
    rwqa = pytest.importorskip("lmms_eval.tasks.realworldqa.utils")
    for answer in ("A", "B", "C", "D", "2", "Downhill", "b"):
        doc = {"answer": answer}
        for p in PREDICTIONS:
            theirs = rwqa.realworldqa_process_results(doc, [p.strip()])["exact_match"]
            assert float(ch.judge_realworldqa(p, answer).correct) == theirs, (p, answer)


def test_extract_mcq_answer_matches_lmms_eval():
    mcq = pytest.importorskip("lmms_eval.tasks._task_utils.mcq_extract")
    for choices in (None, ["A", "B", "C", "D"], ["A", "B"], ["A", "B", "C"]):
        for p in PREDICTIONS:
            assert ch.extract_mcq_answer(p, choices) == mcq.extract_mcq_answer(p, choices=choices), (p, choices)


def test_mmbench_can_infer_matches_lmms_eval():
    evals = pytest.importorskip("lmms_eval.tasks.mmbench.mmbench_evals")
    ev = evals.MMBench_Evaluator()
    for choices in (CHOICES4, {"A": "left", "B": "right"}, {"A": "happy", "B": "sad", "C": "angry"}):
        for p in PREDICTIONS:
            theirs = ev.can_infer(p.strip(), dict(choices))
            assert (ch.mmbench_can_infer(p.strip(), choices) or False) == theirs, (p, choices)


def test_mmbench_circular_matches_lmms_eval_static(capsys):
    en = pytest.importorskip("lmms_eval.tasks.mmbench.en_utils")
    rows = [{k: v for k, v in r.items() if k != "image"} for r in mmbench_rows()]
    task = TASKS.get("mmbench_en")()
    grouped = sorted(range(len(rows)), key=lambda i: (rows[i]["index"] % 1_000_000, rows[i]["index"]))
    samples = [task.row_sample(rows[i], j) for j, i in enumerate(grouped)]
    rng = random.Random(1)
    for trial in range(40):
        # answers mostly right (gold letter in some form, or the option's text) with messy ones mixed in
        preds = []
        for s in samples:
            roll = rng.random()
            if roll < 0.5:
                preds.append(rng.choice(["{}", "({})", "{}.", "The answer is {}", " {} "]).format(s.answer))
            elif roll < 0.65:
                preds.append(s.meta["choices"][s.answer])
            else:
                preds.append(rng.choice(PREDICTIONS))
        ours = task.evaluate(samples, preds)
        results = [en.mmbench_process_results(rows[i], [p.strip()])["gpt_eval_score"] for i, p in zip(grouped, preds)]
        overall, category, l2 = en.mmbench_evaluator.eval_result(results, eval_method="static")
        assert ours.metrics["circular_accuracy"] == pytest.approx(overall), trial
        for name, value in category.items():
            assert ours.metrics[f"category/{name}"] == pytest.approx(value)
        for name, value in l2.items():
            assert ours.metrics[f"l2_category/{name}"] == pytest.approx(value)
    capsys.readouterr()  # eval_result prints its per-category table


def test_mmbench_static_with_all_right_and_all_wrong():
    task = TASKS.get("mmbench_en")()
    rows = mmbench_rows()
    samples = [task.row_sample(r, i) for i, r in enumerate(rows)]
    right = task.evaluate(samples, [s.answer for s in samples])
    assert right.metrics["circular_accuracy"] == 1.0 and right.metrics["vanilla_accuracy"] == 1.0
    assert sum(right.per_sample) / len(samples) == pytest.approx(1.0)
    wrong = task.evaluate(samples, ["E"] * len(samples))
    assert wrong.metrics["circular_accuracy"] == 0.0 and wrong.per_sample == [0.0] * len(samples)
    assert len(MMBENCH_QUESTIONS) == 3


# -- the other tasks' evaluate -----------------------------------------------------------------------------------------
def test_evaluate_reports_primary_and_unparsed(tmp_path):
    cases = {"scienceqa_img": "exact_match", "ai2d": "exact_match", "seedbench": "seed_image",
             "realworldqa": "exact_match"}
    for name, primary in cases.items():
        path = write_task_data(FIXTURES[name](), str(tmp_path / name), forms=("parquet",))["parquet"]
        task = TASKS.get(name)(data=path)
        samples = task.samples()
        assert task.primary_metric == primary
        preds = [s.answer for s in samples]
        preds[0] = "I cannot tell"
        scored = task.evaluate(samples, preds)
        n = len(samples)
        # every answer but the first is the gold one, stated as the rule reads it: (n - 1) / n
        assert scored.metrics[primary] == pytest.approx((n - 1) / n), name
        assert scored.per_sample == [0.0] + [1.0] * (n - 1)
        assert set(scored.unparsed) == {0} and scored.unparsed[0], name
        assert [task.score(s, p) for s, p in zip(samples, preds)] == scored.per_sample


# -- (e) bad data ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TASK_NAMES)
def test_corrupt_image_gives_a_failed_sample(name, tmp_path):
    ds = with_corrupt_image(FIXTURES[name](), 0)
    path = write_task_data(ds, str(tmp_path), forms=("parquet",))["parquet"]
    samples = TASKS.get(name)(data=path).samples()
    assert samples[0].image is None and "cannot be decoded" in samples[0].meta["error"]
    assert all(s.image is not None for s in samples[1:])


def test_seed_image_row_with_two_images_fails(tmp_path):
    ds = FIXTURES["seedbench"]()
    rows = ds.to_list()
    rows[0]["image"] = rows[1]["image"][:2]  # an image question holding two images
    bad = datasets.Dataset.from_list(rows, features=ds.features)
    path = write_task_data(bad, str(tmp_path), forms=("parquet",))["parquet"]
    samples = TASKS.get("seedbench")(data=path).samples()
    assert samples[0].image is None and "2 images" in samples[0].meta["error"]


def test_missing_column_is_a_config_error(tmp_path):
    from tokenbench.errors import ConfigError

    for name, column in (("mmbench_en", "index"), ("seedbench", "data_type"), ("ai2d", "options")):
        ds = FIXTURES[name]().remove_columns(column)
        path = write_task_data(ds, str(tmp_path / name), forms=("parquet",))["parquet"]
        with pytest.raises(ConfigError, match=column):
            TASKS.get(name)(data=path).samples()
