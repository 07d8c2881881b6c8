"""``tokenbench leaderboard``: render the committed boards, or run the mini suites to update or check them
(:mod:`tokenbench.results.leaderboard`, :mod:`tokenbench.results.suites`)."""

from __future__ import annotations

import click

from tokenbench.cli import _guard


@click.command()
@click.option("--update", is_flag=True, help="Run the mini suites first and write their results (what CI checks).")
@click.option("--check", is_flag=True,
              help="Run the mini suites afresh and fail if the committed boards' deterministic columns differ "
                   "(timings are not compared, so each row is timed once, without warm-up).")
@click.option("--model", "-M", "models", multiple=True,
              help="Only this model's suite (repeatable; `tokenbench/results/suites.py` lists them). Default: all.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --check: check this many suites at once, each in a process of its own with its share of the "
                   "cores (the minis gain little from a second thread, so two suites side by side finish far sooner; "
                   "--update times its rows and always runs one suite at a time).")
@click.option("--dir", "root", default="leaderboards", show_default=True, type=click.Path(file_okay=False),
              help="The leaderboards directory (results in its results/ subfolder).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@_guard
def leaderboard(update, check, models, jobs, root, quiet) -> None:
    """Render the leaderboards (markdown and a Pareto plot per model and task) from the committed result files.

    \b
    The mini suites: every built-in method at keep-ratios 1/9, 2/9, 1/3 on the synthetic task, one board per
    shipped trained mini model (mini-llava, mini-llava-next, mini-qwen2.5-vl); a method a model refuses is a row saying why.
      tokenbench leaderboard                          # render from leaderboards/results/*.json
      tokenbench leaderboard --update                 # run the suites, write their results, render
      tokenbench leaderboard --check                  # CI: run the suites, compare the deterministic columns
      tokenbench leaderboard --check -M mini-llava    # one suite
      tokenbench leaderboard --check --jobs 2         # two suites at a time (CI runs --jobs 3)
    """
    import sys

    from tokenbench.errors import ConfigError
    from tokenbench.results import leaderboard as lb
    from tokenbench.results import suites

    if update and check:
        raise ConfigError("--update and --check exclude each other: --update rewrites the results, --check compares")
    if models and not (update or check):
        raise ConfigError("--model picks the suites --update or --check runs; rendering always renders every board")
    if jobs > 1 and not check:
        raise ConfigError(f"--jobs {jobs} runs --check's suites side by side; --update times every row for the board, "
                          "and suites beside each other slow each other's timings, so it runs them one at a time "
                          "(drop --jobs)" if update else f"--jobs {jobs} applies to --check; rendering runs nothing")
    if update or check:
        chosen = [suites.suite_of(m) for m in dict.fromkeys(models)] or list(suites.MINI_SUITES)
        if update:
            problems, n_rows = [], sum(len(_update_suite(suite, root, quiet)) for suite in chosen)
        else:
            from tokenbench.results.suite_check import check_suites

            problems, n_rows = check_suites(chosen, root, jobs, quiet or jobs > 1, on_done=lambda model, n, s: click.echo(
                f"{model}: {n} rows run in {s:.0f} s", err=True))
        if problems:
            click.echo("error: the leaderboard is out of date with the code:", err=True)
            for p in problems:
                click.echo(f"  {p}", err=True)
            click.echo(f"Regenerate it with `{lb.REGENERATE}` and commit {root}/.", err=True)
            sys.exit(1)
        if check:
            click.echo(f"leaderboard up to date: {n_rows} rows of {len(chosen)} board(s) match {root}/")
            return
    for path in lb.render(root):
        click.echo(f"wrote {path}")


def _update_suite(suite, root: str, quiet: bool) -> list[dict]:
    """Run one mini suite (its refused methods as rows), writing its results file as rows finish."""
    import os

    from tokenbench.cli.output import rows_as_they_finish
    from tokenbench.harness.compare import compare as run_compare
    from tokenbench.hf.quiet import quiet_transformers
    from tokenbench.results import leaderboard as lb
    from tokenbench.results import suites
    from tokenbench.results.files import write_rows
    from tokenbench.results.tables import format_table

    quiet_transformers()
    spec, refused = suites.suite_spec(suite), {}
    path = os.path.join(root, lb.RESULTS_SUBDIR, suites.results_name(suite))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rows: list[dict] = []

    def run(on_row):
        run_compare(spec, on_row=lambda r: (rows.append(r), on_row(r)), progress=not quiet, refused=refused)

    rows_as_they_finish(path, format_table, run)
    rows += suites.refused_rows(refused, rows)
    write_rows(path, rows)
    return rows
