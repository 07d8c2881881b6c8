"""``tokenbench compare`` and ``tokenbench run``: methods against ``full`` at the same budgets on the same samples."""

from __future__ import annotations

import sys

import click

from tokenbench import config
from tokenbench.cli import _guard
from tokenbench.cli.options import _common


@click.command()
@click.argument("methods", nargs=-1, required=True)
@_common
@_guard
def compare(methods, **opts) -> None:
    """Compare METHODS (and `full`, always the reference row) at the same budgets on the same samples.

    \b
    Examples:
      tokenbench compare fastv random
      tokenbench compare fastv random --keep 16,32,48 -a fastv.layer=3 --json rows.json
      tokenbench compare alvts fastv --compile
      tokenbench compare fastv --model llava:/path/to/llava-1.5-7b-hf --device cuda --dtype bfloat16
      tokenbench compare alvts fastv --model llava-1.5-7b --task pope --device cuda --dtype bfloat16
      tokenbench compare divprune -a divprune.positions=original --prompt-style llava
      tokenbench compare alvts fastv --task pope,gqa --data pope=/path/to/POPE --data gqa=/path/to/GQA
      tokenbench compare fastv random --shard 0/2 --store shard0.sqlite   # one job of a scheduler array
    """
    _run(methods, **opts)


@click.command()
@click.argument("method")
@_common
@_guard
def run(method, **opts) -> None:
    """Run one METHOD (with `full` as its reference) and print its row.

    \b
    Example:
      tokenbench run fastv --keep 128 -a layer=3
    """
    _run((method,), **opts)


def _run(methods, model, task, keep, keep_ratio, budget_scope, match, limit, device, dtype, seed, batch_size, repeats,
         warmup, compile_layers, args, task_args, data, json_path, wide, store, no_store, quiet, processes,
         prompt_style, image_pixels, shard) -> None:
    """compare and run: the options parsed into a RunSpec, the run launched over ``processes`` where asked, its rows
    printed and written as they finish."""
    options = config.method_options(methods, args)
    from tokenbench import budgets
    from tokenbench.cli.output import rows_as_they_finish
    from tokenbench.config import parse_budgets
    from tokenbench.harness import parallel
    from tokenbench.harness.compare import RunSpec
    from tokenbench.results.tables import format_table

    spec = RunSpec(
        methods=tuple((m, options.get(m, {})) for m in methods), model=model, task=task,
        budgets=parse_budgets(keep, keep_ratio), limit=limit, device=device, dtype=dtype, seed=seed,
        batch_size=batch_size, warmup=warmup, repeats=repeats, compile=compile_layers,
        task_options=config.parse_task_args(task_args) | config.data_args(data),
        budget_scope=budget_scope, store=config.store_path(store, no_store), match=budgets.parse(match),
        prompt_style=prompt_style, image_pixels=image_pixels,
    )
    world = parallel.world_size()
    if shard is not None:
        return _shard(spec, shard, max(world, processes), json_path, quiet)
    if processes > 1 and world == 1:
        parallel.launch(processes, spec, sys.argv[1:])  # this command again, in each of the processes
    if processes > 1 and world != processes:
        from tokenbench.errors import ConfigError

        raise ConfigError(f"--processes {processes} under a launch of {world} processes; give one of the two")
    rows_as_they_finish(json_path, lambda rows: format_table(rows, wide), lambda on_row: parallel.compare(
        spec, on_row=on_row, progress=not quiet, on_warning=lambda w: click.echo(f"warning: {w}", err=True)))


def _shard(spec, value: str, processes: int, json_path, quiet: bool) -> None:
    """``--shard``: this shard of every cell into the store (:mod:`tokenbench.harness.shards`), and what to do next."""
    from tokenbench.harness import shards

    index, count = shards.parse_shard(value)
    shards.check_shard(spec, (index, count), processes, json_path)
    computed = shards.run_shard(spec, (index, count), progress=not quiet)
    click.echo(f"shard {index}/{count}: {sum(computed.values())} samples of {len(computed)} cells computed into "
               f"{spec.store} (none scored). When every shard has finished: `tokenbench results merge OUT.sqlite "
               "<each shard's store>`, then this command without --shard and with --store OUT.sqlite prints the rows")
