"""``tokenbench flops``: prefill FLOPs predicted from a model's config alone (:mod:`tokenbench.harness.predict`)."""

from __future__ import annotations

import click

from tokenbench import config
from tokenbench.cli import _guard
from tokenbench.cli.options import MATCH_OPTION, WIDE_OPTION


@click.command()
@click.argument("methods", nargs=-1, required=True)
@click.option("--model", "-M", default="llava-1.5-7b", show_default=True,
              help="Registered name, family:<hub id or directory>, or a checkpoint directory; only its config is read.")
@click.option("--keep", "-k", default=None, help="Visual tokens kept, a list (e.g. 64,128,192).")
@click.option("--keep-ratio", "-r", default=None,
              help="Shares of the image's visual tokens kept, a list. Default: 1/9,2/9,1/3 (64/128/192 of 576).")
@click.option("--image-size", default=None, metavar="WxH",
              help="The image (width x height in pixels) for models whose token count depends on it "
                   "(LLaVA-NeXT, Qwen2.5-VL). Default: a 640x480 photo.")
@click.option("--n-text", type=click.IntRange(min=1), default=60, show_default=True,
              help="Non-visual prompt tokens per sample (system prompt + question; ~60 on LLaVA-1.5 benchmarks).")
@MATCH_OPTION
@click.option("--arg", "-a", "args", multiple=True, metavar="[METHOD.]KEY=VALUE", help="A method option.")
@click.option("--json", "json_path", default=None, help="Write the rows as JSON here.")
@WIDE_OPTION
@_guard
def flops(methods, model, keep, keep_ratio, image_size, n_text, match, args, json_path, wide) -> None:
    """Prefill FLOPs of METHODS (and `full`) from the model's config alone: no weights, no data.

    The schedule comes from each method's declared steps (the same accounting a run uses, checked against the
    router's record and against FlopCounterMode in the tests). `selector` is the method's own work (attention
    probes, ALVTS's low-rank selector), already included in the total.

    \b
    Example:
      tokenbench flops alvts fastv --model llava-1.5-7b --keep 64,128,192
      tokenbench flops alvts fastv --model llava-next-7b --keep-ratio 0.111 --image-size 1024x768
      tokenbench flops fastv sparsevlm pdrop --keep 64,128,192 --match matched,nominal
      tokenbench flops fastv visionzip --keep 64 --match flops=alvts
    """
    from tokenbench import budgets
    from tokenbench.harness.predict import predict_flops
    from tokenbench.results.files import check_writable, write_rows
    from tokenbench.results.tables import format_flops

    if json_path is not None:
        check_writable(json_path)  # before any work
    options = config.parse_method_args(args, methods)
    prediction = predict_flops(methods, options, model, config.parse_budgets(keep, keep_ratio, budgets.DEFAULT_BUDGETS),
                               budgets.parse(match), config.image_size(image_size), n_text)
    click.echo(format_flops(prediction, wide))
    if json_path:
        write_rows(json_path, prediction.rows)
        click.echo(f"wrote {len(prediction.rows)} rows to {json_path}")
