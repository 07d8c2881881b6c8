"""The transformers implementation of the model interface (:class:`tokenbench.contract.model.ModelInterface`): the
generic part of every HF vision-language adapter.

A family in ``models/`` subclasses :class:`ModelAdapter` and adds what is its own: loading its checkpoint class
(``_load``), the prompt template, ``encode``/``layout`` (where the visual tokens sit), its pre-LLM signals and its
vision FLOPs. What is shared lives here and in the modules beside it: loading and the config alone
(:mod:`tokenbench.hf.loading`), random builds for timing (:mod:`tokenbench.hf.random_weights`), the greedy loop
(:mod:`tokenbench.hf.greedy`) with an optional :class:`~tokenbench.engine.router.Router` executing a method's plan. An
adapter never knows a method's name.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, ClassVar

from tokenbench.contract.layout import VisualLayout
from tokenbench.contract.model import Batch, Generation, ModelInterface
from tokenbench.hf import greedy, loading
from tokenbench.hf.loading import DTYPES, HUB_ID, check_device

__all__ = ["ModelAdapter", "Batch", "Generation", "check_device", "DTYPES", "HUB_ID"]


class ModelAdapter(ModelInterface):
    """Base class of HF adapters. Subclasses set the class attributes and implement ``_load``, ``prompt``,
    ``random_processor``, ``encode``, ``layout`` and ``encoder_macs``."""

    #: the signals (tokenbench.api.NEED_KINDS) this adapter can compute; a method needing another is refused
    provides: ClassVar[frozenset[str]] = frozenset({"attn", "keys", "hidden", "normed", "final_normed", "layer_input",
                                                 "visual_embeds", "text_embeds"})
    model_class: str = ""  # the transformers class of the checkpoint (build_random instantiates it from the config)

    def __init__(self, source: str | None = None, revision: str | None = None, name: str | None = None) -> None:
        self.source = source or self.default_source
        self.revision = revision
        self.name = name or self.family
        self.model = None
        self.processor = None

    # -- to implement ----------------------------------------------------------------------------------------------------
    def _load(self, path: str, device: str, torch_dtype, attn_implementation: str) -> None:
        """Set ``self.model`` and ``self.processor`` from a local directory or hub id."""
        raise NotImplementedError

    def prompt(self, question: str) -> str:
        """The adapter's preset prompt for one user turn (an image, then ``question``): used when the checkpoint's
        processor ships no chat template."""
        raise NotImplementedError

    def random_processor(self, config):
        """A processor for :meth:`build_random`: the real image processor for ``config`` and an offline tokenizer whose
        special tokens (the image placeholder, ...) are written into ``config``'s token ids."""
        raise NotImplementedError

    # -- prompts and batches ----------------------------------------------------------------------------------------------
    def chat(self, question: str) -> str:
        """The prompt of one user turn (an image, then ``question``) with the assistant's turn opened. Prompt style
        ``chat``: the processor's own chat template where the checkpoint ships one (``apply_chat_template``, the
        ecosystem's convention and lmms-eval's default), else :meth:`prompt`; any other style: :meth:`styled`."""
        if self.prompt_style != "chat":
            return self.styled(question)
        if getattr(self.processor, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.prompt(question)

    def _resize_hint(self) -> str:
        """Why a processor may give another number of visual tokens than the config says (for the error above)."""
        image = getattr(self.processor, "image_processor", None)
        if image is not None and getattr(image, "do_resize", True) is False:
            return " (do_resize is false, so an image is not resized to the tower's input)"
        return ""

    def processor_ready(self) -> None:
        """Called once the processor is set (loaded, or built for random weights): adjust it to this adapter's input
        setup (Qwen2.5-VL: its pixel range). Nothing by default."""

    def styled(self, question: str) -> str:
        """The prompt in ``prompt_style`` (one of :attr:`prompt_styles` besides ``chat``); families that offer one
        override this."""
        raise NotImplementedError(f"{type(self).__name__} offers no prompt style {self.prompt_style!r}")

    def decoder_layers(self):
        """The LLM's decoder layers (where LLaVA, LLaVA-NeXT and Qwen2.5-VL all keep them in transformers 5.x)."""
        return self.language_model().layers

    def language_model(self):
        return self.model.model.language_model

    def lm_dims(self):
        """The LLM's dimensions (:class:`tokenbench.measure.flops.LMDims`), from the text config."""
        from tokenbench.measure.flops import LMDims

        return LMDims.from_config(self.config.get_text_config())

    def position_ids(self, inputs: dict[str, Any], mask):
        """Explicit position ids of the prompt, as HF's ``generate`` would make them: ``cumsum(mask) - 1`` (so a
        left-padded batch gives the same answers as one sample at a time). Qwen2.5-VL returns its 3-D M-RoPE ids."""
        return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)

    def _tokens(self, samples, ids, mask, is_visual, layout: VisualLayout):
        """The :class:`~tokenbench.engine.router.Tokens` of an encoded batch: ``is_visual`` (B, L) marks the candidate
        visual tokens (structural tokens of the image span, such as newlines, are not)."""
        import torch

        from tokenbench.engine.record import Tokens

        n_vis = is_visual.sum(1)
        if not bool((n_vis == layout.n_visual).all()):  # the processor and the model's config disagree
            from tokenbench.errors import ConfigError

            sizes = sorted({tuple(s.image.size) for s in samples})
            raise ConfigError(
                f"model {self.name!r}: images of {', '.join(f'{w}x{h}' for w, h in sizes)} px gave "
                f"{sorted(set(n_vis.tolist()))} visual tokens, where the model's config expects {layout.n_visual}: its "
                f"processor does not prepare images the way its vision tower reads them{self._resize_hint()}. Fix the "
                "checkpoint's preprocessor_config.json, or give images the processor was made for")
        order = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        visual = order[is_visual].view(len(samples), layout.n_visual)
        other = order[~is_visual].view(len(samples), -1)
        first = visual[:, 0]
        one_run = layout.n_visual and bool(((visual[:, -1] - first == layout.n_visual - 1) & (first == first[0])).all())
        tokens = Tokens(visual=visual, other=other, valid=mask, sample_keys=tuple(s.id for s in samples), layout=layout,
                        visual_span=(int(first[0]), int(first[0]) + layout.n_visual) if one_run else None,
                        n_after_image=tuple((mask.gather(1, other) & (other > visual[:, -1:])).sum(1).tolist()))
        return Batch(inputs={}, tokens=tokens, n_text=(mask & ~is_visual).sum(1).tolist())

    def pre_llm_signals(self, kinds: set[str]):
        """A context manager giving ``{kind: getter}`` for pre-LLM signals other than ``visual_embeds``; each getter
        returns ``(tensor, macs)`` for the latest forward. Adapters that provide such signals override this."""
        return contextlib.nullcontext({})

    def weights(self):
        """Read access to the decoder's weights for ``TokenReducer.prepare``."""
        from tokenbench.contract.weights import ModelWeights

        return ModelWeights(self.decoder_layers(), self.text_config(), f"{self.name}@{self.source}",
                            revision=getattr(self.model.config, "_commit_hash", None),
                            source_dir=self.source if self.source and os.path.isdir(self.source) else None)

    @contextlib.contextmanager
    def reduction(self, reduction):
        """Install ``reduction`` (a :class:`tokenbench.api.Reduction`: a method at a budget) on this model instance for
        the ``with`` block; yields the Router (``None`` for a method without steps, ``full``). Everything is removed on
        exit."""
        from tokenbench.engine.router import Router

        steps = reduction.method.steps(self.n_layers)
        if not steps:
            yield None
            return
        from tokenbench.contract.method import resolve_needs

        kinds = {need.kind for step in steps for need in resolve_needs(step, self.provides)}
        with self.pre_llm_signals(kinds) as providers, Router(
            reduction, self.decoder_layers(), self.language_model(), pre_llm_providers=providers,
        ) as router:
            yield router

    def prepare_source(self) -> str:
        """Return a local directory or hub id to load; tiny variants build themselves here."""
        return self.source

    # -- loading ----------------------------------------------------------------------------------------------------------
    def load(self, device: str = "cpu", dtype: str = "float32", attn_implementation: str = "sdpa") -> "ModelAdapter":
        """Load the checkpoint (:func:`tokenbench.hf.loading.load`); returns ``self``."""
        return loading.load(self, device, dtype, attn_implementation)

    def _pretrained(self, model_class, path: str, **kw):
        """``model_class.from_pretrained(path)``, refusing damaged local weights
        (:func:`tokenbench.hf.loading.pretrained`)."""
        return loading.pretrained(model_class, path, **kw)

    def build_random(self, device: str = "cpu", dtype: str = "bfloat16", attn_implementation: str = "sdpa",
                     layers: int | None = None, seed: int = 0) -> "ModelAdapter":
        """This adapter's architecture at its config's size with random weights, made directly on ``device`` in
        ``dtype`` (for timing: speed needs no trained weights, and nothing is downloaded). ``layers`` keeps the first
        that many LLM decoder layers (a truncated model for CPUs). The vocabulary keeps its real size (the lm_head
        costs what it costs), or grows to the offline byte-level tokenizer that encodes the prompt where a toy config
        has fewer ids than it. Weights: normal(0, ``initializer_range``) for matrices and embeddings, ones for norm
        scales, zeros for biases (:mod:`tokenbench.hf.random_weights`)."""
        from tokenbench.hf.random_weights import build_random

        return build_random(self, device, dtype, attn_implementation, layers, seed)

    @property
    def n_layers(self) -> int:
        return len(self.decoder_layers())

    def text_config(self):
        return self.config.get_text_config()

    @property
    def config(self):
        """The model's HF config: the loaded model's, or one read by :meth:`load_config` (no weights)."""
        model = getattr(self, "model", None)
        if model is not None:
            return model.config
        if getattr(self, "_config", None) is None:
            raise RuntimeError("call load() or load_config() first")
        return self._config

    def load_config(self) -> "ModelAdapter":
        """Read only the config, for counts that need no weights (``tokenbench flops``): from the source directory,
        from the copy shipped in ``models/configs/`` for the registered hub ids (the counts only need the shapes, and
        the hub is often out of reach), or from the hub."""
        self._config = loading.read_config(self)
        return self

    @staticmethod
    def shipped_file(source: str, suffix: str) -> str:
        """The copy in ``models/configs/`` of a registered hub id's file
        (:func:`tokenbench.hf.loading.shipped_file`)."""
        return loading.shipped_file(source, suffix)

    # -- running ----------------------------------------------------------------------------------------------------------
    def new_cache(self):
        from tokenbench.engine.cache import LogicalLengthCache

        return LogicalLengthCache(config=self.text_config())

    def _prompt_inputs(self, batch: Batch):
        """The processor's inputs, the attention mask and explicit position ids (:meth:`position_ids`)."""
        inputs = dict(batch.inputs)
        mask = inputs["attention_mask"]
        return inputs, mask, self.position_ids(inputs, mask)

    def prefill(self, batch: Batch, router=None):
        """One forward over the prompts without a KV cache (calibration reads the layers' signals this way); returns
        the last position's logits. Runs under whatever grad mode the caller set."""
        inputs, _, pos = self._prompt_inputs(batch)
        if router is not None:
            router.start(batch.tokens)
        return self.model(**inputs, position_ids=pos, use_cache=False, logits_to_keep=1).logits[:, -1]

    def vision_stage(self):
        """The modules that open and close the vision stage (the vision tower's input to the projector's output), for
        timing it with hooks: ``(first, last)``."""
        return self.model.model.vision_tower, self.model.model.multi_modal_projector

    def generate(self, batch: Batch, max_new_tokens: int, router=None, ignore_eos: bool = False,
                 clock=None) -> Generation:
        """Greedy decoding with the KV cache; with ``router`` the method's plan is executed during the prefill.
        ``ignore_eos`` decodes all ``max_new_tokens`` even past an end token (tests that compare every step; timing).
        With a :class:`tokenbench.measure.timing.Clock`, ``Generation.marks`` holds its marks at the start, around the
        vision stage, at the first token (time to first token) and at the end (:mod:`tokenbench.hf.greedy`)."""
        return greedy.generate(self, batch, max_new_tokens, router, ignore_eos, clock)
