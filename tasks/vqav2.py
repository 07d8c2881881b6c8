"""The ``vqav2`` task: VQAv2 validation (open questions on COCO val2014 images), scored by VQA accuracy as lmms-eval's
``vqav2_val`` scores it; option ``subset`` draws a seeded subset of the 214,354 questions.

Data: ``lmms-lab-encoder/VQAv2`` (then ``lmms-lab/VQAv2``), default config, split ``validation`` (214,354
questions, ten answers each; several GB of parquet to download). Columns read -- the schema a local copy
(``--data``) must have:

- ``question_id`` (int64): the sample id;
- ``question`` (string);
- ``answers`` (list of ``{"answer": string, "answer_confidence": string, "answer_id": int64}``, ten per question):
  the gold answers;
- ``image`` (image);
- ``answer_type`` (string, optional: ``yes/no``, ``number``, ``other``) for the per-type breakdown, and
  ``question_type`` (string, optional), kept in ``Sample.meta``.

The hub rows also hold ``multiple_choice_answer`` and ``image_id``, which nothing reads.

Option ``subset`` (int, default 0 = the whole split): a seeded random subset of that many questions. The split's
rows are permuted with ``random.Random(f"vqav2-subset-{seed}")`` and the first ``subset`` positions are kept, in the
split's order. Why seeded and not the first N: the split is ordered by image (about five consecutive questions per
image) and ``--limit N`` already gives the first N, so a first-N subset sees a fifth as many images and whichever
question mix the first images happen to have; a random subset is a fair sample of images and question types.
Subsets of one seed are nested (a 1,000-question subset lies inside the 5,000 one), and ``seed`` (``--seed`` on the
command line) picks another draw. ``subset`` and ``seed`` enter the version, so results on different subsets are
never mixed; without ``subset`` the seed changes nothing. (lmms-eval's own reduced set, ``vqav2_val_lite``, is 500
fixed questions of ``lmms-lab-encoder/LMMs-Eval-Lite``, not reproduced here.) The full split still has to be
downloaded once: the subset is drawn from its row count.

Prompt (lmms-eval's ``vqav2_doc_to_text`` with the ``default`` kwargs of ``vqav2_val.yaml``; no
``llava_hf``/``qwen2_5_vl`` entry, so every family gets it): the question as it is, then
``"\\nAnswer the question using a single word or phrase."``.

Generation: 16 new tokens, lmms-eval's ``max_new_tokens`` for VQAv2.

Scoring (``tokenbench.data.scoring.vqa.score_vqav2``, following ``lmms_eval/tasks/vqav2/utils.py``
``vqav2_process_results``): newlines and tabs to spaces, strip, then the EvalAI processor's punctuation and
digit/article steps -- not its ``word_tokenize`` (lmms-eval's VQAv2 code calls the two steps directly, unlike its
TextVQA/OK-VQA/VizWiz code): so ``,`` and ``?`` follow the punctuation rule instead of being deleted outright and
``'s`` stays attached (``"man's"`` stays ``"man's"``) -- on the prediction and on each gold answer alike; then VQA
accuracy, leaving out for each answer record every record equal to it (text after normalisation, confidence and id),
as lmms-eval compares the answer dicts; ids are distinct within a question, so this is the usual one-out rule.
Per-sample score: that accuracy; metrics: ``accuracy`` (primary, a share in [0, 1]), their mean, lmms-eval's
``exact_match``; ``answer_type/yes_no``, ``answer_type/number``, ``answer_type/other``: the mean over the samples of
each answer type (the official VQA evaluation's per-type numbers; lmms-eval does not report them). ``unparsed`` lists
the answers that normalise to nothing (still scored).

Differences from lmms-eval: the ``subset`` option (off by default); the ``answer_type/*`` breakdown; a sample whose
answer list is empty scores 0 (lmms-eval raises).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from tokenbench.api import register_task
from tokenbench.errors import ConfigError
from tokenbench.data.hub import DatasetTask
from tokenbench.data.scoring.vqa import normalize_answer_vqav2, score_vqav2, vqa_scored
from tokenbench.contract.task import Sample, Scored

POST_PROMPT = "\nAnswer the question using a single word or phrase."


def subset_indices(n_rows: int, subset: int, seed: int) -> list[int]:
    """The row indices of a ``subset``-question subset of ``n_rows`` rows (all when ``subset`` is 0 or at least
    ``n_rows``): the first ``subset`` positions of a seeded permutation, sorted back into the split's order."""
    if not subset or subset >= n_rows:
        return list(range(n_rows))
    order = list(range(n_rows))
    random.Random(f"vqav2-subset-{seed}").shuffle(order)
    return sorted(order[:subset])


@register_task("vqav2")
@dataclass
class VQAv2Task(DatasetTask):
    """VQAv2 val (214,354 questions on COCO images; ``subset=N`` draws N of them), VQA accuracy."""

    name = "vqav2"
    dataset_name = "VQAv2"
    split = "validation"
    prompts = {"default": ("", POST_PROMPT)}
    max_new_tokens = 16
    primary_metric = "accuracy"
    scoring_version = "1"

    subset: int = 0  # questions in a seeded random subset of the split; 0: the whole split
    seed: int = 0  # which subset (``--seed``); nothing without ``subset``

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("subset", "seed"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"task 'vqav2' option {key!r} must be an integer, got {value!r}")
        if self.subset < 0:
            raise ConfigError(f"task 'vqav2' option 'subset' must be >= 0 (a number of questions; 0 for the whole "
                              f"split), got {self.subset!r}")

    def rows(self):
        """The split, or its seeded subset (drawn once per task object)."""
        if not getattr(self, "_subset_drawn", False):
            ds = super().rows()
            keep = subset_indices(len(ds), self.subset, self.seed)
            if len(keep) < len(ds):
                self._rows = ds.select(keep)
            self._subset_drawn = True
        return self._rows

    def required_columns(self) -> tuple[str, ...]:
        return ("question_id", "question", "answers", self.image_column)

    def row_sample(self, row: dict, index: int) -> Sample:
        records = row["answers"]
        answers = None if records is None else [r["answer"] for r in records]
        meta = {k: row[k] for k in ("answer_type", "question_type") if row.get(k) is not None}
        if records is not None:  # the rest of each answer record: lmms-eval leaves out equal records
            meta["answer_records"] = [(r.get("answer_confidence"), r.get("answer_id")) for r in records]
        return Sample(id=str(row["question_id"]), image=None, question=str(row["question"]), answer=answers, meta=meta)

    def evaluate(self, samples: Sequence[Sample], predictions: Sequence[str]) -> Scored:
        scores = [score_vqav2(p, s.answer, s.meta.get("answer_records")) for s, p in zip(samples, predictions)]
        return vqa_scored(scores, predictions, normalize_answer_vqav2, [s.meta.get("answer_type") for s in samples],
                          "answer_type")

    def version_options(self) -> dict:
        """``subset`` and ``seed`` change the samples only together: without a subset the seed is left out."""
        options = super().version_options()
        return options if self.subset else {k: v for k, v in options.items() if k != "seed"}
