"""Yes/no scoring: POPE's and MME's rules as lmms-eval applies them.

Both follow lmms-eval (snapshot 75571cfe, also pip 0.7.3) exactly, including its quirks, which are stated here:

- lmms-eval strips surrounding whitespace from every generated answer before a task sees it
  (``lmms_eval/api/task.py``, ``ConfigurableTask.process_results``); :func:`pope_parse` and :func:`mme_parse` do it too.

POPE (``lmms_eval/tasks/pope/utils.py``: ``pope_process_results`` and the ``pope_aggregate_*`` functions):

- the answer is the whole prediction, lower-cased and stripped; it is right when it *equals* the lower-cased gold
  (``"Yes."``, ``"yes, there is"`` and ``"Yes\\nThere is a dog"`` are all wrong: no punctuation or first-word rule);
- precision = TP / (TP + FP), recall = TP / (TP + FN), F1 their harmonic mean (0 when a denominator is 0), where
  TP = gold yes and answer ``"yes"``, FP = gold no and answer ``"yes"``, FN = gold yes and answer ``"no"``: an answer
  that is neither ``"yes"`` nor ``"no"`` counts in none of them (it lowers accuracy, not recall);
- ``yes_ratio`` is lmms-eval's: the share of *gold* answers that are yes (0.5 on POPE whatever the model says). The
  POPE paper's yes-ratio, the share of *answers* that are yes, is given as ``pred_yes_ratio`` (an addition).

LLaVA's own ``llava/eval/eval_pope.py`` parses differently (keeps the first sentence; "no"/"not" anywhere means no,
anything else yes); we do not use it: every POPE number here is lmms-eval's parse.

MME (``lmms_eval/tasks/mme/utils.py``: ``parse_pred_ans``, ``mme_process_results``, ``mme_aggregate_results``,
``eval_type_dict``):

- the answer is lower-cased, stripped and rid of every ``"."``; ``"yes"``/``"no"`` are themselves; a one-letter
  answer ``"y"``/``"n"`` means yes/no; otherwise ``"yes"`` within the first four characters means yes, else ``"no"``
  within them means no (so ``"none"`` and ``"not sure"`` are no), else it is ``"other"`` (wrong, and unparsed here);
- per subtask (the ``category`` column) and image (``question_id``, shared by the image's two questions): acc = the
  share of its questions answered right x 100, acc+ = 100 when all are right, else 0; the subtask's score is the mean
  over its images of acc + acc+ (so at most 200); perception (10 subtasks) and cognition (4) are the sums of their
  subtasks' scores (at most 2000 and 800). A category in neither list counts as cognition, as lmms-eval's key choice
  does.
- Deviation: lmms-eval asserts that every image has exactly two questions; here an image with one question (a
  ``--limit`` that cuts a pair, or a failed image left out of the run) is scored on the questions it has.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

# -- POPE --------------------------------------------------------------------------------------------------------------


def pope_parse(prediction: str) -> str:
    """The answer lmms-eval compares with the gold: the prediction stripped and lower-cased (``"yes"``, ``"no"`` or
    anything else, which is never right)."""
    return (prediction or "").strip().lower().strip()


def pope_gold(answer: str) -> str:
    """The gold answer as lmms-eval reads it (lower-cased, stripped)."""
    return answer.lower().strip()


def pope_correct(prediction: str, answer: str) -> bool:
    return pope_parse(prediction) == pope_gold(answer)


def pope_metrics(predictions: Sequence[str], answers: Sequence[str]) -> dict[str, float]:
    """accuracy, precision, recall, f1, yes_ratio (lmms-eval's: gold yes share) and pred_yes_ratio (answers parsed as
    yes) of raw ``predictions`` against gold ``answers``; every metric is a share in [0, 1]."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answers")
    tp = fp = fn = right = gold_yes = gold_no = said_yes = 0
    for prediction, answer in zip(predictions, answers):
        said, gold = pope_parse(prediction), pope_gold(answer)
        right += said == gold
        said_yes += said == "yes"
        gold_yes += gold == "yes"
        gold_no += gold == "no"
        if said == "yes":
            tp += gold == "yes"
            fp += gold == "no"
        elif said == "no" and gold == "yes":
            fn += 1
    n = len(answers)
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    return {
        "accuracy": _ratio(right, n),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "yes_ratio": _ratio(gold_yes, gold_yes + gold_no),
        "pred_yes_ratio": _ratio(said_yes, n),
    }


def pope_unparsed(prediction: str) -> str | None:
    """Why ``prediction`` is neither yes nor no under POPE's rule, or None."""
    said = pope_parse(prediction)
    if said in ("yes", "no"):
        return None
    return (f"answer {prediction!r} is not exactly 'yes' or 'no' after stripping and lower-casing (lmms-eval's POPE "
            "rule): counted wrong, and in no TP/FP/FN")


# -- MME ---------------------------------------------------------------------------------------------------------------

#: lmms-eval's ``eval_type_dict``: MME's subtasks (the ``category`` column) of each total
MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork",
                  "OCR")
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def mme_parse(prediction: str) -> str:
    """``"yes"``, ``"no"`` or ``"other"``: lmms-eval's ``parse_pred_ans`` on the stripped prediction."""
    text = (prediction or "").strip().lower().strip().replace(".", "")
    if text in ("yes", "no"):
        return text
    if len(text) == 1:
        return {"y": "yes", "n": "no"}.get(text, "other")
    head = text[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return "other"


def mme_gold(answer: str) -> str:
    return answer.lower().strip().replace(".", "")


def mme_correct(prediction: str, answer: str) -> bool:
    return mme_parse(prediction) == mme_gold(answer)


def mme_total_of(category: str) -> str:
    """``"perception"`` or ``"cognition"``: the total a subtask counts in (unknown ones: cognition, as lmms-eval)."""
    return "perception" if category in MME_PERCEPTION else "cognition"


def mme_metrics(categories: Sequence[str], image_ids: Sequence[str], correct: Iterable[bool]) -> dict[str, float]:
    """MME's scores from each question's subtask, image id (``question_id``) and correctness.

    ``<subtask>/acc`` and ``<subtask>/acc_plus`` (percent, 0-100), ``<subtask>/score`` (their sum, 0-200, what
    lmms-eval logs per subtask), ``perception`` and ``cognition`` (the sums of their subtasks' scores, as lmms-eval's
    ``mme_perception_score``/``mme_cognition_score``) and ``total`` (perception + cognition). Only subtasks present
    count; a total with no subtask present is 0."""
    by_image: dict[str, dict[str, list[bool]]] = defaultdict(dict)
    for category, image, ok in zip(categories, image_ids, correct, strict=True):
        by_image[category].setdefault(image, []).append(bool(ok))
    metrics: dict[str, float] = {}
    totals = {"perception": 0.0, "cognition": 0.0}
    ordered = [c for c in (*MME_PERCEPTION, *MME_COGNITION) if c in by_image]
    ordered += sorted(c for c in by_image if c not in ordered)
    for category in ordered:
        images = by_image[category]
        acc = sum(100.0 * sum(oks) / len(oks) for oks in images.values()) / len(images)
        acc_plus = sum(100.0 * all(oks) for oks in images.values()) / len(images)
        metrics[f"{category}/acc"] = acc
        metrics[f"{category}/acc_plus"] = acc_plus
        metrics[f"{category}/score"] = acc + acc_plus
        totals[mme_total_of(category)] += acc + acc_plus
    metrics.update(totals)
    metrics["total"] = totals["perception"] + totals["cognition"]
    return metrics


def mme_unparsed(prediction: str) -> str | None:
    if mme_parse(prediction) != "other":
        return None
    return (f"answer {prediction!r} is not yes/no under lmms-eval's MME rule (yes/no, y/n, or 'yes'/'no' in the "
            "first four characters): counted wrong")


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0
