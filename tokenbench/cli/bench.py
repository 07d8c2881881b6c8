"""``tokenbench bench``: full and methods timed at real scale on random weights (:mod:`tokenbench.harness.bench`)."""

from __future__ import annotations

import click

from tokenbench import config
from tokenbench.cli import _guard
from tokenbench.cli.options import COMPILE_OPTION, MATCH_OPTION, SEED, WIDE_OPTION


@click.command()
@click.argument("methods", nargs=-1)
@click.option("--model", "-M", "models", multiple=True, default=("llava-1.5-7b",), show_default=True,
              help="A registered model whose config is built with random weights; repeat for several "
                   "(-M llava-1.5-7b -M llava-next-7b -M qwen2.5-vl-7b).")
@click.option("--device", default=None, help="cpu, cuda or cuda:N. Default: cuda when available, else cpu.")
@click.option("--dtype", default=None, type=click.Choice(["float32", "bfloat16", "float16"]),
              help="Default: bfloat16 on a GPU, float32 on a CPU (CPUs without native bfloat16 emulate it, slowly).")
@click.option("--layers", type=int, default=None,
              help="Keep the first N LLM layers (a truncated model). Default: all on a GPU, 2 on a CPU.")
@click.option("--keep", "-k", default=None, help="Visual tokens kept, a list (e.g. 64,128,192).")
@click.option("--keep-ratio", "-r", default=None,
              help="Shares of each image's visual tokens kept, a list. Default: 1/9,2/9,1/3 (64/128/192 of 576) on a "
                   "GPU, 1/9 on a CPU.")
@click.option("--image-size", default=None, metavar="WxH", help="The image in pixels. Default: 640x480 (a photo).")
@click.option("--n-text", type=int, default=60, show_default=True,
              help="Non-visual prompt tokens (a POPE-length prompt is about 60 on LLaVA-1.5).")
@click.option("--new-tokens", type=int, default=8, show_default=True,
              help="Tokens generated per timed run (the end token is ignored, so every variant decodes as many).")
@click.option("--repeats", type=int, default=None,
              help="Timed rounds (median and IQR reported). Default: 5 on a GPU, 3 on a CPU.")
@click.option("--warmup", type=int, default=None, help="Untimed rounds first. Default: 2 on a GPU, 1 on a CPU.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seeds the random weights, image and methods.")
@MATCH_OPTION
@click.option("--arg", "-a", "args", multiple=True, metavar="[METHOD.]KEY=VALUE", help="A method option.")
@click.option("--json", "json_path", default=None,
              help="Write the rows as JSON here, rewritten after each row (a model's rows finish together, after its "
                   "interleaved rounds).")
@COMPILE_OPTION
@WIDE_OPTION
@_guard
def bench(methods, models, device, dtype, layers, keep, keep_ratio, image_size, n_text, new_tokens, repeats, warmup,
          seed, match, args, json_path, wide, compile_layers) -> None:
    """Time `full` and METHODS at real scale, with random weights built from the shipped configs: no download, no
    trained weights needed for speed. Default METHODS: on a GPU every registered method the model supports; on a
    CPU fastv and alvts.

    Prints, per model, the FLOPs-predicted prefill speed-up beside the measured one, and the latency stages
    (vision, time to first token, decode per token, method overhead), KV cache and peak memory; on stderr, a line
    per finished run with the time left.

    On a CPU the defaults are a quick look: fastv and alvts at keep-ratio 1/9, the first 2 LLM layers, float32, 3
    timed rounds after 1 warm-up: 3 min 21 s for LLaVA-1.5-7B on 2 idle cores of an AMD EPYC server
    (66 s of it ALVTS's SVD initialisation, untimed).

    \b
    Examples:
      tokenbench bench --device cpu                                  # the quick CPU look (LLaVA-1.5-7B, 2 layers)
      tokenbench bench --device cpu --compile                        # the same, the layers through torch.compile
      tokenbench bench fastv alvts -M llava-1.5-7b -M llava-next-7b -M qwen2.5-vl-7b --device cuda --json gpu.json
    """
    from tokenbench.cli.output import rows_as_they_finish
    from tokenbench.config import parse_budgets
    from tokenbench.errors import ConfigError
    from tokenbench.harness.bench import GPU_DEFAULTS, BenchSpec, bench as run_bench, cpu_note, defaults_for
    from tokenbench.results.tables import format_bench

    if args and not methods:
        raise ConfigError("method options (-a) need the methods named: tokenbench bench fastv -a layer=3")
    options = config.method_options(methods, args)
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    given = {"methods": tuple((m, options.get(m, {})) for m in methods if m != "full") if methods else None,
             "budgets": parse_budgets(keep, keep_ratio) if keep is not None or keep_ratio is not None else None,
             "dtype": dtype, "layers": layers, "repeats": repeats, "warmup": warmup}
    defaults = defaults_for(device)  # what a left-out option means: the whole benchmark on a GPU, a quick CPU look
    chosen = {key: defaults[key] if value is None else value for key, value in given.items()}
    left_out = {key for key, value in given.items() if value is None}
    spec = BenchSpec(
        methods=chosen["methods"], models=tuple(models), budgets=chosen["budgets"], device=device,
        dtype=chosen["dtype"], layers=layers, default_layers=defaults["layers"], n_text=n_text,
        image_size=config.image_size(image_size), new_tokens=new_tokens, warmup=chosen["warmup"],
        repeats=chosen["repeats"], compile=compile_layers,
        seed=seed, named=frozenset(methods), match=config.one_match(match),
    )
    note = cpu_note(left_out) if left_out and defaults is not GPU_DEFAULTS else ""
    rows_as_they_finish(json_path, lambda rows: format_bench(rows, wide), lambda on_row: run_bench(
        spec, on_row=on_row, on_note=lambda m: click.echo(f"note: {m}", err=True),
        on_progress=lambda m: click.echo(f"bench: {m}", err=True), note=note))
