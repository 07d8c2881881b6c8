"""Resumable mini training: the whole state after each evaluation, so that a stopped run (a session's end, a
scheduler's limit, Ctrl-C) goes on from there with ``train.py``'s same command and ends with the same weights.

The state is ``<out>/.train-state/``: ``state.safetensors`` (model, auxiliary heads, AdamW's moments and step counts;
no pickle) and ``state.json`` (the step reached, the settings, the validation curve, the wall time so far, the
optimizer's parameter groups and the scheduler's counters). It is written to a temporary directory and renamed, so a
kill leaves the previous state whole. The data of every step is a function of the seed and the step, and nothing
else draws random numbers, so the resumed run computes what the uninterrupted one would have.
"""

from __future__ import annotations

import json
import os
import shutil

STATE = ".train-state"
#: settings a resumed run may change: the thread count (each segment's is recorded; float sums differ by thread count,
#: so the run is reproducible with the same thread count per segment)
FREE = ("threads",)


def save(out: str, step: int, settings: dict, model, heads, opt, sched, curve: list, wall_s: float,
         resumed: list[int], threads_from: list[list[int]]) -> None:
    """Write the state after ``step`` steps (``resumed``: the steps earlier runs of this training stopped at;
    ``threads_from``: [first step, torch threads] of each segment)."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors |= {f"heads.{k}": v for k, v in heads.state_dict().items()}
    opt_state = opt.state_dict()
    for i, state in opt_state["state"].items():
        tensors |= {f"opt.{i}.{k}": v for k, v in state.items()}
    sched_state = {k: v for k, v in sched.state_dict().items() if k != "lr_lambdas"}
    meta = {"step": step, "settings": settings, "curve": curve, "wall_s": wall_s, "resumed": resumed, "threads_from": threads_from,
            "param_groups": opt_state["param_groups"], "scheduler": sched_state}
    final = os.path.join(out, STATE)
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, os.path.join(tmp, "state.safetensors"))
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump(meta, f)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def load(out: str, settings: dict, model, heads, opt, sched) -> dict | None:
    """Restore the state in ``out`` into the objects and return its JSON part (step, curve, wall_s); None when there
    is none (resumed, wall_s, threads_from: as saved). A state written with other settings (but :data:`FREE`) is
    refused: resuming it would not be the run asked for."""
    from safetensors.torch import load_file

    path = os.path.join(out, STATE)
    if not os.path.isdir(path):
        return None
    try:
        with open(os.path.join(path, "state.json")) as f:
            meta = json.load(f)
        tensors = load_file(os.path.join(path, "state.safetensors"))
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: the training state in {path} cannot be read ({e}); delete it to start afresh")
    differ = sorted(k for k in settings.keys() | meta["settings"].keys()
                    if k not in FREE and settings.get(k) != meta["settings"].get(k))
    if differ:
        raise SystemExit(f"error: {path} holds a run with other settings ({', '.join(differ)}: "
                         f"{', '.join(str(meta['settings'].get(k)) for k in differ)}); rerun with those, or delete it to "
                         "start afresh")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    heads.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("heads.")})
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    sched.load_state_dict(meta["scheduler"] | {"lr_lambdas": [None] * len(opt.param_groups)})
    return meta


def clear(out: str) -> None:
    shutil.rmtree(os.path.join(out, STATE), ignore_errors=True)
