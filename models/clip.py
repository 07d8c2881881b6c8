"""The CLIP vision tower of the LLaVA families: its compute count and the pre-LLM signals read from it.

* FLOPs: :class:`VisionDims` and :func:`clip_vision_macs` (a CLIP ViT on one or more images, built on the generic
  :func:`tokenbench.measure.flops.vit_layer_macs`), with :mod:`tokenbench.measure.flops`'s conventions (MACs, full
  attention rectangles, elementwise work not counted).
* Signals: the kinds only a tower with a CLS token gives (``cls_attn``, ``vision_features``) are declared here, and
  :class:`ClipLayerSignals` computes them, and ``vision_keys``, by hooks on the CLIP layer that feeds the projector.

No torch at import.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable

from tokenbench.api import declare_signal
from tokenbench.measure.flops import check_count, mlp_projector_macs, sub_config, vit_layer_macs

declare_signal(
    "cls_attn",
    "attention of the vision tower's CLS query to the patch tokens at the layer that feeds the projector (VisionZip's "
    "and FasterVLM's signal), per head: (B, vision_heads, N); only towers with a CLS token. A tower run once per crop "
    "(LLaVA-NeXT) gives each visual token its own crop's CLS row, in the LLM's numbering",
)
declare_signal(
    "vision_features",
    "the vision features the projector maps into the LLM, one per visual token: (B, N, Dv); with a CLS token, the CLS "
    "rows first, one per tower pass (LLaVA-1.5: (B, 1 + N, Dv); LLaVA-NeXT, one pass per crop: (B, passes + N, Dv)), "
    "so the visual tokens are always the last N rows. Return merged features in Selection.features",
)


# -- FLOPs -------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VisionDims:
    """Shape of a CLIP-style ViT: patch-embedding conv, ``n_layers`` pre-norm layers with full MHA and a
    two-matrix GELU MLP of width ``intermediate``. ``has_cls``: a class token is prepended."""

    hidden: int
    n_layers: int
    intermediate: int
    patch_size: int
    image_size: int
    channels: int = 3
    has_cls: bool = True

    def __post_init__(self) -> None:
        for name in ("hidden", "n_layers", "intermediate", "patch_size", "image_size", "channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"VisionDims.{name} must be a positive int, got {value!r}")

    @classmethod
    def from_config(cls, vision_config: Any) -> VisionDims:
        """Read a ``CLIPVisionConfig`` (or a composite VLM config holding ``vision_config``), duck-typed."""
        c = sub_config(vision_config, "vision_config")
        return cls(
            hidden=c.hidden_size,
            n_layers=c.num_hidden_layers,
            intermediate=c.intermediate_size,
            patch_size=c.patch_size,
            image_size=c.image_size,
            channels=getattr(c, "num_channels", 3),
        )

    @property
    def n_patches(self) -> int:
        """(image_size // patch_size)^2: 576 for ViT-L/14 at 336 px."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def n_tokens(self) -> int:
        """Tokens inside the tower: patches plus the class token (577 for ViT-L/14-336)."""
        return self.n_patches + int(self.has_cls)


def clip_vision_macs(v: VisionDims, n_images: int = 1) -> int:
    """A full CLIP vision tower on ``n_images`` images: patch-embedding conv plus **all** ``v.n_layers``
    layers on ``v.n_tokens`` tokens (patches + CLS) each::

        n_images * [ n_patches * (C * p * p) * dv  +  n_layers * vit_layer_macs(v, n_tokens) ]

    LLaVA in transformers 5.x computes every layer even though it reads ``hidden_states[-2]``. For a tower
    that really stops early, pass ``dataclasses.replace(v, n_layers=...)``. Post-layernorm and the
    pooled head are not counted (elementwise / unused).
    """
    check_count("n_images", n_images)
    patch = v.n_patches * v.channels * v.patch_size * v.patch_size * v.hidden
    layers = v.n_layers * vit_layer_macs(v, v.n_tokens)
    return n_images * (patch + layers)


def llava_encoder_macs(config, n_images: int = 1) -> dict[str, int]:
    """The CLIP tower on ``n_images`` images (all layers, CLS included) and LLaVA's 2-layer MLP projector on every
    image's patch tokens: ``{"vision": ..., "projector": ...}``."""
    vision = VisionDims.from_config(config.vision_config)
    dims = (config.vision_config.hidden_size, config.text_config.hidden_size, config.text_config.hidden_size)
    return {"vision": clip_vision_macs(vision, n_images),
            "projector": mlp_projector_macs(dims, n_images * vision.n_patches)}


# -- signals -----------------------------------------------------------------------------------------------------------
class ClipLayerSignals:
    """Signals of one CLIP layer (the one whose output feeds the projector), recomputed from that layer's input by
    hooks, with their cost: ``cls_attn`` (the CLS query's attention row to the patches), ``vision_keys`` (the patches'
    keys per head), ``vision_features`` (the layer's output, CLS first: what the projector reads) and ``project`` (the
    projector, for merged features).

    ``token_map(captured, runs)`` says where each visual token's row comes from when the tower ran ``runs`` passes
    (``None``: one pass per image whose patches are its visual tokens in order); ``extra_hooks(captured)`` installs
    what it needs to know (LLaVA-NeXT records each image's size)."""

    KINDS = frozenset({"cls_attn", "vision_keys", "vision_features"})

    def __init__(self, layer, wanted: set[str], project: Callable, token_map: Callable,
                 extra_hooks: Callable[[dict], list]) -> None:
        self.layer, self.attn, self.wanted = layer, layer.self_attn, wanted
        self.project, self.token_map, self.extra_hooks = project, token_map, extra_hooks
        self.captured: dict = {}

    @contextlib.contextmanager
    def installed(self):
        """The hooks for the ``with`` block; yields ``{kind: getter}`` (each getter: ``(tensor, macs)``)."""
        handles = [self.layer.register_forward_pre_hook(self.before, with_kwargs=True),
                   self.layer.register_forward_hook(self.after, with_kwargs=True), *self.extra_hooks(self.captured)]
        try:
            yield {"cls_attn": self.cls_attn, "vision_keys": self.keys_once, "vision_features": self.features,
                   "project": self.project}
        finally:
            for h in handles:
                h.remove()

    # -- hooks ---------------------------------------------------------------------------------------------------------
    def before(self, module, args, kwargs) -> None:
        if not self.wanted & {"cls_attn", "vision_keys"}:
            return
        attn = self.attn
        x = module.layer_norm1(args[0] if args else kwargs["hidden_states"])
        b, n, d = x.shape
        k = attn.k_proj(x).view(b, n, -1, attn.head_dim).transpose(1, 2)  # (B, heads, 1 + N, hd)
        self.captured["keys"] = (k[:, :, 1:], n * d * d)
        if "cls_attn" in self.wanted:
            self.captured["cls"] = (self.cls_probs(x, k), d * d + n * d)  # CLS query -> patch keys, (B, heads, N)

    def cls_probs(self, x, k):
        """The CLS query's softmax row over the layer's keys, the CLS key left out: (B, heads, N)."""
        import torch

        attn, b = self.attn, x.shape[0]
        # one sample at a time: a (B, 1, d) projection and a (B, h, 1, hd) matmul round differently
        # from B = 1 on CPU, so a batch would rank near-equal CLS rows differently (VisPruner)
        q = torch.cat([attn.q_proj(x[i:i + 1, :1]) for i in range(b)]).view(b, 1, -1, attn.head_dim)
        q = q.transpose(1, 2)
        probs = torch.cat([torch.matmul(q[i:i + 1].float(), k[i:i + 1].float().transpose(-1, -2))
                           for i in range(b)]).mul(attn.scale).softmax(dim=-1)
        return probs[:, :, 0, 1:]

    def after(self, module, args, kwargs, output) -> None:
        self.captured["features"] = output[0] if isinstance(output, tuple) else output  # (B, 1 + N, Dv), CLS first

    # -- getters -------------------------------------------------------------------------------------------------------
    def keys_once(self):
        """The keys; their projection is counted once, whichever signal reads it first."""
        value, macs = self.captured["keys"]
        self.captured["keys"] = (value, 0)
        return self.mapped(value, macs)

    def cls_attn(self):
        value, macs = self.mapped(*self.captured["cls"])
        _, k_macs = self.keys_once()
        return value, macs + k_macs

    def features(self):
        return self.mapped(self.captured["features"], 0, features=True)

    def mapped(self, value, macs: int, features: bool = False):
        """A pass-by-pass signal on the visual tokens, and its MACs for one image (all of its passes)."""
        import torch

        runs = value.shape[0]
        src = self.token_map(self.captured, runs)  # (B, N) or None: one pass per image, patches in order
        if src is None:
            return value, macs
        b = src.shape[0]
        per = value.view(b, runs // b, *value.shape[1:])
        if features:  # (B, passes, 1 + P, Dv): every pass's CLS row first, then the patches
            patches = per[:, :, 1:].flatten(1, 2)
            rows = patches.gather(1, src[..., None].expand(-1, -1, patches.shape[-1]).to(patches.device))
            return torch.cat([per[:, :, 0], rows], dim=1), macs * (runs // b)
        grid = per.movedim(1, 2).flatten(2, 3)  # (B, heads, passes * P, ...)
        index = src.to(grid.device).view(b, 1, -1, *([1] * (grid.dim() - 3))).expand(
            -1, grid.shape[1], -1, *grid.shape[3:])
        return grid.gather(2, index), macs * (runs // b)
