"""Captioning tasks ``coco_cap`` (COCO Caption) and ``nocaps`` (NoCaps), scored as lmms-eval scores them: corpus
BLEU-1..4, METEOR, ROUGE_L and CIDEr from pycocoevalcap (:mod:`tokenbench.data.scoring.caption`; needs ``java``).

``coco_cap``: lmms-eval's task ``coco2017_cap_val`` (``lmms_eval/tasks/coco_cap/coco2017_cap_val.yaml``):
dataset ``lmms-lab-encoder/COCO-Caption2017`` (then ``lmms-lab/COCO-Caption2017``), split ``val``, 5,000 images with
5 reference captions each. lmms-eval's group ``coco_cap`` runs coco2014_cap_val, coco2014_cap_test, coco2017_cap_val
and coco2017_cap_test; the test splits have no public references (they only write a server-submission file), so a
val split it is. 2017 val is lmms-eval's usual COCO entry (its README's benchmark table of 2024, and the
``PAPER_TABLE`` task list of LLaVA-1.5 runs that token-reduction repositories copy: coco2017_cap_val, ..., nocaps_val);
the ALVTS paper reports "COCO Caption" from lmms-eval without naming the split. Option ``year=2014`` gives
``coco2014_cap_val`` instead: ``lmms-lab-encoder/COCO-Caption``, split ``val``, all 40,504 val2014 images (same prompt,
length and scoring; 8 times the generation). The Karpathy test split (``coco_karpathy_test``) is not offered: its
lmms-eval task downloads every image from a URL at run time and uses another prompt ("Describe the image briefly.").
Columns read (a local copy must have them): ``question_id`` (the image file name, e.g. ``000000397133.jpg``; the
sample id), ``answer`` (list of reference captions), ``image``. The hub schema also has ``question`` (unused, as in
lmms-eval), ``id``, ``license``, ``file_name``, ``coco_url``, ``height``, ``width``, ``date_captured``.
``meta["image_id"]``: the COCO image id, lmms-eval's rule ``int(question_id.split("_")[-1].split(".")[0])`` (absent
when the id has no number).

``nocaps``: lmms-eval's task ``nocaps_val`` (``lmms_eval/tasks/nocaps/nocaps_val.yaml``; its group ``nocaps`` also
runs ``nocaps_test``, which has no public references): dataset ``lmms-lab-encoder/NoCaps`` (then ``lmms-lab/NoCaps``),
split ``validation``, 4,500 images with 10 reference captions each. Columns read: ``image_id`` (int; the sample id is
its string), ``annotations_captions`` (list of reference captions), ``image``; the hub schema also has
``image_coco_url``, ``image_date_captured``, ``image_file_name``, ``image_height``, ``image_width``,
``image_license``, ``image_open_images_id`` and ``annotations_ids``.

Prompt (both, every model): "Provide a one-sentence caption for the provided image." (coco_cap's ``coco_doc_to_text``;
nocaps' ``lmms_eval_specific_kwargs.default.prompt``; neither defines pre/post prompts for llava_hf or qwen2_5_vl).
Generation: at most 64 new tokens, greedy (lmms-eval's value for both val tasks).

Metrics (``Scored.metrics``): ``Bleu_1``..``Bleu_4``, ``METEOR``, ``ROUGE_L``, ``CIDEr`` over all scored samples, as
pycocoevalcap's raw values (not percentages: ``percent=False``; LLaVA-1.5-7B's CIDEr is about 1.1 on COCO). Primary:
``CIDEr``. Per-sample score: the image's own CIDEr, whose mean is the corpus CIDEr. ``unparsed``: predictions that
are empty (or only whitespace); they are still scored, as lmms-eval scores them (0 on every metric). CIDEr's IDF is
computed over the scored images, so a ``limit`` of a few images gives CIDEr far from the full split's (one image:
always 0); SPICE is not computed (lmms-eval leaves it out too).

Differences from lmms-eval: samples are keyed by position rather than image id, and the characters Stanford's
tokenizer takes as line breaks besides "\\n" are replaced by a space (see :mod:`tokenbench.data.scoring.caption`); neither
changes a correct lmms-eval number. No submission file is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from tokenbench.api import register_task
from tokenbench.errors import ConfigError
from tokenbench.data.hub import DatasetTask
from tokenbench.data.scoring.caption import score_captions
from tokenbench.contract.task import Sample, Scored

#: the instruction lmms-eval gives for both tasks
PROMPT = "Provide a one-sentence caption for the provided image."
#: coco_cap's ``year`` option -> (hub dataset name, lmms-eval task); both read the split ``val``
COCO_YEARS = {"2017": ("COCO-Caption2017", "coco2017_cap_val"), "2014": ("COCO-Caption", "coco2014_cap_val")}


class _CaptionTask(DatasetTask):
    """Shared parts: prompt, length, corpus scoring."""

    prompts = {"default": ("", "")}
    max_new_tokens = 64
    primary_metric = "CIDEr"
    percent = False
    scoring_version = "1"

    def score(self, sample: Sample, prediction: str) -> float:
        raise NotImplementedError(f"task {self.name!r} scores captions over the whole split (CIDEr's IDF depends on "
                                  "every image); call evaluate(samples, predictions)")

    def evaluate(self, samples: Sequence[Sample], predictions: Sequence[str]) -> Scored:
        if len(samples) != len(predictions):
            raise ValueError(f"task {self.name!r}: {len(predictions)} predictions for {len(samples)} samples")
        result = score_captions([s.answer for s in samples], [p or "" for p in predictions])
        unparsed = {i: "empty caption" for i, p in enumerate(predictions) if not (p or "").strip()}
        return Scored(list(result.per_image["CIDEr"]), dict(result.metrics), unparsed)


def _coco_image_id(question_id: str) -> int | None:
    """lmms-eval's image id: the number after the last "_" and before the first "." of the file name."""
    try:
        return int(str(question_id).split("_")[-1].split(".")[0])
    except ValueError:
        return None


@register_task("coco_cap")
@dataclass
class CocoCaptionTask(_CaptionTask):
    """COCO Caption 2017 val (lmms-eval coco2017_cap_val): one-sentence captions, CIDEr (raw, pycocoevalcap)."""

    name = "coco_cap"
    dataset_name = "COCO-Caption2017"
    split = "val"

    year: str = "2017"  # "2017": coco2017_cap_val (5,000 images); "2014": coco2014_cap_val (40,504 images)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.year not in COCO_YEARS:
            raise ConfigError(f"task 'coco_cap' option 'year' must be '2017' (lmms-eval's coco2017_cap_val) or '2014' "
                              f"(coco2014_cap_val), got {self.year!r}")
        name = COCO_YEARS[self.year][0]
        self.dataset_name = name  # this object's dataset (the class keeps the 2017 default)

    def required_columns(self) -> tuple[str, ...]:
        return (self.image_column, "question_id", "answer")

    def row_sample(self, row: dict, index: int) -> Sample:
        qid = str(row["question_id"])
        image_id = _coco_image_id(qid)
        meta = {"image_id": image_id} if image_id is not None else {}
        return Sample(id=qid, image=None, question=PROMPT, answer=[str(a) for a in row["answer"] or []], meta=meta)


@register_task("nocaps")
@dataclass
class NocapsTask(_CaptionTask):
    """NoCaps validation (lmms-eval nocaps_val): one-sentence captions, CIDEr (raw, pycocoevalcap)."""

    name = "nocaps"
    dataset_name = "NoCaps"
    split = "validation"

    def required_columns(self) -> tuple[str, ...]:
        return (self.image_column, "image_id", "annotations_captions")

    def row_sample(self, row: dict, index: int) -> Sample:
        return Sample(id=str(row["image_id"]), image=None, question=PROMPT,
                      answer=[str(a) for a in row["annotations_captions"] or []],
                      meta={"image_id": int(row["image_id"])})
