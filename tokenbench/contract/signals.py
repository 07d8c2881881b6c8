"""The signal kinds a method may declare in a :class:`~tokenbench.contract.method.Need`, and their rules.

A kind is computed either at the input of an LLM layer (``layer``: ``attn``, ``keys``, ``hidden``, ...) or before the
LLM (``pre_llm``: ``visual_embeds`` and the vision tower's signals). The kinds every adapter's LLM side can compute are
declared here (:data:`CORE_KINDS`); a kind that only some vision towers have is declared by the model module that
provides it, with :func:`declare_signal` (``models/clip.py`` declares ``cls_attn``, ``models/qwen_vision.py``
``vision_received``), so a new model family adds its signals without touching the core. :data:`NEED_KINDS` maps every
declared kind to its description, core kinds first.

A ``Need`` of a kind nobody declared yet first imports the first-party model modules (and the third-party model
plugins) through the ``MODELS`` registry (:func:`known_kind`): a method is validated the same way whether or not a model
was loaded before. Importing model modules is light: they import neither torch nor transformers at module level.

This module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tokenbench.errors import PluginValidationError

NeedKind = Literal["attn", "keys", "hidden", "normed", "final_normed", "layer_input", "visual_embeds", "text_embeds",
                   "cls_attn", "vision_received", "vision_keys", "vision_features"]
SIGNAL_STAGES = ("layer", "pre_llm")
QUERY_KINDS = ("last", "text", "visual")
#: kinds computed per token, which ``tokens="text"`` computes for every non-visual token instead (rows in
#: ``ctx.text_query_mask`` order, padding included there as False): (B, ..., T, ...) in place of n_active
PER_TOKEN_KINDS = ("keys", "hidden", "normed", "final_normed")


@dataclass(frozen=True)
class SignalKind:
    """One declared kind: its name, what it holds (shape included), where it is computed (``layer``: at the input of
    the LLM layer the Need names; ``pre_llm``: before the LLM, no layer) and the module that declared it."""

    name: str
    description: str
    stage: str
    declared_by: str = "tokenbench.contract.signals"


CORE_KINDS: tuple[SignalKind, ...] = (
    SignalKind("attn", "attention probabilities of the layer from the chosen queries ('last', 'text' or 'visual') to "
               "the active visual keys, softmax over every key the layer sees (causal, padding masked), per head: "
               "(B, heads, Q, n_active). Recomputed for those rows only (norm, q/k projections, RoPE), no eager "
               "attention.", "layer"),
    SignalKind("keys", "the layer's keys after RoPE for the active visual tokens, per KV head: (B, kv_heads, n_active, "
               "head_dim)", "layer"),
    SignalKind("hidden", "the layer's input hidden states of the active visual tokens: (B, n_active, D)", "layer"),
    SignalKind("normed", "the same after the layer's input norm (what W_Q/W_K see): (B, n_active, D)", "layer"),
    SignalKind("final_normed", "the same after the language model's final norm (DART's similarity space): "
               "(B, n_active, D)", "layer"),
    SignalKind("layer_input", "what the layer's own attention starts from, for methods that score with their own "
               "projections (ALVTS): a LayerInput holding the normed input of every token the layer would see (text, "
               "padding, active visual), their positions and validity, and the layer's rotary embedding at their "
               "original positions", "layer"),
    SignalKind("visual_embeds", "the visual tokens as they enter the LLM (after the projector): (B, N, D)", "pre_llm"),
    SignalKind("text_embeds", "every non-visual token as it enters the LLM (its input embedding), padding included, "
               "rows in ctx.text_query_mask order: (B, T, D) (CDPruner's instruction relevance)", "pre_llm"),
    SignalKind("vision_keys", "keys of the vision layer that gives cls_attn or vision_received, per head, one per "
               "visual token (Qwen2.5-VL: after the tower's rotary embedding, averaged over the patches merged into "
               "the token): (B, vision_heads, N, vision_head_dim) (VisionZip's merge metric)", "pre_llm"),
)

_KINDS: dict[str, SignalKind] = {kind.name: kind for kind in CORE_KINDS}
#: every declared kind -> its description (what an adapter computes on request, and what a refusal names), core kinds
#: first, then those model modules declared, in the order they were declared
NEED_KINDS: dict[str, str] = {kind.name: kind.description for kind in CORE_KINDS}


def declare_signal(name: str, description: str, stage: str = "pre_llm") -> SignalKind:
    """Declare signal kind ``name`` (a model module does this at import for each kind only its family computes):
    ``description`` says what it holds and its shape, ``stage`` is ``pre_llm`` (before the LLM) or ``layer`` (at an
    LLM layer's input). Declaring a kind again with the same stage changes nothing (the first description stays), so
    two families may both declare what both provide; another stage is a :class:`PluginValidationError`."""
    import sys

    if stage not in SIGNAL_STAGES:
        raise PluginValidationError(f"declare_signal({name!r}): stage {stage!r} is not one of "
                                    f"{', '.join(SIGNAL_STAGES)}")
    if not name or not name.replace("_", "").isalnum() or not name[0].isalpha() or name != name.lower():
        raise PluginValidationError(f"declare_signal({name!r}): a kind is lower case letters, digits and '_'")
    frame = sys._getframe(1)
    kind = SignalKind(name, description, stage, frame.f_globals.get("__name__", "?"))
    known = _KINDS.get(name)
    if known is not None:
        if known.stage != stage:
            raise PluginValidationError(
                f"signal kind {name!r} is declared by {known.declared_by} as computed {_where(known.stage)}; "
                f"{kind.declared_by} declares it {_where(stage)}. Give the new signal another name")
        return known
    _KINDS[name] = kind
    NEED_KINDS[name] = description
    return kind


def _where(stage: str) -> str:
    return "before the LLM" if stage == "pre_llm" else "at an LLM layer"


def signal_kind(name: str) -> SignalKind:
    """The declared kind ``name``; an unknown one (after :func:`known_kind`'s discovery) is a
    :class:`PluginValidationError` listing every valid kind."""
    if not known_kind(name):
        raise PluginValidationError(f"unknown need kind {name!r}; valid kinds: {', '.join(NEED_KINDS)}")
    return _KINDS[name]


def known_kind(name: str) -> bool:
    """Whether ``name`` is a declared kind, importing the model modules that may declare it first if it is not yet
    (the first-party ones, then every third-party model plugin; each only once)."""
    if name not in _KINDS:
        from tokenbench.contract.plugins import discover_models

        discover_models()
        if name not in _KINDS:
            discover_models(third_party=True)
    return name in _KINDS


def is_pre_llm(name: str) -> bool:
    """Whether kind ``name`` is computed before the LLM (no layer)."""
    kind = _KINDS.get(name)
    return kind is not None and kind.stage == "pre_llm"


class _PreLLMKinds:
    """The declared pre-LLM kinds, as of now (a live view: model modules may declare more)."""

    def __iter__(self):
        return iter([name for name, kind in _KINDS.items() if kind.stage == "pre_llm"])

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and is_pre_llm(name)

    def __len__(self) -> int:
        return len(list(iter(self)))

    def __repr__(self) -> str:
        return repr(tuple(self))


#: the kinds computed before the LLM (a Need of one takes no layer), core and declared
PRE_LLM_NEEDS = _PreLLMKinds()
