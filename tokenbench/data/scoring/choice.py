"""Option-letter scoring as lmms-eval does it for its multiple-choice image tasks. The five tasks parse answers by five
different rules; this module has one function per rule and shares only what two tasks do the same way.

Which task uses what (lmms-eval snapshot 75571cfe; lmms-eval 0.7.3 has the same code):

=============  =======================================  ==========================================================
task           lmms-eval file                           functions here
=============  =======================================  ==========================================================
scienceqa_img  ``tasks/scienceqa/utils.py``              :func:`judge_scienceqa`; prompt :func:`format_options`
               (``sqa_process_results``)
ai2d           ``tasks/ai2d/ai2d.yaml`` filter +         :func:`judge_ai2d` (:func:`ai2d_filter`, :func:`exact_match`);
               ``tasks/ai2d/utils.py``                   prompt :func:`format_options`
               (``MultiChoiceRegexFilter``) + the
               ``exact_match`` metric (``api/metrics.py``)
mmbench_en     ``tasks/mmbench/mmbench_evals.py``        :func:`judge_mmbench` (:func:`mmbench_can_infer`, then
               (``MMBench_Evaluator``: ``can_infer``,    :func:`extract_mcq_answer`), :func:`circular_groups`,
               ``eval_sub_data``, ``eval_result`` with   :func:`circular_results`; prompt :func:`mmbench_options_prompt`
               ``eval_method="static"``), ``en_utils.py``
seedbench      ``tasks/seedbench/utils.py``              :func:`judge_seed`
               (``seed_process_result``,
               ``seed_aggregation_result``)
realworldqa    ``tasks/realworldqa/utils.py``            :func:`judge_realworldqa` (:func:`extract_mcq_answer`)
               (``realworldqa_process_results``)
=============  =======================================  ==========================================================

Shared: :func:`extract_mcq_answer` (``tasks/_task_utils/mcq_extract.py``) is both RealWorldQA's rule for letter answers
and MMBench's static fallback; :func:`format_options` ("A. x" lines) is ScienceQA's and AI2D's option list.

The rules, as lmms-eval applies them (every prediction is first stripped of surrounding whitespace, as lmms-eval's
``Task.process_results`` does):

- ScienceQA: right if the answer, lower-cased, is the gold letter; else, if it starts with an upper-case character and
  a full stop ("B." / "B. a cat"), right if that character is the gold letter; else wrong. So "(B)", "b.", "B)" and
  "The answer is B" are wrong.
- AI2D: the filter takes the letter of an answer starting with "<capital>." (after optional whitespace); any other
  answer is kept whole; then exact match with the gold letter ignoring case and ASCII punctuation. So "(B)", "b",
  "B)" are right, "B cat" and "The answer is B" wrong.
- SEED-Bench: the first character of the answer, compared case-insensitively with the gold letter. So "B", "b",
  "B. cat", "Bird" give B; "(B)" and "The answer is B" give "(" and "T".
- RealWorldQA: gold letters A-D: :func:`extract_mcq_answer` with choices A-D (upper-case letters only, so "b" is not
  found); other gold answers (numbers, words): the answer lower-cased, trailing full stops removed, equal to the
  lower-cased gold answer.
- MMBench: :func:`mmbench_can_infer` (one of A-E standing alone or as "B." "(B)" "B:" ... among the whitespace-separated
  words, else exactly one option's text inside the answer), and where that finds nothing, :func:`extract_mcq_answer`
  with the row's option letters. CircularEval: a question (``index`` below 1e6) is right only if every row whose
  ``index`` modulo 1e6 is its index (its circular rotations) is right.

A *judgement* is ``(correct, letter, reason)``: ``letter`` is what the rule read from the answer (None when it read
nothing), ``reason`` says why nothing could be read (None when something was). An unparsed answer is scored as
lmms-eval scores it, which under every one of these rules means wrong (a letter gold answer can only be matched by a
letter). RealWorldQA's open questions (gold answer a word or number) are compared as text and never unparsed.

Differences from lmms-eval: none in what is scored. This module computes MMBench's CircularEval from the rows it is
given directly rather than through pandas (same result: lmms-eval sorts the rows by index, keeps the groups whose main
row, index < 1e6, is present, and takes the mean over those main rows); and it does not draw lmms-eval's random
answer for an unparsed MMBench answer, which only the ``openai`` evaluation does, never the static one.
"""

from __future__ import annotations

import math
import re
import string
from typing import Iterable, Mapping, NamedTuple, Sequence

LETTERS = string.ascii_uppercase
#: MMBench's question ids: a circular rotation of question ``i`` has index ``i + k * 1e6`` (k = 1, 2, 3)
MMBENCH_ROTATION = 1_000_000


class Judgement(NamedTuple):
    """One answer judged by a task's rule."""

    correct: bool
    letter: str | None  # what the rule read from the answer (None: nothing)
    reason: str | None = None  # why nothing could be read (None when something was)


# -- prompts -----------------------------------------------------------------------------------------------------------
def format_options(options: Sequence[str], sep: str = "\n") -> str:
    """``"A. first\\nB. second"``: ScienceQA's (``sqa_doc_to_text``) and AI2D's (``ai2d_doc_to_text``, format mcq)
    option list."""
    return sep.join(f"{LETTERS[i]}. {text}" for i, text in enumerate(options))


def _missing(value) -> bool:
    """pandas' ``isna`` for the cell types a dataset row holds (None, NaN)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def mmbench_options_prompt(row: Mapping, sys_prompt: str = "There are several options:") -> str:
    """MMBench's option block (``MMBench_Evaluator.create_options_prompt``): the system line, then "A. text" for each of
    the columns A..E present whose value is non-empty and not the string "nan"."""
    lines = [sys_prompt]
    for key in "ABCDE":
        value = row.get(key)
        if key in row and value and not _missing(value) and value != "nan":
            lines.append(f"{key}. {value}")
    return "\n".join(lines)


def mmbench_choices(row: Mapping) -> dict[str, str]:
    """The options MMBench's scorer matches answers against (``MMBench_Evaluator.build_choices``): each of A-D whose
    value is not missing (an empty string or the string "nan" counts, as it does in lmms-eval)."""
    return {k: row[k] for k in "ABCD" if k in row and not _missing(row[k])}


# -- shared: lmms-eval's robust letter extraction ----------------------------------------------------------------------
_DEFAULT_CHOICES = tuple("ABCDEFGH")
#: answer phrases after which the first choice letter is taken (``mcq_extract._ANSWER_PHRASES``, same order)
_PHRASES = (
    "the answer is", "answer is", "the correct answer is", "correct answer is", "the best answer is",
    "best answer is", "the correct option is", "correct option is", "the best option is", "best option is",
    "the choice is", "choice is", "the correct choice is", "correct choice is", "i choose", "i select", "i pick",
    "my answer is", "my choice is", "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选", "答えは",
)
#: (format, priority): a letter found in a higher-priority form wins; among equals the later position wins
_FORMS = {"start": 10, "end": 9, "phrase": 7, "paren": 6, "period": 5, "colon": 4, "close": 3, "space": 2, "any": 0}


def extract_mcq_answer(response: str, choices: Sequence[str] | None = None) -> str:
    """The choice letter in a free-form answer, or "" (``lmms_eval/tasks/_task_utils/mcq_extract.py``,
    ``extract_mcq_answer``). Used by RealWorldQA and by MMBench's static fallback.

    The answer is stripped of whitespace, then of the characters , . ! ? ; : ' " at either end (in that order), and
    padded with a space each side. Each choice letter (case-sensitive) is looked for as "(X)", "X.", "X:", "X)", "X "
    (last occurrence), after the first occurrence of an answer phrase ("the answer is", ...: the first X after it),
    at the start or end of the text when not next to another letter; only when none of these is found, anywhere. The
    letter of the highest-priority form wins (start > end > phrase > (X) > X. > X: > X) > "X "), the later one among
    equals."""
    if not response or not response.strip():
        return ""
    letters = list(choices) if choices else list(_DEFAULT_CHOICES)
    text = response.strip()
    for ch in ",.!?;:'\"":
        text = text.strip(ch)
    text = f" {text} "
    found: list[tuple[int, int, str]] = []  # (priority, position, letter)

    for form, pattern in (("paren", "({})"), ("period", "{}."), ("colon", "{}:"), ("close", "{})"), ("space", "{} ")):
        for letter in letters:
            at = text.rfind(pattern.format(letter))
            if at >= 0:
                found.append((_FORMS[form], at, letter))
    lowered = text.lower()
    for phrase in _PHRASES:
        at = lowered.find(phrase)
        if at < 0:
            continue
        for letter in letters:
            pos = text.find(letter, at + len(phrase))
            if pos >= 0:
                found.append((_FORMS["phrase"], pos, letter))
    core = text.strip()
    for letter in letters:
        if core.startswith(letter) and (len(core) == 1 or not core[1].isalpha()):
            found.append((_FORMS["start"], 0, letter))
    for letter in letters:
        if core.endswith(letter) and (len(core) == 1 or not core[-2].isalpha()):
            found.append((_FORMS["end"], len(text) - 1, letter))
    if not found:
        found = [(_FORMS["any"], text.rfind(letter), letter) for letter in letters if letter in text]
    if not found:
        return ""
    # stable sort on (priority, position), highest first: ties keep the order they were found in, as lmms-eval's do
    found.sort(key=lambda f: (f[0], f[1]), reverse=True)
    return found[0][2]


# -- ScienceQA ---------------------------------------------------------------------------------------------------------
def judge_scienceqa(prediction: str, gold: str) -> Judgement:
    """``sqa_process_results`` (``lmms_eval/tasks/scienceqa/utils.py``): ``gold`` is the gold letter."""
    pred = prediction.strip()
    target = gold.strip().lower()
    if pred.lower() == target:
        return Judgement(True, gold.strip().upper())
    if len(pred) >= 2 and pred[0].isupper() and pred[1] == ".":
        return Judgement(pred[0].lower() == target, pred[0])
    if len(pred) == 1 and pred.isalpha():
        return Judgement(False, pred.upper())
    return Judgement(False, None, "neither a bare letter nor '<capital letter>.' at the start")


# -- AI2D --------------------------------------------------------------------------------------------------------------
_AI2D_LEAD = re.compile(r"\s*([A-Z])\.")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def ai2d_filter(response: str) -> str:
    """AI2D's ``MultiChoiceRegexFilter.apply`` (``lmms_eval/tasks/ai2d/utils.py``): the letter of a response that starts
    (after whitespace) with a capital letter and a full stop, else the response unchanged."""
    m = _AI2D_LEAD.match(response)
    return m.group(1) if m else response


def exact_match(prediction: str, reference: str, ignore_case: bool = True, ignore_punctuation: bool = True) -> bool:
    """lmms-eval's ``exact_match`` metric (``lmms_eval/api/metrics.py``, ``exact_match_hf_evaluate``) on one pair:
    optionally lower-cased, then optionally without the characters of ``string.punctuation``."""
    if ignore_case:
        prediction, reference = prediction.lower(), reference.lower()
    if ignore_punctuation:
        prediction, reference = prediction.translate(_PUNCTUATION), reference.translate(_PUNCTUATION)
    return prediction == reference


def judge_ai2d(prediction: str, gold: str) -> Judgement:
    """AI2D (``ai2d.yaml``): the filter, then lmms-eval's strip, then ``exact_match`` ignoring case and punctuation.
    ``gold`` is the gold letter."""
    kept = ai2d_filter(prediction).strip()
    correct = exact_match(kept, gold)
    read = kept.lower().translate(_PUNCTUATION)
    if len(read) == 1 and read.isalpha():
        return Judgement(correct, read.upper())
    return Judgement(correct, None, "not one option letter after the filter and dropping case and punctuation")


# -- SEED-Bench --------------------------------------------------------------------------------------------------------
def judge_seed(prediction: str, gold: str, letters: str = "ABCD") -> Judgement:
    """``seed_process_result`` + ``seed_aggregation_result`` (``lmms_eval/tasks/seedbench/utils.py``): the first
    character of the stripped answer against the gold letter, both lower-cased."""
    pred = prediction.strip()
    if len(pred) > 1:
        pred = pred[0]
    correct = pred.lower().strip() == gold.lower().strip()
    if pred.upper() in letters and pred:
        return Judgement(correct, pred.upper())
    why = "empty answer" if not pred else f"first character {pred!r} is not an option letter"
    return Judgement(correct, None, why)


# -- RealWorldQA -------------------------------------------------------------------------------------------------------
def judge_realworldqa(prediction: str, gold: str) -> Judgement:
    """``realworldqa_process_results`` (``lmms_eval/tasks/realworldqa/utils.py``): a gold letter A-D is compared with
    :func:`extract_mcq_answer` (choices A-D); any other gold answer with the answer lower-cased and without trailing
    full stops."""
    pred = prediction.strip()
    gold = gold.strip()
    if gold.upper() in ("A", "B", "C", "D"):
        letter = extract_mcq_answer(pred, ["A", "B", "C", "D"])
        if not letter:
            return Judgement(False, None, "no option letter A-D found")
        return Judgement(letter == gold.upper(), letter)
    said = pred.lower().strip().rstrip(".")
    return Judgement(said == gold.lower(), said)


# -- MMBench -----------------------------------------------------------------------------------------------------------
#: (prefix, suffix) around a letter that ``can_infer_option`` accepts as a word, in its order
_MMB_WRAPS = (("", "."), ("", ","), ("", ":"), ("", ")"), ("", ")."), ("(", ")"), ("(", ")."), (":", ""), (":", ","),
              (":", "."), (":", ")"), (":", ")."))


def mmbench_can_infer_option(answer: str, num_choice: int = 5) -> str | None:
    """``MMBench_Evaluator.can_infer_option``: among the whitespace-separated words of ``answer``, exactly one of the
    first ``num_choice`` letters (A-E) standing alone (not when the answer has "A" as a word and more than 3 words: "A"
    may be the article), else exactly one letter in one of the forms "X." "X," "X:" "X)" "X)." "(X)" "(X)." ":X"
    ":X," ":X." ":X)" ":X)." (the first form with exactly one). None when none applies."""
    letters = LETTERS[:num_choice]
    if "Failed to obtain answer via API" in answer:
        return None
    words = [w.strip() for w in answer.split()]
    alone = [c for c in letters if c in words]
    if len(alone) == 1 and not ("A" in words and len(words) > 3):
        return alone[0]
    for pre, post in _MMB_WRAPS:
        hits = [c for c in letters if f"{pre}{c}{post}" in words]
        if len(hits) == 1:
            return hits[0]
    return None


def mmbench_can_infer_text(answer: str, choices: Mapping[str, str]) -> str | None:
    """``MMBench_Evaluator.can_infer_text``: the one option whose text (lower-cased) is inside the lower-cased
    answer; None when no option's or more than one option's text is."""
    said = answer.lower()
    hits = [k for k, v in choices.items() if str(v).lower() in said]
    return hits[0] if len(hits) == 1 else None


def mmbench_can_infer(answer: str, choices: Mapping[str, str]) -> str | None:
    """``MMBench_Evaluator.can_infer``: the option letter, else the option text; None when neither finds one."""
    return mmbench_can_infer_option(answer) or mmbench_can_infer_text(answer, choices)


def judge_mmbench(prediction: str, gold: str, choices: Mapping[str, str]) -> Judgement:
    """One MMBench row as ``eval_sub_data(static_only=True)`` judges it: :func:`mmbench_can_infer`, and where that finds
    nothing, :func:`extract_mcq_answer` with the row's option letters (``sorted(build_choices)``)."""
    pred = prediction.strip()
    letter = mmbench_can_infer(pred, choices)
    if not letter:
        letter = extract_mcq_answer(pred, sorted(choices)) or None
    if letter is None:
        return Judgement(False, None, "no option letter or option text found")
    return Judgement(letter == gold, letter)


def circular_groups(indices: Iterable[int]) -> dict[int, list[int]]:
    """Question index -> the positions (into ``indices``) of its rows, for the questions whose main row (index below
    1e6) is among ``indices``; main row first, then its rotations by index. Rows of a question whose main row is
    absent belong to no group (``eval_result`` skips them)."""
    indices = list(indices)
    mains = {i for i in indices if i < MMBENCH_ROTATION}
    groups: dict[int, list[int]] = {}
    for pos in sorted(range(len(indices)), key=lambda p: indices[p]):
        question = indices[pos] % MMBENCH_ROTATION
        if question in mains:
            groups.setdefault(question, []).append(pos)
    return dict(sorted(groups.items()))


def circular_results(indices: Sequence[int], correct: Sequence[bool]) -> dict[int, bool]:
    """Question index -> right under CircularEval (every one of its rows right), for each group of
    :func:`circular_groups`. Their mean is ``eval_result``'s ``overall_acc``."""
    return {q: all(correct[p] for p in rows) for q, rows in circular_groups(indices).items()}
