"""The mini models' tokenizer: one token per word or punctuation mark of the synthetic task and the chat template.

Word-level keeps a packed training sequence short (a question is about 10 tokens, not 50 bytes). Built offline with
``tokenizers`` from a fixed vocabulary; any other word becomes ``<unk>``. A ``<s>`` is prepended, as Llama's does.
"""

from __future__ import annotations

SPECIALS = ("<pad>", "<unk>", "<s>", "</s>", "<image>")


def task_words(template: str = "USER: ASSISTANT:") -> list[str]:
    """Every word and mark of a one-turn template (LLaVA's by default) and of every synthetic question and answer,
    sorted."""
    from tokenbench.tasks.synthetic import COLORS, SHAPES

    text = [f"{template} yes no", " ".join(str(i) for i in range(21))]
    for colour in COLORS:
        text += [f"Answer with one word. Which shape is {colour}?", f"Answer with a number. How many shapes are {colour}?"]
        text += [f"Answer yes or no. Is there a {colour} {shape}?" for shape in SHAPES]
    text += [f"Answer with one word. What is the color of the {shape}?" for shape in SHAPES]
    words: set[str] = set()
    for line in text:
        words |= set(line.replace("?", " ? ").replace(".", " . ").replace(":", " : ").split())
    return sorted(words)


def word_tokenizer(specials: tuple[str, ...] = SPECIALS, image_token: str = "<image>",
                   template: str = "USER: ASSISTANT:"):
    """A ``PreTrainedTokenizerFast`` over ``specials`` (the first four are pad, unk, bos, eos) and
    :func:`task_words` of ``template`` (left padding, ``<s>`` prepended); the defaults are mini-llava's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(specials + tuple(task_words(template)))}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 2)])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        extra_special_tokens={"image_token": image_token}, padding_side="left",
    )
    tok.add_special_tokens({"additional_special_tokens": list(specials[4:])})
    return tok
