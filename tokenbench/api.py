"""The token-reduction contract: what a method may declare, read and return, and the three registries.

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
            return scores.topk(ctx.keep, dim=-1).indices

This module imports no torch: tensors appear only in type hints.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from tokenbench.errors import ConfigError, PluginValidationError
from tokenbench.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    import torch

Stage = Literal["pre_llm", "prune", "route"]
STAGES: tuple[str, ...] = ("pre_llm", "prune", "route")

NeedKind = Literal["attn", "keys", "hidden", "normed", "visual_embeds", "cls_attn"]
#: What an adapter can compute on request, at the input of an LLM layer (``attn``, ``keys``, ``hidden``, ``normed``)
#: or before the LLM (``visual_embeds``). Each is computed only where a method asks for it, and its cost is counted.
NEED_KINDS: dict[str, str] = {
    "attn": "attention probabilities of the layer from the chosen queries ('last', 'text' or 'visual') to the "
    "active visual keys, softmax over every key the layer sees (causal, padding masked), per head: "
    "(B, heads, Q, n_active). Recomputed for those rows only (norm, q/k projections, RoPE), no eager attention.",
    "keys": "the layer's keys after RoPE for the active visual tokens, per KV head: (B, kv_heads, n_active, head_dim)",
    "hidden": "the layer's input hidden states of the active visual tokens: (B, n_active, D)",
    "normed": "the same after the layer's input norm (what W_Q/W_K see): (B, n_active, D)",
    "visual_embeds": "the visual tokens as they enter the LLM (after the projector): (B, N, D)",
    "cls_attn": "attention of the vision tower's CLS query to the patch tokens at the layer that feeds the "
    "projector (VisionZip's and FasterVLM's signal), per head: (B, vision_heads, N); only towers with a CLS token",
}
PRE_LLM_NEEDS = ("visual_embeds", "cls_attn")
QUERY_KINDS = ("last", "text", "visual")


@dataclass(frozen=True)
class Need:
    """A signal a method declares it will read. ``layer`` is the LLM layer at whose input it is computed."""

    kind: str
    layer: int | None = None
    queries: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in NEED_KINDS:
            raise PluginValidationError(f"unknown need kind {self.kind!r}; valid kinds: {', '.join(NEED_KINDS)}")
        if self.kind == "attn" and self.queries not in QUERY_KINDS:
            raise PluginValidationError(
                f"Need('attn') needs queries= one of {', '.join(QUERY_KINDS)}, got {self.queries!r}"
            )
        if self.kind != "attn" and self.queries is not None:
            raise PluginValidationError(f"Need({self.kind!r}) takes no queries= (only 'attn' does)")
        if self.kind in PRE_LLM_NEEDS and self.layer is not None:
            raise PluginValidationError(f"Need({self.kind!r}) is computed before the LLM; give no layer")
        if self.kind not in PRE_LLM_NEEDS and (self.layer is None or self.layer < 0):
            raise PluginValidationError(f"Need({self.kind!r}) needs the LLM layer (>= 0) it is computed at")


@dataclass(frozen=True)
class Step:
    """One decision point: before LLM layer ``layer`` (``-1`` = before the LLM, for ``pre_llm`` methods)."""

    layer: int
    needs: tuple[Need, ...] = ()


@dataclass(frozen=True)
class VisualLayout:
    """Where the visual tokens of one image sit, supplied by the adapter; methods never guess it.

    ``grid`` is (rows, cols) of the visual tokens in the LLM sequence for single-grid models (LLaVA-1.5: 24 x 24).
    ``crops`` lists (start, rows, cols) spans, in visual-token index space, for multi-crop layouts (LLaVA-NeXT).
    """

    n_visual: int
    grid: tuple[int, int] | None = None
    crops: tuple[tuple[int, int, int], ...] = ()
    has_cls: bool = False


@dataclass(frozen=True)
class Selection:
    """What ``select`` may return instead of a bare index tensor: indices plus replacement embeddings (merging)."""

    indices: "torch.Tensor"  # (B, k) positions in the ctx's active visual tokens
    embeds: "torch.Tensor | None" = None  # (B, k, D) new embeddings for those tokens (pre_llm only)


@dataclass(frozen=True)
class ReductionContext:
    """Read-only view handed to ``select``: the budget, the layout, and the signals the step declared.

    Indices a method returns are positions in ``active`` (columns of every signal), not sequence positions.
    """

    layer: int  # the step's layer (-1 before the LLM)
    keep: int  # the budget: visual tokens to keep (the harness axis; N when keeping all)
    n_visual: int  # visual tokens per image before any reduction (N)
    n_layers: int
    active: "torch.Tensor"  # (B, n_active) original visual-token indices (0..N-1) still present before this step
    layout: VisualLayout
    signals: dict[Need, "torch.Tensor"] = field(default_factory=dict)
    text_query_mask: "torch.Tensor | None" = None  # (B, Q) validity of rows of Need('attn', queries='text')
    generators: "list[torch.Generator]" = field(default_factory=list)  # one per sample, seeded from the run seed and
    # the sample's id (so batching never changes a draw); the only randomness a method may use
    artefact: Any = None  # the method's prepared artefact (see TokenReducer.prepare)

    def signal(self, need: Need) -> "torch.Tensor":
        try:
            return self.signals[need]
        except KeyError:
            raise PluginValidationError(
                f"signal {need} was not declared in this step's needs; declared: {list(self.signals)}"
            ) from None

    @property
    def batch_size(self) -> int:
        return int(self.active.shape[0])

    @property
    def n_active(self) -> int:
        return int(self.active.shape[1])


class TokenReducer:
    """Base class of every method. Subclasses are frozen dataclasses whose fields are their options.

    Override ``stage`` (class attribute), ``steps`` and ``select``; optionally ``check`` (validate options against the
    model's depth) and ``prepare`` (a one-off step with read access to the model's weights, returning an artefact).
    """

    stage: ClassVar[str] = "prune"
    name: ClassVar[str] = ""  # set by register_method

    def steps(self, n_layers: int) -> tuple[Step, ...]:
        raise NotImplementedError

    def select(self, ctx: ReductionContext) -> "torch.Tensor | Selection":
        raise NotImplementedError

    def check(self, n_layers: int) -> None:
        """Raise ConfigError if the options cannot work on a model with ``n_layers`` decoder layers."""

    def prepare(self, weights: "ModelWeights") -> Any:  # noqa: ARG002 - default: nothing to prepare
        """One-off preparation with read access to the model's weights; the result is passed as ``ctx.artefact``."""
        return None

    def reduces(self, keep: int, n_visual: int) -> bool:
        """Whether this method changes anything at this budget (``full`` never does)."""
        return True

    # -- options ---------------------------------------------------------------------------------------------------
    @classmethod
    def options(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else []

    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in self.options()}


class ModelWeights:
    """Read access to the decoder's weights, for ``TokenReducer.prepare`` (built by the adapter).

    ``layer_weight(l, "q_proj")`` returns a detached float32 copy of decoder layer ``l``'s parameter, so a method can
    factorise it (ALVTS) without any way to change the model. Names: q_proj, k_proj, v_proj, o_proj, gate_proj,
    up_proj, down_proj, input_layernorm, post_attention_layernorm. ``text_config`` is the LLM's HF config.
    """

    _PATHS = {
        "q_proj": "self_attn.q_proj.weight", "k_proj": "self_attn.k_proj.weight", "v_proj": "self_attn.v_proj.weight",
        "o_proj": "self_attn.o_proj.weight", "gate_proj": "mlp.gate_proj.weight", "up_proj": "mlp.up_proj.weight",
        "down_proj": "mlp.down_proj.weight", "input_layernorm": "input_layernorm.weight",
        "post_attention_layernorm": "post_attention_layernorm.weight",
    }

    def __init__(self, layers, text_config, model_id: str) -> None:
        self._layers = layers
        self.text_config = text_config
        self.model_id = model_id  # what an artefact must be keyed by
        self.n_layers = len(layers)

    def layer_weight(self, layer: int, name: str) -> "torch.Tensor":
        if name not in self._PATHS:
            raise PluginValidationError(f"unknown weight {name!r}; valid: {', '.join(self._PATHS)}")
        if not 0 <= layer < self.n_layers:
            raise PluginValidationError(f"layer {layer} is outside 0..{self.n_layers - 1}")
        return self._layers[layer].get_parameter(self._PATHS[name]).detach().float().clone()


# -- registries --------------------------------------------------------------------------------------------------------
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_MODEL_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def _where(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


def _validate_method(name: str, cls: Any) -> None:
    def fail(rule: str, fix: str) -> None:
        raise PluginValidationError(f"method {name!r} ({_where(cls)}) is invalid: {rule}. Fix: {fix}")

    if not _NAME_RE.match(name):
        fail(f"the name {name!r} does not match ^[a-z][a-z0-9_]*$", "use lower case letters, digits and '_'")
    if not (isinstance(cls, type) and issubclass(cls, TokenReducer)):
        fail("it is not a subclass of tokenbench.api.TokenReducer", "subclass TokenReducer")
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:
        fail("it is not a frozen dataclass", "decorate it with @dataclass(frozen=True) below @register_method")
    if cls.stage not in STAGES:
        fail(f"stage {cls.stage!r} is not one of {STAGES}", "set the class attribute stage")
    for meth in ("steps", "select"):
        if getattr(cls, meth) is getattr(TokenReducer, meth):
            fail(f"it does not implement {meth}()", f"define {meth}() on the class")
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            fail(f"option {f.name!r} has no default", "give every option a documented default")


def _validate_named(kind: str) -> Any:
    def check(name: str, obj: Any) -> None:
        if not _MODEL_NAME_RE.match(name):
            raise PluginValidationError(
                f"{kind} name {name!r} ({_where(obj)}) must match ^[a-z0-9][a-z0-9._-]*$"
            )
        if not callable(obj):
            raise PluginValidationError(f"{kind} {name!r} ({_where(obj)}) must be a class or factory function")

    return check


METHODS: Registry[type[TokenReducer]] = Registry(
    "method", "tokenbench.methods", "tokenbench.methods", validate=_validate_method
)
MODELS: Registry[Any] = Registry("model", "tokenbench.models", "tokenbench.models", validate=_validate_named("model"))
TASKS: Registry[Any] = Registry("task", "tokenbench.tasks", "tokenbench.tasks", validate=_validate_named("task"))


def register_method(name: str):
    """Class decorator: validate ``cls`` against the contract and register it as method ``name``.

    Put it *above* ``@dataclass(frozen=True)`` so that it sees the finished dataclass.
    """

    def deco(cls):
        cls.name = name
        METHODS.register(name, cls)
        return cls

    return deco


def register_model(name: str):
    """Register a model: a class or factory ``(**options) -> ModelAdapter``."""
    return MODELS.register(name)


def register_task(name: str):
    """Register a task: a class or factory ``(**options) -> Task``."""
    return TASKS.register(name)


# -- building a configured method from typed key=value options ---------------------------------------------------------
def build_method(name: str, options: dict[str, Any] | None = None) -> TokenReducer:
    """Instantiate method ``name`` with ``options`` (already parsed), rejecting unknown keys and wrong types."""
    import difflib

    cls = METHODS.get(name)
    fields = {f.name: f for f in cls.options()}
    kwargs: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            valid = ", ".join(f"{k} ({_type_name(f)}, default {f.default!r})" for k, f in fields.items())
            raise ConfigError(f"method {name!r} has no option {key!r}.{hint} Options: {valid or '(none)'}")
        kwargs[key] = coerce_option(name, fields[key], value)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"method {name!r}: {exc}") from exc


def _type_name(f: dataclasses.Field) -> str:
    t = f.type
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def coerce_option(method: str, f: dataclasses.Field, value: Any) -> Any:
    """Check ``value`` against the field's declared type (``int``, ``float``, ``bool``, ``str`` or a tuple of ints)."""
    t = _type_name(f).replace(" ", "")
    ok = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "tuple[int,...]": lambda v: isinstance(v, (tuple, list)) and all(isinstance(x, int) for x in v),
        "int|None": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
        "tuple[int,...]|None": lambda v: v is None
        or (isinstance(v, (tuple, list)) and all(isinstance(x, int) for x in v)),
    }.get(t)
    if ok is not None and not ok(value):
        raise ConfigError(
            f"method {method!r} option {f.name!r} expects {t}, got {value!r} ({type(value).__name__}). "
            f"Example: -a {method}.{f.name}={f.default!r}"
        )
    if t == "float":
        return float(value)
    if t.startswith("tuple") and value is not None:
        return tuple(value)
    return value
