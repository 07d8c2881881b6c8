"""``tokenbench list``: the registered methods, models and tasks with their origin and status, and the shipped
published scores (``tokenbench list published``)."""

from __future__ import annotations

import click

from tokenbench.cli import _guard


@click.command("list")
@click.argument("kind", required=False, type=click.Choice(["methods", "models", "tasks", "published"]))
@_guard
def list_cmd(kind: str | None) -> None:
    """List registered methods, models and tasks with their origin (built-in, or package and version); `published`:
    the published full-model scores shipped to check runs against, with their sources."""
    from tabulate import tabulate

    if kind == "published":
        from tokenbench.results.tables import format_published

        click.echo(format_published())
        return
    from tokenbench.api import METHODS, MODELS, TASKS

    registries = {"methods": METHODS, "models": MODELS, "tasks": TASKS}
    for name in [kind] if kind else list(registries):
        reg = registries[name]  # status imports each plugin: a broken or colliding one is shown, not fatal
        rows = [(n, str(reg.origin(n)), reg.status(n), reg.origin(n).location) for n in reg.names()]
        rows += [(p.name, str(p.origin), p.status, p.origin.location) for p in reg.skipped()]
        rows.sort(key=lambda r: r[0])
        headers: tuple[str, ...] = ("name", "origin", "status", "defined at")
        if name == "tasks":  # what each task reports and where its data comes from
            rows = [(n, *(_task_facts(reg.get(n)) if status.startswith("ok") else ("-", "-")), origin, status, *rest)
                    for n, origin, status, *rest in rows]
            headers = ("name", "primary metric", "default dataset", "origin", "status", "defined at")
        click.echo(f"{name}:")
        click.echo(tabulate(rows, headers=headers, tablefmt="simple"))
        click.echo()


def _task_facts(factory) -> tuple[str, str]:
    """(primary metric, default dataset id) of a task class (a factory function shows what it declares, else -)."""
    metric = getattr(factory, "primary_metric", "-")
    dataset = factory.default_dataset() if hasattr(factory, "default_dataset") else getattr(factory, "dataset", "") or (
        "generated" if getattr(factory, "primary_metric", None) else "-")
    return str(metric), str(dataset)
