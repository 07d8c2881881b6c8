"""``tokenbench results``: the runs the results store holds (:mod:`tokenbench.results.store`): list, show, export,
delete; and merge stores (:mod:`tokenbench.results.merge`)."""

from __future__ import annotations

import click

from tokenbench import config
from tokenbench.cli import _guard
from tokenbench.cli.options import STORE_OPTION, WIDE_OPTION


def _open(store: str | None):
    """The results store at ``--store`` (or the default path), which must exist: these commands read it."""
    import os

    from tokenbench.errors import ConfigError
    from tokenbench.results.store import Store

    path = config.store_path(store, False)
    if not os.path.exists(path):
        raise ConfigError(f"no results store at {path!r}: `tokenbench compare` creates it (or give --store PATH)")
    return Store(path)


@click.group(cls=click.Group)
def results() -> None:
    """The results store: the runs `compare` saved, sample by sample.

    \b
    Examples:
      tokenbench results list
      tokenbench results show 1
      tokenbench results export 1 --json rows.json --samples samples.jsonl
      tokenbench results delete 1
      tokenbench results merge merged.sqlite shard0.sqlite shard1.sqlite
    """


@results.command("list")
@STORE_OPTION
@_guard
def results_list(store) -> None:
    """The runs in the store: id, when, state, model, tasks, methods, budgets, rows finished."""
    from tokenbench.results.store import run_state
    from tokenbench.results.tables import format_runs

    db = _open(store)
    table = format_runs(db.runs(), run_state)
    click.echo(f"store: {db.path}")
    click.echo(table)


@results.command("show", context_settings={"ignore_unknown_options": True})  # `show -1` is a run id, not an option
@click.argument("run_id", type=int)
@STORE_OPTION
@WIDE_OPTION
@_guard
def results_show(run_id, store, wide) -> None:
    """Run RUN_ID's rows as `compare` prints them."""
    from tokenbench.results.tables import format_table

    run = _open(store).run(run_id)
    if not run["rows"]:
        click.echo(f"run {run_id} ({run['state']}) finished no row")
        return
    click.echo(format_table(run["rows"], wide))


@results.command("export")
@click.argument("run_id", type=int)
@click.option("--json", "json_path", default=None, help="Write the run's rows here, as `compare --json` writes them.")
@click.option("--samples", "samples_path", default=None,
              help="Write its per-sample records here: JSON lines for a .jsonl name, else one JSON list.")
@STORE_OPTION
@_guard
def results_export(run_id, json_path, samples_path, store) -> None:
    """Export run RUN_ID: its rows (--json; the leaderboard renders such a file) and its per-sample records."""
    import json
    import os

    from tokenbench.errors import ConfigError
    from tokenbench.results.files import check_writable, write_atomically, write_rows

    if json_path is None and samples_path is None:
        raise ConfigError("give --json PATH (the rows) and/or --samples PATH (the per-sample records)")
    if json_path is not None and samples_path is not None and \
            os.path.realpath(json_path) == os.path.realpath(samples_path):
        raise ConfigError(f"--json and --samples both name {json_path!r}, and the second would overwrite the first: "
                          "give two files")
    for path, option in ((json_path, "--json"), (samples_path, "--samples")):
        if path is not None:
            check_writable(path, option)
    db = _open(store)
    run = db.run(run_id)
    if json_path is not None:
        write_rows(json_path, run["rows"])
        click.echo(f"wrote {len(run['rows'])} rows to {json_path}")
    if samples_path is not None:
        records = [{"cell": c, "spec": spec, "sample": sid, **rec}
                   for c, spec, sid, rec in db.cell_records(run["cells"])]
        if samples_path.endswith(".jsonl"):
            write_atomically(samples_path, lambda fh: fh.writelines(json.dumps(r) + "\n" for r in records),
                             "--samples")
        else:
            write_rows(samples_path, records, "--samples")
        click.echo(f"wrote {len(records)} sample records to {samples_path}")


@results.command("delete")
@click.argument("run_id", type=int)
@STORE_OPTION
@_guard
def results_delete(run_id, store) -> None:
    """Delete run RUN_ID, and the stored samples that no other run uses."""
    n = _open(store).delete_run(run_id)
    click.echo(f"deleted run {run_id} and {n} stored samples no other run uses")


@results.command("merge")
@click.argument("out")
@click.argument("stores", nargs=-1)
@_guard
def results_merge(out, stores) -> None:
    """Merge STORES (the shards' --store files of `compare --shard`, or any stores) into OUT, created when missing.

    A sample both hold under one cell key must have the same record, or nothing is merged. Then `compare` with
    --store OUT computes nothing it holds and prints the rows.
    """
    from tokenbench.results.merge import merge_stores

    merged, seconds = merge_stores(out, list(stores))
    for m in merged:
        click.echo(f"{m.path}: {m.samples} samples ({m.cells} cells) new, {m.already} already in {out}, "
                   f"{m.runs} runs")
    click.echo(f"merged {len(merged)} stores into {out} in {seconds:.2f} s: {sum(m.samples for m in merged)} samples")
