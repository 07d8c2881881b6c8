"""Open-question VQA tasks scored by VQA accuracy: the one base of the dataset tasks whose rows hold a question id, a
question, the gold answers and an image, and whose score is lmms-eval's EvalAI VQA accuracy (OK-VQA, VizWiz-VQA,
TextVQA). A task built on it sets its dataset and prompts and, where it differs, how a row's question and meta read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

from tokenbench.contract.task import Sample, Scored
from tokenbench.data.hub import DatasetTask
from tokenbench.data.scoring.vqa import normalize_answer, score_evalai, vqa_scored

#: the post prompt of lmms-eval's ``_default_template_vqa_yaml`` (``default`` kwargs), which OK-VQA and VizWiz-VQA use
UNANSWERABLE_POST_PROMPT = ("\nWhen the provided information is insufficient, respond with 'Unanswerable'."
                            "\nAnswer the question using a single word or phrase.")


@dataclass
class VQAAccuracyTask(DatasetTask):
    """Rows ``question_id``, ``question``, ``answers`` (the gold answers; None scores 0) and the image; per-sample
    score: VQA accuracy (:func:`~tokenbench.data.scoring.vqa.score_evalai`); metric ``accuracy``, and, with
    ``breakdown``, its mean per value of that ``Sample.meta`` key (``<breakdown>/<value>``)."""

    max_new_tokens = 32
    primary_metric = "accuracy"
    scoring_version = "1"
    #: the ``Sample.meta`` key whose values the accuracy is also averaged by; None: no breakdown
    breakdown: ClassVar[str | None] = None

    def required_columns(self) -> tuple[str, ...]:
        return ("question_id", "question", "answers", self.image_column)

    def question_of(self, row: dict) -> str:
        """The question as the prompt asks it."""
        return str(row["question"])

    def meta_of(self, row: dict) -> dict:
        """What the sample keeps of the row beside its question and answers."""
        return {}

    def row_sample(self, row: dict, index: int) -> Sample:
        answers = None if row["answers"] is None else list(row["answers"])
        return Sample(id=str(row["question_id"]), image=None, question=self.question_of(row), answer=answers,
                      meta=self.meta_of(row))

    def evaluate(self, samples: Sequence[Sample], predictions: Sequence[str]) -> Scored:
        scores = [score_evalai(p, s.answer) for s, p in zip(samples, predictions)]
        if self.breakdown is None:
            return vqa_scored(scores, predictions, normalize_answer)
        return vqa_scored(scores, predictions, normalize_answer, [s.meta.get(self.breakdown) for s in samples],
                          self.breakdown)
