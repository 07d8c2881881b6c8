"""The yes/no and exact-match tasks (pope, mme, gqa): loading every local form, prompts, scoring worked by hand, and
agreement with lmms-eval's own functions.

lmms-eval's functions are loaded from its installed files directly (``importlib`` on the file): importing
``lmms_eval.tasks`` or ``lmms_eval.api.metrics`` the usual way takes ~9 s (it imports ``evaluate``, transformers and
torch), more than this whole file may take. The code run is theirs, unchanged.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import random
import re
import string

import datasets
import numpy as np
import pytest

from task_fixtures import FIXTURES
from task_fixtures.yesno import write_gqa_data
from tokenbench.api import TASKS
from tokenbench.errors import ConfigError
from tokenbench.data.scoring.exact import exact_match, normalize
from tokenbench.data.scoring.yesno import (MME_COGNITION, MME_PERCEPTION, mme_metrics, mme_parse, pope_metrics,
                                      pope_parse)
from tokenbench.contract.task import Sample, as_pil
from tokenbench.data.hub import distinct_ids
from tokenbench.testing import check_task, write_task_data

POST = "\nAnswer the question using a single word or phrase."


# -- data written once per module ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("yesno-data")
    out = {name: write_task_data(FIXTURES[name](), str(root / name)) for name in ("pope", "mme")}
    out["gqa"] = write_gqa_data(FIXTURES["gqa"](), str(root / "gqa"))
    return out


def _view(samples):
    return [(s.id, s.question, s.answer, {k: v for k, v in s.meta.items()}, s.image.size,
             as_pil(s.image).tobytes()) for s in samples]


# -- (a) every local form gives the same samples -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["pope", "mme", "gqa"])
def test_every_local_form_gives_the_same_samples(written, name):
    views = {form: _view(TASKS.get(name)(data=path).samples()) for form, path in written[name].items()}
    first = next(iter(views.values()))
    assert len(first) == {"pope": 9, "mme": 8, "gqa": 6}[name]
    for form, view in views.items():
        assert view == first, f"{name}: form {form} differs"
    assert len({v[0] for v in first}) == len(first)  # unique ids


def test_loaded_samples_match_the_rows(written):
    pope = TASKS.get("pope")(data=written["pope"]["parquet"]).samples()
    assert [s.id for s in pope] == [str(i) for i in range(1, 10)]
    assert pope[4].question == "Is there a bottle in the image?"  # stored with a trailing space: stripped
    assert [s.answer for s in pope] == ["yes", "no", "no", "yes", "no", "yes", "no", "yes", "no"]
    assert [s.meta["category"] for s in pope] == ["adversarial"] * 3 + ["popular"] * 3 + ["random"] * 3

    mme = TASKS.get("mme")(data=written["mme"]["jsonl"]).samples()
    assert [s.id for s in mme[:4]] == ["existence/000000006040.jpg", "existence/000000006040.jpg#2",
                                       "count/000000450303.jpg", "count/000000450303.jpg#2"]
    assert mme[1].meta["question_id"] == "existence/000000006040.jpg"
    assert mme[0].question == "Is there a train in this image? Please answer yes or no."
    assert [s.answer for s in mme[:2]] == ["Yes", "No"]

    gqa = TASKS.get("gqa")(data=written["gqa"]["hub"]).samples()
    assert [s.meta["image_id"] for s in gqa] == ["n288870", "n288870", "n161313", "n235859", "n288870", "n235859"]
    # images are matched by id, not position: the images table stores n235859, n999999, n288870, n161313
    assert [s.image.size for s in gqa] == [(72, 44), (72, 44), (78, 44), (60, 44), (72, 44), (60, 44)]
    assert gqa[1].answer == "t-shirt" and gqa[1].meta["structural"] == "query"


def test_limit_keeps_ids(written):
    task = TASKS.get("mme")(data=written["mme"]["save_to_disk"])
    assert [s.id for s in task.samples(3)] == [s.id for s in task.samples()][:3]


def test_pope_interleave_covers_every_category_within_a_limit(written):
    stored = TASKS.get("pope")(data=written["pope"]["save_to_disk"])
    mixed = TASKS.get("pope")(data=written["pope"]["save_to_disk"], interleave=True)
    assert [s.meta["category"] for s in stored.samples(3)] == ["adversarial"] * 3
    assert [s.meta["category"] for s in mixed.samples(3)] == ["adversarial", "popular", "random"]
    assert [s.id for s in mixed.samples(6)] == ["1", "4", "7", "2", "5", "8"]  # each category in stored order
    assert sorted(s.id for s in mixed.samples()) == sorted(s.id for s in stored.samples())  # the same split
    assert mixed.version != stored.version  # another sample order under --limit: other rows
    sample = mixed.samples(2)[1]
    assert sample.image.size == stored.samples()[3].image.size  # the image reopened from the reordered rows


def test_distinct_ids_numbers_repeats():
    samples = [Sample(i, None, "q", "a") for i in ("a", "b", "a", "a", "c")]
    assert [s.id for s in distinct_ids(samples)] == ["a", "b", "a#2", "a#3", "c"]


@pytest.mark.parametrize("name", ["pope", "mme", "gqa"])
def test_contract(written, name):
    check_task(name, {"data": written[name]["save_to_disk"]}, limit=4)


def test_task_settings():
    pope, mme, gqa = (TASKS.get(n) for n in ("pope", "mme", "gqa"))
    assert (pope.primary_metric, pope.percent, pope.max_new_tokens) == ("f1", True, 16)
    assert (mme.primary_metric, mme.percent, mme.max_new_tokens) == ("perception", False, 16)
    assert (gqa.primary_metric, gqa.percent, gqa.max_new_tokens) == ("accuracy", True, 16)
    assert pope().dataset_ids()[0] == "lmms-lab-encoder/POPE" and mme().dataset_ids()[0] == "lmms-lab-encoder/MME"
    assert (gqa.config, gqa.split) == ("testdev_balanced_instructions", "testdev")


# -- GQA's layouts --------------------------------------------------------------------------------------------------
def test_gqa_images_option(written):
    root = written["gqa"]["parquet"]
    base = _view(TASKS.get("gqa")(data=written["gqa"]["save_to_disk"]).samples())
    task = TASKS.get("gqa")(data=os.path.join(root, "instructions.parquet"),
                            images=os.path.join(root, "images.parquet"))
    assert _view(task.samples()) == base


def test_gqa_without_images_is_a_config_error(written, tmp_path):
    with pytest.raises(ConfigError, match="images=PATH"):
        TASKS.get("gqa")(data=os.path.join(written["gqa"]["parquet"], "instructions.parquet")).samples()
    FIXTURES["gqa"]()["instructions"].to_parquet(str(tmp_path / "instructions.parquet"))
    with pytest.raises(ConfigError, match="not the images"):
        TASKS.get("gqa")(data=str(tmp_path)).samples()


def test_gqa_images_without_id_column(tmp_path):
    dd = FIXTURES["gqa"]()
    dd["images"] = dd["images"].rename_column("id", "imageId")
    path = write_gqa_data(dd, str(tmp_path), forms=("save_to_disk",))["save_to_disk"]
    with pytest.raises(ConfigError, match="no column 'id'"):
        TASKS.get("gqa")(data=path).samples()


# -- (b) prompts ----------------------------------------------------------------------------------------------------
def test_prompt_snapshots(written):
    pope = TASKS.get("pope")(data=written["pope"]["save_to_disk"])
    mme = TASKS.get("mme")(data=written["mme"]["save_to_disk"])
    gqa = TASKS.get("gqa")(data=written["gqa"]["save_to_disk"])
    for family in ("llava", "qwen2.5-vl"):
        assert pope.prompt(pope.samples(1)[0], family) == (
            "Is there a dining table in the image?\nAnswer the question using a single word or phrase.")
        # " Please answer yes or no." is replaced by the post prompt
        assert mme.prompt(mme.samples(1)[0], family) == (
            "Is there a train in this image?\nAnswer the question using a single word or phrase.")
        assert gqa.prompt(gqa.samples(1)[0], family) == (
            "Is the surfer that looks wet wearing a wetsuit?\nAnswer the question using a single word or phrase.")


# -- lmms-eval's code, loaded from its files ------------------------------------------------------------------------
def _lmms_path(rel: str) -> str:
    spec = importlib.util.find_spec("lmms_eval")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("lmms-eval is not installed")
    path = os.path.join(spec.submodule_search_locations[0], rel)
    if not os.path.isfile(path):
        pytest.skip(f"lmms-eval has no {rel}")
    return path


def _lmms_module(task: str):
    path = _lmms_path(f"tasks/{task}/utils.py")
    spec = importlib.util.spec_from_file_location(f"_lmms_eval_{task}_utils", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        pytest.skip(f"lmms-eval's {task}/utils.py does not import: {exc}")
    return module


def _lmms_exact_match():
    """lmms-eval's ``exact_match_hf_evaluate``, its source taken from ``lmms_eval/api/metrics.py`` unchanged."""
    with open(_lmms_path("api/metrics.py")) as fh:
        tree = ast.parse(fh.read())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "exact_match_hf_evaluate")
    namespace = {"np": np, "re": re, "string": string}
    exec(compile(ast.Module(body=[node], type_ignores=[]), "lmms_eval/api/metrics.py", "exec"), namespace)
    return namespace["exact_match_hf_evaluate"]


def test_prompts_match_lmms_eval(written):
    kwargs = {"pre_prompt": "", "post_prompt": POST}
    for name, module, doc_to_text in (("pope", "pope", "pope_doc_to_text"), ("mme", "mme", "mme_doc_to_text")):
        fn = getattr(_lmms_module(module), doc_to_text)
        task = TASKS.get(name)(data=written[name]["save_to_disk"])
        for sample, row in zip(task.samples(), FIXTURES[name]()):
            assert task.prompt(sample, "llava") == fn(row, kwargs)
    fn = _lmms_module("gqa").gqa_doc_to_text
    task = TASKS.get("gqa")(data=written["gqa"]["save_to_disk"])
    for sample, row in zip(task.samples(), FIXTURES["gqa"]()["instructions"]):
        assert task.prompt(sample, "qwen2.5-vl") == fn(row, kwargs)


# -- (c) scoring worked by hand -------------------------------------------------------------------------------------
# Ten POPE samples: (category, gold, raw answer) -> what lmms-eval's rule makes of it
POPE_HAND = [
    ("adversarial", "yes", "Yes"),     # 1  TP
    ("adversarial", "yes", "yes"),     # 2  TP
    ("random", "yes", " YES "),        # 3  TP (stripped, lower-cased)
    ("adversarial", "yes", "No"),      # 4  FN
    ("random", "yes", "Yes."),         # 5  neither yes nor no: wrong, in no TP/FN (unparsed)
    ("adversarial", "no", "no"),       # 6  TN
    ("adversarial", "no", "No"),       # 7  TN
    ("random", "no", "yes"),           # 8  FP
    ("random", "no", "Yes"),           # 9  FP
    ("random", "no", "nope"),          # 10 neither: wrong, in no FP (unparsed)
]


def _pope_samples(rows):
    return [Sample(str(i), None, "Is there a dog in the image?", gold, {"category": cat})
            for i, (cat, gold, _) in enumerate(rows)]


def test_pope_hand_worked():
    task = TASKS.get("pope")()
    scored = task.evaluate(_pope_samples(POPE_HAND), [p for *_, p in POPE_HAND])
    m = scored.metrics
    # pooled: TP=3 (1,2,3), FP=2 (8,9), FN=1 (4), TN=2 (6,7), 2 unparsed (5,10)
    assert m["accuracy"] == pytest.approx(5 / 10)  # right: 1,2,3,6,7
    assert m["precision"] == pytest.approx(3 / 5)  # TP / (TP + FP)
    assert m["recall"] == pytest.approx(3 / 4)  # TP / (TP + FN): sample 5 counts in neither
    assert m["f1"] == pytest.approx(2 * 0.6 * 0.75 / (0.6 + 0.75))  # = 0.9 / 1.35 = 2/3
    assert m["yes_ratio"] == pytest.approx(5 / 10)  # lmms-eval's: gold yes 1-5
    assert m["pred_yes_ratio"] == pytest.approx(5 / 10)  # answers "yes": 1,2,3,8,9
    # adversarial = 1,2,4,6,7: TP=2, FN=1, TN=2, FP=0 -> acc 4/5, P 2/2, R 2/3, F1 2*1*(2/3)/(5/3) = 0.8
    assert (m["adversarial/accuracy"], m["adversarial/precision"]) == (pytest.approx(0.8), pytest.approx(1.0))
    assert (m["adversarial/recall"], m["adversarial/f1"]) == (pytest.approx(2 / 3), pytest.approx(0.8))
    assert (m["adversarial/yes_ratio"], m["adversarial/pred_yes_ratio"]) == (pytest.approx(0.6), pytest.approx(0.4))
    # random = 3,5,8,9,10: TP=1, FP=2, FN=0 (5 unparsed), TN=0 -> acc 1/5, P 1/3, R 1/1, F1 (2/3)/(4/3) = 0.5
    assert (m["random/accuracy"], m["random/precision"]) == (pytest.approx(0.2), pytest.approx(1 / 3))
    assert (m["random/recall"], m["random/f1"]) == (pytest.approx(1.0), pytest.approx(0.5))
    assert "popular/f1" not in m
    assert m["f1_mean_categories"] == pytest.approx((0.8 + 0.5) / 2)  # 0.65, not the pooled 2/3
    assert scored.per_sample == [1, 1, 1, 0, 0, 1, 1, 0, 0, 0]
    assert sorted(scored.unparsed) == [4, 9]


def test_pope_degenerate_counts():
    # no "yes" answered: precision 0/0 -> 0, F1 -> 0; no gold at all -> every metric 0
    m = pope_metrics(["no", "no"], ["yes", "no"])
    assert (m["precision"], m["recall"], m["f1"], m["accuracy"]) == (0.0, 0.0, 0.0, 0.5)
    assert pope_metrics([], [])["f1"] == 0.0
    assert [pope_parse(p) for p in (" Yes\n", "NO", "Yes.", "yes, there is")] == ["yes", "no", "yes.", "yes, there is"]


# MME: three images; acc counts questions, acc+ needs both questions of an image right
MME_HAND = [  # (category, image, gold, raw answer)
    ("existence", "A", "Yes", "Yes"),             # right
    ("existence", "A", "No", "No."),              # right ("." dropped)   -> image A: acc 100, acc+ 100
    ("existence", "B", "Yes", "yes, there is"),  # right ("yes" in "yes,")
    ("existence", "B", "No", "Yes"),              # wrong                  -> image B: acc 50, acc+ 0
    ("code_reasoning", "C", "No", "none"),        # right ("no" in "none")
    ("code_reasoning", "C", "Yes", "I think so"),  # "other": wrong, unparsed -> image C: acc 50, acc+ 0
]


def test_mme_hand_worked():
    task = TASKS.get("mme")()
    samples = [Sample(f"{img}{i}", None, "q", gold, {"category": cat, "question_id": img})
               for i, (cat, img, gold, _) in enumerate(MME_HAND)]
    scored = task.evaluate(samples, [p for *_, p in MME_HAND])
    m = scored.metrics
    assert m["existence/acc"] == pytest.approx((100 + 50) / 2)  # 75: mean over images A, B
    assert m["existence/acc_plus"] == pytest.approx((100 + 0) / 2)  # 50: only A has both right
    assert m["existence/score"] == pytest.approx(125)
    assert (m["code_reasoning/acc"], m["code_reasoning/acc_plus"]) == (pytest.approx(50), pytest.approx(0))
    assert m["perception"] == pytest.approx(125)  # existence is the only perception subtask present
    assert m["cognition"] == pytest.approx(50)
    assert m["total"] == pytest.approx(175)
    assert scored.per_sample == [1, 1, 1, 0, 1, 0]
    assert sorted(scored.unparsed) == [5]


def test_mme_acc_plus_needs_both_questions():
    # one image, both wrong vs one wrong: acc+ is 0 either way, acc 0 vs 50; both right: 100 + 100
    assert mme_metrics(["color"] * 2, ["x", "x"], [False, False])["color/acc_plus"] == 0
    one = mme_metrics(["color"] * 2, ["x", "x"], [True, False])
    assert (one["color/acc"], one["color/acc_plus"], one["perception"]) == (50, 0, 50)
    both = mme_metrics(["color"] * 2, ["x", "x"], [True, True])
    assert (both["color/score"], both["perception"], both["cognition"]) == (200, 200, 0)
    # two subtasks of the same total add up: 200 (color) + 50 (OCR)
    two = mme_metrics(["color", "color", "OCR", "OCR"], ["x", "x", "y", "y"], [True, True, False, True])
    assert two["perception"] == 250


def test_mme_parse_cases():
    cases = {"Yes": "yes", "No.": "no", " NO ": "no", "y": "yes", "N": "no", "n.": "no", "x": "other",
             "none": "no", "not sure": "no", "nothing": "no", "know": "no", "yesterday": "yes", "Y.e.s": "yes",
             "The answer is yes": "other", "on": "other", "": "other", "...": "other", "yes, no": "yes"}
    assert {p: mme_parse(p) for p in cases} == cases
    assert len(MME_PERCEPTION) == 10 and len(MME_COGNITION) == 4


def test_mme_limit_cutting_a_pair(written):
    task = TASKS.get("mme")(data=written["mme"]["save_to_disk"])
    samples = task.samples(3)  # existence (both questions) and the first count question
    m = task.evaluate(samples, ["Yes", "No", "Yes"]).metrics
    assert (m["existence/score"], m["count/acc"], m["count/acc_plus"]) == (200, 100, 100)
    assert m["perception"] == 400


GQA_HAND = [  # (raw answer, gold, exact match?)
    ("Yes", "yes", True),             # case ignored
    (" yes. ", "yes", True),          # stripped, then "." removed
    ("T-shirt", "t-shirt", True),     # both become "tshirt"
    ("tshirt", "t-shirt", True),      # the gold loses its hyphen too
    ("LEFT!!!", "left", True),
    ("Left\n", "left", True),
    ("don't know", "dont know", True),
    ("the table", "table", False),    # articles are not removed
    ("2", "two", False),              # numbers are not normalised
    ("yes .", "yes", False),          # "yes " after removing "." (the space was inside)
    ("left side", "left", False),
    ("café", "cafe", False),          # only ASCII punctuation goes; accents stay
    ("", "yes", False),
    ("yes", " yes", False),           # the gold is not stripped
]


@pytest.mark.parametrize("prediction,gold,expected", GQA_HAND)
def test_gqa_normalisation(prediction, gold, expected):
    assert exact_match(prediction, gold) is expected


def test_gqa_evaluate():
    task = TASKS.get("gqa")()
    samples = [Sample(str(i), None, "q", gold) for i, (_, gold, _) in enumerate(GQA_HAND)]
    scored = task.evaluate(samples, [p for p, *_ in GQA_HAND])
    assert scored.per_sample == [float(e) for *_, e in GQA_HAND]
    assert scored.metrics == {"accuracy": pytest.approx(7 / 14)} and not scored.unparsed
    assert normalize("A-B, c.") == "ab c"


# -- (d) agreement with lmms-eval on many answers -------------------------------------------------------------------
ANSWERS = ["Yes", "No", "yes", "no", "YES", "NO", " Yes ", "Yes.", "No.", "yes, there is a dog", "No, there is not.",
           "y", "n", "Y", "N.", "none", "not sure", "nothing", "yesterday", "I think yes", "", "   ", "Yes\nThere is",
           "No\n", "The answer is no.", "maybe", "yes yes", "nope", "know", "Yes!", "no!", "Y.E.S", "on", "oui",
           "True", "1", "NO.", "yes.", "\tno", "N o", "ye", "no-one", "Noo", "YES, IT IS"]


def test_pope_matches_lmms_eval():
    ref = _lmms_module("pope")
    rng = random.Random("pope-vs-lmms-eval")
    rows = [(rng.choice(("adversarial", "popular", "random")), rng.choice(("yes", "no")), rng.choice(ANSWERS))
            for _ in range(400)]
    scored = TASKS.get("pope")().evaluate(_pope_samples(rows), [p for *_, p in rows])
    results = {}
    for i, (cat, gold, pred) in enumerate(rows):
        out = ref.pope_process_results({"question_id": str(i), "answer": gold}, [pred.strip()])
        assert scored.per_sample[i] == out["pope_accuracy"]["score"]
        results.setdefault(cat, []).append(out["pope_accuracy"])
    aggregate = {"accuracy": ref.pope_aggregate_accuracy, "precision": ref.pope_aggregate_precision,
                 "recall": ref.pope_aggregate_recall, "f1": ref.pope_aggregate_f1_score,
                 "yes_ratio": ref.pope_aggregate_yes_ratio}
    pooled = [r for rs in results.values() for r in rs]
    for metric, fn in aggregate.items():
        assert scored.metrics[metric] == pytest.approx(fn(pooled)), metric
        for cat, rs in results.items():
            assert scored.metrics[f"{cat}/{metric}"] == pytest.approx(fn(rs)), f"{cat}/{metric}"
    assert 0 < scored.metrics["f1"] < 1  # the answers exercise every count


def test_mme_matches_lmms_eval():
    ref = _lmms_module("mme")
    assert tuple(ref.eval_type_dict["Perception"]) == MME_PERCEPTION
    assert tuple(ref.eval_type_dict["Cognition"]) == MME_COGNITION
    rng = random.Random("mme-vs-lmms-eval")
    rows = []
    for cat in (*MME_PERCEPTION, *MME_COGNITION):
        for image in range(rng.randint(1, 4)):
            qid = f"{cat}/{image}.jpg"
            rows += [(cat, qid, "Yes", rng.choice(ANSWERS)), (cat, qid, "No", rng.choice(ANSWERS))]
    samples = [Sample(f"{qid}#{i}", None, "q", gold, {"category": cat, "question_id": qid})
               for i, (cat, qid, gold, _) in enumerate(rows)]
    scored = TASKS.get("mme")().evaluate(samples, [p for *_, p in rows])
    by_key, by_cat = {}, {}
    for i, (cat, qid, gold, pred) in enumerate(rows):
        assert mme_parse(pred) == ref.parse_pred_ans(pred.strip())
        ((key, result),) = ref.mme_process_results({"question_id": qid, "answer": gold, "category": cat},
                                                    [pred.strip()]).items()
        assert scored.per_sample[i] == result["score"]
        by_key.setdefault(key, []).append(result)
        by_cat.setdefault(cat, []).append(result)
    assert scored.metrics["perception"] == pytest.approx(ref.mme_aggregate_results(by_key["mme_perception_score"]))
    assert scored.metrics["cognition"] == pytest.approx(ref.mme_aggregate_results(by_key["mme_cognition_score"]))
    for cat, results in by_cat.items():
        assert scored.metrics[f"{cat}/score"] == pytest.approx(ref.mme_aggregate_results(results)), cat


def test_gqa_matches_lmms_eval():
    theirs = _lmms_exact_match()
    golds = ["yes", "no", "t-shirt", "left", "white", "dont know", "table", "two", "man's hat", "1", "black and white"]
    preds = ANSWERS + ["T-shirt", "tshirt", "LEFT!!!", "Left\n", "don't know", "the table", "2", "Man's hat",
                       "mans hat", "1.", "Black and White.", "black & white", "white.", " white ", "(white)", "whité"]
    for gold in golds:
        for pred in preds:
            expected = theirs(predictions=[pred.strip()], references=[gold], ignore_case=True,
                              ignore_punctuation=True)["exact_match"]
            assert exact_match(pred, gold) == bool(expected), (pred, gold)


# -- (e) bad data ---------------------------------------------------------------------------------------------------
def _corrupt(ds: datasets.Dataset, index: int, column: str = "image") -> datasets.Dataset:
    raw = ds.cast_column(column, datasets.Image(decode=False))
    rows = raw.to_list()
    rows[index][column] = {"bytes": b"this is not an image", "path": None}
    return datasets.Dataset.from_list(rows, features=raw.features)


@pytest.mark.parametrize("name", ["pope", "mme"])
def test_corrupt_image_gives_a_failed_sample(tmp_path, name):
    path = write_task_data(_corrupt(FIXTURES[name](), 1), str(tmp_path), forms=("save_to_disk",))["save_to_disk"]
    samples = TASKS.get(name)(data=path).samples()
    assert samples[1].image is None and "cannot be decoded" in samples[1].meta["error"]
    assert all(s.image is not None for i, s in enumerate(samples) if i != 1)


def test_gqa_corrupt_or_missing_image(tmp_path):
    dd = FIXTURES["gqa"]()
    dd["images"] = _corrupt(dd["images"], 3)  # n161313, asked about by question 3
    rows = dd["instructions"].to_list()
    rows[0]["imageId"] = "n000000"  # an image the images table does not have
    dd["instructions"] = datasets.Dataset.from_list(rows, features=dd["instructions"].features)
    path = write_gqa_data(dd, str(tmp_path), forms=("save_to_disk",))["save_to_disk"]
    samples = TASKS.get("gqa")(data=path).samples()
    assert samples[0].image is None and "no image with id 'n000000'" in samples[0].meta["error"]
    assert samples[2].image is None and "cannot be decoded" in samples[2].meta["error"]
    assert [s.image is None for s in samples] == [True, False, True, False, False, False]
