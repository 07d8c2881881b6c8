"""The ``pope`` task: POPE (Polling-based Object Probing Evaluation), object-hallucination yes/no questions on COCO
images ("Is there a dog in the image?"), scored as lmms-eval's ``pope`` task scores it.

Data: ``lmms-lab-encoder/POPE`` (then ``lmms-lab/POPE``), default config, split ``test``: 9,000 questions. The
``category`` column says which of POPE's three negative-sampling settings a question belongs to: ``adversarial``,
``popular`` and ``random``, 3,000 each (half yes, half no in each). The pooled split is these three sets stacked; the
dataset's config ``Full`` holds the same three sets as its splits ``adversarial``/``popular``/``random``, which
lmms-eval's ``pope_adv``/``pope_pop``/``pope_random`` (group ``pope_full``) read one by one. The three sets ask about
the same 500 COCO val2014 images, so an image recurs across categories. ``--limit`` takes the first rows of the split
in its stored order, which need not cover every category; option ``interleave=true`` orders the rows round-robin over
the categories (adversarial, popular, random, adversarial, ...; each category's rows in stored order), so that the
first N cover the three equally, as the published mean of the categories' F1 does (the whole split scores the same
either way).

Columns read (the schema a local copy must have; ``--data``, see :mod:`tokenbench.data.hub`): ``question_id``
(string), ``question`` (string), ``answer`` (string, ``yes``/``no``), ``category`` (string), ``image`` (image). The
hub dataset also has ``id`` and ``image_source`` (string), not read.

Sample: ``id`` is ``question_id`` (a ``question_id`` met again further down the split gets ``#2``, ``#3``, ... so
every id is unique); ``question`` is the question stripped; ``answer`` the gold ``yes``/``no``; ``meta`` holds
``category`` and ``question_id``.

Prompt (lmms-eval ``pope.yaml``, ``pope_doc_to_text``): ``<question>\\nAnswer the question using a single word or
phrase.`` for every model family (the yaml defines no llava_hf/qwen2_5_vl prompt).

Generation: 16 new tokens (lmms-eval allows 128; a valid answer is one word and our decoder stops at EOS, so 16 only
cuts rambling, which POPE's rule scores wrong anyway).

Scoring (:mod:`tokenbench.data.scoring.yesno`, following ``lmms_eval/tasks/pope/utils.py``): the stripped, lower-cased
answer must equal ``yes``/``no`` exactly. Metrics, all shares in [0, 1]:

- ``accuracy``, ``precision``, ``recall``, ``f1``, ``yes_ratio`` pooled over every sample, as lmms-eval's ``pope``
  task reports them (``pope_accuracy``, ``pope_precision``, ``pope_recall``, ``pope_f1_score``,
  ``pope_yes_ratio``); ``yes_ratio`` is lmms-eval's, the share of *gold* yes answers (0.5 on the full split);
- ``pred_yes_ratio``: the share of answers that are ``yes`` (POPE's and LLaVA's yes-ratio; an addition);
- the same six per category, ``adversarial/f1``, ``popular/accuracy``, ... (what ``pope_adv``/``pope_pop``/
  ``pope_random`` report);
- ``f1_mean_categories``: the mean of the per-category F1s, the number papers report as "POPE" (LLaVA-1.5's 85.9 is
  the mean of ``llava/eval/eval_pope.py``'s three F1s; computed here with lmms-eval's answer rule, not LLaVA's).

Primary metric: the pooled ``f1`` (lmms-eval's ``pope``). The LLaVA paper averages per-category F1: compare such
numbers with ``f1_mean_categories``. Per-sample score: the sample's correctness (1/0), so ``mean_score`` is the pooled
accuracy. ``unparsed``: answers that are not exactly yes/no (scored wrong, and in no TP/FP/FN).

Differences from lmms-eval: none in the scoring of the pooled and per-category metrics; ``pred_yes_ratio`` and
``f1_mean_categories`` are additions; the generation cap is 16 tokens instead of 128 (see above).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from tokenbench.api import register_task
from tokenbench.data.hub import DatasetTask
from tokenbench.data.scoring.yesno import pope_correct, pope_metrics, pope_unparsed
from tokenbench.contract.task import Sample, Scored

#: POPE's categories in the order reported
CATEGORIES = ("adversarial", "popular", "random")
POST_PROMPT = "\nAnswer the question using a single word or phrase."


@register_task("pope")
@dataclass
class PopeTask(DatasetTask):
    """POPE object-hallucination yes/no questions (adversarial, popular, random); pooled F1 as lmms-eval."""

    name = "pope"
    dataset_name = "POPE"
    config = None
    split = "test"
    image_column = "image"
    prompts = {"default": ("", POST_PROMPT)}
    max_new_tokens = 16
    primary_metric = "f1"
    percent = True
    scoring_version = "1"
    interleave: bool = False  # True: rows round-robin over the categories, so that --limit covers all three

    def rows(self):
        """The split, in stored order or (``interleave``) round-robin over the categories."""
        ds = super().rows()
        if not self.interleave or "category" not in ds.column_names:  # samples() reports a missing column
            return ds
        if getattr(self, "_interleaved", None) is None:
            groups: dict[str, list[int]] = {}
            for i, category in enumerate(ds["category"]):
                groups.setdefault(str(category), []).append(i)
            names = [c for c in CATEGORIES if c in groups] + sorted(set(groups) - set(CATEGORIES))
            order = [g[k] for k in range(max(map(len, groups.values()), default=0))
                     for g in (groups[c] for c in names) if k < len(g)]
            self._interleaved = ds.select(order) if order != list(range(len(ds))) else ds
        return self._interleaved

    def required_columns(self) -> tuple[str, ...]:
        return ("question_id", "question", "answer", "category", self.image_column)

    def row_sample(self, row: dict, index: int) -> Sample:
        meta = {"category": str(row["category"]), "question_id": str(row["question_id"])}
        return Sample(id=str(row["question_id"]), image=None, question=str(row["question"]).strip(),
                      answer=str(row["answer"]).strip().lower(), meta=meta)

    def score(self, sample: Sample, prediction: str) -> float:
        return float(pope_correct(prediction, sample.answer))

    def evaluate(self, samples: Sequence[Sample], predictions: Sequence[str]) -> Scored:
        if len(samples) != len(predictions):
            raise ValueError(f"{len(predictions)} predictions for {len(samples)} samples")
        answers = [s.answer for s in samples]
        metrics = pope_metrics(predictions, answers)
        categories = [s.meta.get("category", "") for s in samples]
        order = [c for c in CATEGORIES if c in categories] + sorted(set(categories) - set(CATEGORIES) - {""})
        f1s = []
        for category in order:
            picked = [i for i, c in enumerate(categories) if c == category]
            per = pope_metrics([predictions[i] for i in picked], [answers[i] for i in picked])
            metrics.update({f"{category}/{k}": v for k, v in per.items()})
            f1s.append(per["f1"])
        metrics["f1_mean_categories"] = sum(f1s) / len(f1s) if f1s else 0.0
        unparsed = {i: why for i, p in enumerate(predictions) if (why := pope_unparsed(p))}
        return Scored([self.score(s, p) for s, p in zip(samples, predictions)], metrics, unparsed)
