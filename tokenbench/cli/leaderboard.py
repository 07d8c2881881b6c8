"""``tokenbench leaderboard``: render the committed boards, or run the mini suite to update or check them
(:mod:`tokenbench.results.leaderboard`)."""

from __future__ import annotations

import click

from tokenbench.cli import _guard


@click.command()
@click.option("--update", is_flag=True, help="Run the mini suite first and write its results (what CI checks).")
@click.option("--check", is_flag=True,
              help="Run the mini suite afresh and fail if the committed board's deterministic columns differ.")
@click.option("--dir", "root", default="leaderboards", show_default=True, type=click.Path(file_okay=False),
              help="The leaderboards directory (results in its results/ subfolder).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@_guard
def leaderboard(update, check, root, quiet) -> None:
    """Render the leaderboards (markdown and a Pareto plot per model and task) from the committed result files.

    \b
    The mini suite: every built-in method at keep-ratios 1/9, 2/9, 1/3 on mini-llava, 500 synthetic samples.
      tokenbench leaderboard            # render from leaderboards/results/*.json
      tokenbench leaderboard --update   # run the mini suite, write its results, render
      tokenbench leaderboard --check    # CI: run the suite, compare accuracy/retention/agreement/tokens/FLOPs
    """
    import os
    import sys

    from tokenbench.cli.output import rows_as_they_finish
    from tokenbench.errors import ConfigError
    from tokenbench.hf.quiet import quiet_transformers
    from tokenbench.results import leaderboard as lb
    from tokenbench.results.tables import format_table

    if update and check:
        raise ConfigError("--update and --check exclude each other: --update rewrites the results, --check compares")
    if update or check:
        from tokenbench.harness.compare import compare as run_compare

        quiet_transformers()
        if update:
            path = os.path.join(root, lb.RESULTS_SUBDIR, lb.MINI_RESULTS)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            rows_as_they_finish(path, format_table, lambda on_row: run_compare(
                lb.suite_spec(), on_row=on_row, progress=not quiet))
        else:
            rows = run_compare(lb.suite_spec(), progress=not quiet)
            problems = lb.check(rows, root)
            if problems:
                click.echo("error: the leaderboard is out of date with the code:", err=True)
                for p in problems:
                    click.echo(f"  {p}", err=True)
                click.echo(f"Regenerate it with `{lb.REGENERATE}` and commit {root}/.", err=True)
                sys.exit(1)
            click.echo(f"leaderboard up to date: {len(rows)} rows match {root}/")
            return
    for path in lb.render(root):
        click.echo(f"wrote {path}")
