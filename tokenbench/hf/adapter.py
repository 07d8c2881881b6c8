"""The model-adapter contract and the generic part of every HF vision-language adapter.

An adapter owns everything model-specific: loading (hub id or local directory through ``from_pretrained``), the
prompt template, where the visual tokens sit, the decoder layers, and the dimensions the FLOPs counter needs. The
generic part here runs a prefill and a greedy decode with the explicit position ids HF's ``generate`` would use
(``cumsum(attention_mask) - 1``, so a left-padded batch gives the same answers as one sample at a time), with an
optional :class:`~tokenbench.engine.router.Router` executing a method's plan. An adapter never knows a method's name.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from tokenbench.api import NEED_KINDS, VisualLayout
from tokenbench.errors import ConfigError

DTYPES = ("float32", "bfloat16", "float16")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_device(device: str) -> None:
    """Refuse a device this process cannot use, naming what it can: ``cpu``, ``cuda``/``cuda:N`` with CUDA and N below
    the device count, ``mps`` where torch was built with it and the machine has it."""
    import torch

    kind, _, index = device.partition(":")
    usable = ["cpu"] + (["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
                        if torch.cuda.is_available() else []) + (["mps"] if torch.backends.mps.is_available() else [])
    if device in usable:
        return
    if kind not in ("cpu", "cuda", "mps") or (index and (kind != "cuda" or not index.isdigit())):
        why = f"unknown device {device!r}"
    elif kind == "cuda" and torch.cuda.is_available():
        why = f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
    else:
        why = f"device {device!r} is not available here ({'no CUDA' if kind == 'cuda' else 'this torch has no MPS'})"
    raise ConfigError(f"{why}; use {' or '.join(f'--device {d}' for d in usable[:3])}")

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


class ModelAdapter:
    """Base class of adapters. Subclasses set the class attributes and implement the ``_``-free abstract methods."""

    family: ClassVar[str] = ""  # e.g. "llava": also the prefix of `--model family:<hub id or path>`
    model_types: ClassVar[tuple[str, ...]] = ()  # config.json model_type values this adapter loads
    default_source: ClassVar[str] = ""  # hub id used when no source is given
    #: the signals (tokenbench.api.NEED_KINDS) this adapter can compute; a method needing another is refused
    provides: ClassVar[frozenset[str]] = frozenset({"attn", "keys", "hidden", "normed", "final_normed", "layer_input",
                                                 "visual_embeds"})
    #: why a signal is not provided, for the refusal message (e.g. "its vision tower has no CLS token")
    missing_reasons: ClassVar[dict[str, str]] = {}
    #: (width, height) of the image `layout()` and `encoder_macs()` describe when given none: a typical photo
    typical_size: ClassVar[tuple[int, int]] = (640, 480)

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

    def chat(self, question: str) -> str:
        """The prompt of one user turn (an image, then ``question``) with the assistant's turn opened: the processor's
        own chat template where the checkpoint ships one (``apply_chat_template``, the ecosystem's convention), else
        :meth:`prompt`."""
        if getattr(self.processor, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.prompt(question)

    def encode(self, samples) -> Batch:
        """Tokenise and preprocess ``samples``, which must share one layout (see :meth:`batches`)."""
        raise NotImplementedError

    def layout(self, size: tuple[int, int] | None = None) -> VisualLayout:
        """The visual-token layout of an image of ``size`` = (width, height) (default :attr:`typical_size`), from the
        config alone: what the processor will produce for it."""
        raise NotImplementedError

    def decoder_layers(self):
        """The LLM's decoder layers (where LLaVA, LLaVA-NeXT and Qwen2.5-VL all keep them in transformers 5.x)."""
        return self.language_model().layers

    def language_model(self):
        return self.model.model.language_model

    def lm_dims(self):
        """The LLM's dimensions (:class:`tokenbench.measure.flops.LMDims`), from the text config."""
        from tokenbench.measure.flops import LMDims

        return LMDims.from_config(self.config.get_text_config())

    def encoder_macs(self, size: tuple[int, int] | None = None) -> dict[str, int]:
        """MACs for one image of ``size`` (default :attr:`typical_size`) in the vision tower and the projector or
        merger: ``{"vision": ..., "projector": ...}``."""
        raise NotImplementedError

    def position_ids(self, inputs: dict[str, Any], mask):
        """Explicit position ids of the prompt, as HF's ``generate`` would make them: ``cumsum(mask) - 1`` (so a
        left-padded batch gives the same answers as one sample at a time). Qwen2.5-VL returns its 3-D M-RoPE ids."""
        return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)

    def layout_of(self, sample) -> VisualLayout:
        return self.layout(tuple(sample.image.size))

    def batches(self, samples, batch_size: int) -> list[list[int]]:
        """Indices of ``samples`` grouped into batches of at most ``batch_size`` that share a layout (every sample of a
        batch must have the same number of visual tokens), in order of first appearance. For a fixed-size model this
        is plain chunking."""
        groups: dict[VisualLayout, list[int]] = {}
        for i, s in enumerate(samples):
            groups.setdefault(self.layout_of(s), []).append(i)
        return [idx[j : j + batch_size] for idx in groups.values() for j in range(0, len(idx), batch_size)]

    def _tokens(self, samples, ids, mask, is_visual, layout: VisualLayout):
        """The :class:`~tokenbench.engine.router.Tokens` of an encoded batch: ``is_visual`` (B, L) marks the candidate
        visual tokens (structural tokens of the image span, such as newlines, are not)."""
        import torch

        from tokenbench.engine.router import Tokens

        n_vis = is_visual.sum(1)
        if not bool((n_vis == layout.n_visual).all()):
            raise ValueError(f"expected {layout.n_visual} visual tokens per sample, the processor gave {n_vis.tolist()}")
        order = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        visual = order[is_visual].view(len(samples), layout.n_visual)
        other = order[~is_visual].view(len(samples), -1)
        tokens = Tokens(visual=visual, other=other, valid=mask, sample_keys=tuple(s.id for s in samples), layout=layout)
        return Batch(inputs={}, tokens=tokens, n_text=(mask & ~is_visual).sum(1).tolist())

    def _one_layout(self, samples) -> VisualLayout:
        layouts = {self.layout_of(s) for s in samples}
        if len(layouts) != 1:
            raise ValueError(f"a batch must share one visual layout; these samples have {len(layouts)} "
                             "(group them with adapter.batches)")
        return layouts.pop()

    def pre_llm_signals(self, kinds: set[str]):
        """A context manager giving ``{kind: getter}`` for pre-LLM signals other than ``visual_embeds``; each getter
        returns ``(tensor, macs)`` for the latest forward. Adapters that provide such signals override this."""
        return contextlib.nullcontext({})

    def check_compatible(self, method, steps=None) -> None:
        """Refuse, before any compute, a method that needs a signal this adapter cannot provide (in ``steps``,
        default the method's own; a step with ``alternatives`` needs one of its need sets)."""
        from tokenbench.api import resolve_needs
        from tokenbench.errors import IncompatibleError

        for step in method.steps(self.n_layers) if steps is None else steps:
            for need in resolve_needs(step, self.provides):
                if need.kind not in self.provides:
                    why = self.missing_reasons.get(need.kind)
                    raise IncompatibleError(
                        f"method {method.name!r} needs {need.kind!r} ({NEED_KINDS[need.kind]}), which model "
                        f"{self.name!r} cannot provide{f' ({why})' if why else ''}; it provides "
                        f"{', '.join(sorted(self.provides))}. Pick another model or method"
                    )

    def weights(self):
        """Read access to the decoder's weights for ``TokenReducer.prepare``."""
        from tokenbench.api import ModelWeights

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
        from tokenbench.api import resolve_needs

        kinds = {need.kind for step in steps for need in resolve_needs(step, self.provides)}
        with self.pre_llm_signals(kinds) as providers, Router(
            reduction, self.decoder_layers(), self.language_model(), pre_llm_providers=providers,
        ) as router:
            yield router

    def prepare_source(self) -> str:
        """Return a local directory or hub id to load; tiny variants build themselves here."""
        return self.source

    # -- loading ----------------------------------------------------------------------------------------------------------
    @staticmethod
    def _check_target(device: str, dtype: str) -> None:
        if dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
        check_device(device)

    def _loaded(self, device: str, dtype: str, attn_implementation: str) -> "ModelAdapter":
        self.device, self.dtype, self.attn_implementation = device, dtype, attn_implementation
        self.model.eval()
        fwd = inspect.signature(type(self.model).forward).parameters
        self._cache_kw = "cache" if "cache" in fwd else "past_key_values"  # 5.24 vs 5.17
        return self

    def load(self, device: str = "cpu", dtype: str = "float32", attn_implementation: str = "sdpa") -> "ModelAdapter":
        import torch

        self._check_target(device, dtype)
        path = os.path.expanduser(self.prepare_source())
        if not os.path.isdir(path) and not HUB_ID.match(path):
            raise ConfigError(
                f"model path {path!r} does not exist. Give a directory written by save_pretrained, "
                f"or a hub id such as {self.default_source!r}"
            )
        if os.path.isdir(path):  # a damaged or foreign checkpoint is refused here, with what is wrong
            from tokenbench.hf.checkpoint import check_directory

            check_directory(path, self.family, self.model_types)
        try:
            self._load(path, device, getattr(torch, dtype), attn_implementation)
        except OSError as exc:  # not a local directory, and the hub could not provide it
            raise ConfigError(
                f"could not load model {path!r}: it is not a local directory and the hub could not provide it "
                f"({str(exc).splitlines()[0]}). Pass a local directory saved with save_pretrained."
            ) from exc
        return self._loaded(device, dtype, attn_implementation)

    def _pretrained(self, model_class, path: str, **kw):
        """``model_class.from_pretrained(path)`` from safetensors only, refusing (for a local directory) weights that
        are missing, left over or of the wrong shape instead of running with random ones."""
        from tokenbench.hf.checkpoint import check_loading_info

        local = os.path.isdir(path)
        try:  # a local directory's wrong shapes are loaded aside and reported by name (check_loading_info)
            model, info = model_class.from_pretrained(path, use_safetensors=True, output_loading_info=True,
                                                      **({"ignore_mismatched_sizes": True} if local else {}), **kw)
        except (RuntimeError, ValueError) as exc:
            if not local:
                raise
            raise ConfigError(f"could not load model directory {path!r}: {str(exc).strip().splitlines()[0]}. Restore "
                              "the checkpoint's files, or give the directory they belong to") from None
        if local:
            check_loading_info(path, info)
        return model

    # -- random weights at full size (timing without a download) --------------------------------------------------------
    model_class: str = ""  # the transformers class of the checkpoint (build_random instantiates it from the config)

    def random_processor(self, config):
        """A processor for :meth:`build_random`: the real image processor for ``config`` and an offline tokenizer whose
        special tokens (the image placeholder, ...) are written into ``config``'s token ids."""
        raise NotImplementedError

    def build_random(self, device: str = "cpu", dtype: str = "bfloat16", attn_implementation: str = "sdpa",
                     layers: int | None = None, seed: int = 0) -> "ModelAdapter":
        """This adapter's architecture at its config's size with random weights, made directly on ``device`` in
        ``dtype`` (for timing: speed needs no trained weights, and nothing is downloaded). ``layers`` keeps the first
        that many LLM decoder layers (a truncated model for CPUs). The vocabulary keeps its real size (the lm_head
        costs what it costs), or grows to the offline byte-level tokenizer that encodes the prompt where a toy config has
        fewer ids than it. Weights: normal(0,
        ``initializer_range``) for matrices and embeddings, ones for norm scales, zeros for biases."""
        import copy

        import torch
        import transformers
        from transformers.initialization import no_init_weights

        self._check_target(device, dtype)
        config = copy.deepcopy(self.load_config().config)
        text = config.get_text_config()
        self.config_layers = text.num_hidden_layers  # before any truncation
        if layers is not None:
            if not 1 <= layers <= text.num_hidden_layers:
                raise ConfigError(f"--layers {layers} is out of range: {self.name} has {text.num_hidden_layers} LLM "
                                  f"layers; use 1..{text.num_hidden_layers}")
            text.num_hidden_layers = layers
            if getattr(text, "layer_types", None):
                text.layer_types = text.layer_types[:layers]
        self.processor = self.random_processor(config)
        ids = len(self.processor.tokenizer)
        if ids > text.vocab_size:  # a toy config (mini-llava) with fewer ids than the offline tokenizer emits
            text.vocab_size = ids
        with torch.device(device), no_init_weights():
            model = getattr(transformers, self.model_class)._from_config(
                config, dtype=getattr(torch, dtype), attn_implementation=attn_implementation)
        generator = torch.Generator(device=device).manual_seed(seed)
        std = getattr(text, "initializer_range", 0.02)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("bias"):
                    param.zero_()
                elif param.dim() == 1 and "norm" in name:
                    param.fill_(1.0)
                else:
                    param.normal_(0.0, std, generator=generator)
        self.model = model
        self._config = config
        self.source = f"random weights from the {self.name} config"
        return self._loaded(device, dtype, attn_implementation)

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
        from transformers import AutoConfig

        path = os.path.expanduser(self.prepare_source())
        if os.path.isdir(path):  # a damaged or foreign config is refused here, as load() refuses it
            from tokenbench.hf.checkpoint import check_config

            check_config(path, self.family, self.model_types)
        shipped = self.shipped_file(path, ".json")
        if not os.path.isdir(path) and self.revision is None and os.path.isfile(shipped):
            self._config = AutoConfig.from_pretrained(shipped)  # no network round trip for a known hub id
            return self
        try:
            self._config = AutoConfig.from_pretrained(path, revision=self.revision)
        except OSError:
            raise ConfigError(f"could not read the config of {path!r} (not a local directory, and the hub could not "
                              "provide it); pass a local checkpoint directory") from None
        return self

    @staticmethod
    def shipped_file(source: str, suffix: str) -> str:
        """The copy in ``models/configs/`` of a registered hub id's file (``.json``: config.json; ``.preprocessor.json``:
        preprocessor_config.json); it may not exist."""
        from importlib.resources import files

        return str(files("tokenbench.models") / "configs" / f"{source.replace('/', '--')}{suffix}")

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

    @contextlib.contextmanager
    def _vision_marks(self, clock, marks: dict):
        first, last = self.vision_stage()

        def opened(*_):  # hooks must return None (a value would replace the module's inputs or output)
            marks.setdefault("vision_start", clock.mark())

        def closed(*_):  # the last projector call counts (VisionZip projects its merged tokens again)
            marks["vision_end"] = clock.mark()

        handles = [first.register_forward_pre_hook(opened), last.register_forward_hook(closed)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def generate(self, batch: Batch, max_new_tokens: int, router=None, ignore_eos: bool = False,
                 clock=None) -> Generation:
        """Greedy decoding with the KV cache; with ``router`` the method's plan is executed during the prefill.
        ``ignore_eos`` decodes all ``max_new_tokens`` even past an end token (tests that compare every step; timing).
        With a :class:`tokenbench.measure.timing.Clock`, ``Generation.marks`` holds its marks at the start, around the vision
        stage, at the first token (time to first token) and at the end."""
        marks: dict = {}
        if clock is None:
            return self._generate(batch, max_new_tokens, router, ignore_eos, None, marks)
        with self._vision_marks(clock, marks):
            return self._generate(batch, max_new_tokens, router, ignore_eos, clock, marks)

    def _generate(self, batch, max_new_tokens, router, ignore_eos, clock, marks) -> Generation:
        import torch

        if clock is not None:
            marks["start"] = clock.mark()
        inputs, mask, pos = self._prompt_inputs(batch)
        cache = self.new_cache()
        eos = self._eos_ids()
        pad = self.processor.tokenizer.pad_token_id
        if router is not None:
            router.start(batch.tokens)
        with torch.inference_mode():
            out = self.model(**inputs, position_ids=pos, use_cache=True, logits_to_keep=1, **{self._cache_kw: cache})
            cache.logical_length += mask.shape[1]
            first = out.logits[:, -1].float()
            kv_bytes = cache.nbytes()
            if router is not None and router.record.position_ids is not None:
                pos = router.record.position_ids  # a pre-LLM selection renumbered the prompt: continue from there
            nxt = first.argmax(-1)
            if clock is not None:
                marks["first_token"] = clock.mark()
            done = torch.zeros_like(nxt, dtype=torch.bool)
            steps, logits = [], [first]
            for step in range(max_new_tokens):
                steps.append(torch.where(done, torch.full_like(nxt, pad), nxt))
                if not ignore_eos:
                    done = done | torch.isin(nxt, eos)
                if bool(done.all()) or step == max_new_tokens - 1:
                    break
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
                pos = pos[..., -1:] + 1  # the last prompt token is text: the next id follows it (M-RoPE too)
                out = self.model(
                    input_ids=nxt[:, None], attention_mask=mask, position_ids=pos, use_cache=True,
                    **{self._cache_kw: cache},
                )
                cache.logical_length += 1
                logits.append(out.logits[:, -1].float())
                nxt = logits[-1].argmax(-1)
            if clock is not None:
                marks["end"] = clock.mark()
        ids = torch.stack(steps, dim=1).tolist()
        ids = [[t for t in row if t != pad] for row in ids]
        texts = self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return Generation(texts=[t.strip() for t in texts], token_ids=ids, first_logits=first.cpu(), kv_cache_bytes=kv_bytes,
                          step_logits=[x.cpu() for x in logits[: len(steps)]], marks=marks or None,
                          n_steps=len(logits))

    def _eos_ids(self):
        import torch

        ids = self.model.generation_config.eos_token_id
        if ids is None:
            ids = self.processor.tokenizer.eos_token_id
        ids = ids if isinstance(ids, (list, tuple)) else [ids]
        return torch.tensor(ids, device=self.device)
