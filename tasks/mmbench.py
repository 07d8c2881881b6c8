"""The ``mmbench_en`` task: MMBench (English, dev split) with CircularEval, scored by lmms-eval's API-free ("static")
evaluation: the heuristic answer matching of ``mmbench_en_dev_static``, no GPT judge.

Data: ``lmms-lab-encoder/MMBench`` (then ``lmms-lab/MMBench``), config ``en``, split ``dev`` (4329 rows). Columns read
(a local copy, ``--data``, must have them): ``image``, ``index`` (integer; a string of digits is accepted),
``question``, ``hint`` (None when none), ``answer`` (the letter), ``A``, ``B``, ``C``, ``D`` (None past the last
option), ``category``, ``L2-category``. ``Sample.id`` is the ``index``.

How the dev split encodes CircularEval: each question is stored once per circular shift of its options. The original
row has ``index`` i < 1e6; its rotations are rows of their own with ``index`` i + k * 1e6 (k = 1 .. options - 1), the
options shifted and ``answer`` moved with them, so a 4-option question is 4 rows and a 2-option one 2. lmms-eval groups
the rows by ``index`` modulo 1e6 (``MMBench_Evaluator.eval_result``). Samples come in the order of that grouping
(question index, then rotation), not the hub's row order, so that ``limit`` takes whole questions with all their
rotations (the last one may be cut short; it is then judged on the rotations it has, as lmms-eval would).

Prompt (``mmbench_doc_to_text`` with the template yaml's ``default`` kwargs, the only ones it has): ::

    <hint> <question> There are several options:
    A. <A>
    B. <B>
    ...                          (each option whose value is non-empty and not "nan")

    Answer with the option's letter from the given choices directly.

("<hint> " only when the hint is not None and not the string "nan"; the blank line before the instruction is
lmms-eval's: it joins the yaml's post prompt, which starts with a newline, with another newline.)

Generation: 64 new tokens. lmms-eval allows 1024; the answer is a letter, but the matcher also accepts an option's
text (which can be a long phrase), and 64 tokens hold "B. <option text>" for MMBench's options.

Scoring (``MMBench_Evaluator.eval_result(eval_method="static")``, :mod:`tokenbench.data.scoring.choice`): a row's answer
gives a letter by ``can_infer`` (exactly one of A-E as a word or as "B." "(B)" "B:" ..., else exactly one option's
text inside the answer), else by lmms-eval's ``extract_mcq_answer`` with the row's option letters; the row is right
when that letter is its gold letter. Metrics:

- ``circular_accuracy`` (primary; lmms-eval's ``gpt_eval_score`` of ``mmbench_en_dev_static`` / 100): the share of
  questions (rows with index < 1e6 present) all of whose rotations present are right;
- ``vanilla_accuracy``: the share of rows right, each rotation counted as a question of its own;
- ``category/<name>``, ``l2_category/<name>``: circular accuracy per ``category`` and ``L2-category`` of the question.

Per-sample score: row r of question g gets c_g * N / (G * n_g), where c_g is 1 if question g is right under
CircularEval (else 0), n_g its rows among the samples, N the samples, G the questions; the scores' mean is then exactly
``circular_accuracy``. A score is non-zero exactly when its question is right, and can exceed 1 (a question with fewer
rows than the average). A row whose question's main row is not among the samples scores 0 and counts in no metric but
``vanilla_accuracy`` (lmms-eval skips it too). Rows whose answer neither matcher reads go into ``Scored.unparsed``.

Followed: ``lmms_eval/tasks/mmbench/mmbench_en_dev_static.yaml``, ``_default_template_mmbench_en_yaml``,
``en_utils.py``, ``mmbench_evals.py``, ``lmms_eval/tasks/_task_utils/mcq_extract.py``. Differences from lmms-eval: the
sample order (grouped, above); ``vanilla_accuracy`` and the per-sample scores are ours (lmms-eval reports only the
circular accuracy and its per-category breakdown).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

from tokenbench.api import register_task
from tokenbench.errors import ConfigError
from tokenbench.data.hub import DatasetTask
from tokenbench.data.scoring.choice import (MMBENCH_ROTATION, circular_groups, judge_mmbench, mmbench_choices,
                                       mmbench_options_prompt)
from tokenbench.contract.task import Sample, Scored

POST_PROMPT = "\nAnswer with the option's letter from the given choices directly."


def mmbench_question(row: dict) -> str:
    """``mmbench_doc_to_text`` without the closing instruction."""
    hint = row.get("hint")
    query = f"{row['question']} {mmbench_options_prompt(row)}"
    if hint is not None and not (isinstance(hint, float) and hint != hint) and hint != "nan":
        query = f"{hint} {query}"
    return query


@register_task("mmbench_en")
@dataclass
class MMBenchEnTask(DatasetTask):
    """MMBench (English, dev) with CircularEval and lmms-eval's API-free answer matching."""

    name = "mmbench_en"
    dataset_name = "MMBench"
    config = "en"
    split = "dev"
    prompts = {"default": ("", "\n" + POST_PROMPT)}  # lmms-eval: f"{query}\n{post_prompt}"
    max_new_tokens = 64
    primary_metric = "circular_accuracy"
    scoring_version = "1"

    def rows(self):
        """The split with its rows grouped by question: ordered by (index mod 1e6, index)."""
        if getattr(self, "_grouped", None) is None:
            ds = super().rows()
            if "index" in ds.column_names:  # else samples() reports the missing column
                try:
                    index = [int(v) for v in ds["index"]]
                except (TypeError, ValueError) as exc:
                    raise ConfigError(f"task {self.name!r}: the 'index' column must hold integers (MMBench's question "
                                      f"ids), found {exc}") from exc
                order = sorted(range(len(index)), key=lambda i: (index[i] % MMBENCH_ROTATION, index[i]))
                if order != list(range(len(index))):
                    ds = ds.select(order)
            self._grouped = ds
        return self._grouped

    def required_columns(self) -> tuple[str, ...]:
        return ("image", "index", "question", "hint", "answer", "A", "B", "C", "D", "category", "L2-category")

    def row_sample(self, row: dict, index: int) -> Sample:
        qid = int(row["index"])
        meta = {"index": qid, "question_index": qid % MMBENCH_ROTATION, "rotation": qid // MMBENCH_ROTATION,
                "choices": mmbench_choices(row), "category": row["category"], "l2_category": row["L2-category"]}
        return Sample(id=str(qid), image=None, question=mmbench_question(row), answer=row["answer"], meta=meta)

    def score(self, sample: Sample, prediction: str) -> float:
        """The row's own correctness (CircularEval needs the other rotations: see :meth:`evaluate`)."""
        return float(judge_mmbench(prediction, sample.answer, sample.meta["choices"]).correct)

    def evaluate(self, samples: Sequence[Sample], predictions: Sequence[str]) -> Scored:
        judged = [judge_mmbench(p, s.answer, s.meta["choices"]) for s, p in zip(samples, predictions)]
        unparsed = {i: j.reason for i, j in enumerate(judged) if j.reason}
        indices = [int(s.meta["index"]) for s in samples]
        groups = circular_groups(indices)
        n, g = len(samples), len(groups)
        per_sample = [0.0] * n
        by_category: dict[str, list[bool]] = defaultdict(list)
        by_l2: dict[str, list[bool]] = defaultdict(list)
        hits = 0
        for question, rows in groups.items():
            right = all(judged[p].correct for p in rows)
            hits += right
            main = samples[rows[0]]  # the main row (index < 1e6) sorts first
            by_category[main.meta["category"]].append(right)
            by_l2[main.meta["l2_category"]].append(right)
            for p in rows:
                per_sample[p] = n / (g * len(rows)) if right else 0.0
        metrics = {
            "circular_accuracy": hits / g if g else 0.0,
            "vanilla_accuracy": sum(j.correct for j in judged) / n if n else 0.0,
        }
        for prefix, table in (("category", by_category), ("l2_category", by_l2)):
            for name in sorted(table, key=str):
                metrics[f"{prefix}/{name}"] = sum(table[name]) / len(table[name])
        return Scored(per_sample, metrics, unparsed)
