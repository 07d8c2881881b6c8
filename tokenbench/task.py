"""The task contract: samples with images and exact answers, and a scoring rule.

A task is registered with :func:`tokenbench.api.register_task` as a class or factory taking keyword options.
The adapter turns ``Sample.question`` into its model's chat template; the task never formats prompts for a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Sample:
    id: str
    image: Any  # PIL.Image.Image (RGB)
    question: str  # the question as the user would type it, including the answer-format instruction
    answer: str  # the exact gold answer
    meta: dict[str, Any] = field(default_factory=dict, compare=False)  # e.g. the question type, the target cell


class Task:
    """Base class of tasks. Subclasses set ``name``/``version`` and implement ``samples``; ``score`` may be reused."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0"
    max_new_tokens: ClassVar[int] = 8  # enough for every gold answer

    def samples(self, limit: int | None = None) -> list[Sample]:
        raise NotImplementedError

    def score(self, sample: Sample, prediction: str) -> float:
        """1.0 if the normalised first word of ``prediction`` equals the gold answer, else 0.0."""
        return float(normalize_answer(prediction) == normalize_answer(sample.answer))


def normalize_answer(text: str) -> str:
    """Lower-case, strip surrounding whitespace and punctuation, and keep the first word."""
    words = text.strip().lower().split()
    return words[0].strip(".,;:!?\"'()[]") if words else ""
