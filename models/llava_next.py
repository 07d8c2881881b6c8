"""LLaVA-NeXT (LLaVA-1.6) on transformers' ``LlavaNextForConditionalGeneration``.

Registered names: ``llava-next`` (any checkpoint: ``--model llava-next:<hub id or directory>``), ``llava-next-7b``
(default hub id ``llava-hf/llava-v1.6-vicuna-7b-hf``), ``llava-next-13b``, ``llava-next-mistral-7b``, and
``tiny-llava-next``: the same architecture at toy size (CLIP 112/14, so an 8 x 8 grid per crop, the real grid
pinpoints scaled by 1/3, the tiny-llava Llama), random weights, saved and reloaded through ``from_pretrained``.

Layout (AnyRes). The image is resized to the best of the ``image_grid_pinpoints`` resolutions and cut into crops;
the tower also sees the whole image at the base size. In the LLM sequence the image span holds, in order:

* the **base** image, g x g tokens (24 x 24 on the 7B);
* the **high-resolution grid**: the crops' tokens laid out as one (ny*g) x (nx*g) grid, with the rows or columns that
  are only padding removed (*unpadding*), read row by row, each row followed by one **newline** token.

Visual tokens are numbered in sequence order, skipping newlines; ``VisualLayout.crops`` gives the ``base`` region
and each ``crop r,c`` as it survives unpadding (rows of the merged grid are ``stride`` apart).

Decisions (documented in the README):

* **Newline tokens are not visual.** They are one learned embedding repeated at the end of each row and carry no
  image content, so they are never candidates: always kept, counted as non-visual tokens in budgets and FLOPs
  (``VisualLayout.n_structural``). Dropping them would break the row structure the LLM was trained to read.
* **The budget is global** over all of an image's visual tokens (base and crops together): ``--keep 320`` keeps 320
  of them, whichever crops they sit in. ``--budget-scope crop`` splits it over the regions instead, in proportion to
  their tokens (per-crop selection, as in VScan's per-sub-image pruning).
* **Vision-tower signals per crop, in the LLM's numbering.** The CLIP tower runs once per crop (the base image, then
  the ny x nx grid crops, row by row). ``cls_attn``, ``vision_keys`` and ``vision_features`` are computed on every
  pass at ``vision_feature_layer`` by LLaVA-1.5's hooks (each crop's own CLS query, softmax over that crop's tokens)
  and mapped onto the visual tokens: the base image's patches first, then each crop's patches at the place where
  the LLM reads them after unpadding; patches that unpadding removes appear nowhere (:meth:`_token_map`).
  ``vision_features`` is (B, passes + N, Dv): the passes' CLS rows first (base, then the crops row by row, every
  crop the tower saw), then the N visual tokens' rows. Their cost is counted for every pass.
"""

from __future__ import annotations

import os

from tokenbench.api import Region, VisualLayout, register_model
from tokenbench.models.clip import llava_encoder_macs
from tokenbench.models.llava import SIZES, LlavaAdapter
from tokenbench.models.tiny import TinyVariant


class LlavaNextAdapter(LlavaAdapter):
    family = "llava-next"
    lmms_eval_model = "llava_hf"
    model_types = ("llava_next",)
    default_source = "llava-hf/llava-v1.6-vicuna-7b-hf"
    model_class = "LlavaNextForConditionalGeneration"
    input_names = ("input_ids", "attention_mask", "pixel_values", "image_sizes")

    def __init__(self, source=None, revision=None, name=None, template=None):
        super().__init__(source, revision, name)
        if template:  # a Mistral checkpoint: its prompt without a chat template and LLaVA's mistral_instruct
            self.template = self.conversation = template

    def random_processor(self, config):
        from tokenbench.models.tiny import tiny_tokenizer

        tok = tiny_tokenizer()
        config.image_token_id = tok.convert_tokens_to_ids("<image>")
        vc = config.vision_config
        return llava_next_processor(tok, vc.image_size, vc.patch_size, config.image_grid_pinpoints)

    def _geometry(self, size):
        """(g, ny, nx, rows, cols) of an image of ``size`` (:func:`anyres_geometry`) on this checkpoint."""
        cfg = self.config
        vc = cfg.vision_config
        if cfg.vision_feature_select_strategy != "default":
            raise NotImplementedError("only the 'default' vision feature strategy (CLS dropped) is supported")
        return anyres_geometry(vc.image_size, vc.patch_size, cfg.image_grid_pinpoints, size or self.typical_size)

    def layout(self, size=None) -> VisualLayout:
        g, ny, nx, (r0, r1), (c0, c1) = self._geometry(size)
        width = c1 - c0
        regions = [Region("base", 0, g, g)]
        for i in range(ny):
            for j in range(nx):
                top, bottom = max(i * g, r0) - r0, min((i + 1) * g, r1) - r0
                left, right = max(j * g, c0) - c0, min((j + 1) * g, c1) - c0
                if bottom > top and right > left:
                    regions.append(Region(f"crop {i},{j}", g * g + top * width + left, bottom - top, right - left,
                                          stride=width))
        return VisualLayout(n_visual=g * g + (r1 - r0) * width, crops=tuple(regions), n_structural=r1 - r0)

    def _signal_hooks(self, captured):
        """Record each image's (height, width) as the model receives it (``image_sizes``), for :meth:`_token_map`."""
        def sizes(module, args, kwargs):
            if kwargs.get("image_sizes") is not None:
                captured["sizes"] = kwargs["image_sizes"]

        return [self.model.model.register_forward_pre_hook(sizes, with_kwargs=True)]

    def _token_map(self, captured, runs):
        """(B, N): for each visual token, its row among the image's passes' patches laid end to end (base first,
        then crop (i, j) as pass 1 + i * nx + j, g * g patches each). Merged-grid row y, column x comes from crop
        (y // g, x // g), patch (y % g, x % g); only the rows and columns unpadding keeps are visual tokens."""
        import torch

        rows = []
        for height, width in captured["sizes"].tolist():
            g, ny, nx, (r0, r1), (c0, c1) = self._geometry((width, height))
            y, x = torch.meshgrid(torch.arange(r0, r1), torch.arange(c0, c1), indexing="ij")
            grid = (1 + (y // g) * nx + x // g) * g * g + (y % g) * g + x % g
            rows.append(torch.cat([torch.arange(g * g), grid.flatten()]))
        if runs != len(rows) * (1 + ny * nx):
            raise ValueError(f"the vision tower ran {runs} passes for {len(rows)} images of {1 + ny * nx} crops each")
        return torch.stack(rows)

    def _visual_mask(self, ids, layout):
        """Image tokens minus the newline that ends each row of the high-resolution grid."""
        import torch

        image = ids == self.config.image_token_id
        base = layout.crops[0].size
        width = (layout.n_visual - base) // layout.n_structural
        span = torch.ones(layout.n_visual + layout.n_structural, dtype=torch.bool, device=ids.device)
        span[base + width :: width + 1] = False  # the newline after each row
        visual = image.clone()
        visual[image] = span.repeat(ids.shape[0])
        return visual

    def encoder_macs(self, size=None) -> dict[str, int]:
        """The CLIP tower on the base image and every crop (all layers, CLS included), and the projector on every
        crop's patch tokens (it runs before unpadding, so on the padding too)."""
        _, ny, nx, _, _ = self._geometry(size)
        return llava_encoder_macs(self.config, 1 + ny * nx)


def anyres_geometry(image_size: int, patch_size: int, pinpoints, size) -> tuple:
    """(g, ny, nx, rows, cols) of an image of ``size`` (width, height): crop grid side g, crops ny x nx, and the kept
    (start, stop) rows and columns of the (ny*g) x (nx*g) high-resolution grid after unpadding, as transformers'
    ``select_best_resolution`` and ``unpad_image`` compute them."""
    from transformers.image_processing_utils import select_best_resolution

    width, height = size
    g = image_size // patch_size
    best_h, best_w = select_best_resolution((height, width), [list(p) for p in pinpoints])
    ny, nx = best_h // image_size, best_w // image_size
    grid_h, grid_w = ny * g, nx * g
    rows, cols = (0, grid_h), (0, grid_w)
    if width / height > grid_w / grid_h:
        pad = (grid_h - int(round(height * (grid_w / width), 7))) // 2
        rows = (pad, grid_h - pad)
    else:
        pad = (grid_w - int(round(width * (grid_h / height), 7))) // 2
        cols = (pad, grid_w - pad)
    return g, ny, nx, rows, cols


MISTRAL = "[INST] <image>\n{question} [/INST]"  # LLaVA's conv_mistral_instruct (LLAMA_2 style, no system prompt)


@register_model("llava-next")
def llava_next(source: str | None = None, revision: str | None = None) -> LlavaNextAdapter:
    """Any LLaVA-NeXT checkpoint in HF format (vicuna prompt; use llava-next-mistral-7b for the Mistral one)."""
    return LlavaNextAdapter(source, revision, name="llava-next" if source is None else f"llava-next:{source}")


llava_next.model_types = LlavaNextAdapter.model_types


@register_model("llava-next-7b")
def llava_next_7b(revision: str | None = None) -> LlavaNextAdapter:
    return LlavaNextAdapter("llava-hf/llava-v1.6-vicuna-7b-hf", revision, name="llava-next-7b")


@register_model("llava-next-13b")
def llava_next_13b(revision: str | None = None) -> LlavaNextAdapter:
    return LlavaNextAdapter("llava-hf/llava-v1.6-vicuna-13b-hf", revision, name="llava-next-13b")


@register_model("llava-next-mistral-7b")
def llava_next_mistral_7b(revision: str | None = None) -> LlavaNextAdapter:
    return LlavaNextAdapter("llava-hf/llava-v1.6-mistral-7b-hf", revision, name="llava-next-mistral-7b",
                            template=MISTRAL)


# -- tokenbench-mini: trained on the synthetic task, shipped in the repo (models/mini/) -------------------------------
MINI_LLAVA_NEXT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mini", "llava-next")


@register_model("mini-llava-next")
def mini_llava_next(revision: str | None = None) -> LlavaNextAdapter:
    """tokenbench-mini LLaVA-NeXT: LLaVA-NeXT's AnyRes architecture (base image plus crops, newline tokens, unpadding)
    at toy width, trained from scratch on the synthetic task's mixed aspects (``models/mini/README.md``)."""
    return LlavaNextAdapter(MINI_LLAVA_NEXT, revision, name="mini-llava-next")


# -- the tiny variant -----------------------------------------------------------------------------------------------------
TINY_VERSION = "1"
TINY_IMAGE = 112  # CLIP input side: an 8 x 8 grid per crop keeps the test sequences short
TINY_PINPOINTS = [[112, 224], [224, 112], [224, 224], [336, 112], [112, 336]]  # the 7B's pinpoints / 3


class TinyLlavaNextAdapter(TinyVariant, LlavaNextAdapter):
    def __init__(self, seed: int = 0, directory: str | None = None) -> None:
        super().__init__("tiny-llava-next", f"tiny-llava-next-v{TINY_VERSION}", build_tiny_llava_next, seed, directory)


@register_model("tiny-llava-next")
def tiny_llava_next(seed: int = 0, directory: str | None = None) -> TinyLlavaNextAdapter:
    """A random-weight LLaVA-NeXT at toy size (see the module docstring); built once into the cache directory."""
    return TinyLlavaNextAdapter(seed=seed, directory=directory)


def build_tiny_llava_next(path: str, seed: int = 0) -> None:
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

    from tokenbench.models.tiny import save_atomically, tiny_tokenizer

    (vh, vl, vheads, vffn), (h, layers, heads, kv, ffn) = SIZES["tiny"]
    tok = tiny_tokenizer()
    processor = llava_next_processor(tok, TINY_IMAGE, 14, TINY_PINPOINTS)
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(hidden_size=vh, intermediate_size=vffn, num_hidden_layers=vl,
                                       num_attention_heads=vheads, image_size=TINY_IMAGE, patch_size=14,
                                       projection_dim=64),
        text_config=LlamaConfig(hidden_size=h, intermediate_size=ffn, num_hidden_layers=layers,
                                num_attention_heads=heads, num_key_value_heads=kv, vocab_size=len(tok),
                                max_position_embeddings=2048, pad_token_id=tok.pad_token_id,
                                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                tie_word_embeddings=False),
        image_token_id=tok.convert_tokens_to_ids("<image>"), image_grid_pinpoints=TINY_PINPOINTS,
        vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaNextForConditionalGeneration(config)
    save_atomically(path, model, processor, tok)


def llava_next_processor(tokenizer, image_size: int, patch_size: int, pinpoints):
    """LLaVA-NeXT's processor: AnyRes preprocessing over ``pinpoints``, ``<image>`` expanded to the base grid plus the
    unpadded crop grid with its newlines."""
    from transformers import LlavaNextImageProcessorPil, LlavaNextProcessor

    image_processor = LlavaNextImageProcessorPil(size={"shortest_edge": image_size},
                                                 crop_size={"height": image_size, "width": image_size},
                                                 image_grid_pinpoints=pinpoints)
    return LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
                              vision_feature_select_strategy="default", num_additional_image_tokens=1,
                              image_token="<image>")
