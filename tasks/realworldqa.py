"""The ``realworldqa`` task: RealWorldQA's real-world spatial questions (mostly multiple choice, a few answered with a
word or a number), scored as lmms-eval's ``realworldqa`` task scores them.

Data: ``lmms-lab-encoder/RealWorldQA`` (then ``lmms-lab/RealWorldQA``), default config, split ``test`` (765
questions). Columns read (a local copy, ``--data``, must have them): ``image`` (an image), ``question`` (string: the
question, its lettered options and the answer instruction, e.g. "Please answer directly with only the letter of the
correct option and nothing else."), ``answer`` (string: a letter A-D, or a word or number). The dataset has no
question id: ``Sample.id`` is the row's position in the split.

Prompt: the question text stripped, nothing added (lmms-eval's ``realworldqa_doc_to_text`` with its yaml's ``default``
kwargs, empty pre and post prompts, the ones lmms-eval uses for llava_hf and qwen2_5_vl). Gold answer: ``answer``
stripped. Generation: 16 new tokens (lmms-eval's ``max_new_tokens``).

Scoring (``realworldqa_process_results``, :func:`tokenbench.data.scoring.choice.judge_realworldqa`): when the gold answer
is a letter A-D, the letter lmms-eval's ``extract_mcq_answer`` finds in the answer with choices A-D must equal it;
that extraction reads upper-case letters only ("B", "(B)", "B.", "The answer is B", "B. Straight" give B; "b" gives
nothing). Otherwise the answer lower-cased, without trailing full stops, must equal the gold answer lower-cased
("Downhill." is right for "Downhill"). Metric: ``exact_match``, the share right (primary; per-sample score 0/1,
their mean). Letter questions whose answer holds no letter A-D go into ``Scored.unparsed`` (wrong, as in lmms-eval).
The yaml applies no ``filter_list``, so the ``MultiChoiceRegexFilter`` and ``NumberWordsToDigitsFilter`` classes in
lmms-eval's ``utils.py`` play no part.

Followed: ``lmms_eval/tasks/realworldqa/realworldqa.yaml`` and ``utils.py``, ``lmms_eval/tasks/_task_utils/
mcq_extract.py``. Differences from lmms-eval: none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from tokenbench.api import register_task
from tokenbench.data.hub import DatasetTask
from tokenbench.data.scoring.choice import judge_realworldqa
from tokenbench.contract.task import Sample, Scored


@register_task("realworldqa")
@dataclass
class RealWorldQATask(DatasetTask):
    """RealWorldQA (test): option letters, or a word or number; lmms-eval's exact_match with its letter extraction."""

    name = "realworldqa"
    dataset_name = "RealWorldQA"
    split = "test"
    prompts = {"default": ("", "")}
    max_new_tokens = 16
    primary_metric = "exact_match"
    scoring_version = "1"

    def required_columns(self) -> tuple[str, ...]:
        return ("image", "question", "answer")

    def row_sample(self, row: dict, index: int) -> Sample:
        answer = row["answer"].strip()
        kind = "letter" if answer.upper() in ("A", "B", "C", "D") else "open"
        return Sample(id=str(index), image=None, question=row["question"].strip(), answer=answer,
                      meta={"answer_type": kind})

    def score(self, sample: Sample, prediction: str) -> float:
        return float(judge_realworldqa(prediction, sample.answer).correct)

    def evaluate(self, samples: Sequence[Sample], predictions: Sequence[str]) -> Scored:
        judged = [judge_realworldqa(p, s.answer) for s, p in zip(samples, predictions)]
        scores = [float(j.correct) for j in judged]
        unparsed = {i: j.reason for i, j in enumerate(judged) if j.reason}
        return Scored(scores, {"exact_match": sum(scores) / len(scores) if scores else 0.0}, unparsed)
