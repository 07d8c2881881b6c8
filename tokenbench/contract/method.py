"""The method contract: what a token-reduction method declares (:class:`Step`, :class:`Need`), reads
(:class:`ReductionContext`, :class:`LayerInput`) and returns (:class:`Selection`, :class:`Prepared`), its base class
(:class:`TokenReducer`), the budget's kinds and scopes (:func:`split_budget`, :func:`check_budget_scope`), and one method
installed at a budget (:class:`Reduction`). The stages and a worked example are in :mod:`tokenbench.api`.

This module imports no torch: tensors appear only in type hints.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal

from tokenbench.contract.layout import VisualLayout
from tokenbench.contract.signals import PER_TOKEN_KINDS, PRE_LLM_NEEDS, QUERY_KINDS, is_pre_llm, signal_kind
from tokenbench.errors import ConfigError, PluginValidationError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from tokenbench.contract.calibration import Calibrated, CalibrationData
    from tokenbench.contract.weights import ModelWeights

Stage = Literal["pre_llm", "prune", "route"]
STAGES: tuple[str, ...] = ("pre_llm", "prune", "route")


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
        pre_llm = signal_kind(self.kind).stage == "pre_llm"  # an unknown kind: the valid ones, named
        if self.kind == "attn" and self.queries not in QUERY_KINDS:
            raise PluginValidationError(
                f"Need('attn') needs queries= one of {', '.join(QUERY_KINDS)}, got {self.queries!r}"
            )
        if self.kind != "attn" and self.queries is not None:
            raise PluginValidationError(f"Need({self.kind!r}) takes no queries= (only 'attn' does)")
        if pre_llm and self.layer is not None:
            raise PluginValidationError(f"Need({self.kind!r}) is computed before the LLM; give no layer")
        if not pre_llm and (self.layer is None or self.layer < 0):
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
    visual_span: "tuple[int, int] | None" = None  # (start, stop) when ``visual`` is start..stop-1 in every sample:
    # a slice can stand in for a gather
    memo: dict = field(default_factory=dict, repr=False, compare=False)  # the same dict at every layer that sees the
    # same tokens in one prefill: a method keeps there what depends on the token set alone (masks, row weights), so
    # it is built once per prefill rather than at every layer


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
                not is_pre_llm(n.kind) for alt in self.alternatives for n in (*self.needs, *alt))):
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
class Selection:
    """What ``select`` may return instead of a bare index tensor: indices plus new content for the kept tokens
    (merging; ``pre_llm`` steps only).

    ``embeds`` are LLM input embeddings; ``features`` are vision-tower features (as ``Need("vision_features")`` gives
    them) that the adapter's own projector maps into the LLM (VisionZip merges before the projector). By default the
    i-th row goes to ``indices[:, i]`` and every token keeps its original position. ``renumber=True`` makes the kept
    tokens a shorter image instead: the rows are in the order the LLM reads them, they fill the kept slots in
    ascending order, and positions are renumbered contiguously (the text after the image moves up), which is what a
    method that feeds the LLM a shorter image sequence does (VisionZip on LLaVA). Models with 1-D positions only. A
    bare ``Selection(indices, renumber=True)`` renumbers the kept tokens with their own embeddings; pre-LLM methods
    take this choice from their ``positions`` option (:class:`tokenbench.contract.positions.PositionsOption`)."""

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
    n_text_after_image: tuple[int, ...] = ()  # per sample, how many rows of text_after_image are True: known on the
    # host, so a method sizes by it without reading the mask back from the device (a host sync)
    generators: "list[torch.Generator]" = field(default_factory=list)  # one per sample, seeded from the run seed and
    # the sample's id (so batching never changes a draw); the only randomness a method may use
    artefact: Any = None  # the method's prepared artefact (see TokenReducer.prepare)
    budget_scope: str = "global"  # "global": keep over all the image's visual tokens; "crop": split over layout.crops
    made: list = field(default_factory=list, repr=False, compare=False)  # what topk returned: the router checks an
    # answer of select() on the host only if it is not one of these (top-k indices are distinct and in range)

    def topk(self, scores: "torch.Tensor") -> "torch.Tensor":
        """The ``keep`` highest-scoring active tokens of each sample, (B, keep) positions in ``active``: the selection
        rule of every top-k method, honouring the run's budget scope. ``global`` (the default) ranks every active
        token together; ``crop`` gives each region of ``layout.crops`` a share of ``keep`` proportional to its active
        tokens (:func:`split_budget`) and ranks inside each. With one region the two are the same."""
        shares = self.crop_shares(self.keep)
        if shares is None or self.keep == 0:
            picked = scores.topk(self.keep, dim=-1).indices
            if scores.dim() == 2 and scores.shape[-1] == self.active.shape[-1]:  # one score per active token
                self.made.append(picked)
            return picked
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

