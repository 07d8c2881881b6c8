"""The ``okvqa`` task: OK-VQA (questions needing outside knowledge, on COCO val2014 images), scored by VQA accuracy as
lmms-eval's ``ok_vqa_val2014`` scores it.

Data: ``lmms-lab-encoder/OK-VQA`` (then ``lmms-lab/OK-VQA``), default config, split ``val2014`` (5,046 questions,
ten answers each; ``ok_vqa_val2014.yaml``: ``test_split: val2014``). Columns read -- the schema a local copy
(``--data``) must have:

- ``question_id`` (string): the sample id;
- ``question`` (string);
- ``answers`` (list of 10 strings): the gold answers;
- ``image`` (image).

The hub rows also hold ``question_type`` and ``answer_type`` (strings), kept in ``Sample.meta`` when present.

Prompt (lmms-eval's ``ok_vqa_doc_to_text`` with the ``default`` kwargs of ``_default_template_vqa_yaml``; no
``llava_hf``/``qwen2_5_vl`` entry, so every family gets it): the question as it is, then
``"\\nWhen the provided information is insufficient, respond with 'Unanswerable'.\\nAnswer the question using a
single word or phrase."``. No OK-VQA gold answer is "unanswerable", so a model that follows that instruction scores
0 on the sample, in lmms-eval as here.

Generation: 32 new tokens (lmms-eval sets none; its llava_hf model then allows 1024; 32 hold every gold answer and
our decoder stops at EOS).

Scoring (``tokenbench.data.scoring.vqa.score_evalai``, following ``lmms_eval/tasks/ok_vqa/utils.py``
``ok_vqa_process_results``): the EvalAI answer processor on the prediction and on each gold answer, then VQA
accuracy (for each leave-one-out subset ``min(1, matches / 3)``, averaged; no answers: 0, as there). Per-sample
score: that accuracy; metric ``accuracy`` (primary, a share in [0, 1]): their mean, lmms-eval's ``exact_match``.
``unparsed`` lists the answers that normalise to nothing (still scored).

Differences from lmms-eval: the generation cap; the ``until: ["ASSISTANT:"]`` stop string is not applied (our
decoder stops at EOS); no ``submission`` file.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenbench.api import register_task
from tokenbench.data.vqa import UNANSWERABLE_POST_PROMPT, VQAAccuracyTask


@register_task("okvqa")
@dataclass
class OKVQATask(VQAAccuracyTask):
    """OK-VQA val2014 (5,046 outside-knowledge questions on COCO images), VQA accuracy."""

    name = "okvqa"
    dataset_name = "OK-VQA"
    split = "val2014"
    prompts = {"default": ("", UNANSWERABLE_POST_PROMPT)}

    def meta_of(self, row: dict) -> dict:
        return {k: row[k] for k in ("question_type", "answer_type") if row.get(k) is not None}
