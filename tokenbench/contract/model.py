"""The model-adapter contract: what the harness, the engine and the tests call on a model (:class:`ModelInterface`),
what an encoded batch and a generation are (:class:`Batch`, :class:`Generation`), and the model families the adapters
declare (:func:`model_family`).

An adapter owns everything model-specific: loading, the prompt template, where the visual tokens sit, the decoder
layers, and the dimensions the FLOPs counter needs. It never knows a method's name. The transformers implementation
of this interface is :class:`tokenbench.hf.adapter.ModelAdapter`; a model family subclasses it in ``models/``.

A family key (``ModelInterface.family``: ``"llava"``, ``"llava-next"``, ``"qwen2.5-vl"``) is spelled one way: the way
its adapter class declares it, which is also the prefix of ``--model family:<hub id or path>`` and what a task's
``prompt(sample, family)`` receives. Each class that declares a family registers it here when it is defined, with the
lmms-eval model name whose prompts the benchmark tasks use for it (:attr:`ModelInterface.lmms_eval_model`).

This module imports no torch.
"""

from __future__ import annotations

import abc
import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from tokenbench.contract.layout import VisualLayout
from tokenbench.errors import PluginValidationError

if TYPE_CHECKING:  # pragma: no cover
    from tokenbench.contract.method import Reduction, TokenReducer
    from tokenbench.contract.weights import ModelWeights


@dataclass
class Batch:
    inputs: dict[str, Any]  # tensors for the model's forward (input_ids, attention_mask, pixel_values, ...)
    tokens: Any  # tokenbench.engine.router.Tokens (with the batch's VisualLayout)
    n_text: list[int]  # non-visual, non-padding tokens per sample (what FLOPs are counted on)

    @property
    def layout(self) -> VisualLayout:
        return self.tokens.layout


@dataclass
class Generation:
    texts: list[str]  # decoded answers
    token_ids: list[list[int]]
    first_logits: Any  # (B, vocab) float32 logits of the first answer token
    kv_cache_bytes: int  # bytes held by the KV cache right after the prefill
    step_logits: list = None  # (B, vocab) float32 logits behind each generated token (first = first_logits)
    marks: dict = None  # with a clock: its marks at start, vision_start/vision_end, first_token and end
    n_steps: int = 0  # forward passes run: the prefill plus each decode step


#: the prompt styles an adapter may offer (``--prompt-style``): the checkpoint's chat template, as lmms-eval's model
#: classes render it by default, or LLaVA's own conversation templates, behind the numbers LLaVA published
PROMPT_STYLES = {
    "chat": "the checkpoint's chat template, lmms-eval's default",
    "llava": "LLaVA's conversation template (conv_vicuna_v1 with its system prompt; mistral_instruct for Mistral), "
             "as behind LLaVA's published scores and lmms-eval's --force_simple",
}
#: the image pixel ranges a dynamic-resolution adapter may offer (``--image-pixels``)
PIXEL_RANGES = {
    "lmms-eval": "lmms-eval's range for the model (Qwen2.5-VL: 200,704 to 1,605,632 pixels)",
    "checkpoint": "the checkpoint's own processor range (Qwen2.5-VL: 3,136 to 12,845,056 pixels)",
}

#: family key -> the first adapter class that declared it (see :func:`model_family`)
FAMILIES: dict[str, type] = {}


class ModelInterface(abc.ABC):
    """What the harness calls on a model. Subclasses set the class attributes; the transformers implementation
    (:class:`tokenbench.hf.adapter.ModelAdapter`) implements the rest."""

    family: ClassVar[str] = ""  # e.g. "llava": also the prefix of `--model family:<hub id or path>`
    #: lmms-eval's name for this family's model (the key of its tasks' ``lmms_eval_specific_kwargs``): the benchmark
    #: tasks prompt it as lmms-eval prompts that model; "" for lmms-eval's default prompts
    lmms_eval_model: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()  # config.json model_type values this adapter loads
    default_source: ClassVar[str] = ""  # hub id used when no source is given
    #: the signals (tokenbench.api.NEED_KINDS) this adapter can compute; a method needing another is refused
    provides: ClassVar[frozenset[str]] = frozenset()
    #: why a signal is not provided, for the refusal message (e.g. "its vision tower has no CLS token")
    missing_reasons: ClassVar[dict[str, str]] = {}
    #: (width, height) of the image `layout()` and `encoder_macs()` describe when given none: a typical photo
    typical_size: ClassVar[tuple[int, int]] = (640, 480)

    #: the prompt styles (:data:`PROMPT_STYLES`) this adapter can render; ``prompt_style`` is the one in use
    prompt_styles: ClassVar[tuple[str, ...]] = ("chat",)
    prompt_style: str = "chat"
    #: the named image pixel ranges (:data:`PIXEL_RANGES`) of a dynamic-resolution model; ``image_pixels`` is the one
    #: in use (None: the model resizes every image to one size, so there is no range to choose)
    pixel_ranges: ClassVar[tuple[str, ...]] = ()
    image_pixels: str | None = None

    name: str  # the registered name (``llava``, ``llava:<source>``, ...), for rows and messages
    source: str  # hub id or local directory

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("family"):
            FAMILIES.setdefault(cls.family, cls)

    # -- how its input is made ----------------------------------------------------------------------------------------
    def configure(self, prompt_style: str | None = None, image_pixels: str | None = None) -> "ModelInterface":
        """Choose the prompt style and the image pixel range (None: keep the adapter's default) before loading;
        a choice this model does not have is a ConfigError naming the ones it has."""
        from tokenbench.errors import ConfigError

        if prompt_style is not None:
            if prompt_style not in self.prompt_styles:
                what = PROMPT_STYLES.get(prompt_style, "not a prompt style")
                raise ConfigError(f"model {self.name!r} has no prompt style {prompt_style!r} ({what}); it has "
                                  f"{', '.join(self.prompt_styles)}. Use --prompt-style {self.prompt_styles[0]}")
            self.prompt_style = prompt_style
        if image_pixels is not None:
            if image_pixels not in self.pixel_ranges:
                has = (f"it has {', '.join(self.pixel_ranges)}" if self.pixel_ranges else
                       "it resizes every image to one size, so there is no range to choose; leave --image-pixels out")
                raise ConfigError(f"model {self.name!r} has no image pixel range {image_pixels!r}; {has}")
            self.image_pixels = image_pixels
        return self

    def pixel_range(self) -> tuple[int, int] | None:
        """(min, max) pixels an image is resized into under ``image_pixels``; None for a fixed-size model."""
        return None

    def input_setup(self) -> dict[str, Any]:
        """How this model's input is made, for rows and store keys: the prompt style, and for a dynamic-resolution
        model the pixel range by name and value."""
        setup: dict[str, Any] = {"prompt_style": self.prompt_style}
        if self.image_pixels is not None:
            setup["image_pixels"] = self.image_pixels
            setup["image_pixel_range"] = list(self.pixel_range())
        return setup

    # -- what the model looks like ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def layout(self, size: tuple[int, int] | None = None) -> VisualLayout:
        """The visual-token layout of an image of ``size`` = (width, height) (default :attr:`typical_size`), from the
        config alone: what the processor will produce for it."""

    def layout_of(self, sample) -> VisualLayout:
        return self.layout(tuple(sample.image.size))

    @property
    @abc.abstractmethod
    def n_layers(self) -> int:
        """The LLM's decoder layers."""

    @abc.abstractmethod
    def text_config(self):
        """The LLM's (HF) config."""

    @abc.abstractmethod
    def lm_dims(self):
        """The LLM's dimensions (:class:`tokenbench.measure.flops.LMDims`)."""

    @abc.abstractmethod
    def encoder_macs(self, size: tuple[int, int] | None = None) -> dict[str, int]:
        """MACs for one image of ``size`` (default :attr:`typical_size`) in the vision tower and the projector or
        merger: ``{"vision": ..., "projector": ...}``."""

    @abc.abstractmethod
    def decoder_layers(self):
        """The LLM's decoder layers (the router hooks them)."""

    @abc.abstractmethod
    def language_model(self):
        """The LLM (its final norm and rotary embedding serve the signals)."""

    # -- getting a model -------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def load(self, device: str = "cpu", dtype: str = "float32", attn_implementation: str = "sdpa"):
        """Load the weights and the processor; returns ``self``."""

    @abc.abstractmethod
    def load_config(self):
        """Read only the config, for counts that need no weights; returns ``self``."""

    @abc.abstractmethod
    def build_random(self, device: str = "cpu", dtype: str = "bfloat16", attn_implementation: str = "sdpa",
                     layers: int | None = None, seed: int = 0):
        """This architecture with random weights (for timing); returns ``self``."""

    @abc.abstractmethod
    def weights(self) -> "ModelWeights":
        """Read access to the decoder's weights for ``TokenReducer.prepare``."""

    # -- running ---------------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def chat(self, question: str) -> str:
        """The prompt of one user turn (an image, then ``question``) with the assistant's turn opened."""

    @abc.abstractmethod
    def encode(self, samples) -> Batch:
        """Tokenise and preprocess ``samples``, which must share one layout (see :meth:`batches`)."""

    def batches(self, samples, batch_size: int) -> list[list[int]]:
        """Indices of ``samples`` grouped into batches of at most ``batch_size`` that share a layout (every sample of a
        batch must have the same number of visual tokens), in order of first appearance. For a fixed-size model this
        is plain chunking."""
        groups: dict[VisualLayout, list[int]] = {}
        for i, s in enumerate(samples):
            groups.setdefault(self.layout_of(s), []).append(i)
        return [idx[j : j + batch_size] for idx in groups.values() for j in range(0, len(idx), batch_size)]

    def _one_layout(self, samples) -> VisualLayout:
        layouts = {self.layout_of(s) for s in samples}
        if len(layouts) != 1:
            raise ValueError(f"a batch must share one visual layout; these samples have {len(layouts)} "
                             "(group them with adapter.batches)")
        return layouts.pop()

    @abc.abstractmethod
    def prefill(self, batch: Batch, router=None):
        """One forward over the prompts without a KV cache; returns the last position's logits."""

    @abc.abstractmethod
    def generate(self, batch: Batch, max_new_tokens: int, router=None, ignore_eos: bool = False,
                 clock=None) -> Generation:
        """Greedy decoding with the KV cache; with ``router`` the method's plan is executed during the prefill."""

    @abc.abstractmethod
    def reduction(self, reduction: "Reduction"):
        """A context manager installing ``reduction`` on this model for the ``with`` block; yields the Router."""

    @abc.abstractmethod
    def pre_llm_signals(self, kinds: set[str]):
        """A context manager giving ``{kind: getter}`` for pre-LLM signals other than ``visual_embeds``; each getter
        returns ``(tensor, macs)`` for the latest forward."""

    def check_compatible(self, method: "TokenReducer", steps=None) -> None:
        """Refuse, before any compute, a method that needs a signal this adapter cannot provide (in ``steps``,
        default the method's own; a step with ``alternatives`` needs one of its need sets)."""
        from tokenbench.contract.method import resolve_needs
        from tokenbench.contract.signals import NEED_KINDS
        from tokenbench.errors import IncompatibleError

        for step in method.steps(self.n_layers) if steps is None else steps:
            for need in resolve_needs(step, self.provides):
                if need.kind not in self.provides:
                    why = self.missing_reasons.get(need.kind)
                    error = IncompatibleError(
                        f"method {method.name!r} needs {need.kind!r} ({NEED_KINDS[need.kind]}), which model "
                        f"{self.name!r} cannot provide{f' ({why})' if why else ''}; it provides "
                        f"{', '.join(sorted(self.provides))}. Pick another model or method"
                    )
                    error.short = f"needs {need.kind!r}, which {self.name!r} cannot provide{f': {why}' if why else ''}"
                    raise error


def model_family(family: str) -> type:
    """The adapter class that declared model family ``family`` (the model modules are imported first if no class has
    declared it yet). Any other spelling is refused, naming the families there are: a task that compared
    ``family == "llava_next"`` would otherwise fall back to another prompt without a word."""
    if family not in FAMILIES:
        from tokenbench.contract.plugins import discover_models

        discover_models()
        if family not in FAMILIES:
            discover_models(third_party=True)
    if family not in FAMILIES:
        close = difflib.get_close_matches(family, list(FAMILIES), n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise PluginValidationError(f"unknown model family {family!r}.{hint} Families: {', '.join(sorted(FAMILIES))} "
                                    "(the family key of a model's adapter, as `adapter.family` spells it)")
    return FAMILIES[family]
