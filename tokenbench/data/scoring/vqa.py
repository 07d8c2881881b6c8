"""VQA accuracy (TextVQA, OK-VQA, VizWiz-VQA, VQAv2) as lmms-eval computes it.

Two parts, each following lmms-eval (snapshot 75571cfe; lmms-eval 0.7.3 has the same code):

1. **Answer normalisation**, the EvalAI answer processor of ``lmms_eval/tasks/_task_utils/vqa_eval_metric.py``
   (``EvalAIAnswerProcessor``, itself MMF's copy of the official VQA evaluation script). :func:`normalize_answer` is
   its ``__call__``: :func:`word_tokenize` (lower-case; drop ``,`` and ``?``; ``'s`` -> `` 's``; strip), newlines
   and tabs to spaces and strip, :func:`process_punctuation`, :func:`process_digit_article`.
   :func:`normalize_answer_vqav2` is what ``lmms_eval/tasks/vqav2/utils.py`` applies instead, to the prediction and
   to every gold answer alike: newlines/tabs to spaces, strip, :func:`process_punctuation`,
   :func:`process_digit_article` -- no :func:`word_tokenize`, so ``,`` and ``?`` go through the punctuation rule,
   ``'s`` is not split off, and the text is lower-cased only in the digit/article step.

2. **Accuracy** (:func:`vqa_accuracy`): for each of the gold answers, leave it out and count the other gold answers
   equal to the prediction; that subset scores ``min(1, matches / 3)``; the sample scores the mean over the subsets
   (``statistics.mean``, as lmms-eval). With ten gold answers of which ``k`` equal the prediction this is
   ``(k * min(1, (k-1)/3) + (10-k) * min(1, k/3)) / 10``: 0, 0.3, 0.6, 0.9, then 1 from ``k = 4``. lmms-eval's
   ``textvqa``/``ok_vqa``/``vizwiz_vqa`` ``process_results`` leave out by position; ``vqav2`` leaves out every
   answer record *equal* to the left-out one (the whole ``{answer, answer_confidence, answer_id}`` dict), which is
   the same thing because a question's ``answer_id`` values are distinct -- ``identities`` reproduces it exactly.

The quirks of the EvalAI processor are kept, because they decide scores:

- punctuation (``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !``) is *deleted* when the original text has it next to a
  space (``"p "`` or ``" p"``) or has a digit-comma-digit anywhere, and otherwise *replaced by a space*
  (``"coca-cola"`` -> ``"coca cola"``, ``"coca - cola"`` -> ``"coca  cola"``, then split into words);
- a period is deleted unless a digit follows (the official regex ``(?!<=\\d)(\\.)(?!\\d)`` has a typo, a look-ahead
  where a look-behind was meant, so only the ``(?!\\d)`` part acts); and only the first 32 periods of a text are
  deleted, because the official code passes ``re.UNICODE`` (= 32) as ``re.sub``'s ``count``;
- number words ``none``/``zero``..``ten`` become digits and the articles ``a``/``an``/``the`` are dropped, word by word
  (after lower-casing and splitting on whitespace); contractions written without apostrophes are restored
  (``dont`` -> ``don't``); ``somebody'd`` becomes ``somebodyd`` (an entry reversed in the official table).

Nothing here deviates from lmms-eval's numbers except where lmms-eval would raise: a sample whose gold answers are
an empty list scores 0 here (``statistics.mean([])`` raises in lmms-eval's TextVQA and VQAv2 code; its OK-VQA and
VizWiz code give 0). No torch import: these are pure functions.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Hashable, Sequence

# -- the tables of the official VQA evaluation ---------------------------------------------------------------------
#: number words written as digits (whole words only)
NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})
#: characters the punctuation rule deletes or replaces by a space (the period has its own rule)
PUNCTUATION: tuple[str, ...] = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@",
                                "`", ",", "?", "!")

# The contractions the official table restores, in their written form. Each is reached from every spelling that lacks
# exactly one of its apostrophes ("couldn't've" from "couldnt've" and "couldn'tve"; "don't" from "dont"). The
# capitalised ones ("I'm") can never match, since the text is lower-cased first; they are kept so that the table is
# the official one.
_CONTRACTED = """
ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't he'd he'd've
he's how'd how'll how's I'd've I'm I've isn't it'd it'd've it'll ma'am mightn't mightn't've might've mustn't must've
needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've shouldn't shouldn't've somebody'd've somebody'll
somebody's someone'd someone'd've someone'll someone's something'd something'd've something'll that's there'd
there'd've there're there's they'd they'd've they'll they're they've 'twas wasn't we'd've we've weren't what'll
what're what's what've when's where'd where's where've who'd who'd've who'll who's who've why'll why're why's won't
would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've
""".split()


def _contractions() -> dict[str, str]:
    table: dict[str, str] = {}
    for word in _CONTRACTED:
        for at in [i for i, ch in enumerate(word) if ch == "'"]:
            table[word[:at] + word[at + 1:]] = word
    table["somebody'd"] = "somebodyd"  # reversed in the official table; kept, it changes that word
    return table


#: apostrophe-less spelling -> contraction (the official table, less its two identity entries "let's" and "she's")
CONTRACTIONS: dict[str, str] = _contractions()

_DIGIT_COMMA_DIGIT = re.compile(r"\d,+\d")
_PERIOD = re.compile(r"\.(?!\d)")  # what the official "(?!<=\d)(\.)(?!\d)" matches
_PERIODS_DELETED = 32  # the official code's re.sub(..., re.UNICODE): count=32


# -- the normalisation steps ---------------------------------------------------------------------------------------
def word_tokenize(text: str) -> str:
    """Lower-case, delete ``,`` and ``?``, write ``'s`` as `` 's``, strip (``EvalAIAnswerProcessor.word_tokenize``)."""
    return text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()


def process_punctuation(text: str) -> str:
    """Delete or blank out punctuation, then delete periods not followed by a digit
    (``EvalAIAnswerProcessor.process_punctuation``; see the module docstring for the rule and its quirks)."""
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for p in PUNCTUATION:
        glued = delete_all or f"{p} " in text or f" {p}" in text  # decided on the text as it came in
        out = out.replace(p, "" if glued else " ")
    return _PERIOD.sub("", out, count=_PERIODS_DELETED)


def process_digit_article(text: str) -> str:
    """Lower-case and split on whitespace; number words to digits; drop articles; restore contractions; join with
    single spaces (``EvalAIAnswerProcessor.process_digit_article``)."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def normalize_answer(text: str) -> str:
    """The EvalAI answer processor (``EvalAIAnswerProcessor.__call__``): what lmms-eval's TextVQA, OK-VQA and VizWiz
    scoring apply to the prediction and to each gold answer."""
    text = word_tokenize(text).replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


def normalize_answer_vqav2(text: str) -> str:
    """What lmms-eval's VQAv2 scoring (``vqav2/utils.py``) applies to the prediction and to each gold answer:
    newlines/tabs to spaces, strip, punctuation, digits and articles -- the processor without ``word_tokenize``."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


# -- accuracy ------------------------------------------------------------------------------------------------------
def vqa_accuracy(prediction: str, answers: Sequence[str], identities: Sequence[Hashable] | None = None) -> float:
    """VQA accuracy of an already normalised ``prediction`` against the normalised gold ``answers``: the mean over
    leave-one-out subsets of ``min(1, matches / 3)``.

    ``identities`` (one per answer) says which answers a left-out answer takes with it: every answer whose identity
    equals its own (lmms-eval's VQAv2 compares whole answer records). Default: only itself (by position), as
    lmms-eval's TextVQA, OK-VQA and VizWiz code. No gold answers: 0.0."""
    if not answers:
        return 0.0
    keys = list(range(len(answers))) if identities is None else list(identities)
    if len(keys) != len(answers):
        raise ValueError(f"{len(keys)} identities for {len(answers)} answers")
    subset_scores = []
    for left_out in keys:
        matches = sum(1 for a, k in zip(answers, keys) if k != left_out and a == prediction)
        subset_scores.append(min(1, float(matches) / 3))
    return statistics.mean(subset_scores)


def score_evalai(prediction: str, answers: Sequence[str] | None) -> float:
    """One sample of lmms-eval's ``textvqa``/``ok_vqa``/``vizwiz_vqa`` ``process_results``: the EvalAI processor on
    the prediction and on each gold answer, then :func:`vqa_accuracy`. ``answers`` None (a test split): 0.0."""
    if answers is None:
        return 0.0
    return vqa_accuracy(normalize_answer(prediction), [normalize_answer(a) for a in answers])


def score_vqav2(prediction: str, answers: Sequence[str] | None,
                records: Sequence[Hashable] | None = None) -> float:
    """One sample of lmms-eval's ``vqav2_process_results``: :func:`normalize_answer_vqav2` on the prediction and on
    each gold answer, then :func:`vqa_accuracy` leaving out equal answer records. ``records``: per answer, the rest
    of its record (e.g. ``(answer_confidence, answer_id)``); a left-out answer takes with it every answer whose
    normalised text and record equal its own. None: by position. ``answers`` None: 0.0."""
    if answers is None:
        return 0.0
    normed = [normalize_answer_vqav2(a) for a in answers]
    identities = None if records is None else list(zip(normed, records))
    return vqa_accuracy(normalize_answer_vqav2(prediction), normed, identities)


def mean_by_group(scores: Sequence[float], groups: Sequence[str | None], prefix: str) -> dict[str, float]:
    """``{prefix + "/" + group: mean score}`` for each group value that is not None or empty (a ``/`` inside a value
    is written ``_``, as ``/`` separates metric groups: ``"yes/no"`` -> ``"answer_type/yes_no"``)."""
    sums: dict[str, list[float]] = {}
    for score, group in zip(scores, groups):
        if group:
            sums.setdefault(str(group).replace("/", "_"), []).append(float(score))
    return {f"{prefix}/{g}": sum(v) / len(v) for g, v in sorted(sums.items())}


def vqa_scored(scores: Sequence[float], predictions: Sequence[str], normalize, groups: Sequence[str | None] = (),
               prefix: str = ""):
    """A VQA task's :class:`~tokenbench.contract.task.Scored`: the per-sample VQA accuracies, their mean as ``accuracy``, the
    mean per group (``prefix/<group>``) when ``groups`` are given, and as unparsed the answers that ``normalize`` makes
    empty (they score 0, as in lmms-eval)."""
    from tokenbench.contract.task import Scored

    metrics = {"accuracy": sum(scores) / len(scores) if scores else 0.0}
    if groups:
        metrics.update(mean_by_group(scores, groups, prefix))
    unparsed = {i: "the answer is empty once normalised" for i, p in enumerate(predictions) if not normalize(p)}
    return Scored(list(scores), metrics, unparsed)
