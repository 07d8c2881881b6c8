"""Exact match as lmms-eval scores GQA: ``metric: exact_match`` with ``ignore_case: true`` and
``ignore_punctuation: true`` (``lmms_eval/tasks/gqa/gqa.yaml``).

lmms-eval's rule (snapshot 75571cfe, also pip 0.7.3), followed exactly:

1. ``lmms_eval/api/task.py`` (``ConfigurableTask.process_results``, ``generate_until``) strips surrounding whitespace
   from the generated answer; the gold answer is not stripped.
2. ``lmms_eval/api/metrics.py`` (``exact_match_hf_evaluate``, ported from Hugging Face ``evaluate``'s exact_match)
   lower-cases both strings, then deletes every ASCII punctuation character (``string.punctuation``) from both; no
   other normalisation (inner spaces stay, articles stay, numbers stay as words or digits as written).
3. The sample scores 1 when the two results are equal, else 0; the task's number is the mean.

So ``" Yes."`` matches ``"yes"``, ``"T-shirt"`` matches ``"tshirt"``, but ``"the table"`` does not match ``"table"``,
``"2"`` does not match ``"two"``, and ``"yes ."`` (a space before the full stop) does not match ``"yes"``.
"""

from __future__ import annotations

import string

_DROP_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    """Lower-cased, every ASCII punctuation character removed (``ignore_case`` + ``ignore_punctuation``)."""
    return text.lower().translate(_DROP_PUNCTUATION)


def exact_match(prediction: str, answer: str) -> bool:
    """lmms-eval's GQA exact match of a raw generated ``prediction`` against the gold ``answer``."""
    return normalize((prediction or "").strip()) == normalize(answer)
