"""The ``ai2d`` task: AI2D science-diagram questions with four options, answered with an option letter, scored as
lmms-eval's ``ai2d`` task scores them.

Data: ``lmms-lab-encoder/ai2d`` (then ``lmms-lab/ai2d``), default config, split ``test`` (3088 questions). Columns
read (a local copy, ``--data``, must have them): ``image`` (an image), ``question`` (string), ``options`` (list of
strings), ``answer`` (string: the 0-based index of the right option, "0".."3"). The dataset has no question id:
``Sample.id`` is the row's position in the split.

Prompt (lmms-eval's ``ai2d_doc_to_text``, prompt_format ``mcq``: its yaml's ``default`` kwargs, the ones lmms-eval uses
for llava_hf and qwen2_5_vl, which it gives no kwargs of their own): ::

    <question>
    A. <option 1>
    B. <option 2>
    ...
    Answer with the option's letter from the given choices directly.

Gold answer: the right option's letter (``model_specific_target_kwargs`` ``mcq``). Generation: 16 new tokens
(lmms-eval's ``max_new_tokens``).

Scoring (the yaml's ``flexible-extract`` filter, then the ``exact_match`` metric with ``ignore_case`` and
``ignore_punctuation``; :func:`tokenbench.data.scoring.choice.judge_ai2d`): an answer that starts (after whitespace) with
a capital letter and a full stop becomes that letter; any other answer is kept whole; it is stripped, lower-cased and
stripped of ASCII punctuation, and must then equal the gold letter. So "B", "b", "(B)", "B." and "B. cat" are right
for B, while "B cat", "The answer is B" are wrong. Metric: ``exact_match``, the share right (primary; per-sample score
0/1, their mean). Answers that are not one letter after that normalisation go into ``Scored.unparsed`` (wrong, as in
lmms-eval).

Followed: ``lmms_eval/tasks/ai2d/ai2d.yaml`` and ``utils.py`` (``ai2d_doc_to_text``, ``ai2d_doc_to_target``,
``MultiChoiceRegexFilter``), ``lmms_eval/api/metrics.py`` (``exact_match_hf_evaluate``). Differences from lmms-eval:
none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from tokenbench.api import register_task
from tokenbench.data.hub import DatasetTask
from tokenbench.data.scoring.choice import LETTERS, format_options, judge_ai2d
from tokenbench.contract.task import Sample, Scored

POST_PROMPT = "\nAnswer with the option's letter from the given choices directly."


@register_task("ai2d")
@dataclass
class AI2DTask(DatasetTask):
    """AI2D (science diagrams, test): answer with the option letter; lmms-eval's exact_match."""

    name = "ai2d"
    dataset_name = "ai2d"
    split = "test"
    prompts = {"default": ("", POST_PROMPT)}
    max_new_tokens = 16
    primary_metric = "exact_match"
    scoring_version = "1"

    def required_columns(self) -> tuple[str, ...]:
        return ("image", "question", "options", "answer")

    def row_sample(self, row: dict, index: int) -> Sample:
        options = list(row["options"])
        question = f"{row['question']}\n{format_options(options)}"
        return Sample(id=str(index), image=None, question=question, answer=LETTERS[int(row["answer"])],
                      meta={"n_options": len(options)})

    def score(self, sample: Sample, prediction: str) -> float:
        return float(judge_ai2d(prediction, sample.answer).correct)

    def evaluate(self, samples: Sequence[Sample], predictions: Sequence[str]) -> Scored:
        judged = [judge_ai2d(p, s.answer) for s, p in zip(samples, predictions)]
        scores = [float(j.correct) for j in judged]
        unparsed = {i: j.reason for i, j in enumerate(judged) if j.reason}
        return Scored(scores, {"exact_match": sum(scores) / len(scores) if scores else 0.0}, unparsed)
