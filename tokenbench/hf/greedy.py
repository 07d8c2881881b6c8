"""The greedy loop every HF adapter runs: a prefill with the explicit position ids HF's ``generate`` would use
(``cumsum(attention_mask) - 1``, so a left-padded batch gives the same answers as one sample at a time), with an
optional :class:`~tokenbench.engine.router.Router` executing a method's plan, then one token at a time with the KV
cache. Timing goes through a clock (:class:`tokenbench.measure.timing.Clock`): its marks at the start, around the
vision stage (hooks on :meth:`~tokenbench.hf.adapter.ModelAdapter.vision_stage`), at the first token and at the end.
No torch at import."""

from __future__ import annotations

import contextlib

from tokenbench.contract.model import Batch, Generation


def generate(adapter, batch: Batch, max_new_tokens: int, router=None, ignore_eos: bool = False,
             clock=None) -> Generation:
    """Greedy decoding of ``batch`` on ``adapter`` (what :meth:`ModelAdapter.generate` documents)."""
    marks: dict = {}
    if clock is None:
        return _generate(adapter, batch, max_new_tokens, router, ignore_eos, None, marks)
    with vision_marks(adapter, clock, marks):
        return _generate(adapter, batch, max_new_tokens, router, ignore_eos, clock, marks)


@contextlib.contextmanager
def vision_marks(adapter, clock, marks: dict):
    """Mark ``vision_start`` when the vision stage opens and ``vision_end`` when it closes, for the ``with`` block."""
    first, last = adapter.vision_stage()

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


def _generate(adapter, batch, max_new_tokens, router, ignore_eos, clock, marks) -> Generation:
    import torch

    if clock is not None:
        marks["start"] = clock.mark()
    inputs, mask, pos = adapter._prompt_inputs(batch)
    cache = adapter.new_cache()
    eos = eos_ids(adapter)
    if router is not None:
        router.start(batch.tokens)
    with torch.inference_mode():
        out = adapter.model(**inputs, position_ids=pos, use_cache=True, logits_to_keep=1,
                            **{adapter._cache_kw: cache})
        cache.logical_length += mask.shape[1]
        first = out.logits[:, -1].float()
        kv_bytes = cache.nbytes()
        if router is not None and router.record.position_ids is not None:
            pos = router.record.position_ids  # a pre-LLM selection renumbered the prompt: continue from there
        nxt = first.argmax(-1)
        if clock is not None:
            marks["first_token"] = clock.mark()
        steps, logits = _decode(adapter, first, nxt, mask, pos, cache, eos, max_new_tokens, ignore_eos)
        if clock is not None:
            marks["end"] = clock.mark()
    pad = adapter.processor.tokenizer.pad_token_id
    ids = [[t for t in row if t != pad] for row in torch.stack(steps, dim=1).tolist()]
    texts = adapter.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
    return Generation(texts=[t.strip() for t in texts], token_ids=ids, first_logits=first.cpu(),
                      kv_cache_bytes=kv_bytes, step_logits=[x.cpu() for x in logits[: len(steps)]],
                      marks=marks or None, n_steps=len(logits))


def _decode(adapter, first, nxt, mask, pos, cache, eos, max_new_tokens: int, ignore_eos: bool):
    """The decode steps after the prefill, from its logits ``first`` and their choice ``nxt``: (the token chosen at
    each step, padding once a sample ended; the logits behind each forward, the prefill's first)."""
    import torch

    pad = adapter.processor.tokenizer.pad_token_id
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
        out = adapter.model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos, use_cache=True,
                            **{adapter._cache_kw: cache})
        cache.logical_length += 1
        logits.append(out.logits[:, -1].float())
        nxt = logits[-1].argmax(-1)
    return steps, logits


def eos_ids(adapter):
    """The end-of-sequence token ids (the generation config's, else the tokenizer's), on the model's device."""
    import torch

    ids = adapter.model.generation_config.eos_token_id
    if ids is None:
        ids = adapter.processor.tokenizer.eos_token_id
    ids = ids if isinstance(ids, (list, tuple)) else [ids]
    return torch.tensor(ids, device=adapter.device)
