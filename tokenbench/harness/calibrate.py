"""``tokenbench calibrate``: fit a method's artefact on the frozen, unreduced model and save it.

The harness runs the model over the calibration samples and hands the method the signals it declared in
``calibration_steps`` (:class:`tokenbench.api.CalibrationData`); the method fits and returns tensors and a report
(:class:`tokenbench.api.Calibrated`), saved by :mod:`tokenbench.artefacts`.
"""

from __future__ import annotations

from tokenbench.artefacts import default_path, save
from tokenbench.errors import ConfigError


# -- the frozen model's signals --------------------------------------------------------------------------------------------
def visitor(adapter, steps, splits: dict[str, list], batch_size: int):
    """A function ``visit(split)`` yielding, per batch of that split, ``{layer: ReductionContext}`` with the signals
    ``steps`` declare, computed on the unreduced model (nothing is pruned or routed). Tensors are plain (not inference
    tensors), so a method can use them as constants in autograd."""
    import torch

    from tokenbench.api import Reduction, TokenReducer

    class _Collect(TokenReducer):  # keeps every token; only records what each step saw
        stage = "route"
        name = "calibration"

        def __init__(self):
            self.seen = {}

        def steps(self, n_layers):
            return steps

        def select(self, ctx):
            self.seen[ctx.layer] = ctx
            return torch.arange(ctx.n_active, device=ctx.active.device).expand(ctx.batch_size, -1)

    collect = _Collect()

    def visit(split: str):
        samples = splits[split]
        for idx in adapter.batches(samples, batch_size):
            batch = adapter.encode([samples[i] for i in idx])
            collect.seen = {}
            with torch.no_grad(), adapter.reduction(Reduction(collect, lambda n: n)) as router:
                adapter.prefill(batch, router)
            yield dict(collect.seen)

    return visit


# -- tokenbench calibrate ------------------------------------------------------------------------------------------------
def run(method_name: str, method_options: dict, model: str, task: str, task_options: dict, samples: int = 256,
        heldout: int = 64, seed: int = 1, batch_size: int = 8, device: str = "cpu", dtype: str = "float32",
        epochs: int = 3, lr: float = 1e-2, out: str | None = None, log=print) -> tuple[str, dict]:
    """Fit ``method_name``'s artefact on ``samples`` samples of ``task`` (seed ``seed``, by default not the seed
    ``compare`` evaluates on), report the score error on ``heldout`` further samples, and save it to ``out`` or the
    default location; returns (path, metadata)."""
    import dataclasses
    import inspect

    from tokenbench.api import TASKS, CalibrationData, TokenReducer, build_method
    from tokenbench.harness.resolve import build_task, resolve_model

    method = build_method(method_name, method_options)
    from tokenbench.config import check_counts

    check_counts(samples=(samples, 1, 256), heldout=(heldout, 1, 64), batch_size=(batch_size, 1, 8),
                 epochs=(epochs, 1, 3), seed=(seed, 0, 1))
    if not lr > 0:
        raise ConfigError(f"--lr {lr} must be positive")
    from tokenbench.hf.adapter import check_device

    check_device(device)
    if type(method).calibrate is TokenReducer.calibrate:
        from tokenbench.api import METHODS

        fitted = [n for n in METHODS.available() if METHODS.get(n).calibrate is not TokenReducer.calibrate]
        raise ConfigError(f"method {method_name!r} has nothing to calibrate (only methods with a fitted artefact do); "
                          f"calibrate one of: {', '.join(fitted) or '(none installed)'}")
    if out is not None:
        from tokenbench.results.files import check_writable

        check_writable(out, "--out")  # before any compute
    factory_params = inspect.signature(TASKS.get(task)).parameters
    if "n" in factory_params and "n" not in task_options:
        task_options = {**task_options, "n": samples + heldout}  # ask a sized task for as many as needed
    task_obj = build_task(task, task_options, seed)
    adapter = resolve_model(model)
    split = [dataclasses.replace(s, question=task_obj.prompt(s, adapter.family))  # as compare prompts it
             for s in task_obj.samples(samples + heldout) if s.image is not None]  # unreadable images left out
    if len(split) < samples + heldout:
        raise ConfigError(f"task {task!r} has {len(split)} samples; --samples {samples} + --heldout {heldout} need "
                          f"{samples + heldout}. Lower them or choose a larger task")
    adapter.load(device, dtype)
    method.check(adapter.n_layers)
    steps = method.calibration_steps(adapter.n_layers)
    adapter.check_compatible(method, steps)
    weights = adapter.weights()
    visit = visitor(adapter, steps, {"train": split[:samples], "heldout": split[samples:]}, batch_size)
    log(f"calibrating {method_name} on {adapter.name}: {samples} samples of {task} (seed {seed}), "
        f"{heldout} held out, {epochs} epochs")
    result = method.calibrate(weights, CalibrationData(visit, samples, heldout), epochs=epochs, lr=lr, log=log)
    fingerprint = weights.fingerprint()
    meta = {"method": method_name, **fingerprint, **result.key, "samples": samples, "heldout": heldout,
            "task": task, "task_seed": seed, "options": method.params(), "device": device, "dtype": dtype,
            **result.report}
    path = save(out or default_path(method_name, fingerprint, result.tag), result.tensors, meta)
    _say_which_runs_use(method, weights, path, log)
    return path, meta


def _say_which_runs_use(method, weights, written: str, log) -> None:
    """Tell the user whether runs with the method's default options pick up the artefact just written, and if not,
    which one they use and how to ask for this one."""
    import dataclasses

    from tokenbench.api import Prepared

    if "calibration" not in {f.name for f in method.options()}:
        return
    auto = dataclasses.replace(method, calibration="auto")
    used = Prepared.of(auto.prepare(weights)).info.get("calibration")
    if used != written:
        log(f"note: runs of this model keep using {used}; use the new artefact with "
            f"-a {method.name}.calibration={written}")
