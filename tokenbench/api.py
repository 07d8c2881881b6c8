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
            return ctx.topk(scores)  # the top `keep`, honouring the run's budget scope

This module imports no torch: tensors appear only in type hints.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal

from tokenbench.errors import ConfigError, PluginValidationError
from tokenbench.contract.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    import torch

Stage = Literal["pre_llm", "prune", "route"]
STAGES: tuple[str, ...] = ("pre_llm", "prune", "route")

NeedKind = Literal["attn", "keys", "hidden", "normed", "final_normed", "layer_input", "visual_embeds", "cls_attn"]
#: What an adapter can compute on request, at the input of an LLM layer (``attn``, ``keys``, ``hidden``, ``normed``)
#: or before the LLM (``visual_embeds``). Each is computed only where a method asks for it, and its cost is counted.
NEED_KINDS: dict[str, str] = {
    "attn": "attention probabilities of the layer from the chosen queries ('last', 'text' or 'visual') to the "
    "active visual keys, softmax over every key the layer sees (causal, padding masked), per head: "
    "(B, heads, Q, n_active). Recomputed for those rows only (norm, q/k projections, RoPE), no eager attention.",
    "keys": "the layer's keys after RoPE for the active visual tokens, per KV head: (B, kv_heads, n_active, head_dim)",
    "hidden": "the layer's input hidden states of the active visual tokens: (B, n_active, D)",
    "normed": "the same after the layer's input norm (what W_Q/W_K see): (B, n_active, D)",
    "final_normed": "the same after the language model's final norm (DART's similarity space): (B, n_active, D)",
    "layer_input": "what the layer's own attention starts from, for methods that score with their own projections "
    "(ALVTS): a LayerInput holding the normed input of every token the layer would see (text, padding, active "
    "visual), their positions and validity, and the layer's rotary embedding at their original positions",
    "visual_embeds": "the visual tokens as they enter the LLM (after the projector): (B, N, D)",
    "cls_attn": "attention of the vision tower's CLS query to the patch tokens at the layer that feeds the "
    "projector (VisionZip's and FasterVLM's signal), per head: (B, vision_heads, N); only towers with a CLS token. "
    "A tower run once per crop (LLaVA-NeXT) gives each visual token its own crop's CLS row, in the LLM's numbering",
    "vision_received": "attention each visual token receives in the vision tower's last block, per head: the "
    "block's softmax probabilities (over its own attention span: the image on a full-attention block) summed over "
    "every query patch, averaged over the patches the merger joins into the token (2x2 on Qwen2.5-VL), in the LLM's "
    "raster order: (B, vision_heads, N) (VisionZip's signal on towers without CLS); only towers with a patch merger",
    "vision_keys": "keys of the vision layer that gives cls_attn or vision_received, per head, one per visual token "
    "(Qwen2.5-VL: after the tower's rotary embedding, averaged over the patches merged into the token): "
    "(B, vision_heads, N, vision_head_dim) (VisionZip's merge metric)",
    "vision_features": "the vision features the projector maps into the LLM, one per visual token: (B, N, Dv); "
    "with a CLS token, the CLS rows first, one per tower pass (LLaVA-1.5: (B, 1 + N, Dv); LLaVA-NeXT, one pass per "
    "crop: (B, passes + N, Dv)), so the visual tokens are always the last N rows. Return merged features in "
    "Selection.features",
}
PRE_LLM_NEEDS = ("visual_embeds", "cls_attn", "vision_received", "vision_keys", "vision_features")
QUERY_KINDS = ("last", "text", "visual")
#: kinds computed per token, which ``tokens="text"`` computes for every non-visual token instead (rows in
#: ``ctx.text_query_mask`` order, padding included there as False): (B, ..., T, ...) in place of n_active
PER_TOKEN_KINDS = ("keys", "hidden", "normed", "final_normed")


@dataclass(frozen=True)
class Need:
    """A signal a method declares it will read. ``layer`` is the LLM layer at whose input it is computed."""

    kind: str
    layer: int | None = None
    queries: str | None = None  # attn only: whose rows ('last', 'text', 'visual')
    tokens: str | None = None  # keys/hidden/normed/final_normed: None (the active visual tokens) or 'text'

    def __post_init__(self) -> None:
        if self.tokens is not None and (self.kind not in PER_TOKEN_KINDS or self.tokens != "text"):
            raise PluginValidationError(
                f"Need({self.kind!r}, tokens={self.tokens!r}): tokens='text' applies to {', '.join(PER_TOKEN_KINDS)}"
            )
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
class LayerInput:
    """The value of ``Need("layer_input", layer=l)``: every token layer ``l`` would see, in sequence order.

    A method that scores with projections of its own (ALVTS's low-rank selector) starts from ``normed`` exactly as the
    layer's W_Q and W_K would, and applies ``rope`` to its per-head queries/keys to get the layer's own positional
    encoding (RoPE; 3-D M-RoPE where the model uses it). No model plumbing is needed: the adapter supplies both.
    """

    normed: "torch.Tensor"  # (B, T, D) the layer's input norm applied to each token
    positions: "torch.Tensor"  # (B, T) sequence positions, ascending: key j is causal for query i iff positions[j] <= positions[i]
    valid: "torch.Tensor"  # (B, T) False on padding
    visual: "torch.Tensor"  # (B, n_active) columns (in T) of the active visual tokens, in ``ctx.active`` order
    text: "torch.Tensor"  # (B, T - n_active) columns of every non-visual token (padding included: see ``valid``)
    rope: Callable[["torch.Tensor"], "torch.Tensor"]  # x (B, heads, T, head_dim) -> x rotated at original positions
    n_heads: int
    n_kv_heads: int
    head_dim: int
    scaling: float  # the layer's softmax scale (1/sqrt(head_dim) on Llama/Qwen)
    q_bias: "torch.Tensor | None" = None  # the q/k projections' biases (Qwen2 has them, Llama does not)
    k_bias: "torch.Tensor | None" = None


@dataclass(frozen=True)
class Step:
    """One decision point: before LLM layer ``layer`` (``-1`` = before the LLM, for ``pre_llm`` methods).

    ``keep`` is how many visual tokens this step keeps, for methods whose stages keep different counts (PyramidDrop,
    SparseVLM, VTW's 0); by default the run's budget. ``stage`` overrides the method's stage for this step (``prune`` or ``route``), so one method can offer both (ALVTS's
    "static" ablation prunes once with the routing score). ``skipped_as_kv`` (route steps only): the visual tokens
    that skip the layer still serve as its keys and values, and only their own update is skipped; the layer then runs
    on every token, and its cost is counted that way.

    ``alternatives`` (pre-LLM signals only): other need sets the step can decide from, in order of preference, for a
    method whose official code has a variant per kind of model (VisionZip: CLS attention on CLIP towers, the attention
    each token receives on Qwen2.5-VL's). The first of ``needs, *alternatives`` whose every kind the adapter provides
    is computed (:func:`resolve_needs`), and ``ctx.signals`` holds exactly that set: ``select`` reads which it got
    (``Need("cls_attn") in ctx.signals``). When no set is provided the pair is refused up front, naming what ``needs``
    lacks. Steps without alternatives are unaffected.
    """

    layer: int
    needs: tuple[Need, ...] = ()
    stage: str | None = None
    skipped_as_kv: bool = False
    keep: int | None = None  # visual tokens this step keeps (``ctx.keep``); None: the run's budget
    alternatives: tuple[tuple[Need, ...], ...] = ()  # other pre-LLM need sets, tried in order after ``needs``

    def __post_init__(self) -> None:
        if self.keep is not None and self.keep < 0:
            raise PluginValidationError(f"Step(keep={self.keep}) must be >= 0")
        if self.stage not in (None, "prune", "route"):
            raise PluginValidationError(f"Step(stage={self.stage!r}): a step may override the stage with 'prune' or "
                                        "'route' only")
        if self.skipped_as_kv and self.stage == "prune":
            raise PluginValidationError("Step(skipped_as_kv=True) applies to route steps, not prune steps")
        if self.alternatives and (self.layer != -1 or any(
                n.kind not in PRE_LLM_NEEDS for alt in self.alternatives for n in (*self.needs, *alt))):
            raise PluginValidationError(f"Step(alternatives=...) offers a pre-LLM step (layer -1) other sets of "
                                        f"pre-LLM signals ({', '.join(PRE_LLM_NEEDS)}) only")


def resolve_needs(step: Step, provided) -> tuple[Need, ...]:
    """The need set ``step`` is computed with where the signal kinds in ``provided`` are available: the first of
    ``step.needs, *step.alternatives`` that ``provided`` covers, else ``step.needs`` (whose missing kind the refusal
    names)."""
    for needs in (step.needs, *step.alternatives):
        if all(n.kind in provided for n in needs):
            return needs
    return step.needs


@dataclass(frozen=True)
class Region:
    """A rectangle of visual tokens in visual-token index space: ``rows`` x ``cols`` tokens, row-major, the first at
    index ``start`` and consecutive rows ``stride`` indices apart (``stride`` = ``cols`` for a block of its own)."""

    name: str  # "image" (single grid), "base" (LLaVA-NeXT's overview), "crop r,c" (a LLaVA-NeXT high-res crop)
    start: int
    rows: int
    cols: int
    stride: int = 0  # 0: cols

    def indices(self) -> list[int]:
        step = self.stride or self.cols
        return [self.start + r * step + c for r in range(self.rows) for c in range(self.cols)]

    @property
    def size(self) -> int:
        return self.rows * self.cols


@dataclass(frozen=True)
class VisualLayout:
    """Where the visual tokens of one image sit, supplied by the adapter for each batch; methods never guess it.

    Visual tokens are numbered 0..n_visual-1 in sequence order. ``grid`` is (rows, cols) for single-grid models
    (LLaVA-1.5: 24 x 24; Qwen2.5-VL: the merged patch grid). ``crops`` lists the regions that partition them: one
    ``image`` region for single-grid models; LLaVA-NeXT's ``base`` overview then each high-resolution ``crop r,c`` as
    it survives unpadding. ``n_structural`` counts image-span tokens that carry no image content and are never
    candidates (LLaVA-NeXT's row-end newline tokens): they are always kept and counted as non-visual.
    """

    n_visual: int
    grid: tuple[int, int] | None = None
    crops: tuple[Region, ...] = ()
    has_cls: bool = False
    n_structural: int = 0


@dataclass(frozen=True)
class Selection:
    """What ``select`` may return instead of a bare index tensor: indices plus new content for the kept tokens
    (merging; ``pre_llm`` steps only).

    ``embeds`` are LLM input embeddings; ``features`` are vision-tower features (as ``Need("vision_features")`` gives
    them) that the adapter's own projector maps into the LLM (VisionZip merges before the projector). By default the
    i-th row goes to ``indices[:, i]`` and every token keeps its original position. ``renumber=True`` makes the kept
    tokens a shorter image instead: the rows are in the order the LLM reads them, they fill the kept slots in
    ascending order, and positions are renumbered contiguously (the text after the image moves up), which is what a
    method that feeds the LLM a shorter image sequence does (VisionZip on LLaVA). Models with 1-D positions only."""

    indices: "torch.Tensor"  # (B, k) positions in the ctx's active visual tokens
    embeds: "torch.Tensor | None" = None  # (B, k, D) new embeddings for those tokens (pre_llm only)
    features: "torch.Tensor | None" = None  # (B, k, Dv) vision features the adapter projects (pre_llm only)
    renumber: bool = False
    macs: int = 0  # matmul work of this select (one sample) that depends on the vision tower's sizes, which
    # select_macs cannot see (VisionZip's key similarities and merge); counted with the pre-LLM signals


@dataclass(frozen=True)
class ReductionContext:
    """Read-only view handed to ``select``: the budget, the layout, and the signals the step declared.

    Indices a method returns are positions in ``active`` (columns of every signal), not sequence positions.
    """

    layer: int  # the step's layer (-1 before the LLM)
    keep: int  # visual tokens this step must keep: the step's own count (Step.keep), else the run's budget
    n_visual: int  # visual tokens per image before any reduction (N)
    n_layers: int
    active: "torch.Tensor"  # (B, n_active) original visual-token indices (0..N-1) still present before this step
    layout: VisualLayout
    budget: int = 0  # the run's budget (the harness axis; N when keeping all), as the method's budget_kind reads it
    signals: dict[Need, "torch.Tensor"] = field(default_factory=dict)
    text_query_mask: "torch.Tensor | None" = None  # (B, Q) validity of rows of Need('attn', queries='text')
    text_after_image: "torch.Tensor | None" = None  # (B, Q) those rows that follow the image (the question and the
    # answer prompt, not the system prompt): SparseVLM's raters, DART's text pivots, FitPrune's text queries
    generators: "list[torch.Generator]" = field(default_factory=list)  # one per sample, seeded from the run seed and
    # the sample's id (so batching never changes a draw); the only randomness a method may use
    artefact: Any = None  # the method's prepared artefact (see TokenReducer.prepare)
    budget_scope: str = "global"  # "global": keep over all the image's visual tokens; "crop": split over layout.crops

    def topk(self, scores: "torch.Tensor") -> "torch.Tensor":
        """The ``keep`` highest-scoring active tokens of each sample, (B, keep) positions in ``active``: the selection
        rule of every top-k method, honouring the run's budget scope. ``global`` (the default) ranks every active
        token together; ``crop`` gives each region of ``layout.crops`` a share of ``keep`` proportional to its active
        tokens (:func:`split_budget`) and ranks inside each. With one region the two are the same."""
        shares = self.crop_shares(self.keep)
        if shares is None or self.keep == 0:
            return scores.topk(self.keep, dim=-1).indices
        import torch

        owner, quotas = shares
        rows = []
        for b in range(scores.shape[0]):
            picks = []
            for crop, quota in enumerate(quotas[b]):
                if quota:
                    members = (owner[b] == crop).nonzero().squeeze(1)
                    picks.append(members[scores[b, members].topk(quota).indices])
            rows.append(torch.cat(picks))
        return torch.stack(rows)

    def crop_shares(self, k: int) -> "tuple[torch.Tensor, list[list[int]]] | None":
        """Under the ``crop`` scope: (owner, quotas), where ``owner`` (B, n_active) is the index in ``layout.crops`` of
        each active token's region and ``quotas[b]`` is sample b's share of ``k`` per region (:func:`split_budget` over
        its active tokens). ``None`` when the budget is global (or the layout has one region)."""
        if self.budget_scope == "global" or len(self.layout.crops) <= 1:
            return None
        import torch

        region_of = torch.empty(self.n_visual, dtype=torch.long)
        for i, region in enumerate(self.layout.crops):
            region_of[region.indices()] = i
        owner = region_of.to(self.active.device)[self.active]
        n = len(self.layout.crops)
        return owner, [split_budget(k, torch.bincount(row, minlength=n).tolist()) for row in owner]

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


BUDGET_SCOPES = ("global", "crop")
BUDGET_KINDS = ("kept", "layer_mean")


def check_budget_scope(method: "TokenReducer", scope: str, layout: VisualLayout) -> None:
    """Refuse, before any compute, a method that declares it cannot split its budget over ``layout``'s crops under
    ``--budget-scope crop`` (:attr:`TokenReducer.budget_scopes`). One region: the two scopes are the same."""
    from tokenbench.errors import IncompatibleError

    scopes = method.budget_scopes
    if scope == "global" or len(layout.crops) <= 1 or scopes is None or scope in scopes:
        return
    raise IncompatibleError(
        f"method {method.name!r} cannot split its budget over the image's {len(layout.crops)} crops "
        f"(--budget-scope {scope}): it selects over the whole image (it supports --budget-scope "
        f"{', '.join(scopes)}). Run it with --budget-scope global, or leave it out of this comparison"
    )


def split_budget(keep: int, counts: list[int]) -> list[int]:
    """Share ``keep`` among groups holding ``counts`` tokens, in proportion (largest remainder; ties go to the earlier
    group), never more than a group holds. ``split_budget(10, [576, 288, 288]) == [5, 3, 2]``."""
    total = sum(counts)
    if not 0 <= keep <= total:
        raise ValueError(f"cannot keep {keep} of {total} tokens")
    if total == 0:
        return [0] * len(counts)
    exact = [keep * c / total for c in counts]
    quotas = [int(x) for x in exact]
    order = sorted(range(len(counts)), key=lambda i: (-(exact[i] - quotas[i]), i))
    for i in order[: keep - sum(quotas)]:
        quotas[i] += 1
    return quotas


class TokenReducer:
    """Base class of every method. Subclasses are frozen dataclasses whose fields are their options.

    Override ``stage`` (class attribute), ``steps`` and ``select``; optionally ``check`` (validate options against the
    model's depth) and ``prepare`` (a one-off step with read access to the model's weights, returning an artefact).
    """

    stage: ClassVar[str] = "prune"
    name: ClassVar[str] = ""  # set by register_method
    #: what the run's budget means for this method: ``kept``, the visual tokens left after its (last) reduction, or
    #: ``layer_mean``, the visual tokens per LLM layer averaged over all layers (multi-stage methods: PyramidDrop,
    #: SparseVLM, VTW). Every result row reports both figures, whatever the kind.
    budget_kind: ClassVar[str] = "kept"
    #: the budget scopes (``BUDGET_SCOPES``) the method honours. ``crop`` means every step keeps each region of
    #: ``layout.crops`` its share (:meth:`ReductionContext.topk` does; so does a selection built on
    #: :meth:`ReductionContext.crop_shares`). A pair that is not listed is refused before any compute. ``None`` (the
    #: default, for methods that do not say): allowed, and the router checks every selection against the split and
    #: stops the run at the first that ignores it. A method that selects over the whole image whatever the scope
    #: should declare ``("global",)``.
    budget_scopes: ClassVar[tuple[str, ...] | None] = None

    def steps(self, n_layers: int) -> tuple[Step, ...]:
        """The decision points and the signals they need (the plan at no particular budget)."""
        raise NotImplementedError

    def plan(self, keep: int, n_visual: int, n_layers: int) -> tuple[Step, ...]:
        """The steps for a run at budget ``keep`` on images of ``n_visual`` tokens: ``steps`` unless the schedule
        depends on the budget (per-stage counts in ``Step.keep``, layers moved to reach a ``layer_mean`` budget).
        Its signals must be among those ``steps`` declares (the adapter checks compatibility on ``steps``)."""
        return tuple(self.steps(n_layers))

    def select(self, ctx: ReductionContext) -> "torch.Tensor | Selection":
        raise NotImplementedError

    def check(self, n_layers: int) -> None:
        """Raise ConfigError if the options cannot work on a model with ``n_layers`` decoder layers (options that
        depend on the image's tokens or the budget are checked in ``plan``, which the harness calls for every image
        layout and budget before any compute)."""

    def option_error(self, option: str, rule: str, example: Any) -> ConfigError:
        """The ConfigError for option ``option`` of this method: its value, ``rule`` (the valid range) and a working
        ``-a`` example, e.g. ``raise self.option_error("heads", "must be >= 0 (0: 14 of every 32)", 8)``."""
        import ast

        value, shown = getattr(self, option), f"{self.name}.{option}={example}"
        if isinstance(value, str) and isinstance(example, str):
            try:  # a string option's example that the command line would read as a number: quote it
                ast.literal_eval(example)
                shown = f"\"{self.name}.{option}='{example}'\""
            except (ValueError, SyntaxError):
                pass
        given = ",".join(map(str, value)) if isinstance(value, tuple) and value else repr(value)  # as typed
        return ConfigError(f"method {self.name!r}: {option}={given} {rule}. Example: -a {shown}")

    def prepare(self, weights: "ModelWeights") -> Any:  # noqa: ARG002 - default: nothing to prepare
        """One-off preparation with read access to the model's weights; the result is passed as ``ctx.artefact``."""
        return None

    def nominal(self) -> "TokenReducer":
        """This method as its paper means "keep k" (the ``nominal`` budget convention, :mod:`tokenbench.budgets`):
        itself by default; a multi-stage method whose budget is otherwise fitted to a layer mean returns itself
        with its official schedule switched on (SparseVLM's per-stage rows, PyramidDrop's paper layers)."""
        return self

    def reduces(self, keep: int, n_visual: int) -> bool:
        """Whether this method changes anything at this budget (``full`` never does)."""
        return True

    def select_macs(self, dims: Any, n_text: int, n_active: int, layer: int, n_visual: int = 0) -> int:  # noqa: ARG002
        """MACs of the matmul work ``select`` itself does at the step at ``layer``, for one sample with ``n_text``
        non-visual and ``n_active`` visual tokens, of ``n_visual`` before any reduction (``dims`` is a
        :class:`tokenbench.measure.flops.LMDims`). Signals the
        harness computes are counted by the harness; override this only if ``select`` multiplies matrices itself.
        :func:`tokenbench.testing.check_method` checks the whole count against torch's FlopCounterMode."""
        return 0

    # -- calibration (optional) --------------------------------------------------------------------------------------
    def calibration_steps(self, n_layers: int) -> tuple[Step, ...]:  # noqa: ARG002
        """The signals to collect from the *unreduced* model for :meth:`calibrate`; empty: nothing to calibrate."""
        return ()

    def calibrate(self, weights: "ModelWeights", data: "CalibrationData", epochs: int = 3, lr: float = 1e-2,
                  log: Callable[[str], None] = print) -> "Calibrated":
        """Fit the method's artefact on the frozen model's signals (``tokenbench calibrate``): ``epochs`` passes over
        ``data.train()``, learning rate ``lr`` as the method defines it; report progress through ``log``."""
        raise NotImplementedError

    # -- options ---------------------------------------------------------------------------------------------------
    @classmethod
    def options(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else []

    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in self.options()}


@dataclass(frozen=True)
class Prepared:
    """What ``prepare`` may return instead of a bare artefact: the artefact, what a result row records about it
    (``info``, JSON-able), and a warning the user must see (e.g. "no calibration artefact: SVD initialisation")."""

    artefact: Any
    info: dict[str, Any] = field(default_factory=dict)
    warning: str = ""

    @classmethod
    def of(cls, prepared: Any) -> "Prepared":
        """Whatever ``prepare`` returned, as a Prepared."""
        return prepared if isinstance(prepared, cls) else cls(prepared)


@dataclass(frozen=True)
class Reduction:
    """One method installed on a model at a budget: the single argument of ``ModelAdapter.reduction`` and the router.

    ``keep`` is the visual tokens to keep per image, or a function of an image's visual-token count (a budget given
    as a ratio, or a budget convention's keep rule, resolved for each batch's layout). ``seed`` seeds random choices
    (per layer and sample), ``artefact`` is what ``prepare`` returned, ``budget_scope`` is ``global`` or ``crop``."""

    method: TokenReducer
    keep: "int | Callable[[int], int]"
    seed: int = 0
    artefact: Any = None
    budget_scope: str = "global"


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

    def __init__(self, layers, text_config, model_id: str, revision: str | None = None,
                 source_dir: str | None = None) -> None:
        self._layers = layers
        self.source_dir = source_dir  # the checkpoint's local directory, where it is one (shipped artefacts live there)
        self.text_config = text_config
        self.model_id = model_id  # the registered name and source, for messages and metadata
        self.revision = revision  # the hub commit when the model came from the hub
        self.n_layers = len(layers)
        self._fingerprint: dict[str, str] | None = None

    def fingerprint(self) -> dict[str, str]:
        """What a calibration artefact is keyed by: ``model_id``, ``revision``, a hash of the LLM's architecture
        (``config_hash``) and a hash of the first and last layers' q/k weights (``weights_hash``), so an artefact is
        refused on a model with other weights even when it has the same name, and accepted on a copy of the same
        model saved elsewhere.

        Both hashes are fingerprinted independently of the run's dtype, so one artefact serves float32, bfloat16 and
        float16 runs of the same weights. ``config_hash`` leaves the dtype keys out. ``weights_hash`` covers the
        shapes and the sign pattern (the IEEE sign bit of every element, packed with ``numpy.packbits``, sha256) of
        the first and last decoder layers' q_proj and k_proj weights, which rounding to bfloat16/float16 preserves:
        rounding never changes a sign bit, whether a value underflows to -0.0 or overflows to -inf. Other or
        fine-tuned weights flip signs and hash differently. (A hash of the values themselves would change with the
        dtype the model was cast to.)"""
        if self._fingerprint is None:
            import hashlib
            import json

            import numpy as np
            import torch

            cfg = self.text_config.to_dict()
            arch = {k: v for k, v in sorted(cfg.items()) if not k.startswith("_") and k not in _NOT_ARCHITECTURE}
            config_hash = hashlib.sha256(json.dumps(arch, sort_keys=True, default=str).encode()).hexdigest()[:16]
            h = hashlib.sha256(b"tokenbench weights_hash: sign bits/1\n")
            for layer in sorted({0, self.n_layers - 1}):
                for name in ("q_proj", "k_proj"):
                    w = self.layer_weight(layer, name)
                    h.update(f"{layer}.{name} {tuple(w.shape)}\n".encode())
                    h.update(np.packbits(torch.signbit(w).cpu().numpy().reshape(-1)).tobytes())
            self._fingerprint = {"model_id": self.model_id, "revision": self.revision or "",
                                 "config_hash": config_hash, "weights_hash": h.hexdigest()[:16]}
        return dict(self._fingerprint)

    def layer_weight(self, layer: int, name: str) -> "torch.Tensor":
        if name not in self._PATHS:
            raise PluginValidationError(f"unknown weight {name!r}; valid: {', '.join(self._PATHS)}")
        if not 0 <= layer < self.n_layers:
            raise PluginValidationError(f"layer {layer} is outside 0..{self.n_layers - 1}")
        return self._layers[layer].get_parameter(self._PATHS[name]).detach().float().clone()


_NOT_ARCHITECTURE = {"transformers_version", "torch_dtype", "dtype", "architectures", "name_or_path", "use_cache",
                     "output_attentions", "output_hidden_states", "return_dict", "pad_token_id", "bos_token_id",
                     "eos_token_id", "tie_word_embeddings"}


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
    if not cls.__dict__.get("name"):  # registered through its entry point alone: rows and errors use that name
        cls.name = name
    if cls.name != name:
        fail(f"its name attribute is {cls.name!r}, not the name {name!r} it is registered under",
             "remove the name attribute (register_method and the entry point set it)")
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:
        fail("it is not a frozen dataclass", "decorate it with @dataclass(frozen=True) below @register_method")
    if cls.stage not in STAGES:
        fail(f"stage {cls.stage!r} is not one of {STAGES}", "set the class attribute stage")
    if cls.budget_kind not in BUDGET_KINDS:
        fail(f"budget_kind {cls.budget_kind!r} is not one of {BUDGET_KINDS}", "set the class attribute budget_kind")
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


def _example(t: str, default: Any) -> str:
    """A value of type ``t`` as a user types it after ``-a key=``: the default where it is one, never ``None``."""
    if t.startswith("tuple"):
        return ",".join(map(str, default)) if isinstance(default, tuple) and default else "2,6"
    if t == "bool":
        return str(not default) if isinstance(default, bool) else "True"  # the value that changes something
    kinds = {"int": (int, 3), "float": (float, 0.5), "str": (str, "text")}
    kind, fallback = kinds.get(t, (object, default))
    return str(default if isinstance(default, kind) and default not in (None, "") else fallback)


def coerce_option(method: str, f: dataclasses.Field, value: Any, kind: str = "method", flag: str = "-a") -> Any:
    """Check ``value`` against the field's declared type (``int``, ``float``, ``bool``, ``str`` or a tuple of ints);
    ``kind``/``flag`` name the owner in the message (``"task"``, ``"-T"`` for a task's options)."""
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
    if t.startswith("tuple") and isinstance(value, int) and not isinstance(value, bool):
        value = (value,)  # -a layers=8: one element, as the shell user wrote it
    if ok is not None and not ok(value):
        example = _example(t.replace("|None", ""), f.default)
        prefix = f"{method}." if kind == "method" else ""
        raise ConfigError(
            f"{kind} {method!r} option {f.name!r} expects {t}, got {value!r} ({type(value).__name__}). "
            f"Example: {flag} {prefix}{f.name}={example}"
        )
    if t == "float":
        return float(value)
    if t.startswith("tuple") and value is not None:
        return tuple(value)
    return value
