"""The ``vizwiz_vqa`` task: VizWiz-VQA validation (photos taken by blind people, many of them unanswerable), scored by
VQA accuracy as lmms-eval's ``vizwiz_vqa_val`` scores it.

Data: ``lmms-lab-encoder/VizWiz-VQA`` (then ``lmms-lab/VizWiz-VQA``), default config, split ``val`` (4,319
questions, ten answers each). Columns read -- the schema a local copy (``--data``) must have:

- ``question_id`` (string): the sample id;
- ``question`` (string);
- ``answers`` (list of 10 strings): the gold answers, among them ``"unanswerable"`` where annotators could not answer;
- ``image`` (image);
- ``category`` (string, optional): the question's answer type (VizWiz's types are ``unanswerable``, ``yes/no``,
  ``number`` and ``other``), read for the per-category breakdown only.

Prompt (lmms-eval's ``vizwiz_vqa_doc_to_text`` with the ``default`` kwargs of ``_default_template_vqa_yaml``, the
only entry, so every family gets it): the question through Python's ``str.capitalize`` (first letter upper-case,
every other letter lower-case, as lmms-eval does), then ``"\\nWhen the provided information is insufficient,
respond with 'Unanswerable'.\\nAnswer the question using a single word or phrase."``.

Unanswerable questions, exactly as lmms-eval: no special case. The prompt asks for ``Unanswerable``; the EvalAI
processor lower-cases it (and strips a final period), so ``"Unanswerable."`` becomes ``"unanswerable"`` and is
scored like any answer, by VQA accuracy against the ten gold answers, which say ``"unanswerable"`` as often as the
annotators did (3 or more of 10: full credit). Other wordings ("I cannot tell", "unknown", "not answerable") match no
gold answer. ``"unsuitable"`` (VizWiz's label for an unusable image) is likewise an ordinary gold answer.

Generation: 32 new tokens (lmms-eval sets none; its llava_hf model then allows 1024; our decoder stops at EOS).

Scoring (``tokenbench.data.scoring.vqa.score_evalai``, following ``lmms_eval/tasks/vizwiz_vqa/utils.py``
``vizwiz_vqa_process_results``): the EvalAI answer processor on the prediction and on each gold answer, then VQA
accuracy (for each leave-one-out subset ``min(1, matches / 3)``, averaged; no answers: 0, as there). Per-sample
score: that accuracy; metrics: ``accuracy`` (primary, a share in [0, 1]), their mean, lmms-eval's ``exact_match``;
``category/<c>``: the mean over the samples of each ``category`` (``/`` in a category written ``_``:
``category/yes_no``), which lmms-eval does not report. ``unparsed`` lists the answers that normalise to nothing.

Differences from lmms-eval: the generation cap; the ``until: ["ASSISTANT:"]`` stop string is not applied (our
decoder stops at EOS); the added ``category/*`` breakdown.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenbench.api import register_task
from tokenbench.data.vqa import UNANSWERABLE_POST_PROMPT, VQAAccuracyTask


@register_task("vizwiz_vqa")
@dataclass
class VizWizVQATask(VQAAccuracyTask):
    """VizWiz-VQA val (4,319 questions from blind users, many unanswerable), VQA accuracy."""

    name = "vizwiz_vqa"
    dataset_name = "VizWiz-VQA"
    split = "val"
    prompts = {"default": ("", UNANSWERABLE_POST_PROMPT)}
    breakdown = "category"  # metrics category/<c>

    def question_of(self, row: dict) -> str:
        return str(row["question"]).capitalize()

    def meta_of(self, row: dict) -> dict:
        return {"category": row["category"]} if row.get("category") else {}
