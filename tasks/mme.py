"""The ``mme`` task: MME, yes/no questions in 14 subtasks, two questions per image (one answered yes, one no),
scored as lmms-eval's ``mme`` task scores it: perception and cognition totals of acc + acc+.

Data: ``lmms-lab-encoder/MME`` (then ``lmms-lab/MME``), default config, split ``test`` (2,374 questions on 1,187
images). Columns read (the schema a local copy must have; ``--data``, see :mod:`tokenbench.data.hub`): ``question_id``
(string: the image's file name, e.g. ``code_reasoning/0020.png``, shared by the image's two questions), ``question``
(string, ending in " Please answer yes or no."), ``answer`` (string, ``Yes``/``No``), ``category`` (string: the
subtask), ``image`` (image).

Subtasks (lmms-eval's ``eval_type_dict``): perception = existence, count, position, color, posters, celebrity,
scene, landmark, artwork, OCR; cognition = commonsense_reasoning, numerical_calculation, text_translation,
code_reasoning.

Sample: ``id`` is ``question_id`` for an image's first question and ``question_id#2`` for its second (ids must be
unique; the pairing uses ``meta["question_id"]``); ``question`` is the dataset's question stripped (with its "Please
answer yes or no."); ``answer`` the gold; ``meta`` holds ``category`` and ``question_id``.

Prompt (lmms-eval ``mme.yaml``, ``mme_doc_to_text``): lmms-eval removes " Please answer yes or no." and appends its
post prompt ``\\nAnswer the question using a single word or phrase.``, which is the prompt of every model family here
(the yaml defines no llava_hf/qwen2_5_vl prompt): ``Is there a dog in this image?\\nAnswer the question using a single
word or phrase.``

Generation: 16 new tokens (lmms-eval's value).

Scoring (:mod:`tokenbench.data.scoring.yesno`, following ``lmms_eval/tasks/mme/utils.py``): an answer is yes/no when it is
(after lower-casing and dropping ".") yes/no, y/n, or has "yes" (else "no") in its first four characters; anything
else is wrong (and listed in ``unparsed``). Metrics (``percent=False``: printed as they are):

- ``<subtask>/acc``: the share of its questions answered right, in percent (0-100; a mean over images of each
  image's share, which is the same while every image has its two questions);
- ``<subtask>/acc_plus``: the share of its images with *both* questions right, in percent;
- ``<subtask>/score``: acc + acc_plus (0-200), what lmms-eval logs per subtask;
- ``perception`` / ``cognition``: the sums of their subtasks' scores (at most 2000 / 800), lmms-eval's
  ``mme_perception_score`` / ``mme_cognition_score``;
- ``total``: perception + cognition (some token-reduction papers report this sum as "MME").

Primary metric: ``perception`` (what LLaVA's papers report as MME). Per-sample score: the question's correctness
(1/0), so ``mean_score`` is the plain accuracy over questions.

Differences from lmms-eval: lmms-eval asserts that every image has exactly two questions; here an image with one
(a ``--limit`` that cuts a pair, or an image whose partner question failed) is scored on the questions it has, and
subtasks with no sample add nothing to their total (the totals of a partial run are not comparable with the full
split's). ``<subtask>/acc``, ``acc_plus``, ``score`` and ``total`` are additions (lmms-eval only logs the scores).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from tokenbench.api import register_task
from tokenbench.data.hub import DatasetTask
from tokenbench.data.scoring.yesno import mme_correct, mme_metrics, mme_unparsed
from tokenbench.contract.task import Sample, Scored

#: the answer-format sentence lmms-eval removes from each question before adding its own post prompt
REPLACE_PROMPT = " Please answer yes or no."


@register_task("mme")
@dataclass
class MmeTask(DatasetTask):
    """MME yes/no subtasks; perception and cognition totals of acc + acc+ as lmms-eval (primary: perception)."""

    name = "mme"
    dataset_name = "MME"
    config = None
    split = "test"
    image_column = "image"
    prompts = {"default": ("", "\nAnswer the question using a single word or phrase.")}
    max_new_tokens = 16
    primary_metric = "perception"
    percent = False
    scoring_version = "1"

    def required_columns(self) -> tuple[str, ...]:
        return ("question_id", "question", "answer", "category", self.image_column)

    def row_sample(self, row: dict, index: int) -> Sample:
        meta = {"category": str(row["category"]), "question_id": str(row["question_id"])}
        return Sample(id=str(row["question_id"]), image=None, question=str(row["question"]).strip(),
                      answer=str(row["answer"]).strip(), meta=meta)

    def prompt(self, sample: Sample, family: str) -> str:
        """lmms-eval's ``mme_doc_to_text``: the answer-format sentence is replaced by the pre/post prompt."""
        pre, post = self.prompt_parts(family)
        question = sample.question
        if pre:
            question = pre + question.replace(REPLACE_PROMPT, "")
        if post:
            question = question.replace(REPLACE_PROMPT, "") + post
        return question

    def score(self, sample: Sample, prediction: str) -> float:
        return float(mme_correct(prediction, sample.answer))

    def evaluate(self, samples: Sequence[Sample], predictions: Sequence[str]) -> Scored:
        if len(samples) != len(predictions):
            raise ValueError(f"{len(predictions)} predictions for {len(samples)} samples")
        scores = [self.score(s, p) for s, p in zip(samples, predictions)]
        metrics = mme_metrics([s.meta.get("category", "") for s in samples],
                              [s.meta.get("question_id", s.id) for s in samples], [x == 1.0 for x in scores])
        unparsed = {i: why for i, p in enumerate(predictions) if (why := mme_unparsed(p))}
        return Scored(scores, metrics, unparsed)
