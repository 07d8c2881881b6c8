"""Every table tokenbench prints: ``compare``/``run``/``results show`` (:func:`format_table`, with the papers' average
over tasks, :func:`format_average`, and published scores beside full's), ``bench`` (:func:`format_bench`), ``flops``
(:func:`format_flops`), the runs of the results store (:func:`format_runs`) and ``list published``
(:func:`format_published`).

Each table is a list of :class:`Column`: its header, how a row's cell is written, and whether it is in the default
table, which fits a 120-column terminal; ``wide`` prints every column (``--wide``), and ``--json`` always writes every
field. A new column is one entry here. The notes under a table say what its columns and conventions mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from tokenbench import budgets


@dataclass(frozen=True)
class Column:
    """One column: ``header`` (text, or a function of the table's rows), ``cell(row)`` (None prints as ``-``), and
    whether the default table shows it (``wide`` shows every column)."""

    header: str | Callable[[list[dict]], str]
    cell: Callable[[dict], Any]
    default: bool = False


def grid(columns: list[Column], rows: list[dict], wide: bool) -> str:
    """``rows`` as a github-style table of the ``columns`` shown (the default ones, or every one when ``wide``)."""
    from tabulate import tabulate

    shown = [c for c in columns if wide or c.default]
    headers = [c.header(rows) if callable(c.header) else c.header for c in shown]
    return tabulate([[c.cell(r) for c in shown] for r in rows], headers=headers, tablefmt="github", missingval="-")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _ms(x: float | None) -> str | None:
    """A time in ms with at least 3 significant figures (and at least one decimal), so ratios of printed times agree
    with the ratios of the measured ones to within rounding: 26.3, 5.04, 0.512, 1234.5 (None stays None: "-")."""
    if x is None:
        return None
    decimals = 1 if x == 0 else min(6, max(1, 2 - math.floor(math.log10(abs(x)))))
    return f"{x:.{decimals}f}"


def _count(x, spec: str) -> str | None:
    """A kernel or sync count (None, in rows from before they were measured, prints as ``-``)."""
    return None if x is None else format(x, spec)


def _metric_value(r: dict, value) -> str:
    if value is None:
        return "-"
    if r.get("metric_percent", True):
        return f"{100 * value:.1f}"
    return f"{value:.4g}" if abs(value) < 10 else f"{value:.1f}"


def _label(r: dict) -> str:
    return r.get("label") or r["method"]


# -- compare, run, results show -------------------------------------------------------------------------------------
#: what each timing column of :func:`format_table` is, printed under the table
TIMING_NOTE = ("timings: 'prefill ms', 'decode ms/tok', 'e2e ms' and 'overhead ms' are this row's medians over the "
               "timed rounds; each method's rounds alternate with full's (same process and sample, rotating order), "
               "'full ms (paired)' is full's prefill median from those same rounds, and speed-up = full ms (paired) / "
               "prefill ms. full's own row is timed alone, in rounds of its own, so its prefill ms may differ from "
               "the paired figures.")
#: the same for the default table, which shows the speed-up alone
SPEEDUP_NOTE = ("speed-up = full's prefill median / this method's, from rounds alternating with full's (--wide: "
                "every timing)")


def _compiled_words(rows: list[dict]) -> str:
    """What the timing header adds for a --compile run: the prefill's layers compiled, and how long that took."""
    took = [r["compile_s"] for r in rows if r.get("compiled") and r.get("compile_s") is not None]
    if not took:
        return ""
    return (f"; prefill layers through torch.compile (compiled in untimed runs first: {min(took):.1f}-{max(took):.1f} s "
            "per variant)")


def _metric_header(rows: list[dict]) -> str:
    first = rows[0]
    return f"{first.get('metric', 'accuracy')}{' %' if first.get('metric_percent', True) else ''}"


def _speedup(r: dict) -> str | None:
    return None if r.get("speedup_prefill") is None else f"{r['speedup_prefill']:.2f}"


#: the columns of a compare table; the default ones are what a researcher reads first: the score, how much of full's it
#: keeps, how often the answer is full's, the compute and the speed-up
COMPARE_COLUMNS = [
    Column("method", _label, True),
    Column("keep", budgets.keep_cell, True),
    Column(_metric_header, lambda r: _metric_value(r, r.get("score", r["accuracy"])), True),
    Column("retention %", lambda r: _pct(r["retention"]), True),
    Column("agree %", lambda r: _pct(r["agreement"]), True),
    Column("KL 1st tok", lambda r: f"{r['kl_first_token']:.4f}"),
    Column("vis tok in", lambda r: f"{r['tokens_llm_input']:.0f}"),
    Column("vis tok avg", lambda r: f"{r['tokens_avg_layer']:.1f}"),
    Column("GFLOPs", lambda r: f"{r['flops_prefill'] / 1e9:.3f}"),
    Column("FLOPs ratio", lambda r: f"{r['flops_ratio']:.3f}", True),
    Column("kernels/layer", lambda r: _count(r.get("kernels_per_layer"), ".1f")),
    Column("syncs", lambda r: _count(r.get("host_syncs_prefill"), "d")),
    Column("prefill ms", lambda r: _ms(r["prefill_ms"])),
    Column("full ms (paired)", lambda r: None if r["method"] == "full" else _ms(r.get("full_prefill_ms_paired"))),
    Column("speed-up", _speedup, True),
    Column("decode ms/tok", lambda r: "-" if r["decode_ms"] is None else f"{r['decode_ms']:.2f}"),
    Column("e2e ms", lambda r: f"{r['e2e_ms']:.1f}"),
    Column("overhead ms", lambda r: f"{r['overhead_ms']:.2f}"),
]
#: shown (in every table) only where some row has them
BUDGETS_COLUMN = Column("budgets", lambda r: r.get("match") or "-", True)
FAILED_COLUMN = Column("failed", lambda r: r.get("n_failed", 0), True)


def format_table(rows: list[dict], wide: bool = False) -> str:
    """The rows as ``tokenbench compare`` prints them: one table per task (with the task's official metrics under it
    when it has several), then, for several tasks, the papers' average retention. ``wide``: every column; the
    default table fits 120 columns. Where a method's prefill times are shown, its speed-up is printed beside the two
    paired medians it is the ratio of (``full_prefill_ms_paired`` / ``prefill_ms``), never beside full's separate
    run."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    if len(tasks) > 1:
        return "\n\n".join([*(_task_table([r for r in rows if r["task"] == t], wide) for t in tasks),
                            format_average(rows)])
    return _task_table(rows, wide)


def _task_table(rows: list[dict], wide: bool) -> str:
    from tokenbench.results.provenance import device_words

    first = rows[0]
    matches = list(dict.fromkeys(r["match"] for r in rows if r.get("match")))
    columns = list(COMPARE_COLUMNS)
    if len(matches) > 1:  # several conventions: say which each row ran under
        columns.insert(1, BUDGETS_COLUMN)
    if any(r.get("n_failed") for r in rows):
        columns.append(FAILED_COLUMN)
    head = [f"model={first['model']} task={first['task']} samples={first['n_samples']} device={device_words(first)} "
            f"dtype={first['dtype']} attn={first['attn_implementation']}",
            f"timings: batch 1, {first['decode_tokens']} tokens decoded, median of {first['timing_repeats']}"
            + _compiled_words(rows)]
    parts = [*head, grid(columns, rows, wide)]
    if any(len(r.get("metrics", {})) > 1 for r in rows):
        parts.append(_metrics_table(rows))
    return "\n".join([*parts, *_task_notes(rows, matches, wide)])


def _task_notes(rows: list[dict], matches: list[str], wide: bool) -> list[str]:
    """The lines under a task's table: timings (what the timing columns shown are), conventions, layer-mean budgets,
    each method's notes and calibration, and what 'failed' counts."""
    timing = TIMING_NOTE if wide else SPEEDUP_NOTE
    notes = [timing, budgets.note(matches)] if matches else [timing]
    if any(r.get("budget_kind") == "layer_mean" for r in rows):
        notes.append("keep*: a layer-mean budget (visual tokens per LLM layer, averaged over layers: multi-stage "
                     "methods); otherwise the visual tokens left after the reduction. 'vis tok avg' is what each run "
                     "reached")
    for r in rows:
        notes += [f"note ({r['method']}): {w}" for w in r.get("warnings", ())
                  if f"note ({r['method']}): {w}" not in notes]
        calibration = _calibration_note(r)
        if calibration and calibration not in notes:
            notes.append(calibration)
    failed = rows[0].get("failed_to_load") or {}
    if failed:
        sid, why = next(iter(failed.items()))
        notes.append(f"failed: {len(failed)} sample(s) could not be loaded and were left out of every run (e.g. {sid}: "
                     f"{why}); the rest of 'failed' are answers the task's rule could not parse (scored as it says)")
    elif any(r.get("n_failed") for r in rows):
        notes.append("failed: answers the task's rule could not parse (scored as the rule says; ids in the rows' "
                     "'unparsed')")
    return notes + _published_notes(rows)


def _published_notes(rows: list[dict]) -> list[str]:
    """One line per published score of full's model and task (:mod:`tokenbench.results.published`) with full's
    figure here beside it; none when nothing is published for them."""
    from tokenbench.results.published import published_all

    full = next((r for r in rows if r["method"] == "full"), None)
    return [] if full is None else [published_line(full, entry) for entry in published_all(full)]


def published_line(row: dict, entry) -> str:
    """``entry`` (a :class:`tokenbench.results.published.Published`) beside ``row``'s figure for its metric, on the
    published scale, with the difference, the samples, and where the run's prompt or task options differ."""
    import json

    d = entry.decimals
    here = entry.shown(row["metrics"][entry.metric])
    diff = round(here - float(entry.published), d) + 0.0  # + 0.0: no "-0.0"
    style = row.get("prompt_style") or "chat"  # rows from before the field ran the chat template
    prompt = f"prompt {style}" + (" (as published)" if style == entry.prompt else
                                  f" (differs from the published {entry.prompt})")
    options = row.get("task_options") or {}
    differ = [f"task option {k}={json.dumps(options[k]) if k in options else 'unset'} here, {k}={json.dumps(v)} "
              "published" for k, v in entry.task_options.items() if options.get(k) != v]
    if entry.image_pixels and row.get("image_pixels", entry.image_pixels) != entry.image_pixels:
        differ.append(f"image pixels {row['image_pixels']} here, {entry.image_pixels} published")
    caveat = f"; caveat: {entry.caveat}" if entry.caveat else ""
    return (f"published: {entry.model} {entry.task} {entry.metric} {entry.published} ({entry.source.name}, prompt "
            f"{entry.prompt}, {entry.scorer}); full here {here:.{d}f} ({diff:+.{d}f}) on {row['n_samples']} samples, "
            + ", ".join([prompt, *differ]) + caveat)


def _calibration_note(row: dict) -> str | None:
    """Which calibration a row ran on (a fitted artefact's path, samples and held-out score error, or the SVD
    initialisation), for methods whose preparation reports one."""
    prepared = row.get("prepared") or {}
    source = prepared.get("calibration")
    if not source:
        return None
    fit = ""
    if prepared.get("score_error_after") is not None:
        fit = (f" (fitted on {prepared.get('samples')} samples; held-out score error "
               f"{prepared['score_error_before']:.4g} before, {prepared['score_error_after']:.4g} after)")
    return f"calibration ({_label(row)}): {source}{fit}"


def _metrics_table(rows: list[dict]) -> str:
    """The task's official metrics, one line each, one column per (method, budget)."""
    from tabulate import tabulate

    names = list(dict.fromkeys(k for r in rows for k in r.get("metrics", {})))
    cols = [f"{_label(r)}@{r['keep']}" if r["method"] != "full" else "full" for r in rows]
    unit = " (%)" if rows[0].get("metric_percent", True) else ""
    table = [(k, *(_metric_value(r, r.get("metrics", {}).get(k)) for r in rows)) for k in names]
    return f"\n{rows[0]['task']} metrics{unit}:\n" + tabulate(table, headers=("metric", *cols), tablefmt="github")


def format_average(rows: list[dict]) -> str:
    """The papers' average: the mean over tasks of each (method, budget)'s per-task retention."""
    from tabulate import tabulate

    from tokenbench.results.rows import average_retention

    avg = average_retention(rows)
    if not avg:
        return "average: no (method, budget) finished on every task"
    tasks = avg[0]["tasks"]
    table = [(a["label"], a["budget"], *(_pct(a["retention"][t]) for t in tasks), _pct(a["mean_retention"]))
             for a in avg]
    zero = [t for t in tasks if any(a["retention"][t] is None for a in avg)]
    note = (f"\nthe mean is undefined where full scores 0 on a task ({', '.join(zero)}): retention there has no "
            "reference" if zero else "")
    return (f"average retention % over {len(tasks)} tasks ({', '.join(tasks)}): the mean of the per-task retentions "
            f"(each task's primary metric against full's)\n"
            + tabulate(table, headers=("method", "budget", *tasks, "mean"), tablefmt="github") + note)


def format_published(scores=None) -> str:
    """``tokenbench list published``: every shipped score (on its published scale), the checkpoints each model is
    recognised by, the sources, and each score's caveat."""
    from tabulate import tabulate

    from tokenbench.results.published import shipped

    scores = scores or shipped()
    table = [(e.model, e.task, e.metric, e.published, e.prompt, e.scorer, e.source.name) for e in scores.entries]
    models = [f"  {name}: {', '.join(m['hub'])}" + (f" (published as {m['published_checkpoint']})"
                                                   if m.get("published_checkpoint") else "")
              for name, m in scores.models.items()]
    sources = list({e.source.key: e.source for e in scores.entries}.values())
    return "\n".join([
        "published full-model scores (compare prints the one for full's model, task and metric under its table):",
        tabulate(table, headers=("model", "task", "metric", "published", "prompt", "scorer", "source"),
                 tablefmt="simple", disable_numparse=True),  # as printed: 62.0 stays 62.0
        "", "models (a row is recognised by the registered name or by one of these checkpoints):", *models,
        "", "sources:", *(f"  {s.name}: {s.url} ({s.where})" for s in sources),
        "", "caveats:", *(f"  {e.model} {e.task} {e.metric}: {e.caveat}" for e in scores.entries if e.caveat),
    ])


# -- bench ----------------------------------------------------------------------------------------------------------
def _ms2(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


#: the default is what bench is for: the predicted beside the measured prefill speed-up, and the decode speed-up
BENCH_COLUMNS = [
    Column("method", lambda r: r["method"], True),
    Column("keep", budgets.keep_cell, True),
    Column("prefill TFLOPs", lambda r: f"{r['flops_prefill'] / 1e12:.3f}", True),
    Column("predicted ×", lambda r: f"{r['predicted_speedup_prefill']:.2f}", True),
    Column("measured ×", lambda r: f"{r['speedup_prefill']:.2f}", True),
    Column("prefill ms (IQR)", lambda r: f"{r['prefill_ms']:.1f} ± {r['prefill_iqr_ms']:.1f}", True),
    Column("kernels", lambda r: _count(r.get("kernels_prefill"), "d"), True),
    Column("syncs", lambda r: _count(r.get("host_syncs_prefill"), "d"), True),
    Column("kernels/layer", lambda r: _count(r.get("kernels_per_layer"), ".1f")),
    Column("vision ms", lambda r: _ms2(r["vision_ms"])),
    Column("overhead ms", lambda r: _ms2(r["overhead_ms"])),
    Column("decode ms/tok", lambda r: _ms2(r["decode_ms"])),
    Column("decode ×", lambda r: "-" if r["speedup_decode"] is None else f"{r['speedup_decode']:.2f}", True),
    Column("KV MB", lambda r: f"{r['kv_cache_mb']:.1f}"),
    Column("peak MB", lambda r: "-" if r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:.0f}"),
]


def format_bench(rows: list[dict], wide: bool = False) -> str:
    """One table per model: FLOPs-predicted beside measured prefill speed-up, then the other stages (``wide``)."""
    from tokenbench.results.provenance import device_words

    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == model]
        first = rs[0]
        truncated = (f", first {first['llm_layers']} of {first['llm_layers_of']} LLM layers"
                     if first["llm_layers"] != first["llm_layers_of"] else "")
        out.append(f"model={model} (random weights{truncated}) image={first['image_size'][0]}x{first['image_size'][1]} "
                   f"visual tokens={first['n_visual']} text tokens={first['n_text']}")
        out.append(f"device={device_words(first)} dtype={first['dtype']} attn={first['attn_implementation']}")
        out.append(f"timings: batch 1, {first['decode_tokens']} tokens decoded, median of {first['timing_repeats']} "
                   f"interleaved rounds after {first['timing_warmup']} warm-up" + _compiled_words(rs))
        out.append(grid(BENCH_COLUMNS, rs, wide))
        out.append("")
    matches = list(dict.fromkeys(r["match"] for r in rows if r.get("match")))
    if matches:
        out.append(budgets.note(matches))
    out.append("predicted ×: full's prefill FLOPs over the method's; measured ×: full's median time to first token "
               "over the method's, from the same rounds. kernels, syncs: aten ops the prefill launches (views "
               "excluded) and those that make the host wait for the device, counted in the untimed run; they predict "
               "batch-1 latency on an accelerator, where each launch and sync costs microseconds. keep*: a layer-mean "
               "budget. The weights are random: what a "
               "method keeps (and whether it is calibrated, as ALVTS wants for accuracy) does not change its cost, so "
               "none is needed.")
    return "\n".join(out)


# -- flops ----------------------------------------------------------------------------------------------------------
def flops_unit(total: float) -> tuple[str, float]:
    """The unit a model's FLOPs read best in (``full``'s total at least one of it): small models get MFLOPs."""
    return next((u, x) for u, x in (("TFLOPs", 1e12), ("GFLOPs", 1e9), ("MFLOPs", 1e6), ("FLOPs", 1))
                if total >= x or x == 1)


def flops_columns(unit: str, scale: float) -> list[Column]:
    """The columns of a ``flops`` table with figures in ``unit`` (``scale`` FLOPs each)."""
    return [
        Column("method", lambda r: r["label"], True),
        Column("keep", budgets.keep_cell, True),
        Column(unit, lambda r: f"{r['flops_prefill'] / scale:.3f}", True),
        Column("ratio", lambda r: f"{r['flops_ratio']:.3f}", True),
        Column(f"LLM {unit}", lambda r: f"{r['flops_breakdown']['llm'] / scale:.3f}", True),
        Column(f"selector {unit}", lambda r: f"{r['flops_breakdown']['overhead'] / scale:.4f}"),
        Column("selector %", lambda r: f"{100 * r['selector_share']:.1f}", True),
        Column("vis tok avg", lambda r: f"{r['tokens_avg_layer']:.1f}", True),
        Column(f"FastV formula {unit[0]}", lambda r: f"{r['fastv_formula_llm_macs'] / scale:.3f}"),
        Column("decode GFLOPs/tok", lambda r: f"{r['flops_decode_step'] / 1e9:.4g}"),
    ]


def format_flops(prediction, wide: bool = False) -> str:
    """A :class:`tokenbench.harness.predict.Prediction` as ``tokenbench flops`` prints it: the model, the table (in
    the unit full's total reads best in) and what its columns mean."""
    rows, first = prediction.rows, prediction.rows[0]
    unit, scale = flops_unit(first["flops_prefill"])  # full's row comes first
    size = first["image_size"]
    shown = f" for a {size[0]}x{size[1]} image" if size else ""
    columns = flops_columns(unit, scale)
    if len(prediction.matches) > 1:
        columns.insert(1, BUDGETS_COLUMN)
    return "\n".join([
        f"model={first['model']} ({prediction.n_layers} layers, hidden {prediction.hidden}) visual "
        f"tokens={first['n_visual']}{shown} text tokens={first['n_text']}",
        "FLOPs = 2 x MACs, prefill incl. vision tower and projector",
        grid(columns, rows, wide),
        f"FastV formula {unit[0]}: the papers' per-layer 4nd^2 + 2n^2d + 2ndm summed over the LLM layers (MACs, "
        "which the papers print as FLOPs; compare it with their tables, not with our FLOPs). decode GFLOPs/tok: the "
        "first decode step against the KV cache the prefill left.",
        budgets.note([c.label for c in prediction.matches]),
        "keep*: a layer-mean budget (multi-stage methods). Selector: the method's signals and select() work in "
        "the LLM; pre-LLM signals (CLS attention, VisionZip's merge) need the model and are counted by runs only",
    ])


# -- the results store -----------------------------------------------------------------------------------------------
def format_runs(runs: list[dict], state_of: Callable[[dict], str]) -> str:
    """The runs of a results store: id, when, state (``state_of(run)``), model, tasks, methods, budgets, rows."""
    import datetime

    from tabulate import tabulate

    table = []
    for r in runs:
        spec = r["spec"]
        methods = ", ".join(m[2] if len(m) > 2 else m[0] for m in spec.get("methods", []))
        shown = ", ".join(str(b["keep"]) if b.get("keep") is not None else f"r{b['ratio']:.4g}"
                          if b.get("ratio") is not None else "all" for b in spec.get("budgets", []))
        table.append((r["id"], datetime.datetime.fromtimestamp(r["created"]).strftime("%Y-%m-%d %H:%M"), state_of(r),
                      spec.get("model"), spec.get("task"), methods or "-", shown, len(r["rows"])))
    return tabulate(table, headers=("run", "started", "state", "model", "task", "methods", "budgets", "rows"),
                    tablefmt="simple") if table else "(no runs)"
