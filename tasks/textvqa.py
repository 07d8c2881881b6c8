"""The ``textvqa`` task: TextVQA validation (questions about text in the image), scored by VQA accuracy as lmms-eval's
``textvqa_val`` scores it.

Data: ``lmms-lab-encoder/textvqa`` (then ``lmms-lab/textvqa``), default config, split ``validation`` (5,000
questions, ten human answers each). Columns read -- the schema a local copy (``--data``) must have:

- ``question_id`` (int32): the sample id;
- ``question`` (string);
- ``answers`` (list of 10 strings): the gold answers, None on the test split (scores 0 there, as in lmms-eval);
- ``image`` (image);
- ``ocr_tokens`` (list of strings): read when ``ocr`` is true (required then).

The hub rows also hold ``image_id``, ``question_tokens``, ``image_width``, ``image_height``, ``flickr_original_url``,
``flickr_300k_url``, ``image_classes`` and ``set_name``, which nothing reads.

Prompt (lmms-eval's ``textvqa_doc_to_text`` with the ``default`` kwargs of ``_default_template_textvqa_yaml``; the
yaml has no ``llava_hf`` or ``qwen2_5_vl`` entry, so every family gets the default): the question passed through
Python's ``str.capitalize`` (first letter upper-case, *every other letter lower-case*, as lmms-eval does), then, with
``ocr=True``, ``"\\nReference OCR token: "`` and the OCR tokens joined by ``", "``, then
``"\\nAnswer the question using a single word or phrase."``::

    What is the brand of this camera?
    Reference OCR token: dakota, digital, single-use, camera      <- only with ocr=True
    Answer the question using a single word or phrase.

Option ``ocr`` (bool, default False): lmms-eval's ``ocr`` kwarg, false in its yaml, so ``textvqa_val`` numbers in
lmms-eval are without OCR tokens. The LLaVA-1.5 paper's TextVQA number (58.2 for 7B) was measured with OCR tokens
in the prompt (LLaVA's question file puts the same ``Reference OCR token: ...`` line between the question and the
instruction); set ``ocr=true`` to compare with it. The option changes the version, so rows with and without OCR
tokens are never mixed.

Generation: 32 new tokens. lmms-eval sets no ``max_new_tokens`` for TextVQA (its llava_hf model then allows 1024);
32 tokens hold any gold answer (book titles and signs included), and our decoder stops at EOS, so the cap only
cuts rambling, which could not have matched anyway.

Scoring (``tokenbench.data.scoring.vqa.score_evalai``, following ``lmms_eval/tasks/textvqa/utils.py``
``textvqa_process_results``): the EvalAI answer processor on the prediction and on each of the ten answers, then
VQA accuracy -- for each leave-one-out subset of nine answers ``min(1, matches / 3)``, averaged. Per-sample score:
that accuracy; metric ``accuracy`` (primary, a share in [0, 1]): their mean, lmms-eval's ``exact_match``.
``unparsed`` lists the answers that normalise to nothing (still scored: 0 unless a gold answer is also empty).

Differences from lmms-eval: the generation cap (above); lmms-eval's ``until: ["ASSISTANT:"]`` stop string is not
applied (our decoder stops at EOS; lmms-eval's llava_hf model ignores it too, its qwen2_5_vl model cuts the text
there); a sample with an empty list of answers scores 0 (lmms-eval raises). lmms-eval's ``submission`` metric (a
file for the test server) is not produced.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenbench.api import register_task
from tokenbench.data.vqa import VQAAccuracyTask
from tokenbench.errors import ConfigError

POST_PROMPT = "\nAnswer the question using a single word or phrase."


@register_task("textvqa")
@dataclass
class TextVQATask(VQAAccuracyTask):
    """TextVQA val (5,000 questions on text in images), VQA accuracy; ``ocr=true`` adds the OCR tokens to the prompt."""

    name = "textvqa"
    dataset_name = "textvqa"
    split = "validation"
    prompts = {"default": ("", POST_PROMPT)}

    ocr: bool = False  # add "\nReference OCR token: t1, t2, ..." after the question, as lmms-eval's ocr kwarg

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.ocr, bool):
            raise ConfigError(f"task 'textvqa' option 'ocr' must be true or false, got {self.ocr!r}")

    def required_columns(self) -> tuple[str, ...]:
        return super().required_columns() + (("ocr_tokens",) if self.ocr else ())

    def question_of(self, row: dict) -> str:
        question = str(row["question"]).capitalize()
        if self.ocr:
            question += "\nReference OCR token: " + ", ".join(row["ocr_tokens"] or [])
        return question
