"""Leaderboards: markdown tables and a Pareto plot rendered from committed result files, never edited by hand.

``leaderboards/results/*.json`` hold rows as ``tokenbench compare --json`` writes them (with their provenance). For
each (model, task) :func:`render` writes ``leaderboards/<model>--<task>.md`` and a Pareto plot of retention against
the FLOPs ratio (``.png``). One row per method and budget; the deterministic columns (accuracy, retention with its
interval, agreement, tokens, FLOPs) come from the CPU run that produced the accuracy, and every file's measured
prefill speed-up gets its own column headed with the device it was measured on, so CPU and GPU timings are never
mixed in one column.

The **mini suites** (:mod:`tokenbench.results.suites`, one per tokenbench-mini model) are what CI runs. ``tokenbench
leaderboard --update`` runs them and writes their results; ``--check`` runs them afresh and fails when the
deterministic columns differ from the committed markdown (timings are not compared: they are measurements, not facts
of the code). A method a model refuses is a ``refused`` row (its reason in place of scores), listed in every table.
"""

from __future__ import annotations

import functools
import json
import os
import random

from tokenbench.errors import ConfigError

LEADERBOARD_DIR = "leaderboards"
RESULTS_SUBDIR = "results"
#: the columns CI recomputes and compares; the rest are measurements rendered from the committed files
DETERMINISTIC = ("method", "budget", "keep", "accuracy", "retention [95% CI]", "agreement", "tokens/layer",
                 "FLOPs ratio", "kernels/layer", "syncs")
REGENERATE = "tokenbench leaderboard --update"

# -- reading results ---------------------------------------------------------------------------------------------------
def load_results(results_dir: str) -> list[tuple[str, list[dict]]]:
    """Every ``*.json`` in ``results_dir`` as (file name, rows), sorted by name."""
    if not os.path.isdir(results_dir):
        raise ConfigError(f"no results directory {results_dir!r}; run `{REGENERATE}` first")
    out = []
    for name in sorted(os.listdir(results_dir)):
        if name.endswith(".json"):
            path = os.path.join(results_dir, name)
            try:
                with open(path, encoding="utf-8") as f:
                    rows = json.load(f)
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ConfigError(f"{path}: not valid UTF-8 JSON ({e}); regenerate it with `{REGENERATE}` or "
                                  "`tokenbench results export`") from None
            except OSError as e:
                raise ConfigError(f"{path}: cannot be read ({e.strerror or e})") from None
            check_rows(path, rows)
            out.append((name, rows))
    return out


#: the fields a board reads from every row, with their JSON types
ROW_FIELDS = {"method": str, "model": str, "task": str, "budget": str, "keep": (int, float), "keep_ratio": (int, float),
              "n_samples": int, "n_visual": (int, float), "accuracy": (int, float, type(None)),
              "retention": (int, float, type(None)), "agreement": (int, float), "tokens_avg_layer": (int, float),
              "flops_ratio": (int, float)}


def check_rows(path: str, rows) -> None:
    """Refuse a results file a board cannot be rendered from, naming the file, the row and the field."""
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ConfigError(f"{path}: expected a list of result rows as `tokenbench compare --json` writes")
    if not rows:
        raise ConfigError(f"{path}: holds no rows; remove it, or write it again with `tokenbench compare --json`")
    for i, r in enumerate(rows):
        if "refused" in r:  # a method the model refuses (tokenbench.results.suites.refused_rows)
            bad = next((k for k in ("method", "model", "task", "refused") if not isinstance(r.get(k), str)), None)
            if bad:
                raise ConfigError(f"{path}: row {i} is a refused row without a text field {bad!r}; regenerate the "
                                  f"file with `{REGENERATE}`")
            continue
        for key, kind in ROW_FIELDS.items():
            if key not in r:
                raise ConfigError(f"{path}: row {i} ({r.get('method', '?')}) has no field {key!r}; rows must be "
                                  "as `tokenbench compare --json` writes them")
            if not isinstance(r[key], kind) or isinstance(r[key], bool):
                raise ConfigError(f"{path}: row {i} ({r.get('method', '?')}) field {key!r} is {r[key]!r}, not "
                                  f"{' or '.join(t.__name__ for t in (kind if isinstance(kind, tuple) else (kind,)))}")
    if not any(r["method"] == "full" for r in rows):
        raise ConfigError(f"{path}: has no `full` row; every run must include it (compare always does)")


def device_label(row: dict) -> str:
    """The device a row was timed on, in words: the GPU's name, or the CPU (its model, where the row records it) with
    its thread count."""
    prov = row.get("provenance", {})
    if str(row.get("device", "cpu")).startswith("cuda"):
        return prov.get("gpu") or "GPU"
    return f"{prov.get('cpu_model') or 'CPU'}, {prov.get('torch_threads', '?')} threads"


# -- statistics --------------------------------------------------------------------------------------------------------
def retention_interval(method, full, resamples: int = 1000, seed: int = 0) -> tuple[float, float] | None:
    """95 % paired-bootstrap percentile interval of mean score(method) / mean score(full) over the samples, from the
    rows' per-sample scores (``per_sample_scores``, or the correctness strings "1"/"0" of ``per_sample_correct``, same
    order). For a task whose primary metric is the mean per-sample score (accuracy, VQA accuracy, CIDEr) this is the
    interval of its retention; for F1 or MME's totals it is the interval of the per-sample accuracy's. Deterministic,
    so computed once per input (a board's cells, its header and the families page all ask for the same ones)."""
    if not method or len(method) != len(full):
        return None
    return _bootstrap(tuple(method), tuple(full), resamples, seed)


@functools.lru_cache(maxsize=4096)
def _bootstrap(method: tuple, full: tuple, resamples: int, seed: int) -> tuple[float, float] | None:
    rng = random.Random(seed)
    m = [float(c) for c in method]
    f = [float(c) for c in full]
    n = len(m)
    ratios = []
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        denom = sum(f[i] for i in idx)
        if denom:
            ratios.append(sum(m[i] for i in idx) / denom)
    if not ratios:
        return None
    ratios.sort()
    return ratios[int(0.025 * (len(ratios) - 1))], ratios[int(0.975 * (len(ratios) - 1))]


# -- rendering ---------------------------------------------------------------------------------------------------------
def label(row: dict) -> str:
    """A row's name on the board: its ``label`` (a method run in several configurations, e.g.
    ``alvts[skipped_as_kv=False]``), else its method (result files from before labels existed)."""
    return row.get("label") or row["method"]


def _budget_key(row: dict) -> tuple:
    if "refused" in row:
        return (True, label(row), 0.0)
    return (row["method"] != "full", label(row), -1.0 if row["budget"] == "all" else float(row["keep_ratio"]))


def _budget(label: str) -> str:
    """A budget label as people write it: ``64``, or a ratio as a small fraction (``r0.111111`` -> ``1/9``)."""
    if not label.startswith("r"):
        return label
    from fractions import Fraction

    return str(Fraction(float(label[1:])).limit_denominator(64))


def _budget_cell(row: dict) -> str:
    """A row's budget as the board's `budget` column writes it (``1/9``, ``64``; ``*``: a layer-mean budget)."""
    if row["budget"] == "all":
        return "all"
    return _budget(row["budget"]) + ("*" if row.get("budget_kind") == "layer_mean" else "")


def _scores(row: dict):
    return row.get("per_sample_scores") or row.get("per_sample_correct", "")


def _fmt(x, spec: str = ".3f") -> str:
    return "–" if x is None else format(x, spec)


def deterministic_cells(rows: list[dict]) -> list[list[str]]:
    """The deterministic columns (:data:`DETERMINISTIC`) of one run's rows, one list per row, in board order."""
    full = next((r for r in rows if r["method"] == "full"), None)
    if full is None:
        raise ConfigError("a result file has no `full` row; every run must include it (compare always does)")
    out = []
    for r in sorted(rows, key=_budget_key):
        if "refused" in r:  # the reason in place of scores (no `|` or line breaks: they would end the cell)
            why = " ".join(r["refused"].replace("|", "/").split())
            out.append([label(r), "every", "–", "refused", why] + ["–"] * (len(DETERMINISTIC) - 5))
            continue
        ci = retention_interval(_scores(r), _scores(full))
        retention = _fmt(r["retention"])
        if ci is not None and r["method"] != "full":
            retention += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
        own = r.get("method_keep", r["keep"])  # what the convention ran the method at, where it differs
        out.append([label(r), _budget_cell(r), _fmt(r["keep"], "g") + (f" → {own:g}" if own != r["keep"] else ""),
                    _fmt(r.get("score", r["accuracy"])), retention, _fmt(r["agreement"]), f"{r['tokens_avg_layer']:.1f}",
                    _fmt(r["flops_ratio"]), _fmt(r.get("kernels_per_layer"), ".1f"),
                    _fmt(r.get("host_syncs_prefill"), "d")])
    return out


def _table(header: list[str], body: list[list[str]]) -> str:
    from tabulate import tabulate

    return tabulate(body, headers=header, tablefmt="github", disable_numparse=True)


def _cell_key(row: dict) -> tuple[str, str]:
    return label(row), row.get("budget", "refused")


def match_of(row: dict) -> str:
    """A row's budget convention (:mod:`tokenbench.budgets`); rows from before conventions were named, and ``full``
    (the same in every convention), are ``matched``."""
    return row.get("match") or "matched"


#: what each convention's table is, as its heading says
MATCH_HEADINGS = {
    "matched": "Budgets matched: every method spends the same visual tokens per LLM layer, averaged over the layers "
               "(FastV and DART, which see every token before their layer, keep fewer after it)",
    "nominal": "Budgets nominal: each paper's own meaning of keep k (FastV and DART keep k from their layer on; "
               "SparseVLM runs its official per-stage rows; PyramidDrop its paper layers, ending at k)",
}


def split_by_match(rows: list[dict]) -> dict[str, list[dict]]:
    """Convention -> its table's rows: ``full`` in each, and only the rows that ran under it (a row copied from an
    earlier convention because the plan is the same, ``same_as``, is listed once, under that one)."""
    full = [r for r in rows if r["method"] == "full"]
    refused = [r for r in rows if "refused" in r]
    out: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("same_as") is None and r["method"] != "full" and "refused" not in r:
            out.setdefault(match_of(r), []).append(r)
    return {m: full + ran + refused for m, ran in out.items()} or {"matched": full + refused}


def accuracy_file(files: list[tuple[str, list[dict]]]) -> tuple[str, list[dict]]:
    """The (name, rows) of a board's files that give its deterministic columns: the CPU file with the most samples."""
    return max(files, key=lambda f: (f[1][0].get("device") == "cpu", f[1][0]["n_samples"]))


def render_board(model: str, task: str, files: list[tuple[str, list[dict]]]) -> tuple[str, list[dict]]:
    """Markdown for one (model, task) from its result files: the CPU file with the most samples gives the
    deterministic columns; each file adds a measured prefill speed-up column named for its device."""
    name, rows = accuracy_file(files)
    tables = []
    by_match = split_by_match(rows)
    for match, mrows in by_match.items():
        header = list(DETERMINISTIC)
        body = deterministic_cells(mrows)
        order = [_cell_key(r) for r in sorted(mrows, key=_budget_key)]
        for fname, frows in files:
            by_cell = {_cell_key(r): r for r in frows if match_of(r) == match or r["method"] == "full"}
            header.append(f"prefill × ({device_label(frows[0])})")
            for line, key in zip(body, order):
                r = by_cell.get(key)
                line.append(_fmt(r.get("speedup_prefill") if r else None, ".2f"))
        if len(by_match) > 1:
            tables += [f"## {MATCH_HEADINGS.get(match, 'Budgets ' + match)}", ""]
            if match != next(iter(by_match)):
                same = sorted({label(r) for r in rows if r.get("same_as") and match_of(r) == match})
                if same:
                    tables += [f"Not listed here, because they run the same plan in both: {', '.join(same)}.", ""]
        tables += [_table(header, body), ""]
    first = rows[0]
    prov = first.get("provenance", {})
    lines = [
        f"# {model} on {task}",
        "",
        f"Generated by `tokenbench leaderboard` from `{LEADERBOARD_DIR}/{RESULTS_SUBDIR}/` "
        f"({', '.join(f'`{f}`' for f, _ in files)}); do not edit by hand. Regenerate with `{REGENERATE}`.",
        "",
        f"{first['n_samples']} held-out samples (task version {first.get('task_version', '?')}, seed "
        f"{prov.get('seed', '?')}), {_visual_tokens(first)} visual tokens per image; accuracy from `{name}` "
        f"(tokenbench {prov.get('tokenbench', '?')}, torch {prov.get('torch', '?')}, transformers "
        f"{prov.get('transformers', '?')}, {device_label(first)}).{_suite_note(model, task, rows)}",
        "",
        *tables,
        *(["* `refused`: the model refuses the method before any compute (the reason is the one "
           "`tokenbench compare` gives); it is listed, not left out."] if any("refused" in r for r in rows) else []),
        "* `budget`: the budget asked for: a share of each image's visual tokens (`1/9`) or a number of them "
        "(`64`); `keep`: the visual tokens it comes to on this model (`16 → 4`: the method runs at 4 under this table's convention). `*` marks a layer-mean budget (visual tokens per "
        "LLM layer, averaged, rather than kept).",
        "* `retention`: accuracy / accuracy of `full` on the same samples; the interval is a 95 % paired bootstrap "
        "(1,000 resamples, seed 0).",
        "* `agreement`: share of answers identical to `full`'s. `tokens/layer`: visual tokens per LLM layer, averaged.",
        "* `FLOPs ratio`: prefill FLOPs (vision, projector, LLM, lm_head and the method's own work) over `full`'s.",
        "* `kernels/layer`: aten ops (views excluded) launched inside the LLM decoder layers' calls in the prefill, per "
        "layer (the layer, the router and the method's own work there); `syncs`: ops in the whole prefill that make "
        "the host wait for the device (a tensor read as a Python value, `nonzero`, boolean-mask indexing). Counted "
        "in an untimed prefill of the first sample, exact on any machine: at batch 1 on an accelerator each launch "
        "and each sync costs microseconds, so these, not FLOPs, predict latency.",
        "* `prefill ×`: `full`'s median prefill time over the method's, timed interleaved in the same process on the "
        "device named in the header (batch 1, the first sample). CPU timings of a model this small are mostly "
        "overhead; see `tokenbench bench` for speed at real scale.",
        "",
        f"![retention against FLOPs ratio]({_slug(model, task)}.png)",
        "",
    ]
    return "\n".join(lines), rows


def _suite_note(model: str, task: str, rows: list[dict]) -> str:
    """For a mini suite's board: why it has the samples it has, and what they resolve (the widest retention interval
    on it); else nothing."""
    from tokenbench.results.suites import MINI_SUITES

    if not any(s["model"] == model and s["task"] == task for s in MINI_SUITES):
        return ""
    full = next(r for r in rows if r["method"] == "full")
    cis = [retention_interval(_scores(r), _scores(full)) for r in rows if r["method"] != "full" and "refused" not in r]
    widest = max(((hi - lo) / 2 for lo, hi in filter(None, cis)), default=None)
    return (" The mini suites run this many samples so that CI checks every board within its time (`.ci/run`)"
            + (f"; at it a retention's 95 % interval here is at most ±{widest:.3f}." if widest is not None else "."))


def _visual_tokens(row: dict) -> str:
    """The visual tokens per image, as the header says them: one count, or a range with its mean where images of
    several sizes give different counts (``n_visual_range``)."""
    lo, hi = row.get("n_visual_range") or (row["n_visual"], row["n_visual"])
    return f"{row['n_visual']:g}" if lo == hi else f"{lo}–{hi} (mean {row['n_visual']:.1f})"


def _slug(model: str, task: str) -> str:
    return f"{model}--{task}".replace("/", "_").replace(":", "_")


def pareto_png(path: str, model: str, rows: list[dict]) -> None:
    """Retention against FLOPs ratio, one line per method through its budgets, each point labelled with its budget
    (as the board's `budget` column writes it); the legend sits outside the axes, so it covers no point (matplotlib,
    no display). Colour and marker together tell the lines apart, beyond the colour cycle's ten."""
    import itertools

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5), dpi=100)
    styles = zip(itertools.cycle(plt.rcParams["axes.prop_cycle"].by_key()["color"]), itertools.cycle("osD^vPX*"))
    def line(r):  # one line per method and convention it ran under
        return label(r) + ("" if match_of(r) == "matched" else f" ({match_of(r)})")

    rows = [r for r in rows if r.get("same_as") is None and "refused" not in r]
    for method, (color, marker) in zip(sorted({line(r) for r in rows} - {"full"}), styles):
        pts = sorted((r["flops_ratio"], r["retention"], _budget_cell(r)) for r in rows
                     if line(r) == method and r["retention"] is not None)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color, label=method)
            for x, y, budget in pts:
                ax.annotate(budget, (x, y), xytext=(4, 3), textcoords="offset points", fontsize=6, color=color)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("prefill FLOPs / full")
    ax.set_ylabel("retention (accuracy / full)")
    ax.set_title(f"{model}: retention against FLOPs (points labelled with their budget)")
    if ax.get_legend_handles_labels()[0]:  # none when no row has a retention (a model that answers nothing)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def boards(results_dir: str) -> dict[tuple[str, str], list[tuple[str, list[dict]]]]:
    """(model, task) -> the files' rows of that pair (a file of a several-task comparison feeds one board per task).
    Rows of two versions of one task are never put on one board: that is refused, naming the files."""
    grouped: dict[tuple[str, str], list[tuple[str, list[dict]]]] = {}
    for name, rows in load_results(results_dir):
        for key in dict.fromkeys((r["model"], r["task"]) for r in rows):
            grouped.setdefault(key, []).append((name, [r for r in rows if (r["model"], r["task"]) == key]))
    for (model, task), files in grouped.items():
        versions = {str(r.get("task_version", "?")): fname for fname, rows in files for r in rows}
        if len(versions) > 1:
            listed = ", ".join(f"{f} (version {v})" for v, f in versions.items())
            raise ConfigError(f"results of {model} on {task} come from different task versions: {listed}; a board "
                              f"never mixes them: move the outdated file(s) out of {results_dir} or rerun them")
    return grouped


def render(root: str = LEADERBOARD_DIR, plots: bool = True) -> list[str]:
    """Write every board's markdown (and plot) under ``root``, and for a task several models' boards cover, the
    methods across those models (``<task>--families.md``, :mod:`tokenbench.results.families`); returns the paths
    written."""
    from tokenbench.results.families import render_families

    written = []
    grouped = boards(os.path.join(root, RESULTS_SUBDIR))
    for task in sorted({t for _, t in grouped}):
        of_task = {m: files for (m, t), files in grouped.items() if t == task}
        if len(of_task) > 1:  # methods across families, side by side
            path = os.path.join(root, f"{_slug(task, 'families')}.md")
            with open(path, "w") as f:
                f.write(render_families(task, of_task))
            written.append(path)
    for (model, task), files in sorted(grouped.items()):
        text, rows = render_board(model, task, files)
        path = os.path.join(root, f"{_slug(model, task)}.md")
        with open(path, "w") as f:
            f.write(text)
        written.append(path)
        if plots:
            png = os.path.join(root, f"{_slug(model, task)}.png")
            pareto_png(png, model, rows)
            written.append(png)
    return written


# -- the check ---------------------------------------------------------------------------------------------------------
def committed_cells(markdown: str) -> list[list[str]]:
    """The deterministic columns of the tables in a committed board, one list per row, each led by its table's budget
    convention (a board with one table: ``matched``)."""
    out, match, idx, rows_of_table = [], "matched", None, 0
    for ln in markdown.splitlines():
        if ln.startswith("## Budgets "):
            match = ln[len("## Budgets "):].split(":")[0].strip()
        if not ln.startswith("|"):
            idx = None
            continue
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if idx is None:  # a table's header, then its separator
            idx = [cells.index(c) for c in DETERMINISTIC if c in cells]
            rows_of_table = 0
            if len(idx) != len(DETERMINISTIC):
                return []
            continue
        rows_of_table += 1
        if rows_of_table > 1:  # past the separator
            out.append([match] + [cells[i] for i in idx])
    return out


def fresh_cells(rows: list[dict]) -> list[list[str]]:
    """:func:`deterministic_cells` of each convention's table, led by the convention (as :func:`committed_cells`)."""
    return [[match] + c for match, mrows in split_by_match(rows).items() for c in deterministic_cells(mrows)]


def check(fresh_rows: list[dict], root: str = LEADERBOARD_DIR) -> list[str]:
    """Differences between the deterministic columns of ``fresh_rows`` and the committed board (empty: up to date)."""
    first = fresh_rows[0]
    path = os.path.join(root, f"{_slug(first['model'], first['task'])}.md")
    if not os.path.isfile(path):
        return [f"{path} does not exist"]
    with open(path) as f:
        committed = committed_cells(f.read())
    fresh = fresh_cells(fresh_rows)
    problems = []
    old = {(c[0], c[1], c[2]): c[1:] for c in committed}
    new = {(c[0], c[1], c[2]): c[1:] for c in fresh}
    for key in sorted(set(old) | set(new)):
        where = f"{key[1]} @ {key[2]} ({key[0]} budgets)"
        if key not in old:
            problems.append(f"{where}: not in {path}")
        elif key not in new:
            problems.append(f"{where}: in {path} but no longer produced")
        else:
            for col, a, b in zip(DETERMINISTIC, old[key], new[key]):
                if a != b:
                    problems.append(f"{where}: {col} committed {a}, now {b}")
    return problems
