"""LLaVA-1.5 on transformers' ``LlavaForConditionalGeneration``.

Registered names: ``llava`` (any LLaVA-1.5 checkpoint: ``--model llava:<hub id or directory>``), ``llava-1.5-7b``
(default hub id ``llava-hf/llava-1.5-7b-hf``), ``llava-1.5-13b``, and ``tiny-llava``: the same architecture at toy
size (CLIP ViT 336/14 -> 576 visual tokens, a 6-layer GQA Llama), built from a config with random weights and an
offline byte-level tokenizer, saved with ``save_pretrained`` and loaded back through ``from_pretrained`` like any
checkpoint. Its answers are meaningless; agreement with ``full`` and first-token KL are what it measures.
``small-llava`` is the same recipe at a size where CPU timings are not all overhead (16-layer, 1024-wide Llama).

Prompt: ``--prompt-style chat`` (the default) is the checkpoint's chat template (llava-hf's renders ``USER:
<image>\\n{question} ASSISTANT:``, lmms-eval's default); ``--prompt-style llava`` is LLaVA's own ``conv_vicuna_v1``
with its system prompt, behind LLaVA's published numbers. Layout: the processor expands ``<image>`` into 576 image
tokens (24 x 24 patches, CLS dropped by the "default" feature strategy), which sit in one contiguous span.
"""

from __future__ import annotations

import contextlib
import os
from functools import partial

from tokenbench.api import Batch, Region, VisualLayout, as_pil, register_model
from tokenbench.hf.adapter import ModelAdapter
from tokenbench.measure.flops import mlp_projector_macs
from tokenbench.models.clip import ClipLayerSignals, llava_encoder_macs
from tokenbench.models.tiny import TinyVariant


#: LLaVA's conv_vicuna_v1 (SeparatorStyle.TWO: the system prompt, a space, "USER: ...", a space, "ASSISTANT:")
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
                 "detailed, and polite answers to the user's questions.")
VICUNA_V1 = VICUNA_SYSTEM + " USER: <image>\n{question} ASSISTANT:"


class LlavaAdapter(ModelAdapter):
    family = "llava"
    lmms_eval_model = "llava_hf"
    model_types = ("llava",)
    default_source = "llava-hf/llava-1.5-7b-hf"
    provides = ModelAdapter.provides | {"cls_attn", "vision_keys", "vision_features"}

    model_class: str = "LlavaForConditionalGeneration"  # the transformers class that loads the checkpoint
    #: the prompt without a chat template (tiny models): the text llava-hf's chat template renders (no system prompt)
    template: str = "USER: <image>\n{question} ASSISTANT:"
    prompt_styles = ("chat", "llava")
    #: prompt style ``llava``: LLaVA's ``conv_vicuna_v1`` (``llava/conversation.py``), one turn, as LLaVA's eval
    #: scripts (``model_vqa_loader.py``: the image token, a newline, the question) made the published numbers
    conversation: str = VICUNA_V1

    def styled(self, question: str) -> str:
        return self.conversation.format(question=question)

    def _load(self, path, device, torch_dtype, attn_implementation):
        import transformers
        from transformers import AutoProcessor

        kw = {"revision": self.revision} if self.revision else {}
        self.model = self._pretrained(getattr(transformers, self.model_class), path, dtype=torch_dtype,
                                      attn_implementation=attn_implementation, **kw).to(device)
        self.processor = AutoProcessor.from_pretrained(path, **kw)
        self.processor.tokenizer.padding_side = "left"  # the greedy loop's position ids assume left padding
        if self.processor.tokenizer.pad_token is None:
            self.processor.tokenizer.pad_token = self.processor.tokenizer.eos_token or self.processor.tokenizer.unk_token

    def prompt(self, question: str) -> str:
        return self.template.format(question=question)

    def random_processor(self, config):
        from tokenbench.models.tiny import tiny_tokenizer

        tok = tiny_tokenizer()
        config.image_token_id = tok.convert_tokens_to_ids("<image>")
        return llava_processor(tok, config.vision_config.image_size, config.vision_config.patch_size)

    def _grid(self) -> int:
        vc = self.config.vision_config
        return vc.image_size // vc.patch_size

    def layout_of(self, sample) -> VisualLayout:
        """:meth:`layout`, after checking that the processor will resize this image to the tower's input: a
        processor with ``do_resize: false`` (a checkpoint trained on images of one size) given another size is refused
        here, before any compute, instead of failing on the token count."""
        image = getattr(self.processor, "image_processor", None)
        side = self.config.vision_config.image_size
        if image is not None and getattr(image, "do_resize", True) is False and tuple(sample.image.size) != (side, side):
            from tokenbench.errors import ConfigError

            w, h = sample.image.size
            raise ConfigError(
                f"model {self.name!r}: its processor does not resize images (do_resize: false in its "
                f"preprocessor_config.json) and its vision tower reads {side}x{side} px, but sample {sample.id!r} is "
                f"{w}x{h} px. Give {side}x{side} images (a task made for this model), or set do_resize to true in the "
                "checkpoint's preprocessor_config.json")
        return super().layout_of(sample)

    def layout(self, size=None) -> VisualLayout:
        """Every image is resized to the tower's square input: the same 24 x 24 grid whatever its size."""
        g = self._grid()
        return VisualLayout(n_visual=g * g, grid=(g, g), crops=(Region("image", 0, g, g),), has_cls=True)

    def encode(self, samples) -> Batch:
        import torch

        layout = self._one_layout(samples)
        enc = self.processor(
            images=[as_pil(s.image) for s in samples],
            text=[self.chat(s.question) for s in samples],
            return_tensors="pt",
            padding=True,
        )
        inputs = {k: v.to(self.device) for k, v in enc.items() if k in self.input_names}
        inputs["pixel_values"] = inputs["pixel_values"].to(getattr(torch, self.dtype))
        ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
        batch = self._tokens(samples, ids, mask, self._visual_mask(ids, layout), layout)
        batch.inputs = inputs
        return batch

    input_names = ("input_ids", "attention_mask", "pixel_values")

    def _visual_mask(self, ids, layout):
        """(B, L) True on the candidate visual tokens: here every image token."""
        return ids == self.model.config.image_token_id

    def pre_llm_signals(self, kinds):
        """Signals of the CLIP layer whose output feeds the projector (``vision_feature_layer``, -2 for LLaVA-1.5),
        recomputed from that layer's input by hooks, with their cost
        (:class:`~tokenbench.models.clip.ClipLayerSignals`): ``cls_attn``, ``vision_keys``, ``vision_features`` and
        ``project`` (the projector, for merged features). The tower runs once per image here; an adapter whose tower
        runs on several crops per image maps each pass's rows onto the visual tokens in :meth:`_token_map`
        (LLaVA-NeXT)."""
        wanted = set(kinds) & ClipLayerSignals.KINDS
        if not wanted:
            return contextlib.nullcontext({})
        layer = self.model.model.vision_tower.encoder.layers[self.model.config.vision_feature_layer]
        return ClipLayerSignals(layer, wanted, self._project, self._token_map, self._signal_hooks).installed()

    def _project(self, features):
        """The projector on vision features, and its MACs."""
        cfg = self.model.config
        dims = (cfg.vision_config.hidden_size, cfg.text_config.hidden_size, cfg.text_config.hidden_size)
        return self.model.model.multi_modal_projector(features), mlp_projector_macs(dims, features.shape[1])

    def _signal_hooks(self, captured: dict) -> list:
        """Extra hooks :meth:`_token_map` needs (LLaVA-NeXT records each image's size); none here."""
        return []

    def _token_map(self, captured: dict, runs: int):
        """Where each visual token's vision-tower row comes from, for a tower that ran ``runs`` passes: ``None`` when
        each image is one pass whose patches are its visual tokens in order (LLaVA-1.5), else (B, N): the row of each
        visual token among its image's passes' patches laid end to end (pass after pass, P patches each)."""
        return None

    def encoder_macs(self, size=None) -> dict[str, int]:
        """CLIP tower (every layer runs, CLS included) and the 2-layer MLP projector on the patch tokens."""
        return llava_encoder_macs(self.config)


@register_model("llava")
def llava(source: str | None = None, revision: str | None = None) -> LlavaAdapter:
    """Any LLaVA-1.5 checkpoint in HF format: ``--model llava:<hub id or local directory>``."""
    return LlavaAdapter(source, revision, name="llava" if source is None else f"llava:{source}")


llava.model_types = LlavaAdapter.model_types  # a checkpoint directory with this model_type loads through `llava`


@register_model("llava-1.5-7b")
def llava_7b(revision: str | None = None) -> LlavaAdapter:
    return LlavaAdapter("llava-hf/llava-1.5-7b-hf", revision, name="llava-1.5-7b")


@register_model("llava-1.5-13b")
def llava_13b(revision: str | None = None) -> LlavaAdapter:
    return LlavaAdapter("llava-hf/llava-1.5-13b-hf", revision, name="llava-1.5-13b")


# -- tokenbench-mini: trained on the synthetic task, shipped in the repo (models/mini/) -------------------------------
MINI_LLAVA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mini", "llava-1.5")


@register_model("mini-llava")
def mini_llava(revision: str | None = None) -> LlavaAdapter:
    """tokenbench-mini LLaVA-1.5: LLaVA-1.5's architecture (576 visual tokens) at toy width, trained from scratch on the
    synthetic task (``models/mini/README.md``); the default model, with accuracy worth retaining on a CPU."""
    return LlavaAdapter(MINI_LLAVA, revision, name="mini-llava")


# -- the tiny variant: built offline from a config, saved, and loaded through from_pretrained -------------------------
TINY_VERSION = "1"


#: Random-weight sizes: (CLIP hidden, layers, heads, FFN) and (Llama hidden, layers, heads, KV heads, FFN).
SIZES = {
    "tiny": ((64, 2, 4, 128), (128, 6, 4, 2, 352)),
    # the largest that still times in seconds on 2 CPU cores: a 16-layer MHA Llama (~200M parameters)
    "small": ((256, 4, 4, 1024), (1024, 16, 16, 16, 2816)),
}


class TinyLlavaAdapter(TinyVariant, LlavaAdapter):
    def __init__(self, seed: int = 0, directory: str | None = None, size: str = "tiny") -> None:
        super().__init__(f"{size}-llava", f"{size}-llava-v{TINY_VERSION}", partial(build_tiny_llava, size=size), seed,
                         directory)
        self.size = size


@register_model("tiny-llava")
def tiny_llava(seed: int = 0, directory: str | None = None) -> TinyLlavaAdapter:
    """A random-weight LLaVA-1.5 at toy size (see the module docstring); built once into the cache directory."""
    return TinyLlavaAdapter(seed=seed, directory=directory)


@register_model("small-llava")
def small_llava(seed: int = 0, directory: str | None = None) -> TinyLlavaAdapter:
    """The same, larger (a 16-layer, 1024-wide MHA Llama): for CPU timings where tiny-llava is all overhead."""
    return TinyLlavaAdapter(seed=seed, directory=directory, size="small")


def tiny_llava_config(vocab_size: int, image_token_id: int, pad_token_id: int, size: str = "tiny"):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    (vh, vl, vheads, vffn), (h, layers, heads, kv, ffn) = SIZES[size]
    vision = CLIPVisionConfig(
        hidden_size=vh, intermediate_size=vffn, num_hidden_layers=vl, num_attention_heads=vheads,
        image_size=336, patch_size=14, projection_dim=64,
    )
    text = LlamaConfig(
        hidden_size=h, intermediate_size=ffn, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
        vocab_size=vocab_size, max_position_embeddings=2048, pad_token_id=pad_token_id, tie_word_embeddings=False,
    )
    return LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=image_token_id, vision_feature_layer=-2,
        vision_feature_select_strategy="default", projector_hidden_act="gelu",
    )


def build_tiny_llava(path: str, seed: int = 0, size: str = "tiny") -> None:
    """Build the tiny LLaVA (random weights from ``seed``) and save model, tokenizer and processor to ``path``.

    Written to a temporary sibling directory and renamed (:func:`tokenbench.models.tiny.save_atomically`).
    """
    import torch
    from transformers import LlavaForConditionalGeneration

    from tokenbench.models.tiny import save_atomically, tiny_tokenizer

    tok = tiny_tokenizer()
    processor = llava_processor(tok, 336, 14)
    config = tiny_llava_config(len(tok), tok.convert_tokens_to_ids("<image>"), tok.pad_token_id, size)
    config.text_config.bos_token_id = tok.bos_token_id
    config.text_config.eos_token_id = tok.eos_token_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config)
    save_atomically(path, model, processor, tok)


def llava_processor(tokenizer, image_size: int, patch_size: int):
    """LLaVA-1.5's processor: CLIP preprocessing (shortest edge to ``image_size``, centre crop), ``<image>`` expanded
    to the patch count (the "default" strategy drops CLS)."""
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    image_processor = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                            crop_size={"height": image_size, "width": image_size})
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1, image_token="<image>")
