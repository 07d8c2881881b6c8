"""``tokenbench calibrate``: fit a method's artefact on the frozen model (:mod:`tokenbench.harness.calibrate`)."""

from __future__ import annotations

import click

from tokenbench import config
from tokenbench.cli import _guard
from tokenbench.cli.options import SEED


@click.command()
@click.argument("method")
@click.option("--model", "-M", default="mini-llava", show_default=True,
              help="Registered name, family:<hub id or directory>, or a local checkpoint directory.")
@click.option("--task", "-t", default="synthetic", show_default=True, help="Task to draw calibration samples from.")
@click.option("--samples", "-n", type=click.IntRange(min=1), default=256, show_default=True,
              help="Calibration samples (paper: 256).")
@click.option("--heldout", type=click.IntRange(min=1), default=64, show_default=True,
              help="Further samples, not fitted on, for the score error before and after.")
@click.option("--seed", type=SEED, default=1, show_default=True,
              help="Seeds the calibration split; compare evaluates on seed 0, so the default never sees those samples.")
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True,
              help="Passes over the calibration samples.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-2, show_default=True,
              help="Learning rate as the method defines it (ALVTS: Adam, relative to each factor's RMS).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "bfloat16", "float16"]))
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--arg", "-a", "args", multiple=True, metavar="[METHOD.]KEY=VALUE",
              help="A method option the fit depends on (ALVTS: rank, pooling, causal, rope).")
@click.option("--task-arg", "-T", "task_args", multiple=True, metavar="KEY=VALUE", help="A task option.")
@click.option("--out", "-o", default=None,
              help="Where to write the artefact (.safetensors). Default: the location runs look in for this model.")
@_guard
def calibrate(method, model, task, samples, heldout, seed, epochs, lr, device, dtype, batch_size, args, task_args,
              out) -> None:
    """Fit METHOD's artefact on the frozen model (ALVTS: importance-consistency calibration of its selector).

    \b
    Examples:
      tokenbench calibrate alvts -n 64                            # refit for the default model; prints how to use it
      tokenbench calibrate alvts -M llava:/ckpt/llava-1.5-7b-hf -t mytask --device cuda --out alvts-7b.safetensors
      tokenbench compare alvts fastv -a alvts.calibration=alvts-7b.safetensors -M llava:/ckpt/llava-1.5-7b-hf
    """
    from tokenbench.api import METHODS
    from tokenbench.harness.calibrate import run as run_calibration
    from tokenbench.hf.quiet import quiet_transformers

    METHODS.get(method)
    options = config.parse_method_args(args, (method,)).get(method, {})
    quiet_transformers()
    path, meta = run_calibration(method, options, model, task, config.parse_task_args(task_args), samples=samples,
                                 heldout=heldout, seed=seed, batch_size=batch_size, device=device, dtype=dtype,
                                 epochs=epochs, lr=lr, out=out, log=lambda m: click.echo(m, err=True))
    click.echo(f"wrote {path}")
    for k in ("score_error_before", "score_error_after"):
        if k in meta:
            click.echo(f"{k}: {meta[k]:.6g}")
