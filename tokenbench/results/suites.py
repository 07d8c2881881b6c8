"""The mini suites CI runs: one board per shipped tokenbench-mini model, as plain data (this module names no method).

Each suite is every built-in method at keep-ratios 1/9, 2/9 and 1/3 (64, 128 and 192 of LLaVA-1.5's 576 tokens) under
both budget conventions, on held-out samples of the synthetic task, with the options and variants the data lists
(ALVTS on the calibration artefact the model ships, and without its skipped tokens as keys). A method the model
refuses (:func:`tokenbench.harness.plan.plan_run` records it when given a ``refused`` dict: VisPruner and SCOPE need
the CLS attention Qwen2.5-VL's tower does not have) is not run: it becomes a ``refused`` row that carries the refusal,
so the board lists it with its reason rather than leaving a gap. ``tokenbench leaderboard --update`` runs the suites
and writes their results (:func:`results_name`); ``--check`` runs them afresh and compares
(:mod:`tokenbench.results.leaderboard`).
"""

from __future__ import annotations

import os
from typing import Any

from tokenbench.errors import ConfigError

#: What every suite shares. ``methods``: ``"builtin"``, every built-in method but ``full`` in registry order (plugins
#: are not part of the published board), or a list of names. ``options``: a method's options in every row it has; a
#: string starting with ``{model_dir}/`` names a file the model's checkpoint ships (its calibration artefact, never one
#: a local cache happens to hold). ``variants``: a method's further configurations, each as rows of its own (label ->
#: options on top of ``options``), after the method's own rows.
COMMON: dict[str, Any] = {
    "task": "synthetic",
    "keep_ratio": (1 / 9, 2 / 9, 1 / 3),  # LLaVA-1.5's 64/128/192 of 576; 16/32/48 of mini-llava's 144
    "match": "matched,nominal",
    "seed": 0,
    "batch_size": 25,
    "warmup": 1,
    "repeats": 3,
    "methods": "builtin",
    "options": {"alvts": {"calibration": "{model_dir}/calibration/alvts/rank4-mean.safetensors"}},
    "variants": {"alvts": {"alvts[skipped_as_kv=False]": {"skipped_as_kv": False}}},  # the open choice that decides
    # ALVTS's accuracy, shown beside its default
}

#: One suite per trained mini model shipped in ``models/mini/`` (models/mini/README.md). mini-llava runs its square
#: images; mini-llava-next and mini-qwen2.5-vl the task's mixed aspects (crops, newlines and unpadding; dynamic
#: resolution, so the visual-token count varies per image). ``n``: held-out
#: samples, 200 on every board so that CI can check three boards within its time (.ci/run); the bootstrap 95 %
#: interval of a retention at 1/9 is then about ±0.07 (±0.043 at 500), and each board says its widest in its header.
MINI_SUITES: tuple[dict[str, Any], ...] = (
    {**COMMON, "model": "mini-llava", "task_options": {"n": 200}},
    {**COMMON, "model": "mini-llava-next", "task_options": {"n": 200, "aspect": "mixed"}},
    {**COMMON, "model": "mini-qwen2.5-vl", "task_options": {"n": 200, "aspect": "mixed"}},
)
MINI_SUITE = MINI_SUITES[0]  # the default model's (mini-llava)
MODEL_DIR = "{model_dir}/"


def suite_of(model: str) -> dict[str, Any]:
    """The suite of ``model``, or a clear error naming the suites there are."""
    for suite in MINI_SUITES:
        if suite["model"] == model:
            return suite
    raise ConfigError(f"no mini suite for model {model!r}; the suites are {', '.join(s['model'] for s in MINI_SUITES)}")


def results_name(suite: dict[str, Any]) -> str:
    """The suite's results file in ``leaderboards/results/``."""
    return f"cpu-{suite['model']}--{suite['task']}.json"


def suite_variants(suite: dict[str, Any] = MINI_SUITE) -> dict[str, tuple[str, dict[str, Any]]]:
    """The suite's variants as ``{label: (method, options)}`` (their own options only; the contract suite runs them
    too)."""
    return {label: (method, dict(options)) for method, variants in suite["variants"].items()
            for label, options in variants.items()}


def suite_methods(suite: dict[str, Any], model_dir: str) -> tuple[tuple, ...]:
    """The suite's method specs for :class:`tokenbench.harness.compare.RunSpec`: ``(name, {})`` for a method run as
    it comes, ``(name, options, label)`` for one with options or variants (its own rows labelled with its name), with
    ``{model_dir}/`` paths resolved against the model's checkpoint directory ``model_dir``."""
    from tokenbench.api import METHODS
    from tokenbench.contract.registry import BUILTIN

    names = suite["methods"]
    if names == "builtin":
        names = [n for n in METHODS.names() if n != "full" and METHODS.origin(n).source == BUILTIN]
    specs: list[tuple] = []
    for name in names:
        options = {k: _shipped(v, model_dir, name, k) for k, v in suite["options"].get(name, {}).items()}
        variants = suite["variants"].get(name, {})
        if not options and not variants:
            specs.append((name, {}))
            continue
        specs.append((name, options, name))
        specs += [(name, options | extra, label) for label, extra in variants.items()]
    return tuple(specs)


def _shipped(value: Any, model_dir: str, method: str, option: str) -> Any:
    """An option value with a ``{model_dir}/`` path made the file's path in the checkpoint directory, which must hold
    it (a board is never made with another artefact)."""
    if not isinstance(value, str) or not value.startswith(MODEL_DIR):
        return value
    path = os.path.join(model_dir, *value[len(MODEL_DIR):].split("/"))
    if not os.path.isfile(path):
        raise ConfigError(f"the suite runs {method} with {option}={path}, which the model does not ship; restore it "
                          f"(git checkout -- {path}) or make it with `tokenbench calibrate {method} --model ... --out "
                          f"{path}`")
    return path


def suite_spec(suite: dict[str, Any] = MINI_SUITE, *, check: bool = False):
    """The :class:`tokenbench.harness.compare.RunSpec` of ``suite``, every method in it (refused ones too). ``check``:
    the run of ``leaderboard --check``, which compares no timing column, so it times each row in one round without
    warm-up (on 2 idle CPU cores that saves a seventh of the run: 16.8 s against 19.8 s for three methods on
    mini-llava-next's 200 samples; far more beside another torch process, which slows timed rounds the most)."""
    from tokenbench import budgets
    from tokenbench.budgets import Budget
    from tokenbench.harness.compare import RunSpec
    from tokenbench.harness.resolve import resolve_model

    model_dir = resolve_model(suite["model"]).load_config().source
    return RunSpec(
        methods=suite_methods(suite, model_dir), model=suite["model"], task=suite["task"],
        match=budgets.parse(suite["match"]), budgets=tuple(Budget(ratio=r) for r in suite["keep_ratio"]),
        seed=suite["seed"], batch_size=suite["batch_size"], warmup=0 if check else suite["warmup"],
        repeats=1 if check else suite["repeats"],
        task_options=dict(suite["task_options"]),
    )


def refused_rows(refused: dict[str, tuple[str, str]], rows: list[dict]) -> list[dict]:
    """One row per refused method, for the board: its method and label, the model, task and task version of
    ``rows`` (the suite's run), and the refusal (``refused``) in place of scores."""
    first = rows[0]
    return [{"method": method, "label": label, "model": first["model"], "task": first["task"],
             "task_version": first.get("task_version"), "refused": why} for label, (method, why) in refused.items()]
