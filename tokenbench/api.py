"""The plugin face: every name a method, model or task plugin imports, in one place (the contracts live in
:mod:`tokenbench.contract`; this module only re-exports them). What a method may declare, read and return:

A method only *decides*; the model adapter *executes* (gather/scatter, position ids, masks, KV cache). Every kind
of reduction in the field fits one of three stages:

========== ===================================================================== =============================
stage      what the adapter does with the method's selection                     examples
========== ===================================================================== =============================
pre_llm    before the first LLM layer: keep (and optionally replace with merged  VisionZip, pooling, FasterVLM
           embeddings) the selected visual tokens; the rest never enter the LLM
prune      before layer ``step.layer``: the unselected visual tokens are gone    FastV, PyramidDrop, DART
           for this and every later layer (and from those layers' KV cache)
route      before layer ``step.layer``: the selected visual tokens go through    ALVTS
           that layer, the others skip it unchanged and rejoin in order
========== ===================================================================== =============================

Kept tokens always keep their original position ids (and, on Qwen2.5-VL, their own 3-D M-RoPE ids).

A method is a frozen dataclass (its fields are its typed, documented options) subclassing :class:`TokenReducer`::

    @register_method("fastv")
    @dataclass(frozen=True)
    class FastV(TokenReducer):
        stage = "prune"
        layer: int = 2

        def steps(self, n_layers):
            return (Step(self.layer, needs=(Need("attn", layer=self.layer - 1, queries="last"),)),)

        def select(self, ctx):
            scores = ctx.signal(Need("attn", layer=self.layer - 1, queries="last")).mean(dim=1)[:, 0]
            return ctx.topk(scores)  # the top `keep`, honouring the run's budget scope

Where each name lives: the method contract in :mod:`tokenbench.contract.method`, signal kinds in
:mod:`tokenbench.contract.signals`, layouts in :mod:`tokenbench.contract.layout`, the adapter interface and model
families in :mod:`tokenbench.contract.model`, weights in :mod:`tokenbench.contract.weights`, calibration in
:mod:`tokenbench.contract.calibration`, the registries in :mod:`tokenbench.contract.plugins`, the task contract in
:mod:`tokenbench.contract.task`, layer schedules in :mod:`tokenbench.contract.schedule`.

Nothing here imports torch.
"""

from __future__ import annotations

from tokenbench.contract.calibration import Calibrated, CalibrationData
from tokenbench.contract.layout import Region, VisualLayout
from tokenbench.contract.positions import POSITIONS, PositionsOption, check_positions
from tokenbench.contract.method import (
    BUDGET_KINDS,
    BUDGET_SCOPES,
    STAGES,
    LayerInput,
    Need,
    Prepared,
    Reduction,
    ReductionContext,
    Selection,
    Stage,
    Step,
    TokenReducer,
    check_budget_scope,
    resolve_needs,
    split_budget,
)
from tokenbench.contract.model import Batch, Generation, ModelInterface, model_family
from tokenbench.contract.plugins import (
    METHODS,
    MODELS,
    TASKS,
    _validate_method as _validate_method,  # the contract check, for tests
    build_method,
    coerce_option,
    register_method,
    register_model,
    register_task,
)
from tokenbench.contract.registry import Registry
from tokenbench.contract.schedule import (
    REFERENCE_DEPTH,
    Stages,
    at_depth,
    fit_schedule,
    layer_at_depth,
    layer_mean,
    per_layer,
)
from tokenbench.contract.signals import (
    NEED_KINDS,
    PER_TOKEN_KINDS,
    PRE_LLM_NEEDS,
    QUERY_KINDS,
    NeedKind,
    SignalKind,
    declare_signal,
)
from tokenbench.contract.task import ImageRef, Sample, Scored, Task, as_pil, normalize_answer
from tokenbench.contract.weights import ModelWeights, fingerprint
from tokenbench.errors import ConfigError, IncompatibleError, PluginValidationError

__all__ = [
    # methods: the contract, the budget and the schedules
    "Stage", "STAGES", "Need", "Step", "LayerInput", "Selection", "ReductionContext", "TokenReducer", "Prepared",
    "Reduction", "BUDGET_SCOPES", "BUDGET_KINDS", "split_budget", "check_budget_scope", "resolve_needs",
    "POSITIONS", "PositionsOption", "check_positions",
    "REFERENCE_DEPTH", "Stages", "at_depth", "layer_at_depth", "per_layer", "layer_mean", "fit_schedule",
    # signals
    "NEED_KINDS", "NeedKind", "PRE_LLM_NEEDS", "QUERY_KINDS", "PER_TOKEN_KINDS", "SignalKind", "declare_signal",
    # layouts, weights, calibration
    "Region", "VisualLayout", "ModelWeights", "fingerprint", "Calibrated", "CalibrationData",
    # models and tasks
    "ModelInterface", "Batch", "Generation", "model_family", "Task", "Sample", "Scored", "ImageRef", "as_pil",
    "normalize_answer",
    # registries
    "METHODS", "MODELS", "TASKS", "Registry", "register_method", "register_model", "register_task", "build_method",
    "coerce_option",
    # errors a plugin raises
    "ConfigError", "PluginValidationError", "IncompatibleError",
]
