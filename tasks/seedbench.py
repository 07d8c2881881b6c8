"""The ``seedbench`` task: SEED-Bench's image questions (four options, one image each), answered with an option letter,
scored as lmms-eval's ``seedbench`` task scores its ``seed_image`` metric.

Data: ``lmms-lab-encoder/SEED-Bench`` (then ``lmms-lab/SEED-Bench``), default config, split ``test`` (about 18k rows:
image questions and video questions). Columns read (a local copy, ``--data``, must have them): ``data_type``
("image" or "video"), ``image`` (a LIST of images: one for an image question, the video's frames for a video
question), ``question``, ``choice_a`` .. ``choice_d``, ``answer`` (the letter A-D), ``question_id`` (string, used as
``Sample.id``); ``question_type_id`` and ``data_id`` go to ``Sample.meta`` when present.

Video questions are skipped: only rows whose ``data_type`` is "image" become samples (in their order in the split;
``limit`` counts image questions). lmms-eval scores them into ``seed_video`` and ``seed_all``, which this task does not
report. An image row holding no image, or more than one, gives a sample with ``image=None`` and the reason in
``meta["error"]``, as a corrupt image does.

Prompt (lmms-eval's ``seed_doc_to_text``; the yaml has no model-specific kwargs): ::

    <question>
    A. <choice_a>
    B. <choice_b>
    C. <choice_c>
    D. <choice_d>
    Answer with the option's letter from the given choices directly.

Generation: 16 new tokens. lmms-eval sets no ``max_new_tokens`` for this task (the model's default applies) and reads
only the answer's first character, so any length gives the same score; 16 only caps rambling.

Scoring (``seed_process_result`` and ``seed_aggregation_result``; :func:`tokenbench.data.scoring.choice.judge_seed`): the
first character of the stripped answer, compared case-insensitively with the gold letter: "B", "b", "B.", "B. cat"
are right for B, "(B)" and "The answer is B" wrong. Metric: ``seed_image``, the share of image questions right
(primary; per-sample score 0/1, their mean). Answers whose first character is not one of A-D (either case) go into
``Scored.unparsed`` (wrong, as in lmms-eval).

Followed: ``lmms_eval/tasks/seedbench/seedbench.yaml`` and ``utils.py``. Differences from lmms-eval: video questions
are left out (their metrics too); an image row with more than one image is a failed sample where lmms-eval would pass
all its images (the hub data has one per image row).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from tokenbench.api import register_task
from tokenbench.data.hub import DatasetTask, read_image
from tokenbench.data.scoring.choice import judge_seed
from tokenbench.contract.task import Sample, Scored

POST_PROMPT = "\nAnswer with the option's letter from the given choices directly."


def seed_question(row: dict) -> str:
    """``seed_doc_to_text`` without its closing instruction."""
    return (f"{row['question']}\nA. {row['choice_a']}\nB. {row['choice_b']}\nC. {row['choice_c']}\n"
            f"D. {row['choice_d']}")


@register_task("seedbench")
@dataclass
class SEEDBenchTask(DatasetTask):
    """SEED-Bench image questions (test; videos skipped): answer with the option letter; lmms-eval's seed_image."""

    name = "seedbench"
    dataset_name = "SEED-Bench"
    split = "test"
    prompts = {"default": ("", POST_PROMPT)}
    max_new_tokens = 16
    primary_metric = "seed_image"
    scoring_version = "1"

    def rows(self):
        """The split's image questions (video rows dropped), images undecoded."""
        if getattr(self, "_image_rows", None) is None:
            ds = super().rows()
            if "data_type" in ds.column_names:  # else samples() reports the missing column
                keep = [i for i, kind in enumerate(ds["data_type"]) if kind == "image"]
                if len(keep) != len(ds):
                    ds = ds.select(keep)
            self._image_rows = ds
        return self._image_rows

    def required_columns(self) -> tuple[str, ...]:
        return ("image", "data_type", "question", "choice_a", "choice_b", "choice_c", "choice_d", "answer",
                "question_id")

    def image_of(self, row: dict, base: str):
        images = row.get("image")
        if images is None or (isinstance(images, (list, tuple)) and not images):
            return None, "no image"
        if not isinstance(images, (list, tuple)):  # a plain image column (a hand-made copy): take it as it is
            return read_image(images, base)
        if len(images) != 1:
            return None, f"an image question with {len(images)} images (tokenbench feeds one image)"
        return read_image(images[0], base)

    def row_sample(self, row: dict, index: int) -> Sample:
        meta = {k: row[k] for k in ("question_type_id", "data_id") if k in row}
        return Sample(id=str(row["question_id"]), image=None, question=seed_question(row),
                      answer=row["answer"].strip(), meta=meta)

    def score(self, sample: Sample, prediction: str) -> float:
        return float(judge_seed(prediction, sample.answer).correct)

    def evaluate(self, samples: Sequence[Sample], predictions: Sequence[str]) -> Scored:
        judged = [judge_seed(p, s.answer) for s, p in zip(samples, predictions)]
        scores = [float(j.correct) for j in judged]
        unparsed = {i: j.reason for i, j in enumerate(judged) if j.reason}
        return Scored(scores, {"seed_image": sum(scores) / len(scores) if scores else 0.0}, unparsed)
