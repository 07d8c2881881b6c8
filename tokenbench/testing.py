"""Helpers for testing methods and adapters, public so that plugin authors run the same contract as the core.

The key tool is :func:`mask_reference`: an implementation of "layer l processes only these visual tokens" that
shares nothing with the router: every layer runs on the full sequence with a 4-D mask that hides the tokens it
must not see, and rows it must not update are restored afterwards. It also serves as the no-cache reference for
cached generation after a reduced prefill.

>>> from tokenbench.testing import check_method            # doctest: +SKIP
>>> check_method("mymethod")                                 # raises AssertionError on a contract violation
"""

from __future__ import annotations

from typing import Any

import contextlib
import types

import torch

from tokenbench.api import Prepared, Reduction, build_method
from tokenbench.engine.record import Record
from tokenbench.contract.task import Sample


def synthetic_samples(n: int, seed: int = 0, size: tuple[int, int] | None = None) -> list[Sample]:
    """``n`` synthetic-task samples; ``size`` = (width, height) resizes their images (a non-square size exercises
    LLaVA-NeXT's unpadding and Qwen2.5-VL's dynamic resolution)."""
    import dataclasses

    from tokenbench.api import TASKS

    samples = TASKS.get("synthetic")(n=max(n, 1), seed=seed).samples(n)
    if size is not None:
        samples = [dataclasses.replace(s, image=s.image.resize(size)) for s in samples]
    return samples


def run(adapter, method, keep: int, samples, max_new_tokens: int = 4, seed: int = 0, ignore_eos: bool = False):
    """Generate with ``method`` (prepared on ``adapter``'s weights) at ``keep``; returns (Generation, Record or None,
    Batch)."""
    if isinstance(method, str):
        method = build_method(method)
    batch = adapter.encode(samples)
    artefact = Prepared.of(method.prepare(adapter.weights())).artefact
    with adapter.reduction(Reduction(method, keep, seed=seed, artefact=artefact)) as r:
        gen = adapter.generate(batch, max_new_tokens, router=r, ignore_eos=ignore_eos)
    return gen, (r.record if r is not None else None), batch


@contextlib.contextmanager
def _masked_layers(adapter, batch, layer_visual: list[torch.Tensor], layer_keys: list[torch.Tensor]):
    t = batch.tokens
    originals = []

    def members(vis, b, length, device):
        m = torch.zeros(b, length, dtype=torch.bool, device=device)
        m.scatter_(1, t.other, True)
        m.scatter_(1, t.visual.gather(1, vis), True)
        m[:, t.valid.shape[1]:] = True  # generated tokens always take part
        return m

    for idx, layer in enumerate(adapter.decoder_layers()):
        original = layer.forward

        def fwd(self, hidden, *args, _orig=original, _idx=idx, **kwargs):
            b, length = hidden.shape[:2]
            keep = members(layer_visual[_idx], b, length, hidden.device)  # rows the layer updates
            seen = members(layer_keys[_idx], b, length, hidden.device)  # columns it attends to
            valid = torch.ones(b, length, dtype=torch.bool, device=hidden.device)
            valid[:, : t.valid.shape[1]] = t.valid
            pos = torch.arange(length, device=hidden.device)
            allowed = (pos[None, :, None] >= pos[None, None, :]) & (seen & valid)[:, None, :]
            allowed = allowed | torch.eye(length, dtype=torch.bool, device=hidden.device)[None]  # no empty rows
            kwargs["attention_mask"] = allowed[:, None]
            out = _orig(hidden, *args, **kwargs)
            return torch.where(keep[..., None], out, hidden)

        layer.forward = types.MethodType(fwd, layer)
        originals.append(layer)
    try:
        yield
    finally:
        for layer in originals:
            layer.__dict__.pop("forward", None)


@contextlib.contextmanager
def _merged_embeds(adapter, prompt_embeds):
    """Feed the language model the prompt embeddings a merging pre-LLM selection produced (None: leave it alone)."""
    if prompt_embeds is None:
        yield
        return

    def hook(module, args, kwargs):
        embeds = kwargs["inputs_embeds"].clone()
        embeds[:, : prompt_embeds.shape[1]] = prompt_embeds
        kwargs["inputs_embeds"] = embeds
        return args, kwargs

    handle = adapter.language_model().register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def mask_reference(adapter, batch, record: Record, generated: list[list[int]] | None = None) -> torch.Tensor:
    """Logits (B, n_new + 1, vocab) from the last prompt position on, recomputed without a cache by masking.

    ``generated`` appends the given answer tokens (teacher forcing); every layer keeps the visual tokens it kept in
    ``record`` and sees every text and generated token.
    """
    inputs = dict(batch.inputs)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    n_new = 0
    if generated:
        n_new = min(len(g) for g in generated) - 1  # feed all but the last generated token
        if n_new > 0:
            extra = torch.tensor([g[:n_new] for g in generated], device=ids.device)
            ids = torch.cat([ids, extra], dim=1)
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], n_new)], dim=1)
    inputs.update(input_ids=ids, attention_mask=mask)
    pos = adapter.position_ids(inputs, mask)
    length = batch.tokens.valid.shape[1]
    if record.position_ids is not None:  # a renumbering pre-LLM selection: its prompt positions, then +1 per token
        new = record.position_ids[:, -1:] + torch.arange(1, ids.shape[1] - length + 1, device=ids.device)
        pos = torch.cat([record.position_ids, new], dim=1)
    with torch.inference_mode(), _masked_layers(adapter, batch, record.layer_visual, record.layer_keys), \
            _merged_embeds(adapter, record.pre_llm_embeds):
        out = adapter.model(**inputs, position_ids=pos, use_cache=False)
    return out.logits[:, batch.tokens.valid.shape[1] - 1 :].float()


def counted_vs_measured_flops(adapter, method, keep: int, sample, new_tokens: int = 1) -> dict[str, Any]:
    """What tokenbench's accounting reports beside what torch's FlopCounterMode measures, in FLOPs, for one sample's
    greedy generation of ``new_tokens`` tokens with ``method`` at ``keep``: ``{"total": (counted, measured), "layers":
    [(counted, measured) for each LLM layer]}``. A layer's count is its prefill work, the method's own work there
    (signals, ``select``) and its decode steps. Equal when every matmul the method causes is counted where it runs."""
    from tokenbench.measure import flopcount
    from tokenbench.measure.accounting import decode_count, kv_counts, overhead_by_layer, prefill_count

    if isinstance(method, str):
        method = build_method(method)
    batch = adapter.encode([sample])
    artefact = Prepared.of(method.prepare(adapter.weights())).artefact
    with adapter.reduction(Reduction(method, keep, artefact=artefact)) as router:
        measured, by_module = flopcount.measure_modules(
            lambda: adapter.generate(batch, new_tokens, router=router, ignore_eos=True))
        record = router.record if router is not None else None
    lm, n_text = adapter.lm_dims(), batch.n_text[0]
    per_layer = record.visual_per_layer if record is not None else [batch.layout.n_visual] * adapter.n_layers
    prefill = prefill_count(lm, adapter.encoder_macs(tuple(sample.image.size)), n_text, per_layer, record, method)
    decode_layers, decode_head = decode_count(lm, n_text, kv_counts(record, per_layer), new_tokens - 1)
    at = overhead_by_layer(lm, n_text, record, method) if record is not None else {}
    names = {id(m): f"{type(adapter.model).__name__}.{n}" for n, m in adapter.model.named_modules()}
    layers = [(2 * (p + at.get(i, 0) + d), by_module.get(names[id(layer)], 0))
              for i, (layer, p, d) in enumerate(zip(adapter.decoder_layers(), prefill.per_layer, decode_layers))]
    counted = prefill.total_flops + 2 * (sum(decode_layers) + decode_head)
    return {"total": (counted, measured), "layers": layers}


def check_method(name: str, model: str = "tiny-llava", keeps=(1, 64, 575), n_samples: int = 2) -> None:
    """The contract every method must meet on ``model``: keep-all equals ``full`` exactly, budgets are honoured,
    the router's output equals the mask reference, and batching changes nothing. ``keeps`` larger than the model's
    visual tokens are clamped to all but one of them (the defaults suit LLaVA-1.5's 576; mini-llava has 144)."""
    from tokenbench.harness.resolve import resolve_model

    adapter = resolve_model(model).load()
    samples = synthetic_samples(n_samples)
    n_visual = adapter.layout_of(samples[0]).n_visual
    keeps = tuple(sorted({max(1, min(k, n_visual - 1)) for k in keeps}))
    ref, _, _ = run(adapter, "full", n_visual, samples)
    gen, _, _ = run(adapter, name, n_visual, samples)
    assert torch.equal(gen.first_logits, ref.first_logits), f"{name}: keep-all logits differ from full"
    assert gen.token_ids == ref.token_ids, f"{name}: keep-all generations differ from full"
    if not build_method(name).reduces(keeps[0], n_visual):
        return
    for keep in keeps:
        gen, record, batch = run(adapter, name, keep, samples)
        for layer, chosen in record.selections.items():
            assert chosen.shape[1] <= keep, f"{name}: kept {chosen.shape[1]} > keep={keep} at layer {layer}"
        ref_logits = mask_reference(adapter, batch, record, gen.token_ids)
        ours = torch.stack(gen.step_logits[: ref_logits.shape[1]], dim=1)
        torch.testing.assert_close(ours, ref_logits, atol=1e-4, rtol=1e-4)
        singles = [run(adapter, name, keep, [s])[0] for s in samples]
        assert [s.token_ids[0] for s in singles] == gen.token_ids, f"{name}: batch differs from one-by-one"
        flops = counted_vs_measured_flops(adapter, name, keep, samples[0], new_tokens=2)
        for where, (counted, measured) in [("total", flops["total"]), *enumerate(flops["layers"])]:
            assert counted == measured, (f"{name}: FLOPs counted {counted} != measured by FlopCounterMode {measured} "
                                         f"({'layer ' if where != 'total' else ''}{where})")


# -- tasks -----------------------------------------------------------------------------------------------------------
def write_task_data(dataset, directory: str, forms=("save_to_disk", "parquet", "jsonl", "hub"), config: str | None = None,
                    split: str = "test") -> dict[str, str]:
    """Write ``dataset`` (a ``datasets.Dataset`` in a task's hub schema) under ``directory`` in each local form
    ``--data`` accepts; returns form -> the path to pass as ``--data``.

    ``hub``: a copy of a hub dataset repository as ``huggingface-cli download`` leaves it: a ``README.md`` whose
    metadata declares the configs (``config``, or ``default``, with ``split`` in ``<config>/<split>-*.parquet``, and a
    second config the task does not read) beside the parquet shards.

    ``save_to_disk``: a directory written by ``save_to_disk``; ``parquet``: one parquet file (images embedded);
    ``jsonl``: ``data.jsonl`` with every image (single or in a list) replaced by a path relative to it, the images in
    ``images/``."""
    import os

    os.makedirs(directory, exist_ok=True)
    out = {}
    if "save_to_disk" in forms:
        out["save_to_disk"] = os.path.join(directory, "saved")
        dataset.save_to_disk(out["save_to_disk"])
    if "parquet" in forms:
        out["parquet"] = os.path.join(directory, "data.parquet")
        dataset.to_parquet(out["parquet"])
    if "hub" in forms:
        out["hub"] = _write_hub_copy(dataset, os.path.join(directory, "hub"), config, split)
    if "jsonl" in forms:
        out["jsonl"] = _write_jsonl(dataset, directory)
    return out


def _write_hub_copy(dataset, root: str, config: str | None, split: str) -> str:
    """:func:`write_task_data`'s ``hub`` form under ``root``; returns ``root``."""
    import os

    name = config or "default"
    folder = "data" if config is None else config
    os.makedirs(os.path.join(root, folder), exist_ok=True)
    os.makedirs(os.path.join(root, "Other"), exist_ok=True)
    dataset.to_parquet(os.path.join(root, folder, f"{split}-00000-of-00001.parquet"))
    dataset.select(range(1)).to_parquet(os.path.join(root, "Other", "extra-00000-of-00001.parquet"))
    with open(os.path.join(root, "README.md"), "w") as fh:
        fh.write(f"---\nconfigs:\n- config_name: {name}\n  data_files:\n  - split: {split}\n    path: {folder}/{split}-*\n"
                 "- config_name: Other\n  data_files:\n  - split: extra\n    path: Other/extra-*\n---\n")
    return root


def _write_jsonl(dataset, directory: str) -> str:
    """:func:`write_task_data`'s ``jsonl`` form: ``directory/data.jsonl``, its images in ``directory/images/``; returns
    the jsonl's path."""
    import json
    import os

    import datasets

    def raw_feature(f):  # images as {"bytes", "path"}, in lists too
        if isinstance(f, datasets.Image):
            return datasets.Image(decode=False)
        if isinstance(f, (datasets.Sequence, datasets.List)) and isinstance(f.feature, datasets.Image):
            return type(f)(datasets.Image(decode=False))
        return f

    raw = dataset.cast(datasets.Features({k: raw_feature(f) for k, f in dataset.features.items()}))
    images = [k for k, f in raw.features.items() if raw_feature(f) is not f or f != dataset.features[k]]
    os.makedirs(os.path.join(directory, "images"), exist_ok=True)
    path = os.path.join(directory, "data.jsonl")

    def save(cell, name):
        if cell is None:
            return None
        rel = os.path.join("images", name)
        with open(os.path.join(directory, rel), "wb") as img:
            img.write(cell["bytes"])
        return rel

    with open(path, "w") as fh:
        for i, row in enumerate(raw):
            for k in images:
                cell = row[k]
                row[k] = ([save(c, f"{i}-{k}-{j}.png") for j, c in enumerate(cell)] if isinstance(cell, list)
                          else save(cell, f"{i}-{k}.png"))
            fh.write(json.dumps(row, default=str) + "\n")
    return path


def fixture_image(seed: int, size: tuple[int, int] = (64, 48)):
    """A small RGB test image (a coloured rectangle on grey), different for each ``seed``."""
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(f"fixture-image-{seed}")
    image = Image.new("RGB", size, (128, 128, 128))
    w, h = size
    x0, y0 = rng.randrange(w // 2), rng.randrange(h // 2)
    ImageDraw.Draw(image).rectangle((x0, y0, x0 + w // 3, y0 + h // 3),
                                    fill=tuple(rng.randrange(256) for _ in range(3)))
    return image


def check_task(name: str, options: dict[str, Any] | None = None, limit: int = 4,
               families: tuple[str, ...] = ("llava", "llava-next", "qwen2.5-vl")) -> None:
    """Check registered task ``name`` (built with ``options``, e.g. ``{"data": "fixture/"}``) against the contract of
    :mod:`tokenbench.contract.task`, offline and without a model; raises ``AssertionError`` naming what is wrong.

    Checks: typed options build; ``samples(limit)`` is a list of at most ``limit`` samples with unique string ids, a
    PIL image or :class:`~tokenbench.contract.task.ImageRef` (or ``None`` with ``meta["error"]``), the same on a second call;
    ``prompt`` gives text for every family; ``evaluate`` on empty answers returns one finite score per sample and the
    primary metric, and ``unparsed`` indexes samples; ``version``, ``max_new_tokens`` and ``primary_metric`` are set."""
    import math

    from tokenbench.harness.resolve import build_task
    from tokenbench.contract.task import ImageRef, Scored

    task = build_task(name, dict(options or {}), seed=0)
    samples = task.samples(limit)
    assert isinstance(samples, list) and 0 < len(samples) <= limit, f"{name}: samples({limit}) gave {len(samples)}"
    ids = [s.id for s in samples]
    assert all(isinstance(i, str) and i for i in ids), f"{name}: sample ids must be non-empty strings: {ids}"
    assert len(set(ids)) == len(ids), f"{name}: sample ids repeat: {ids}"
    assert [s.id for s in task.samples(limit)] == ids, f"{name}: samples() is not deterministic"
    for s in samples:
        if s.image is None:
            assert s.meta.get("error"), f"{name}: sample {s.id} has no image and no meta['error'] saying why"
        else:
            assert isinstance(s.image, ImageRef) or hasattr(s.image, "convert"), f"{name}: {s.id}'s image is no image"
            w, h = s.image.size
            assert w > 0 and h > 0, f"{name}: {s.id}'s image has size {s.image.size}"
        for family in families:
            text = task.prompt(s, family)
            assert isinstance(text, str) and text.strip(), f"{name}: empty prompt for {s.id} on {family}"
    assert isinstance(task.max_new_tokens, int) and task.max_new_tokens >= 1, f"{name}: max_new_tokens must be >= 1"
    assert isinstance(task.version, str) and task.version, f"{name}: version must be a non-empty string"
    again = build_task(name, dict(options or {}), seed=0)
    again.samples(limit)
    assert again.version == task.version, f"{name}: version differs between two tasks built and loaded the same way"
    scored = task.evaluate(samples, [""] * len(samples))
    assert isinstance(scored, Scored), f"{name}: evaluate() must return tokenbench.contract.task.Scored"
    assert len(scored.per_sample) == len(samples), f"{name}: evaluate() gave {len(scored.per_sample)} scores"
    assert all(math.isfinite(float(x)) for x in scored.per_sample), f"{name}: non-finite per-sample score"
    assert task.primary_metric in scored.metrics, \
        f"{name}: evaluate().metrics lacks the primary metric {task.primary_metric!r}: {sorted(scored.metrics)}"
    assert all(math.isfinite(float(v)) for v in scored.metrics.values()), f"{name}: a metric is not finite"
    assert all(0 <= i < len(samples) for i in scored.unparsed), f"{name}: unparsed indexes no sample"
