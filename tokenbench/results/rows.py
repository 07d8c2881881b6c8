"""Result rows: what a row holds and how rows combine (the papers' average retention over tasks)."""

from __future__ import annotations


FLOPS_CONVENTION = ("FLOPs = 2 x MACs (multiply-accumulates); matmul work only; attention as the full n_q x n_kv "
                    "rectangle; fastv_formula_llm_macs is the FastV paper's formula (MACs, printed as FLOPs by papers)")


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
