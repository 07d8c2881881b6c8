"""What every tiny random-weight variant shares: an offline byte-level tokenizer, an atomic save, and a source built
once into the cache directory (:class:`TinyVariant`).

Tiny variants are real architectures at toy size, built from a config with random weights and saved with
``save_pretrained`` so that they load through ``from_pretrained`` like any checkpoint.
"""

from __future__ import annotations

import os
from typing import Callable


def tiny_tokenizer(specials: tuple[str, ...] = ("<image>",), image_token: str = "<image>"):
    """A byte-level tokenizer (256 byte symbols plus specials, no merges) built offline: any text round-trips.
    ``specials`` (the model's image and chat markers) are single tokens; ``image_token`` is the image placeholder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    base = ["<pad>", "<unk>", "<s>", "</s>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate(base + list(specials) + alphabet)}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        extra_special_tokens={"image_token": image_token}, padding_side="left",
    )
    tok.add_special_tokens({"additional_special_tokens": list(specials)})
    return tok


def cached_build(directory: str | None, stem: str, seed: int, build) -> str:
    """The directory of a tiny model: ``directory`` or ``$TOKENBENCH_CACHE/models/<stem>-seed<seed>``, built there by
    ``build(path, seed=seed)`` on first use."""
    from tokenbench.hf.checkpoint import check_directory
    from tokenbench.errors import ConfigError
    from tokenbench.paths import cache_dir

    path = directory or os.path.join(cache_dir(), "models", f"{stem}-seed{seed}")
    if os.path.isfile(os.path.join(path, "model.safetensors")):
        try:
            check_directory(path, "", ())
            return path
        except ConfigError:
            if directory is not None:  # the user's directory: say what is wrong, touch nothing
                raise
            # our own cache entry is damaged (a truncated copy, a full disk): build it again below
    try:
        build(path, seed=seed)
    except OSError as exc:
        raise ConfigError(f"cannot build the tiny model in {path!r} ({exc.strerror or exc}); set TOKENBENCH_CACHE "
                          "to a writable directory (or free some space)") from None
    return path


def save_atomically(path: str, model, processor, tokenizer) -> None:
    """Save ``model`` and ``processor`` to ``path`` through a temporary sibling directory and a rename, so a concurrent
    or interrupted build never leaves a half-written model behind."""
    import shutil
    import tempfile

    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tiny-", dir=parent)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)


class TinyVariant:
    """Mixed in before a family's adapter class (``class TinyX(TinyVariant, XAdapter)``): the adapter's source is a
    directory built once by ``build(path, seed=seed)`` into ``directory`` or the cache (:func:`cached_build`), under
    ``stem``."""

    def __init__(self, name: str, stem: str, build: Callable[..., None], seed: int = 0,
                 directory: str | None = None) -> None:
        super().__init__(source=None, name=name)
        self.cache_stem, self.builder = stem, build
        self.seed, self.directory = seed, directory

    def prepare_source(self) -> str:
        self.source = cached_build(self.directory, self.cache_stem, self.seed, self.builder)
        return self.source
