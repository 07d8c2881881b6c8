"""Rows printed and written as they finish: what every command that runs cells shows when it stops, early or not."""

from __future__ import annotations

from typing import Callable

import click


def rows_as_they_finish(json_path: str | None, fmt: Callable[[list[dict]], str],
                        run: Callable[[Callable[[dict], None]], object]) -> None:
    """``run(on_row)``, keeping every finished row: each is written to ``json_path`` at once (checked writable before
    anything runs), and the table ``fmt(rows)`` of what finished is printed even when a later step fails."""
    if json_path is not None:
        from tokenbench.results.files import check_writable

        check_writable(json_path)
    rows: list[dict] = []
    written = [0]  # rows the file holds

    def on_row(row):
        rows.append(row)
        if json_path:
            from tokenbench.results.files import write_rows

            write_rows(json_path, rows)
            written[0] = len(rows)

    from tokenbench.hf.quiet import quiet_transformers

    quiet_transformers()
    try:
        run(on_row)
    finally:
        if rows:
            click.echo(fmt(rows))
            if json_path and written[0]:
                click.echo(f"wrote {written[0]} rows to {json_path}")
