"""An adapter's architecture at its config's size with random weights, made directly on the device (for timing:
speed needs no trained weights, and nothing is downloaded). No torch at import."""

from __future__ import annotations

from tokenbench.errors import ConfigError


def build_random(adapter, device: str, dtype: str, attn_implementation: str, layers: int | None, seed: int):
    """Build ``adapter``'s model from its config (:meth:`~tokenbench.hf.adapter.ModelAdapter.build_random` says what
    is built) and return the adapter, loaded."""
    import copy

    import torch
    import transformers
    from transformers.initialization import no_init_weights

    from tokenbench.hf.loading import check_target, loaded

    check_target(device, dtype)
    config = copy.deepcopy(adapter.load_config().config)
    text = config.get_text_config()
    adapter.config_layers = text.num_hidden_layers  # before any truncation
    if layers is not None:
        truncate(text, layers, adapter.name)
    adapter.processor = adapter.random_processor(config)
    adapter.processor_ready()
    ids = len(adapter.processor.tokenizer)
    if ids > text.vocab_size:  # a toy config (mini-llava) with fewer ids than the offline tokenizer emits
        text.vocab_size = ids
    with torch.device(device), no_init_weights():
        model = getattr(transformers, adapter.model_class)._from_config(
            config, dtype=getattr(torch, dtype), attn_implementation=attn_implementation)
    initialise(model, std=getattr(text, "initializer_range", 0.02),
               generator=torch.Generator(device=device).manual_seed(seed))
    adapter.model = model
    adapter._config = config
    adapter.source = f"random weights from the {adapter.name} config"
    return loaded(adapter, device, dtype, attn_implementation)


def truncate(text_config, layers: int, name: str) -> None:
    """Keep the first ``layers`` LLM decoder layers of ``text_config`` (a truncated model for CPUs)."""
    if not 1 <= layers <= text_config.num_hidden_layers:
        raise ConfigError(f"--layers {layers} is out of range: {name} has {text_config.num_hidden_layers} LLM "
                          f"layers; use 1..{text_config.num_hidden_layers}")
    text_config.num_hidden_layers = layers
    if getattr(text_config, "layer_types", None):
        text_config.layer_types = text_config.layer_types[:layers]


def initialise(model, std: float, generator) -> None:
    """Weights: normal(0, ``std``) for matrices and embeddings, ones for norm scales, zeros for biases."""
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif param.dim() == 1 and "norm" in name:
                param.fill_(1.0)
            else:
                param.normal_(0.0, std, generator=generator)
