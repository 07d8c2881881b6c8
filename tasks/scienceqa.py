"""The ``scienceqa_img`` task: ScienceQA's questions that come with an image, answered with an option letter, scored as
lmms-eval's ``scienceqa_img`` task scores them.

Data: ``lmms-lab-encoder/ScienceQA`` (then ``lmms-lab/ScienceQA``), config ``ScienceQA-IMG``, split ``test`` (2017
questions). Columns read (a local copy, ``--data``, must have them): ``image`` (an image), ``question`` (string),
``choices`` (list of strings), ``answer`` (int: the 0-based index of the right choice), ``hint`` (string, "" when
none); ``subject``, ``topic``, ``category``, ``grade`` go to ``Sample.meta`` when present. The dataset has no question
id: ``Sample.id`` is the row's position in the split ("0", "1", ...).

Prompt (lmms-eval's ``sqa_doc_to_text``, format ``default``, which its yaml uses for every model we run): ::

    Context: <hint>            (this line only when the hint is non-empty)
    <question>
    A. <choice 1>
    B. <choice 2>
    ...
    Answer with the option's letter from the given choices directly.

Gold answer: the right choice's letter. Generation: 16 new tokens (lmms-eval's ``max_new_tokens``).

Scoring (``sqa_process_results``, :func:`tokenbench.data.scoring.choice.judge_scienceqa`): after stripping whitespace, right
if the answer lower-cased is the gold letter ("B", "b"), or if it starts with a capital letter and a full stop and that
letter is the gold one ("B.", "B. a duck"); everything else is wrong: "(B)", "B)", "b.", "The answer is B".
Metric: ``exact_match``, the share right (primary; per-sample score 0/1, their mean). Answers that are neither a
single letter nor "<capital>." go into ``Scored.unparsed`` (and are wrong, as in lmms-eval).

Followed: ``lmms_eval/tasks/scienceqa/scienceqa_img.yaml`` and ``utils.py``. Differences from lmms-eval: none. (A row
whose hint is None, which the hub data does not have, gets "None" glued before its question, as lmms-eval's
f-string writes it.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from tokenbench.api import register_task
from tokenbench.data.hub import DatasetTask
from tokenbench.data.scoring.choice import LETTERS, format_options, judge_scienceqa
from tokenbench.contract.task import Sample, Scored

POST_PROMPT = "\nAnswer with the option's letter from the given choices directly."


def scienceqa_question(question: str, choices: Sequence[str], hint) -> str:
    """``sqa_doc_to_text`` (format default) without its pre/post prompt."""
    context = f"Context: {hint}\n" if hint else hint
    return f"{context}{question}\n{format_options(choices)}"


@register_task("scienceqa_img")
@dataclass
class ScienceQAImgTask(DatasetTask):
    """ScienceQA (image questions, test): answer with the option letter; lmms-eval's exact_match."""

    name = "scienceqa_img"
    dataset_name = "ScienceQA"
    config = "ScienceQA-IMG"
    split = "test"
    prompts = {"default": ("", POST_PROMPT)}
    max_new_tokens = 16
    primary_metric = "exact_match"
    scoring_version = "1"

    def required_columns(self) -> tuple[str, ...]:
        return ("image", "question", "choices", "answer", "hint")

    def row_sample(self, row: dict, index: int) -> Sample:
        choices = list(row["choices"])
        answer = int(row["answer"])
        meta = {k: row[k] for k in ("subject", "topic", "category", "grade") if k in row}
        meta["n_options"] = len(choices)
        return Sample(id=str(index), image=None, question=scienceqa_question(row["question"], choices, row["hint"]),
                      answer=LETTERS[answer], meta=meta)

    def score(self, sample: Sample, prediction: str) -> float:
        return float(judge_scienceqa(prediction, sample.answer).correct)

    def evaluate(self, samples: Sequence[Sample], predictions: Sequence[str]) -> Scored:
        judged = [judge_scienceqa(p, s.answer) for s, p in zip(samples, predictions)]
        scores = [float(j.correct) for j in judged]
        unparsed = {i: j.reason for i, j in enumerate(judged) if j.reason}
        return Scored(scores, {"exact_match": sum(scores) / len(scores) if scores else 0.0}, unparsed)
