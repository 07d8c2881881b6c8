"""The task contract: samples with images and gold answers, a prompt per model family, and a scoring rule.

A task is a class registered with :func:`tokenbench.api.register_task`; its options are dataclass fields with a type
(``int``, ``float``, ``bool``, ``str``), checked like a method's options (``-T key=value``). What the harness uses:

- ``samples(limit)``: the split, in a fixed order (the first ``limit`` when given). A sample whose image could not be
  read has ``image=None`` and ``meta["error"]`` saying why; the harness leaves it out of every run and reports it.
- ``prompt(sample, family)``: the user text for a model family (``"llava"``, ``"llava-next"``, ``"qwen2.5-vl"``: the
  family key exactly as the adapter class spells it, :attr:`tokenbench.api.ModelInterface.family`): the question plus
  the instruction the evaluation harness adds for that family. The adapter wraps it in the checkpoint's chat template;
  a task never formats a chat. ``tokenbench.api.model_family(family)`` gives the family's adapter class (its
  ``lmms_eval_model`` names the lmms-eval prompts the benchmark tasks use) and refuses any other spelling.
- ``evaluate(samples, predictions)``: a :class:`Scored` with each sample's score (in sample order) and the task's
  official metrics; ``metrics[primary_metric]`` is the headline (retention is its ratio to ``full``'s).
- ``max_new_tokens``: the generation length; ``version``: changes whenever the prompt, the scoring or the data does,
  so that rows of different versions are never mixed.

The simplest task overrides ``samples`` and, when exact match on the first word is not its rule, ``score``.
:func:`tokenbench.testing.check_task` checks a task against this contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence


class ImageRef:
    """An image decoded on demand: ``size`` is known up front (it decides the visual layout), the pixels are read when
    a batch is encoded and dropped afterwards, so a split of thousands of images is not held decoded in memory."""

    def __init__(self, read: Callable[[], Any], size: tuple[int, int]) -> None:
        self._read, self.size = read, tuple(size)

    def open(self):
        """The image as a PIL RGB image."""
        return self._read()


def as_pil(image):
    """A sample's image as a PIL image (adapters call this on ``Sample.image``, a PIL image or an :class:`ImageRef`)."""
    return image.open() if isinstance(image, ImageRef) else image


@dataclass(frozen=True)
class Sample:
    id: str
    image: Any  # PIL.Image.Image (RGB) or ImageRef; None when it could not be read (meta["error"] says why)
    question: str  # the question as the user would type it, including the answer-format instruction
    answer: Any  # the gold answer: a string, or the task's own form (e.g. the ten VQA answers, reference captions)
    meta: dict[str, Any] = field(default_factory=dict, compare=False)  # e.g. the question type, the category


@dataclass(frozen=True)
class Scored:
    """A task's verdict on one method's predictions over the samples."""

    per_sample: list[float]  # each sample's score, in sample order (its mean is the row's ``mean_score``)
    metrics: dict[str, float]  # the task's official metrics, the primary one included
    unparsed: dict[int, str] = field(default_factory=dict)  # sample index -> why its answer could not be parsed


class Task:
    """Base class of tasks. Subclasses set ``name``/``version`` and implement ``samples``; the rest has defaults."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0"
    max_new_tokens: ClassVar[int] = 8  # enough for every gold answer
    primary_metric: ClassVar[str] = "accuracy"  # the key of ``evaluate().metrics`` that papers report and average
    #: True: metrics are shares in [0, 1] (printed as %); False: printed as they are (MME totals, CIDEr)
    percent: ClassVar[bool] = True
    dataset: ClassVar[str] = ""  # the default dataset id ("" for a generated task)

    def samples(self, limit: int | None = None) -> list[Sample]:
        raise NotImplementedError

    def prompt(self, sample: Sample, family: str) -> str:
        """The user text for a model of ``family`` (default: the sample's question as it is)."""
        return sample.question

    def score(self, sample: Sample, prediction: str) -> float:
        """1.0 if the normalised first word of ``prediction`` equals the gold answer, else 0.0."""
        return float(normalize_answer(prediction) == normalize_answer(sample.answer))

    def evaluate(self, samples: Sequence[Sample], predictions: Sequence[str]) -> Scored:
        """Per-sample :meth:`score`, and their mean as the primary metric. Tasks with corpus-level metrics (F1, CIDEr,
        MME's totals) override this."""
        scores = [float(self.score(s, p)) for s, p in zip(samples, predictions)]
        return Scored(scores, {self.primary_metric: sum(scores) / len(scores) if scores else 0.0})

    def describe(self) -> str:
        """One line for ``tokenbench list tasks``: the first line of the class docstring."""
        return (type(self).__doc__ or "").strip().splitlines()[0] if type(self).__doc__ else ""


def normalize_answer(text: str) -> str:
    """Lower-case, strip surrounding whitespace and punctuation, and keep the first word."""
    words = text.strip().lower().split()
    return words[0].strip(".,;:!?\"'()[]") if words else ""
