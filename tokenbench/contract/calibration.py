"""What a method's calibration exchanges with the harness: the frozen model's signals it fits on
(:class:`CalibrationData`, built by the harness) and what it returns (:class:`Calibrated`). Saving, loading and checking
artefacts is :mod:`tokenbench.artefacts`; fitting is :mod:`tokenbench.harness.calibrate`. No torch here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    import torch

@dataclass(frozen=True)
class Calibrated:
    """What ``calibrate`` returns: tensors to save (safetensors), a JSON-able report (errors before/after, ...),
    ``key``: the settings the artefact is only valid for (checked when a run loads it, beside the model's fingerprint),
    and ``tag``: its file name in the default location."""

    tensors: dict[str, "torch.Tensor"]
    report: dict[str, Any]
    key: dict[str, Any]
    tag: str


class CalibrationData:
    """The frozen, unreduced model's signals for ``calibrate``: each iteration of ``train()`` or ``heldout()`` runs
    the model over that split, one batch at a time, and yields ``{layer: ReductionContext}`` for the layers of
    ``calibration_steps`` (plain tensors, usable in autograd as constants). Built by the harness."""

    def __init__(self, visit: Callable[[str], Any], n_train: int, n_heldout: int) -> None:
        self._visit = visit
        self.n_train, self.n_heldout = n_train, n_heldout

    def train(self):
        return self._visit("train")

    def heldout(self):
        return self._visit("heldout")
