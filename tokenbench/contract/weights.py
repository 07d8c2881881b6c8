"""Read access to a model's decoder weights for a method's ``prepare`` (:class:`ModelWeights`, built by the adapter),
and the fingerprint a calibration artefact is keyed by (:func:`fingerprint`). No torch at import."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokenbench.errors import PluginValidationError

if TYPE_CHECKING:  # pragma: no cover
    import torch


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
        """What a calibration artefact is keyed by (:func:`fingerprint`), computed once."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self)
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


def fingerprint(weights: ModelWeights) -> dict[str, str]:
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
    import hashlib
    import json

    import numpy as np
    import torch

    cfg = weights.text_config.to_dict()
    arch = {k: v for k, v in sorted(cfg.items()) if not k.startswith("_") and k not in _NOT_ARCHITECTURE}
    config_hash = hashlib.sha256(json.dumps(arch, sort_keys=True, default=str).encode()).hexdigest()[:16]
    h = hashlib.sha256(b"tokenbench weights_hash: sign bits/1\n")
    for layer in sorted({0, weights.n_layers - 1}):
        for name in ("q_proj", "k_proj"):
            w = weights.layer_weight(layer, name)
            h.update(f"{layer}.{name} {tuple(w.shape)}\n".encode())
            h.update(np.packbits(torch.signbit(w).cpu().numpy().reshape(-1)).tobytes())
    return {"model_id": weights.model_id, "revision": weights.revision or "", "config_hash": config_hash,
            "weights_hash": h.hexdigest()[:16]}
