"""Qwen2.5-VL on transformers' ``Qwen2_5_VLForConditionalGeneration``.

Registered names: ``qwen2.5-vl`` (any checkpoint: ``--model qwen2.5-vl:<hub id or directory>``), ``qwen2.5-vl-7b``
(default hub id ``Qwen/Qwen2.5-VL-7B-Instruct``), ``qwen2.5-vl-3b``, and ``tiny-qwen2.5-vl``: the same architecture at
toy size (a 2-block vision tower with window attention and one full-attention block, the 2 x 2 patch merger, a
4-layer GQA Qwen2 with M-RoPE), random weights, saved and reloaded through ``from_pretrained``.

Layout. Dynamic resolution: the image is resized to multiples of 28 px within the processor's pixel bounds, cut into
14 px patches, and each 2 x 2 group of patches becomes one visual token, so an image gives ``(H/28) x (W/28)`` tokens
(``VisualLayout.grid``), one contiguous ``<|image_pad|>`` span between ``<|vision_start|>`` and ``<|vision_end|>``.

Positions. The LLM uses 3-D M-RoPE ids: an image token at merged grid cell (h, w) gets (t, s+h, s+w) with s the
position after the preceding text; the text after the image continues from ``s + max(grid)``. The adapter passes
these ids explicitly (``get_rope_index``, the model's own), so every token keeps its own (t, h, w) rotation when others
are pruned or routed around, and the text after the image keeps its ids; decoding continues from the last id.

Pre-LLM signals. The tower has no CLS token, so ``cls_attn`` and ``vision_features`` (one CLIP feature per visual
token) are refused with that reason (VisPruner and SCOPE rank by CLS attention). What it provides instead, for
VisionZip's official Qwen2.5-VL variant, is computed by hooks on the tower's last block from that block's own input
(``models/qwen_vision.py``, which also counts the tower's FLOPs): ``vision_received``, the attention each visual token
receives there, and ``vision_keys``, that block's keys, each averaged over the 2 x 2 patches the merger joins into one
visual token and mapped from the tower's window order back to the LLM's raster order.

Processor. transformers' ``Qwen2_5_VLProcessor`` needs torchvision (for its video processor), which cannot be
installed on CPU machines here. Loading tries the real processor first and falls back to :class:`QwenVLProcessor`:
the real PIL image processor (``Qwen2VLImageProcessorPil``) plus the same ``<|image_pad|>`` expansion the real
processor does (``grid_thw.prod() // merge**2`` tokens per image) and ``mm_token_type_ids``.
"""

from __future__ import annotations

import contextlib
import json
import os

from tokenbench.api import Region, VisualLayout, as_pil, register_model
from tokenbench.hf.adapter import ModelAdapter
from tokenbench.models.qwen_vision import QwenTowerSignals, QwenVisionDims, qwen_vision_macs
from tokenbench.models.tiny import TinyVariant

SYSTEM = "You are a helpful assistant."
TEMPLATE = ("<|im_start|>system\n" + SYSTEM + "<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
            "{question}<|im_end|>\n<|im_start|>assistant\n")
DEFAULT_PIXELS = (56 * 56, 28 * 28 * 1280)  # transformers' Qwen2VLImageProcessor defaults (min, max)
#: lmms-eval's Qwen2.5-VL model (``models/simple/qwen2_5_vl.py``, at 75571cfe): min_pixels=256*28*28,
#: max_pixels=2048*28*28, the range behind its published Qwen2.5-VL scores
LMMS_EVAL_PIXELS = (256 * 28 * 28, 2048 * 28 * 28)


class QwenVLProcessor:
    """The torchvision-free processor: images through ``Qwen2VLImageProcessorPil``, each ``<|image_pad|>`` expanded to
    the image's token count, and ``mm_token_type_ids`` (1 on image tokens), as ``Qwen2_5_VLProcessor`` does."""

    image_token = "<|image_pad|>"

    def __init__(self, image_processor, tokenizer) -> None:
        self.image_processor, self.tokenizer = image_processor, tokenizer
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)

    def __call__(self, images, text, return_tensors="pt", padding=True):
        image_inputs = self.image_processor(images=images, return_tensors=return_tensors)
        merge = self.image_processor.merge_size ** 2
        counts = iter(int(thw.prod()) // merge for thw in image_inputs["image_grid_thw"])
        expanded = []
        for t in text:
            parts = t.split(self.image_token)
            out = parts[0]
            for part in parts[1:]:
                out += self.image_token * next(counts) + part
            expanded.append(out)
        enc = self.tokenizer(expanded, return_tensors=return_tensors, padding=padding)
        enc["mm_token_type_ids"] = (enc["input_ids"] == self.image_token_id).int()
        return {**enc, **image_inputs}

    def save_pretrained(self, path: str) -> None:
        self.image_processor.save_pretrained(path)
        self.tokenizer.save_pretrained(path)

    @classmethod
    def from_pretrained(cls, path: str, **kw) -> "QwenVLProcessor":
        from transformers import AutoTokenizer, Qwen2VLImageProcessorPil

        return cls(Qwen2VLImageProcessorPil.from_pretrained(path, **kw), AutoTokenizer.from_pretrained(path, **kw))


def load_processor(path: str, **kw):
    """The real ``Qwen2_5_VLProcessor`` where it can be built (torchvision present), else :class:`QwenVLProcessor`."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(path, **kw)
        if hasattr(processor, "image_processor") and hasattr(processor, "tokenizer"):
            return processor
    except (ImportError, AttributeError, ValueError, TypeError):  # the video processor needs torchvision
        pass
    return QwenVLProcessor.from_pretrained(path, **kw)


class QwenVLAdapter(ModelAdapter):
    family = "qwen2.5-vl"
    lmms_eval_model = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)
    default_source = "Qwen/Qwen2.5-VL-7B-Instruct"
    provides = ModelAdapter.provides | {"vision_received", "vision_keys"}
    missing_reasons = {
        "cls_attn": "Qwen2.5-VL's vision tower has no CLS token (window attention and a 2x2 patch merger); a method "
        "ranking by CLS attention has no official Qwen2.5-VL variant here",
        "vision_features": "Qwen2.5-VL's merger joins 2x2 patch features into each visual token, so there is no one "
        "vision feature per token to merge or compare (its tower has no CLS token either)",
    }

    model_class = "Qwen2_5_VLForConditionalGeneration"
    pixel_ranges = ("lmms-eval", "checkpoint")
    image_pixels = "lmms-eval"  # so that a score can be set beside lmms-eval's; --image-pixels checkpoint: the card's

    def _load(self, path, device, torch_dtype, attn_implementation):
        from transformers import Qwen2_5_VLForConditionalGeneration

        kw = {"revision": self.revision} if self.revision else {}
        self.model = self._pretrained(Qwen2_5_VLForConditionalGeneration, path, dtype=torch_dtype,
                                      attn_implementation=attn_implementation, **kw).to(device)
        self.processor = load_processor(path, **kw)
        self.processor.tokenizer.padding_side = "left"  # the greedy loop's position ids assume left padding
        self.processor_ready()

    def processor_ready(self) -> None:
        """The processor resizes into :meth:`pixel_range` (the checkpoint's own range kept for ``checkpoint``)."""
        size = self.processor.image_processor.size
        if getattr(self, "_checkpoint_range", None) is None:
            self._checkpoint_range = (size["shortest_edge"], size["longest_edge"])
        size["shortest_edge"], size["longest_edge"] = self.pixel_range()

    def prompt(self, question: str) -> str:
        return TEMPLATE.format(question=question)

    def random_processor(self, config):
        from transformers import Qwen2VLImageProcessorPil

        from tokenbench.models.tiny import tiny_tokenizer

        lo, hi = self._checkpoint_pixels()
        vc = config.vision_config
        tok = tiny_tokenizer(SPECIALS, image_token="<|image_pad|>")
        config.image_token_id = tok.convert_tokens_to_ids("<|image_pad|>")
        config.vision_start_token_id = tok.convert_tokens_to_ids("<|vision_start|>")
        config.vision_end_token_id = tok.convert_tokens_to_ids("<|vision_end|>")
        config.video_token_id = tok.unk_token_id
        return QwenVLProcessor(Qwen2VLImageProcessorPil(min_pixels=lo, max_pixels=hi, patch_size=vc.patch_size,
                                                        merge_size=vc.spatial_merge_size,
                                                        temporal_patch_size=vc.temporal_patch_size), tok)

    # -- layout -----------------------------------------------------------------------------------------------------------
    def pixel_range(self) -> tuple[int, int]:
        """(min_pixels, max_pixels) an image is resized into: lmms-eval's (:data:`LMMS_EVAL_PIXELS`) or the
        checkpoint's, as ``image_pixels`` says."""
        return LMMS_EVAL_PIXELS if self.image_pixels == "lmms-eval" else self._checkpoint_pixels()

    def _checkpoint_pixels(self) -> tuple[int, int]:
        """(min_pixels, max_pixels) of the checkpoint's image processor: the loaded one's, else the checkpoint's (or
        the shipped copy's) preprocessor_config.json, else transformers' defaults."""
        if getattr(self, "_checkpoint_range", None) is not None:
            return self._checkpoint_range
        path = os.path.expanduser(self.prepare_source())
        for candidate in (os.path.join(path, "preprocessor_config.json"), self.shipped_file(path, ".preprocessor.json")):
            if os.path.isfile(candidate):
                with open(candidate) as fh:
                    cfg = json.load(fh)
                size = cfg.get("size") or {}
                return (cfg.get("min_pixels", size.get("shortest_edge", DEFAULT_PIXELS[0])),
                        cfg.get("max_pixels", size.get("longest_edge", DEFAULT_PIXELS[1])))
        return DEFAULT_PIXELS

    def _grid(self, size) -> tuple[int, int]:
        """The patch grid (rows, cols) of an image of ``size`` = (width, height), as the image processor resizes it."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        vc = self.config.vision_config
        width, height = size or self.typical_size
        lo, hi = self.pixel_range()
        h, w = smart_resize(height, width, factor=vc.patch_size * vc.spatial_merge_size, min_pixels=lo, max_pixels=hi)
        return h // vc.patch_size, w // vc.patch_size

    def layout(self, size=None) -> VisualLayout:
        rows, cols = self._grid(size)
        m = self.config.vision_config.spatial_merge_size
        gh, gw = rows // m, cols // m
        return VisualLayout(n_visual=gh * gw, grid=(gh, gw), crops=(Region("image", 0, gh, gw),), has_cls=False,
                            position_axes=3)

    def encode(self, samples):
        import torch

        layout = self._one_layout(samples)
        enc = self.processor(images=[as_pil(s.image) for s in samples], text=[self.chat(s.question) for s in samples],
                             return_tensors="pt", padding=True)
        names = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids")
        inputs = {k: enc[k].to(self.device) for k in names}
        inputs["pixel_values"] = inputs["pixel_values"].to(getattr(torch, self.dtype))
        ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
        batch = self._tokens(samples, ids, mask, ids == self.model.config.image_token_id, layout)
        batch.inputs = inputs
        return batch

    def position_ids(self, inputs, mask):
        """The 3-D M-RoPE ids (3, B, L), from the model's own ``get_rope_index`` (padding masked out). Token types are
        read off ``input_ids`` (1 on image tokens, as the processor marks them), so ids appended after the prompt
        (answer tokens) are text whatever the processor's ``mm_token_type_ids`` covered."""
        ids = inputs["input_ids"]
        pos, _ = self.model.model.get_rope_index(
            ids, mm_token_type_ids=(ids == self.model.config.image_token_id).int(),
            image_grid_thw=inputs["image_grid_thw"], attention_mask=mask,
        )
        return pos

    def pre_llm_signals(self, kinds):
        """``vision_received`` and ``vision_keys`` of the vision tower's last block, by hooks
        (:class:`~tokenbench.models.qwen_vision.QwenTowerSignals` says how they are computed and counted)."""
        wanted = set(kinds) & QwenTowerSignals.KINDS
        if not wanted:
            return contextlib.nullcontext({})
        return QwenTowerSignals(self.model.model.visual, wanted).installed()

    def vision_stage(self):
        """The vision tower holds its patch merger (the projector): one module opens and closes the stage."""
        return self.model.model.visual, self.model.model.visual

    def encoder_macs(self, size=None) -> dict[str, int]:
        """The vision tower (window attention, full attention in ``fullatt_block_indexes``) and the patch merger."""
        return qwen_vision_macs(QwenVisionDims.from_config(self.config.vision_config), *self._grid(size))


@register_model("qwen2.5-vl")
def qwen2_5_vl(source: str | None = None, revision: str | None = None) -> QwenVLAdapter:
    """Any Qwen2.5-VL checkpoint in HF format: ``--model qwen2.5-vl:<hub id or local directory>``."""
    return QwenVLAdapter(source, revision, name="qwen2.5-vl" if source is None else f"qwen2.5-vl:{source}")


qwen2_5_vl.model_types = QwenVLAdapter.model_types


@register_model("qwen2.5-vl-7b")
def qwen2_5_vl_7b(revision: str | None = None) -> QwenVLAdapter:
    return QwenVLAdapter("Qwen/Qwen2.5-VL-7B-Instruct", revision, name="qwen2.5-vl-7b")


@register_model("qwen2.5-vl-3b")
def qwen2_5_vl_3b(revision: str | None = None) -> QwenVLAdapter:
    return QwenVLAdapter("Qwen/Qwen2.5-VL-3B-Instruct", revision, name="qwen2.5-vl-3b")


# -- tokenbench-mini: trained on the synthetic task, shipped in the repo (models/mini/) -------------------------------
MINI_QWEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mini", "qwen2.5-vl")


class MiniQwenVLAdapter(QwenVLAdapter):
    #: trained on its own processor's range (the synthetic task's images unresized, 144 to 192 tokens); lmms-eval's
    #: would upscale them to at least 256 tokens, which it never saw. --image-pixels lmms-eval gives it anyway
    image_pixels = "checkpoint"


@register_model("mini-qwen2.5-vl")
def mini_qwen2_5_vl(revision: str | None = None) -> MiniQwenVLAdapter:
    """tokenbench-mini Qwen2.5-VL: Qwen2.5-VL's architecture (window-attention tower, 2 x 2 merging, M-RoPE, dynamic
    resolution) at toy width, trained from scratch on the synthetic task (``models/mini/README.md``)."""
    return MiniQwenVLAdapter(MINI_QWEN, revision, name="mini-qwen2.5-vl")


# -- the tiny variant -----------------------------------------------------------------------------------------------------
TINY_VERSION = "2"
SPECIALS = ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|im_start|>", "<|im_end|>")
TINY_PIXELS = (28 * 28 * 4, 28 * 28 * 144)  # at most 144 visual tokens (a 336 x 336 image), at least 4


class TinyQwenVLAdapter(TinyVariant, QwenVLAdapter):
    #: a toy for small test images: its own processor's range by default (lmms-eval's would upscale every test image
    #: to at least 448 x 448); --image-pixels lmms-eval gives lmms-eval's, as on the real checkpoints
    image_pixels = "checkpoint"

    def __init__(self, seed: int = 0, directory: str | None = None) -> None:
        super().__init__("tiny-qwen2.5-vl", f"tiny-qwen2.5-vl-v{TINY_VERSION}", build_tiny_qwen, seed, directory)


@register_model("tiny-qwen2.5-vl")
def tiny_qwen2_5_vl(seed: int = 0, directory: str | None = None) -> TinyQwenVLAdapter:
    """A random-weight Qwen2.5-VL at toy size (see the module docstring); built once into the cache directory."""
    return TinyQwenVLAdapter(seed=seed, directory=directory)


def build_tiny_qwen(path: str, seed: int = 0) -> None:
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    from tokenbench.models.tiny import save_atomically, tiny_tokenizer

    tok = tiny_tokenizer(SPECIALS, image_token="<|image_pad|>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIALS}
    image_processor = Qwen2VLImageProcessorPil(min_pixels=TINY_PIXELS[0], max_pixels=TINY_PIXELS[1], patch_size=14,
                                               merge_size=2, temporal_patch_size=2)
    processor = QwenVLProcessor(image_processor, tok)
    config = Qwen2_5_VLConfig(
        vision_config={"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4, "out_hidden_size": 128,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
                       "fullatt_block_indexes": [1]},
        text_config={"hidden_size": 128, "intermediate_size": 352, "num_hidden_layers": 4, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "vocab_size": len(tok), "max_position_embeddings": 2048,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]},
                     "pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id,
                     "eos_token_id": tok.eos_token_id, "tie_word_embeddings": False},
        image_token_id=ids["<|image_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], video_token_id=tok.unk_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
        with torch.no_grad():  # transformers initialises biases to zero; the real model's q/k/v biases are not
            for layer in model.model.language_model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0.0, 0.2)
    save_atomically(path, model, processor, tok)
