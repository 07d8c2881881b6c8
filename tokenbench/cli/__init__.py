"""The ``tokenbench`` command line. Heavy imports live inside the commands, so ``--help`` is instant."""

from __future__ import annotations

import sys

import click

from tokenbench import config
from tokenbench.errors import TokenbenchError


class UserError(click.ClickException):
    """A user's mistake: printed as one line on stderr, exit status 2, no traceback."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _guard(fn):
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TokenbenchError as exc:
            raise UserError(str(exc)) from None

    return wrapper


class _Group(click.Group):
    """Every user error, click's own usage errors included, is one ``error:`` line on stderr and exit status 2."""

    def main(self, *args, **kwargs):
        from click.exceptions import Abort, NoArgsIsHelpError

        kwargs["standalone_mode"] = False
        try:
            rv = super().main(*args, **kwargs)
        except NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
            sys.exit(0)
        except click.UsageError as exc:
            argv = kwargs.get("args") or (args[0] if args else None) or sys.argv[1:]
            command = exc.ctx.command_path if exc.ctx else " ".join(
                ["tokenbench", *[a for a in argv if a in self.commands][:1]])  # click leaves ctx unset for some errors
            where = f" (see `{command} --help`)"
            click.echo(f"error: {exc.format_message()}{where}", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except Abort as exc:
            if isinstance(exc.__cause__, KeyboardInterrupt):  # click turns Ctrl-C into Abort
                click.echo("interrupted", err=True)
                sys.exit(130)
            click.echo("aborted", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:  # the reader went away (`| head`): nothing left to say (Python's documented recipe)
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except Exception as exc:  # not a user's mistake: a bug, said to be one, with whose it is and where to report it
            import traceback

            traceback.print_exc()
            click.echo(self.bug_line(exc), err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    @staticmethod
    def bug_line(exc: BaseException) -> str:
        """The last line under an unexpected traceback: whose bug it is (the plugin whose module holds the innermost
        frame of tokenbench's or a plugin's, else tokenbench) and where to report it."""
        import traceback

        from tokenbench.contract.registry import one_line, plugin_of, project_url

        what = one_line(f"{type(exc).__name__}: {exc}")
        frames = [(f.f_globals.get("__name__", ""), getattr(f.f_code, "co_qualname", f.f_code.co_name))
                  for f, _ in traceback.walk_tb(exc.__traceback__)]
        plugin = plugin_of(frames[::-1])
        if plugin is not None:
            origin, entry_point = plugin
            url = project_url(origin.source)
            where = f" ({url})" if url else ""
            return (f"error: this is a bug in plugin {origin} ({entry_point}): {what}; report it to that "
                    f"package's authors{where}")
        from tokenbench import __version__

        url = project_url("tokenbench")
        where = f"at {url}" if url else "to the tokenbench maintainers"
        return (f"error: this is a bug in tokenbench {__version__}: {what}; please report it {where} with the "
                "traceback above")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tokenbench")
def main() -> None:
    """tokenbench: compare visual-token reduction methods on vision-language models, one harness for all.

    \b
    Examples:
      tokenbench compare alvts fastv                 # the embedded default: mini-llava, synthetic task, CPU
      tokenbench compare fastv random --keep 16,32,48 --json rows.json
      tokenbench calibrate alvts                     # fit ALVTS's selector for the default model
      tokenbench list methods
    """


# -- list -----------------------------------------------------------------------------------------------------------------
@main.command("list")
@click.argument("kind", required=False, type=click.Choice(["methods", "models", "tasks"]))
@_guard
def list_cmd(kind: str | None) -> None:
    """List registered methods, models and tasks with their origin (built-in, or package and version)."""
    from tabulate import tabulate

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


#: every seed torch, numpy and Python's random all accept
SEED = click.IntRange(0, 2**32 - 1)


# -- run / compare ----------------------------------------------------------------------------------------------------------
MATCH_OPTION = click.option(
    "--match", "match", default="matched", show_default=True, metavar="CONVENTION[,...]",
    help="What the budget means for each method. matched: the same visual tokens per LLM layer on average (FastV "
         "keeps fewer after its layer); nominal: each paper's own meaning (FastV keeps k from its layer on, SparseVLM "
         "its official rows); flops=METHOD: every method at METHOD's prefill FLOPs. A list runs each in turn.")


def _common(fn):
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
        click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "bfloat16", "float16"])),
        click.option("--seed", type=SEED, default=0, show_default=True, help="Seeds the task split and random methods."),
        click.option("--batch-size", "-b", type=click.IntRange(min=1), default=8, show_default=True),
        click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
                     help="Timed repeats (median reported)."),
        click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True,
                     help="Untimed warm-up runs before timing."),
        click.option("--arg", "-a", "args", multiple=True, metavar="[METHOD.]KEY=VALUE",
                     help="A method option, typed (Python literal): -a layer=3 or -a fastv.layer=3. Repeatable."),
        click.option("--task-arg", "-T", "task_args", multiple=True, metavar="KEY=VALUE",
                     help="A task option, typed (Python literal): -T n=500. Repeatable."),
        click.option("--json", "json_path", default=None,
                     help="Write the rows as JSON here (rewritten after every finished row)."),
        click.option("--store", "store", default=None, metavar="PATH",
                     help="The results store: every finished batch is saved there and a rerun reuses it. Default: "
                          "results.sqlite in the tokenbench cache directory."),
        click.option("--no-store", is_flag=True, help="Run without a results store (nothing reused or saved)."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bars."),
        click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Shard the samples over N processes (each its own GPU with --device cuda), merged through "
                          "--store: runs this command under `accelerate launch --num_processes N`."),
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


@main.command()
@click.argument("methods", nargs=-1, required=True)
@_common
@_guard
def compare(methods, **opts) -> None:
    """Compare METHODS (and `full`, always the reference row) at the same budgets on the same samples.

    \b
    Examples:
      tokenbench compare fastv random
      tokenbench compare fastv random --keep 16,32,48 -a fastv.layer=3 --json rows.json
      tokenbench compare fastv --model llava:/path/to/llava-1.5-7b-hf --device cuda --dtype bfloat16
      tokenbench compare alvts fastv --model llava-1.5-7b --task pope --device cuda --dtype bfloat16
      tokenbench compare alvts fastv --task pope,gqa --data pope=/path/to/POPE --data gqa=/path/to/GQA
    """
    _run(methods, **opts)


@main.command()
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
         warmup, args, task_args, data, json_path, store, no_store, quiet, processes) -> None:
    options = config.method_options(methods, args)
    from tokenbench import budgets
    from tokenbench.harness import parallel
    from tokenbench.harness.compare import RunSpec
    from tokenbench.config import parse_budgets

    spec = RunSpec(
        methods=tuple((m, options.get(m, {})) for m in methods), model=model, task=task,
        budgets=parse_budgets(keep, keep_ratio), limit=limit, device=device, dtype=dtype, seed=seed,
        batch_size=batch_size, warmup=warmup, repeats=repeats, task_options=config.parse_task_args(task_args) | config.data_args(data),
        budget_scope=budget_scope, store=config.store_path(store, no_store), match=budgets.parse(match),
    )
    world = parallel.world_size()
    if processes > 1 and world == 1:
        parallel.launch(processes, spec, sys.argv[1:])  # this command again, in each of the processes
    if processes > 1 and world != processes:
        from tokenbench.errors import ConfigError

        raise ConfigError(f"--processes {processes} under a launch of {world} processes; give one of the two")
    _rows_as_they_finish(json_path, format_table, lambda on_row: parallel.compare(
        spec, on_row=on_row, progress=not quiet, on_warning=lambda w: click.echo(f"warning: {w}", err=True)))


def _rows_as_they_finish(json_path: str | None, fmt, run) -> None:
    """``run(on_row)``, keeping every finished row: each is written to ``json_path`` at once (checked writable before
    anything runs), and the table ``fmt(rows)`` of what finished is printed even when a later step fails."""
    if json_path is not None:
        from tokenbench.results.provenance import check_writable

        check_writable(json_path)
    rows: list[dict] = []
    written = [0]  # rows the file holds

    def on_row(row):
        rows.append(row)
        if json_path:
            from tokenbench.results.provenance import write_rows

            write_rows(json_path, rows)
            written[0] = len(rows)

    _quiet_transformers()
    try:
        run(on_row)
    finally:
        if rows:
            click.echo(fmt(rows))
            if json_path and written[0]:
                click.echo(f"wrote {written[0]} rows to {json_path}")


@main.command()
@click.argument("method")
@click.option("--model", "-M", default="mini-llava", show_default=True,
              help="Registered name, family:<hub id or directory>, or a local checkpoint directory.")
@click.option("--task", "-t", default="synthetic", show_default=True, help="Task to draw calibration samples from.")
@click.option("--samples", "-n", type=click.IntRange(min=1), default=256, show_default=True, help="Calibration samples (paper: 256).")
@click.option("--heldout", type=click.IntRange(min=1), default=64, show_default=True,
              help="Further samples, not fitted on, for the score error before and after.")
@click.option("--seed", type=SEED, default=1, show_default=True,
              help="Seeds the calibration split; compare evaluates on seed 0, so the default never sees those samples.")
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True, help="Passes over the calibration samples.")
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

    METHODS.get(method)
    options = config.parse_method_args(args, (method,)).get(method, {})
    _quiet_transformers()
    path, meta = run_calibration(method, options, model, task, config.parse_task_args(task_args), samples=samples,
                                 heldout=heldout, seed=seed, batch_size=batch_size, device=device, dtype=dtype,
                                 epochs=epochs, lr=lr, out=out, log=lambda m: click.echo(m, err=True))
    click.echo(f"wrote {path}")
    for k in ("score_error_before", "score_error_after"):
        if k in meta:
            click.echo(f"{k}: {meta[k]:.6g}")


@main.command()
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
@_guard
def flops(methods, model, keep, keep_ratio, image_size, n_text, match, args, json_path) -> None:
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
    from tabulate import tabulate

    if json_path is not None:
        from tokenbench.results.provenance import check_writable

        check_writable(json_path)  # before any work

    from tokenbench.measure.accounting import decode_flops, kv_counts, plan, prefill_count
    from tokenbench.api import build_method
    from tokenbench.harness.bench import DEFAULT_BUDGETS
    from tokenbench.measure.flops import fastv_formula_macs
    from tokenbench.errors import ConfigError
    from tokenbench import budgets as conventions
    from tokenbench.results.rows import FLOPS_CONVENTION
    from tokenbench.budgets import Budget
    from tokenbench.harness.plan import check_method_plans, flops_cost, keep_rule, option_label
    from tokenbench.config import parse_budgets
    from tokenbench.harness.resolve import resolve_model

    options = config.parse_method_args(args, methods)
    built = [build_method("full")] + [build_method(m, options.get(m, {})) for m in methods if m != "full"]
    if n_text < 1:
        raise ConfigError(f"--n-text {n_text} must be at least 1")
    _quiet_transformers()
    size = config.image_size(image_size)
    adapter = resolve_model(model).load_config()
    layout = adapter.layout(size)
    lm, encoder, n_visual = adapter.lm_dims(), adapter.encoder_macs(size), layout.n_visual
    budget_specs = parse_budgets(keep, keep_ratio, DEFAULT_BUDGETS)
    matches = conventions.parse(match)
    n_text += layout.n_structural  # image-span tokens that are never candidates (LLaVA-NeXT's newlines) count as text
    cost_of = flops_cost(adapter, n_text, {n_visual: size})
    for m in built:  # what compare refuses, flops refuses: a method the model cannot run has no FLOPs
        check_method_plans(m, adapter, [layout], budget_specs, n_layers=lm.n_layers, match=matches, cost_of=cost_of)
    full_total = None
    rows = []
    runs = [(built[0], Budget(), matches[0])] + [(m, b, c) for c in matches for m in built[1:] for b in budget_specs]
    for m0, budget, convention in runs:
        m = conventions.variant(m0, convention)
        k = keep_rule(m0, budget, convention, lm.n_layers, cost_of)(n_visual)
        p = plan(m, lm.n_layers, n_visual, k)
        count = prefill_count(lm, encoder, n_text, p.visual_per_layer, p, m)
        full_total = full_total or count.total_flops
        rows.append({"method": m.name, "label": option_label(m.name, options.get(m.name, {})),
                     "keep": budget.resolve(n_visual), "method_keep": k,
                     "match": None if m.name == "full" else convention.label,
                     "budget_kind": m.budget_kind, "flops_prefill": count.total_flops,
                     "flops_ratio": count.total_flops / full_total, "flops_breakdown": count.as_flops_dict(),
                     "flops_decode_step": decode_flops(lm, n_text, kv_counts(p, p.visual_per_layer), 1),
                     "fastv_formula_llm_macs": fastv_formula_macs(
                         lm, [n_text + v for v in p.visual_per_layer],
                         [n_text + v for v in kv_counts(p, p.visual_per_layer)]),
                     "flops_convention": FLOPS_CONVENTION,
                     "selector_share": count.overhead / count.total_macs,
                     "tokens_avg_layer": sum(p.visual_per_layer) / lm.n_layers, "n_text": n_text,
                     "n_visual": n_visual, "image_size": size,
                     "model": adapter.name, "params": m.params()})
    shown = f" for a {size[0]}x{size[1]} image" if size else ""
    unit, scale = next((u, x) for u, x in (("TFLOPs", 1e12), ("GFLOPs", 1e9), ("MFLOPs", 1e6), ("FLOPs", 1))
                       if full_total >= x or x == 1)  # small models get a unit their figures show in
    click.echo(f"model={adapter.name} ({lm.n_layers} layers, hidden {lm.hidden}) visual tokens={n_visual}{shown} "
               f"text tokens={n_text}; FLOPs = 2 x MACs, prefill incl. vision tower and projector")
    several = len(matches) > 1
    click.echo(tabulate(
        [(r["label"], *([r["match"] or "-"] if several else []), conventions.keep_cell(r), f"{r['flops_prefill'] / scale:.3f}",
          f"{r['flops_ratio']:.3f}", f"{r['flops_breakdown']['llm'] / scale:.3f}",
          f"{r['flops_breakdown']['overhead'] / scale:.4f}", f"{100 * r['selector_share']:.1f}",
          f"{r['tokens_avg_layer']:.1f}", f"{r['fastv_formula_llm_macs'] / scale:.3f}",
          f"{r['flops_decode_step'] / 1e9:.4g}") for r in rows],
        headers=("method", *(["budgets"] if several else []), "keep", unit, "ratio", f"LLM {unit}", f"selector {unit}", "selector %", "vis tok avg",
                 f"FastV formula {unit[0]}", "decode GFLOPs/tok"),
        tablefmt="github"))
    click.echo(f"FastV formula {unit[0]}: the papers' per-layer 4nd^2 + 2n^2d + 2ndm summed over the LLM layers (MACs, which the "
               "papers print as FLOPs; compare it with their tables, not with our FLOPs). decode GFLOPs/tok: the first "
               "decode step against the KV cache the prefill left.")
    click.echo(conventions.note([c.label for c in matches]))
    click.echo("keep*: a layer-mean budget (multi-stage methods). Selector: the method's signals and select() work in "
               "the LLM; pre-LLM signals (CLS attention, VisionZip's merge) need the model and are counted by runs only")
    if json_path:
        from tokenbench.results.provenance import write_rows

        write_rows(json_path, rows)
        click.echo(f"wrote {len(rows)} rows to {json_path}")


@main.command()
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
@_guard
def bench(methods, models, device, dtype, layers, keep, keep_ratio, image_size, n_text, new_tokens, repeats, warmup,
          seed, match, args, json_path) -> None:
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
      tokenbench bench fastv alvts -M llava-1.5-7b -M llava-next-7b -M qwen2.5-vl-7b --device cuda --json gpu.json
    """
    from tokenbench.harness.bench import (GPU_DEFAULTS, BenchSpec, bench as run_bench, cpu_note, defaults_for,
                                  format_bench)
    from tokenbench.errors import ConfigError
    from tokenbench.config import parse_budgets

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
        image_size=config.image_size(image_size), new_tokens=new_tokens, warmup=chosen["warmup"], repeats=chosen["repeats"],
        seed=seed, named=frozenset(methods), match=config.one_match(match),
    )
    note = cpu_note(left_out) if left_out and defaults is not GPU_DEFAULTS else ""
    _rows_as_they_finish(json_path, format_bench, lambda on_row: run_bench(
        spec, on_row=on_row, on_note=lambda m: click.echo(f"note: {m}", err=True),
        on_progress=lambda m: click.echo(f"bench: {m}", err=True), note=note))


@main.command()
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

    from tokenbench.results import leaderboard as lb
    from tokenbench.errors import ConfigError

    if update and check:
        raise ConfigError("--update and --check exclude each other: --update rewrites the results, --check compares")
    if update or check:
        from tokenbench.harness.compare import compare as run_compare

        _quiet_transformers()
        if update:
            path = os.path.join(root, lb.RESULTS_SUBDIR, lb.MINI_RESULTS)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            _rows_as_they_finish(path, format_table, lambda on_row: run_compare(
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


# -- results -------------------------------------------------------------------------------------------------------------
_STORE_OPTION = click.option("--store", "store", default=None, metavar="PATH",
                             help="The results store (default: results.sqlite in the tokenbench cache directory).")


def _open(store: str | None):
    import os

    from tokenbench.errors import ConfigError
    from tokenbench.results.store import Store

    path = config.store_path(store, False)
    if not os.path.exists(path):
        raise ConfigError(f"no results store at {path!r}: `tokenbench compare` creates it (or give --store PATH)")
    return Store(path)


@main.group(cls=click.Group)
def results() -> None:
    """The results store: the runs `compare` saved, sample by sample.

    \b
    Examples:
      tokenbench results list
      tokenbench results show 1
      tokenbench results export 1 --json rows.json --samples samples.jsonl
      tokenbench results delete 1
    """


@results.command("list")
@_STORE_OPTION
@_guard
def results_list(store) -> None:
    """The runs in the store: id, when, state, model, tasks, methods, budgets, rows finished."""
    import datetime

    from tabulate import tabulate

    db = _open(store)
    table = []
    for r in db.runs():
        spec = r["spec"]
        methods = ", ".join(m[2] if len(m) > 2 else m[0] for m in spec.get("methods", []))
        budgets = ", ".join(str(b["keep"]) if b.get("keep") is not None else
                            f"r{b['ratio']:.4g}" if b.get("ratio") is not None else "all" for b in spec.get("budgets", []))
        table.append((r["id"], datetime.datetime.fromtimestamp(r["created"]).strftime("%Y-%m-%d %H:%M"), _state(r),
                      spec.get("model"), spec.get("task"), methods or "-", budgets, len(r["rows"])))
    click.echo(f"store: {db.path}")
    click.echo(tabulate(table, headers=("run", "started", "state", "model", "task", "methods", "budgets", "rows"),
                        tablefmt="simple") if table else "(no runs)")


def _state(run: dict) -> str:
    """A run's state; a run still marked running whose process is gone on this host was killed (e.g. kill -9)."""
    import os
    import socket

    proc = run["spec"].get("process") or {}
    if run["state"] == "running" and proc.get("host") == socket.gethostname() and proc.get("pid"):
        try:
            os.kill(proc["pid"], 0)
        except ProcessLookupError:
            return "killed"
        except PermissionError:
            pass
    return run["state"]


@results.command("show")
@click.argument("run_id", type=int)
@_STORE_OPTION
@_guard
def results_show(run_id, store) -> None:
    """Run RUN_ID's rows as `compare` prints them."""
    run = _open(store).run(run_id)
    if not run["rows"]:
        click.echo(f"run {run_id} ({run['state']}) finished no row")
        return
    click.echo(format_table(run["rows"]))


@results.command("export")
@click.argument("run_id", type=int)
@click.option("--json", "json_path", default=None, help="Write the run's rows here, as `compare --json` writes them.")
@click.option("--samples", "samples_path", default=None,
              help="Write its per-sample records here: JSON lines for a .jsonl name, else one JSON list.")
@_STORE_OPTION
@_guard
def results_export(run_id, json_path, samples_path, store) -> None:
    """Export run RUN_ID: its rows (--json; the leaderboard renders such a file) and its per-sample records."""
    import json

    from tokenbench.errors import ConfigError
    from tokenbench.results.provenance import check_writable, write_atomically, write_rows

    if json_path is None and samples_path is None:
        raise ConfigError("give --json PATH (the rows) and/or --samples PATH (the per-sample records)")
    for path, option in ((json_path, "--json"), (samples_path, "--samples")):
        if path is not None:
            check_writable(path, option)
    db = _open(store)
    run = db.run(run_id)
    if json_path is not None:
        write_rows(json_path, run["rows"])
        click.echo(f"wrote {len(run['rows'])} rows to {json_path}")
    if samples_path is not None:
        records = [{"cell": c, "spec": spec, "sample": sid, **rec} for c, spec, sid, rec in db.cell_records(run["cells"])]
        if samples_path.endswith(".jsonl"):
            write_atomically(samples_path, lambda fh: fh.writelines(json.dumps(r) + "\n" for r in records),
                             "--samples")
        else:
            write_rows(samples_path, records, "--samples")
        click.echo(f"wrote {len(records)} sample records to {samples_path}")


@results.command("delete")
@click.argument("run_id", type=int)
@_STORE_OPTION
@_guard
def results_delete(run_id, store) -> None:
    """Delete run RUN_ID, and the stored samples that no other run uses."""
    n = _open(store).delete_run(run_id)
    click.echo(f"deleted run {run_id} and {n} stored samples no other run uses")


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def _ms(x: float | None) -> str | None:
    """A time in ms with at least 3 significant figures (and at least one decimal), so ratios of printed times agree
    with the ratios of the measured ones to within rounding: 26.3, 5.04, 0.512, 1234.5 (None stays None: "-")."""
    import math

    if x is None:
        return None
    decimals = 1 if x == 0 else min(6, max(1, 2 - math.floor(math.log10(abs(x)))))
    return f"{x:.{decimals}f}"


#: what each timing column of :func:`format_table` is, printed under the table
TIMING_NOTE = ("timings: 'prefill ms', 'decode ms/tok', 'e2e ms' and 'overhead ms' are this row's medians over the "
               "timed rounds; each method's rounds alternate with full's (same process and sample, rotating order), "
               "'full ms (paired)' is full's prefill median from those same rounds, and speed-up = full ms (paired) / "
               "prefill ms. full's own row is timed alone, in rounds of its own, so its prefill ms may differ from "
               "the paired figures.")


def format_table(rows: list[dict]) -> str:
    """The rows as ``tokenbench compare`` prints them: one table per task (with the task's official metrics under it
    when it has several), then, for several tasks, the papers' average retention. A method's prefill speed-up is
    printed beside the two paired medians it is the ratio of (``full_prefill_ms_paired`` / ``prefill_ms``), never
    beside full's separate run."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    if len(tasks) > 1:
        return "\n\n".join([*(_task_table([r for r in rows if r["task"] == t]) for t in tasks), format_average(rows)])
    return _task_table(rows)


def _metric_value(r: dict, value) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" if r.get("metric_percent", True) else f"{value:.4g}" if abs(value) < 10 else f"{value:.1f}"


def _task_table(rows: list[dict]) -> str:
    from tabulate import tabulate

    from tokenbench import budgets

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}"

    def paired_full(r):
        return None if r["method"] == "full" else r.get("full_prefill_ms_paired")

    def speedup(r):
        return None if r.get("speedup_prefill") is None else f"{r['speedup_prefill']:.2f}"

    table = [
        (
            r.get("label") or r["method"], budgets.keep_cell(r),
            _metric_value(r, r.get("score", r["accuracy"])), pct(r["retention"]), pct(r["agreement"]),
            f"{r['kl_first_token']:.4f}", f"{r['tokens_llm_input']:.0f}", f"{r['tokens_avg_layer']:.1f}",
            f"{r['flops_prefill'] / 1e9:.3f}", f"{r['flops_ratio']:.3f}", _ms(r["prefill_ms"]), _ms(paired_full(r)),
            speedup(r), "-" if r["decode_ms"] is None else f"{r['decode_ms']:.2f}",
            f"{r['e2e_ms']:.1f}", f"{r['overhead_ms']:.2f}",
        )
        for r in rows
    ]
    first = rows[0]
    metric = first.get("metric", "accuracy")
    headers = ("method", "keep", f"{metric}{' %' if first.get('metric_percent', True) else ''}", "retention %", "agree %", "KL 1st tok", "vis tok in", "vis tok avg",
               "GFLOPs", "FLOPs ratio", "prefill ms", "full ms (paired)", "speed-up", "decode ms/tok", "e2e ms",
               "overhead ms")
    if any(r.get("n_failed") for r in rows):
        table = [(*t, r.get("n_failed", 0)) for t, r in zip(table, rows)]
        headers = (*headers, "failed")
    matches = list(dict.fromkeys(r["match"] for r in rows if r.get("match")))
    if len(matches) > 1:  # several conventions: say which each row ran under
        table = [(t[0], r.get("match") or "-", *t[1:]) for t, r in zip(table, rows)]
        headers = (headers[0], "budgets", *headers[1:])
    from tokenbench.results.provenance import device_words

    head = (f"model={first['model']} task={first['task']} samples={first['n_samples']} device={device_words(first)} "
            f"dtype={first['dtype']} attn={first['attn_implementation']} "
            f"(timings: batch 1, {first['decode_tokens']} tokens decoded, median of {first['timing_repeats']})")
    notes = [TIMING_NOTE, budgets.note(matches)] if matches else [TIMING_NOTE]
    if any(r.get("budget_kind") == "layer_mean" for r in rows):
        notes.append("keep*: a layer-mean budget (visual tokens per LLM layer, averaged over layers: multi-stage methods); "
                     "otherwise the visual tokens left after the reduction. 'vis tok avg' is what each run reached")
    for r in rows:
        notes += [f"note ({r['method']}): {w}" for w in r.get("warnings", ()) if f"note ({r['method']}): {w}" not in notes]
        calibration = _calibration_note(r)
        if calibration and calibration not in notes:
            notes.append(calibration)
    failed = first.get("failed_to_load") or {}
    if failed:
        sid, why = next(iter(failed.items()))
        notes.append(f"failed: {len(failed)} sample(s) could not be loaded and were left out of every run (e.g. {sid}: "
                     f"{why}); the rest of 'failed' are answers the task's rule could not parse (scored as it says)")
    elif any(r.get("n_failed") for r in rows):
        notes.append("failed: answers the task's rule could not parse (scored as the rule says; ids in the rows' "
                     "'unparsed')")
    parts = [head, tabulate(table, headers=headers, tablefmt="github", missingval="-")]
    if any(len(r.get("metrics", {})) > 1 for r in rows):
        parts.append(_metrics_table(rows))
    return "\n".join([*parts, *notes])


def _calibration_note(row: dict) -> str | None:
    """Which calibration a row ran on (a fitted artefact's path, samples and held-out score error, or the SVD
    initialisation), for methods whose preparation reports one."""
    prepared = row.get("prepared") or {}
    source = prepared.get("calibration")
    if not source:
        return None
    fit = ""
    if prepared.get("score_error_after") is not None:
        fit = (f" (fitted on {prepared.get('samples')} samples; held-out score error "
               f"{prepared['score_error_before']:.4g} before, {prepared['score_error_after']:.4g} after)")
    return f"calibration ({row.get('label') or row['method']}): {source}{fit}"


def _metrics_table(rows: list[dict]) -> str:
    """The task's official metrics, one line each, one column per (method, budget)."""
    from tabulate import tabulate

    names = list(dict.fromkeys(k for r in rows for k in r.get("metrics", {})))
    cols = [f"{r.get('label') or r['method']}@{r['keep']}" if r["method"] != "full" else "full" for r in rows]
    unit = " (%)" if rows[0].get("metric_percent", True) else ""
    table = [(k, *(_metric_value(r, r.get("metrics", {}).get(k)) for r in rows)) for k in names]
    return f"\n{rows[0]['task']} metrics{unit}:\n" + tabulate(table, headers=("metric", *cols), tablefmt="github")


def format_average(rows: list[dict]) -> str:
    """The papers' average: the mean over tasks of each (method, budget)'s per-task retention."""
    from tabulate import tabulate

    from tokenbench.results.rows import average_retention

    avg = average_retention(rows)
    if not avg:
        return "average: no (method, budget) finished on every task"
    tasks = avg[0]["tasks"]

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}"

    table = [(a["label"], a["budget"], *(pct(a["retention"][t]) for t in tasks), pct(a["mean_retention"])) for a in avg]
    zero = [t for t in tasks if any(a["retention"][t] is None for a in avg)]
    note = (f"\nthe mean is undefined where full scores 0 on a task ({', '.join(zero)}): retention there has no "
            "reference" if zero else "")
    return (f"average retention % over {len(tasks)} tasks ({', '.join(tasks)}): the mean of the per-task retentions "
            f"(each task's primary metric against full's)\n"
            + tabulate(table, headers=("method", "budget", *tasks, "mean"), tablefmt="github") + note)





if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
