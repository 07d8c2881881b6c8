"""The click options several commands share: the run options of compare and run (:func:`_common`), ``--match``,
``--seed``'s range, ``--store`` of the results commands and ``--wide``."""

from __future__ import annotations

import click

#: every seed torch, numpy and Python's random all accept
SEED = click.IntRange(0, 2**32 - 1)

MATCH_OPTION = click.option(
    "--match", "match", default="matched", show_default=True, metavar="CONVENTION[,...]",
    help="What the budget means for each method. matched: the same visual tokens per LLM layer on average (FastV "
         "keeps fewer after its layer); nominal: each paper's own meaning (FastV keeps k from its layer on, SparseVLM "
         "its official rows); flops=METHOD: every method at METHOD's prefill FLOPs. A list runs each in turn.")

#: every command that prints a table: the default table fits a 120-column terminal
COMPILE_OPTION = click.option(
    "--compile", "compile_layers", is_flag=True,
    help="Time the decoder layers (and the routed layers' core) through torch.compile: inductor, with CUDA graphs on "
         "CUDA. Each variant is compiled in an untimed run first; rows say compiled and compile_s.")
WIDE_OPTION = click.option("--wide", is_flag=True,
                           help="Print every column (the default table shows the main ones and fits 120 columns; "
                                "the JSON rows always hold every field).")

SHARD_OPTION = click.option(
    "--shard", default=None, metavar="I/N|slurm",
    help="Compute only shard I of N (I from 0) of every cell into --store and stop without scoring (a scheduler "
         "array's job); `slurm` reads SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT. Then `tokenbench results merge` "
         "the shards' stores and run the same compare on the merged store.")
STORE_OPTION = click.option("--store", "store", default=None, metavar="PATH",
                            help="The results store (default: results.sqlite in the tokenbench cache directory).")


PROMPT_STYLE_OPTION = click.option(
    "--prompt-style", default=None, type=click.Choice(["chat", "llava"]),
    help="chat (default): the checkpoint's chat template, as lmms-eval prompts by default; llava: LLaVA's own "
         "conversation template with its system prompt (LLaVA-1.5 and LLaVA-NeXT), as behind LLaVA's published scores.")
IMAGE_PIXELS_OPTION = click.option(
    "--image-pixels", default=None, type=click.Choice(["lmms-eval", "checkpoint"]),
    help="Qwen2.5-VL's image pixel range: lmms-eval (default: 200,704 to 1,605,632, as lmms-eval runs it) or "
         "checkpoint (the processor's own 3,136 to 12,845,056). Models that resize to one size have none.")


def _common(fn):
    """The options compare and run share."""
    options = [
        click.option("--model", "-M", default="mini-llava", show_default=True,
                     help="Registered name, family:<hub id or directory> (e.g. llava:llava-hf/llava-1.5-7b-hf), "
                          "or a local checkpoint directory."),
        click.option("--task", "-t", default="synthetic", show_default=True,
                     help="Registered task name, or several: pope,textvqa,gqa (then the papers' average retention is "
                          "printed too). See `tokenbench list tasks`."),
        click.option("--data", "data", multiple=True, metavar="[TASK=]PATH",
                     help="A local copy of the task's dataset instead of the hub: a save_to_disk directory, a copy of "
                          "the hub repository, a parquet/jsonl file or folder. With several tasks: pope=PATH. "
                          "Repeatable."),
        PROMPT_STYLE_OPTION,
        IMAGE_PIXELS_OPTION,
        click.option("--keep", "-k", default=None,
                     help="Visual tokens kept, one value or a list: 16,32,48 (of the default's 144)."),
        click.option("--keep-ratio", "-r", default=None,
                     help="Share of visual tokens kept, floor(r*N), one value or a list. Default: 1/9 of each image's "
                          "visual tokens (16 of mini-llava's 144; 64 of LLaVA-1.5's 576)."),
        click.option("--budget-scope", default="global", show_default=True, type=click.Choice(["global", "crop"]),
                     help="global: the budget covers all of an image's visual tokens (LLaVA-NeXT: base image and "
                          "crops together); crop: it is split over the crops in proportion to their tokens."),
        MATCH_OPTION,
        click.option("--limit", "-n", type=click.IntRange(min=1), default=None,
                     help="Use the first N task samples (the same for every method). Default: the whole split."),
        click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N."),
        click.option("--dtype", default="float32", show_default=True,
                     type=click.Choice(["float32", "bfloat16", "float16"])),
        click.option("--seed", type=SEED, default=0, show_default=True,
                     help="Seeds the task split and random methods."),
        click.option("--batch-size", "-b", type=click.IntRange(min=1), default=8, show_default=True),
        click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
                     help="Timed repeats (median reported)."),
        click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True,
                     help="Untimed warm-up runs before timing."),
        COMPILE_OPTION,
        click.option("--arg", "-a", "args", multiple=True, metavar="[METHOD.]KEY=VALUE",
                     help="A method option, typed (Python literal): -a layer=3 or -a fastv.layer=3. Repeatable."),
        click.option("--task-arg", "-T", "task_args", multiple=True, metavar="KEY=VALUE",
                     help="A task option, typed (Python literal): -T n=500. Repeatable."),
        click.option("--json", "json_path", default=None,
                     help="Write the rows as JSON here (rewritten after every finished row)."),
        WIDE_OPTION,
        click.option("--store", "store", default=None, metavar="PATH",
                     help="The results store: every finished batch is saved there and a rerun reuses it. Default: "
                          "results.sqlite in the tokenbench cache directory."),
        click.option("--no-store", is_flag=True, help="Run without a results store (nothing reused or saved)."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bars."),
        click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Shard the samples over N processes (each its own GPU with --device cuda), merged through "
                          "--store: runs this command under `accelerate launch --num_processes N`."),
        SHARD_OPTION,
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn
