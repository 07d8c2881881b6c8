"""Result rows: the one schema of a row, as groups of fields, and how rows combine (the papers' average retention).

Every command that writes rows composes them from these groups, in this order: ``tokenbench compare`` (the executor,
:mod:`tokenbench.harness.execute`), ``tokenbench bench`` (:mod:`tokenbench.harness.bench`) and ``tokenbench flops``
(:mod:`tokenbench.harness.predict`). A new column is one edit here (plus its table column in
:mod:`tokenbench.results.tables`). A field a command cannot fill is left out of its rows, not set to None: each group
takes such fields as keyword arguments that default to :data:`ABSENT`.

* :func:`identity_fields`: what ran (method, label, model, task, budget, convention, keep, what the method ran at);
* :func:`input_fields`: the input of a command that makes its own (text tokens, image size, LLM depth);
* :func:`quality_fields`: scores against ``full`` on the same samples (compare only);
* :func:`model_input_fields`: how the model's input was made (prompt style, pixel range, visual tokens, positions);
* :func:`flops_fields`: the FLOPs accounting (:data:`FLOPS_CONVENTION`);
* :func:`kernel_fields`: the kernels the prefill launches and the host syncs it forces (:data:`KERNELS_CONVENTION`);
* :func:`timing_fields`: the latency protocol's figures (:mod:`tokenbench.measure.latency`) and memory;
* :func:`setup_fields`: device, dtype, attention, batch size, weights, the method's parameters;
* :func:`provenance_fields`: the task's version and options, data, model source, seed, processes, store;
* :func:`preparation_fields`: what the method's ``prepare`` took and said.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any


FLOPS_CONVENTION = ("FLOPs = 2 x MACs (multiply-accumulates); matmul work only; attention as the full n_q x n_kv "
                    "rectangle; fastv_formula_llm_macs is the FastV paper's formula (MACs, printed as FLOPs by papers)")

#: a field value a command does not have: the field is left out of its rows
ABSENT: Any = type("Absent", (), {"__repr__": lambda self: "ABSENT"})()


def _given(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not ABSENT}


def common(values: list) -> Any:
    """A per-sample figure as one value: the value when every sample agrees (fixed-size models), else the mean."""
    return values[0] if len(set(values)) == 1 else sum(values) / len(values)


def identity_fields(method, *, model: str, convention, keep, method_keep, n_visual, label=ABSENT, task=ABSENT,
                    budget=ABSENT, budget_scope=ABSENT, keep_ratio=ABSENT, n_samples=ABSENT) -> dict[str, Any]:
    """What ran: ``method`` (a TokenReducer, as run: its name and budget kind), its row ``label`` (RunSpec labels
    variants of one method), ``model``, ``task``, ``budget`` (a Budget, written as its label) and its scope, the budget
    ``convention`` (tokenbench.budgets.Convention; None in ``full``'s row: matched, nominal, flops=METHOD), ``keep``
    (the budget), ``method_keep`` (what the method ran at under the convention), ``keep_ratio``, ``n_visual`` (visual
    tokens before reduction) and ``n_samples``."""
    return _given({
        "method": method.name,
        "label": label,  # the row's name in tables and boards
        "model": model,
        "task": task,
        "budget": budget if budget is ABSENT else budget.label(),
        "budget_scope": budget_scope,
        "budget_kind": method.budget_kind,  # kept: tokens left after the reduction; layer_mean: mean per layer
        "match": None if method.name == "full" or convention is None else convention.label,
        "keep": keep,
        "method_keep": method_keep,
        "keep_ratio": keep_ratio,
        "n_visual": n_visual,
        "n_samples": n_samples,
    })


def input_fields(*, n_text, image_size, llm_layers=ABSENT, llm_layers_of=ABSENT) -> dict[str, Any]:
    """The input a command made itself (bench, flops): non-visual prompt tokens, the image's pixel size, and the LLM
    layers kept of the model's (bench truncates)."""
    return _given({"n_text": n_text, "image_size": image_size, "llm_layers": llm_layers,
                   "llm_layers_of": llm_layers_of})


def quality_fields(task, samples: list, failed: dict[str, str], run, ref) -> dict[str, Any]:
    """Scores of ``run`` against ``ref`` (``full``'s run on the same ``samples``; both
    :class:`tokenbench.harness.execute.MethodRun`): the task's primary metric and its retention, the official metrics,
    agreement, per-sample scores, failures (``failed``: sample id -> why it could not load) and first-token KL."""
    n = len(run.answers)
    metric = task.primary_metric
    score, ref_score = run.scored.metrics[metric], ref.scored.metrics[metric]
    binary = all(c in (0.0, 1.0) for c in run.correct)
    return {
        "metric": metric,  # the task's primary metric: what retention is the ratio of
        "score": score,
        "metric_percent": task.percent,  # True: metrics are shares in [0, 1]
        "metrics": dict(run.scored.metrics),  # the task's official metrics (per category where it has them)
        "accuracy": run.scored.metrics.get("accuracy", sum(run.correct) / n),
        "mean_score": sum(run.correct) / n,  # the mean per-sample score (what the retention interval resamples)
        "retention": score / ref_score if ref_score > 0 else None,
        "agreement": sum(a == b for a, b in zip(run.answers, ref.answers)) / n,
        "per_sample_scores": [round(c, 6) for c in run.correct],  # sample order; for paired intervals
        **({"per_sample_correct": "".join("1" if c else "0" for c in run.correct)} if binary else {}),
        "sample_ids": [smp.id for smp in samples],
        "n_failed": len(failed) + len(run.scored.unparsed),
        "failed_to_load": dict(failed),  # sample id -> why (left out of every method's run)
        "unparsed": {samples[i].id: why for i, why in run.scored.unparsed.items()},  # scored by the task's rule
        "kl_first_token": sum(run.kl) / n,
    }


def model_input_fields(setup: dict[str, Any], *, positions=ABSENT, n_visual=ABSENT) -> dict[str, Any]:
    """How the model's input was made (``setup``: the adapter's ``input_setup()``: ``prompt_style``, and for a
    dynamic-resolution model ``image_pixels`` with its ``image_pixel_range``), the visual tokens the images gave
    (``n_visual``: one per sample; their min and max) and the kept tokens' ``positions`` (one per sample:
    ``contiguous`` where a pre-LLM cut renumbered them, else ``original``; ``mixed`` if samples differ)."""
    fields = dict(setup)
    if n_visual is not ABSENT:
        fields["n_visual_range"] = [min(n_visual), max(n_visual)]
    if positions is not ABSENT:
        fields["positions"] = positions[0] if len(set(positions)) == 1 else "mixed"
    return fields


def flops_fields(prefill: float, full_prefill: float, breakdown: dict[str, float], *, tokens_avg_layer,
                 tokens_llm_input=ABSENT, decode=ABSENT, decode_step=ABSENT, fastv_formula=ABSENT,
                 convention: bool = True, predicted_speedup: bool = False, selector_share=ABSENT) -> dict[str, Any]:
    """The FLOPs accounting (per sample, averaged where there are several): prefill FLOPs and their ratio to ``full``'s,
    the breakdown by part, visual tokens at the LLM's input and per layer (averaged), decode FLOPs (all steps, the
    first step), the FastV paper's formula, :data:`FLOPS_CONVENTION` (unless not ``convention``), the speed-up the
    FLOPs predict (``predicted_speedup``) and the selector's share."""
    return _given({
        "tokens_llm_input": tokens_llm_input,
        "tokens_avg_layer": tokens_avg_layer,
        "flops_prefill": prefill,
        "flops_ratio": prefill / full_prefill,
        "flops_breakdown": breakdown,
        "flops_decode": decode,
        "flops_decode_step": decode_step,
        "fastv_formula_llm_macs": fastv_formula,
        "flops_convention": FLOPS_CONVENTION if convention else ABSENT,
        "predicted_speedup_prefill": full_prefill / prefill if predicted_speedup else ABSENT,
        "selector_share": selector_share,
    })


KERNELS_CONVENTION = ("kernels_prefill: aten ops dispatched from the start of generation to the first token, views "
                      "excluded (tokenbench.measure.kernels); host_syncs_prefill: those that make the host wait for the "
                      "device (a tensor read as a Python value, nonzero, boolean-mask indexing, a copy to the host); "
                      "kernels_per_layer: those inside the LLM decoder layers' calls (the layer, the router, the "
                      "method's signals and select there) per layer; host_syncs_layers: the syncs among them")


def kernel_fields(counts, n_layers: int) -> dict[str, Any]:
    """What the prefill launches (``counts``: a :class:`tokenbench.measure.kernels.Counts` of one batch-1 prefill,
    the sample the timing uses): kernels and host syncs in all and inside the LLM layer loop; exact on any machine."""
    return {"kernels_prefill": counts.kernels, "host_syncs_prefill": counts.syncs,
            "kernels_per_layer": counts.layer_kernels / max(1, n_layers), "host_syncs_layers": counts.layer_syncs,
            "kernels_convention": KERNELS_CONVENTION}


def timing_fields(timing, *, decode_tokens: int, kv_cache_bytes: float, warmup=ABSENT) -> dict[str, Any]:
    """The latency protocol's figures of one variant (``timing``: a :class:`tokenbench.measure.latency.Timing`): each
    stage's median and IQR, the tokens decoded, ``full``'s medians from the same rounds and the speed-ups, the rounds
    (and warm-up rounds), peak memory and the KV cache."""
    from tokenbench.measure.latency import paired, summary

    return _given({
        **summary(timing.stats),
        "decode_tokens": decode_tokens,
        **paired(timing.stats, timing.full),
        "timing_repeats": timing.stats["prefill"].n,
        "timing_warmup": warmup,
        "peak_mem_mb": timing.peak_mem_mb,
        "kv_cache_mb": kv_cache_bytes / 2**20,
        "compiled": timing.compile_s is not None,  # --compile: the layers ran through torch.compile
        "compile_s": timing.compile_s if timing.compile_s is not None else ABSENT,
    })


def setup_fields(method, *, device=ABSENT, dtype=ABSENT, attn_implementation=ABSENT, batch_size=ABSENT,
                 weights=ABSENT) -> dict[str, Any]:
    """How it ran: device, dtype, attention (the implementation and, for SDPA on CUDA, the kernels torch may pick),
    batch size, the weights (bench: random), and ``method``'s parameters."""
    if attn_implementation is not ABSENT:
        from tokenbench.measure.latency import attention_backends

        attention = attention_backends(device, attn_implementation)
    return _given({
        "device": device,
        "dtype": dtype,
        **(attention if attn_implementation is not ABSENT else {}),
        "batch_size": batch_size,
        "weights": weights,
        "params": method.params(),
    })


def provenance_fields(provenance=ABSENT, *, task=ABSENT, model_source=ABSENT, seed=ABSENT, processes=ABSENT,
                      limit=ABSENT, store=ABSENT) -> dict[str, Any]:
    """Where it came from: the task's version, options and data, the model's source, the seed, the processes that
    computed the samples (the timings are always one process's), the sample limit, ``provenance``
    (:func:`tokenbench.results.provenance.provenance`) and ``store`` (samples read back / computed; not a result)."""
    return _given({
        **({} if task is ABSENT else {"task_version": task.version, "task_options": options_of(task),
                                      "dataset": dataset_of(task)}),
        "model_source": model_source,
        "seed": seed,
        "processes": processes,
        "limit": limit,
        "provenance": provenance,
        "store": store,
    })


def preparation_fields(prepared: dict, warnings: list[str], prepare_s=ABSENT) -> dict[str, Any]:
    """The method's preparation: seconds it took, what its ``Prepared.info`` records, and the warnings of the row."""
    return _given({"prepare_s": prepare_s, "prepared": prepared, "warnings": warnings})


def same_as(row: dict[str, Any], convention, earlier) -> dict[str, Any]:
    """``row`` copied for ``convention``, which runs the method exactly as ``earlier`` did."""
    return row | {"match": convention.label, "same_as": earlier.label}


def options_of(task) -> dict[str, Any]:
    """The task's options as they were resolved (its dataclass fields)."""
    if not dataclasses.is_dataclass(task):
        return {}
    return {f.name: getattr(task, f.name) for f in dataclasses.fields(task) if f.init}


def dataset_of(task) -> str:
    """The task's dataset: its first hub id, or ``local:<path>`` for data of its own."""
    if getattr(task, "data", ""):
        return f"local:{os.path.abspath(task.data)}"
    return getattr(task, "dataset_ids", lambda: (task.dataset,))()[0]


def average_retention(rows: list[dict]) -> list[dict]:
    """The papers' average over tasks: for each (label, budget) present on every task, the mean over tasks of its
    per-task retention (primary metric against full's on the same task); ``None`` where full scores 0 on a task.
    Rows of one comparison."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    cells: dict[tuple, dict[str, float | None]] = {}
    for r in rows:
        cells.setdefault((r.get("label") or r["method"], r["budget"]), {})[r["task"]] = r["retention"]
    out = []
    for (label, budget), per_task in cells.items():
        if set(per_task) != set(tasks):
            continue
        defined = None not in per_task.values()  # None: full scores 0 on that task, so retention is undefined
        out.append({"label": label, "budget": budget, "tasks": tasks, "retention": per_task,
                    "mean_retention": sum(per_task.values()) / len(tasks) if defined else None})
    return out
