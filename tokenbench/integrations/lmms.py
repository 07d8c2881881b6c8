"""tokenbench inside lmms-eval: the lmms-eval model ``tokenbench``, a tokenbench adapter with a method at a budget.

lmms-eval 0.7.3 finds it through the entry-point group ``lmms_eval.models`` (its documented plugin mechanism; the
``LMMS_EVAL_PLUGINS`` variable is deprecated), which ``pip install tokenbench[lmms]`` declares::

    python -m lmms_eval --model tokenbench --model_args model=llava-1.5-7b,method=alvts,keep=64 --tasks pope

``--model_args`` (comma-separated ``key=value``, as lmms-eval parses them):

* ``model``: what ``tokenbench compare --model`` takes (a registered name, ``family:<hub id or dir>``, a directory);
* ``method`` (default ``full``) and its options as further keys, ``layer=3`` or ``fastv.layer=3`` (typed and checked
  as ``-a`` is; a tuple as ``layers=[2,6]``, since a bare comma separates model args);
* ``keep`` or ``keep_ratio``: one budget (neither: 1/9 of each image's visual tokens, as ``tokenbench compare``);
* ``match``: ``matched`` (default) or ``nominal`` (:mod:`tokenbench.budgets`); ``budget_scope``: ``global``/``crop``;
* ``dtype`` (float32), ``attn_implementation`` (sdpa), ``seed`` (0); ``device`` and ``batch_size`` come from
  lmms-eval's own ``--device`` / ``--batch_size`` (``device`` in ``model_args`` when ``--device`` is not given;
  default ``cuda`` where available, else ``cpu``; ``cuda:$LOCAL_RANK`` under ``accelerate launch -m lmms_eval``).

Each request runs through the adapter's own ``encode`` and greedy ``generate`` under the method's router, as one cell of
``tokenbench compare`` does (:meth:`tokenbench.harness.execute.Executor.run`): the doc's image from ``doc_to_visual``, the
request's context as the question (the adapter applies the checkpoint's chat template), ``max_new_tokens`` from the
task's ``generation_kwargs`` (default 1024, as lmms-eval's own HF models) and the answer cut at the first ``until``
string. Requests are grouped by visual layout into batches of ``batch_size`` in their given order, as the runner does.

Refused with a one-line :class:`~tokenbench.errors.ConfigError`: ``loglikelihood`` requests (multiple-choice tasks
scored by likelihood) and multi-round generation, which the adapters do not implement; requests with no image, several
images or a video; sampling or beam search (the adapters decode greedily); the ``flops=`` convention (it needs a
task's first sample before any request).
"""

from __future__ import annotations

from typing import Any


def manifest():
    """The entry point's payload (``lmms_eval.models``): lmms-eval calls it while it builds its model registry, so
    everything lmms-eval is imported here, when called, not when this module is."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="tokenbench", simple_class_path="tokenbench.integrations.lmms.TokenBench")


def filelock_compat() -> None:
    """lmms-eval 0.7.3's ``simple_evaluate`` patches ``filelock._api.FileLockMeta`` (evaluator.py line 134, to make
    its dataset locks re-entrant); filelock 4 moved that module to ``filelock._core`` (``ModuleNotFoundError: No
    module named 'filelock._api'``, every evaluation stops there). Where it is missing, ``filelock._api`` is made an
    alias of the classes it held, so lmms-eval's own patch applies unchanged. Nothing happens with filelock 3."""
    import importlib
    import sys
    import types

    try:
        importlib.import_module("filelock._api")
    except ModuleNotFoundError:
        from filelock._core._lock import BaseFileLock
        from filelock._core._singleton import FileLockMeta

        alias = types.ModuleType("filelock._api", "filelock 4's FileLockMeta and BaseFileLock, where filelock 3 had them")
        alias.FileLockMeta, alias.BaseFileLock = FileLockMeta, BaseFileLock
        sys.modules["filelock._api"] = alias


filelock_compat()  # at import: lmms-eval imports this module while it builds its registry, before any evaluation

# after manifest() and filelock_compat(): lmms-eval imports this module while it builds its model registry
from lmms_eval.api.model import lmms

from tokenbench.api import Reduction
from tokenbench.errors import ConfigError


def cut_at(text: str, until) -> str:
    """``text`` up to the first of the ``until`` strings (lmms-eval's stop sequences), stripped."""
    for stop in [until] if isinstance(until, str) else (until or ()):
        if stop:
            text = text.split(stop)[0]
    return text.strip()


def generation_settings(gen_kwargs: dict[str, Any]) -> tuple[int, tuple[str, ...]]:
    """(max_new_tokens, until) of a request; sampling and beam search are refused (the adapters decode greedily)."""
    if gen_kwargs.get("do_sample") or float(gen_kwargs.get("temperature") or 0) > 0:
        raise ConfigError(f"model tokenbench decodes greedily; this task asks for sampling ({gen_kwargs}); set "
                          "do_sample=False,temperature=0 in --gen_kwargs")
    if int(gen_kwargs.get("num_beams") or 1) != 1:
        raise ConfigError(f"model tokenbench decodes greedily; this task asks for num_beams={gen_kwargs['num_beams']}; "
                          "set num_beams=1 in --gen_kwargs")
    until = gen_kwargs.get("until") or ()
    return int(gen_kwargs.get("max_new_tokens", 1024)), (until,) if isinstance(until, str) else tuple(until)


class TokenBench(lmms):
    """A tokenbench adapter running a token-reduction method, as an lmms-eval model (see the module docstring)."""

    is_simple = True

    def __init__(self, model: str = "mini-llava", method: str = "full", keep: int | None = None,
                 keep_ratio: float | None = None, match: str = "matched", budget_scope: str = "global",
                 device: str | None = None, dtype: str = "float32", batch_size: int | str = 1,
                 max_batch_size: int | None = None, seed: int = 0, attn_implementation: str = "sdpa",
                 **options: Any) -> None:
        super().__init__()
        import os

        import torch

        from tokenbench import budgets
        from tokenbench.api import BUDGET_SCOPES, Prepared, build_method
        from tokenbench.budgets import Budget
        from tokenbench.config import check_counts, literal, method_option_values, parse_budgets
        from tokenbench.harness.resolve import resolve_model

        del max_batch_size  # lmms-eval passes it for its automatic batch sizes, which this model does not use
        if isinstance(batch_size, str) and batch_size.isdigit():
            batch_size = int(batch_size)
        if not isinstance(batch_size, int):
            raise ConfigError(f"--batch_size {batch_size!r}: model tokenbench needs a number (e.g. --batch_size 8)")
        check_counts(batch_size=(batch_size, 1, 8), seed=(seed, 0, 0))
        # lmms-eval types numbers and true/false itself and leaves the rest text: `layers=[2,6]` is read as -a reads it
        typed = {k: literal(v) if isinstance(v, str) else v for k, v in options.items()}
        opts = method_option_values(typed, (method,)).get(method, {})
        self.method = build_method(method, opts)
        self.budget = parse_budgets(None if keep is None else str(keep),
                                    None if keep_ratio is None else str(keep_ratio))[0]
        conventions = budgets.parse(str(match))
        if len(conventions) != 1 or conventions[0].kind == "flops":
            raise ConfigError(f"match={match!r}: model tokenbench runs one convention, matched or nominal (flops= "
                              "needs a task's first sample before any request; use tokenbench compare for it)")
        self.convention = conventions[0]
        if budget_scope not in BUDGET_SCOPES:
            raise ConfigError(f"budget_scope={budget_scope!r} is not one of {', '.join(BUDGET_SCOPES)}")
        self.budget_scope, self.seed, self.batch_size = budget_scope, seed, batch_size
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cuda" and "LOCAL_RANK" in os.environ:  # `accelerate launch -m lmms_eval`: one GPU per process
            device = f"cuda:{os.environ['LOCAL_RANK']}"  # (lmms-eval's evaluator shards the docs by RANK itself)
        self.adapter = resolve_model(str(model)).load(device, dtype, attn_implementation)
        if self.method.name == "full":  # full runs with every visual token, as the runner's reference does
            self.budget = Budget()
        self.checked: set = set()  # the layouts the method's plans were checked on
        self.check(self.adapter.layout())
        torch.manual_seed(seed)
        prepared = Prepared.of(self.method.prepare(self.adapter.weights()))
        if prepared.warning:
            from loguru import logger

            logger.warning(prepared.warning)
        self.artefact = prepared.artefact

    @property
    def device(self):
        """The torch device the adapter runs on (lmms-eval's evaluator gathers its request counts there)."""
        import torch

        return torch.device(self.adapter.device)

    def check(self, layout) -> None:
        """Refuse, before its first batch runs, an image layout the method cannot run on at the budget."""
        from tokenbench.harness.plan import check_method_plans

        key = (layout.n_visual, len(layout.crops))
        if key not in self.checked:
            check_method_plans(self.method, self.adapter, [layout], (self.budget,), self.budget_scope,
                               match=(self.convention,))
            self.checked.add(key)

    def generate_until(self, requests) -> list[str]:
        from tqdm.auto import tqdm

        from tokenbench.budgets import variant
        from tokenbench.budgets import keep_rule

        samples, settings = [], []
        for req in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
            samples.append(self.sample(context, doc_to_visual, self.task_dict[task][split][doc_id], task, split,
                                       doc_id))
            settings.append(generation_settings(dict(gen_kwargs)))
        answers: list[str | None] = [None] * len(samples)
        keep_of = keep_rule(self.method, self.budget, self.convention, self.adapter.n_layers)
        method = variant(self.method, self.convention)
        groups: dict[tuple, list[int]] = {}
        for i, s in enumerate(settings):
            groups.setdefault(s, []).append(i)
        bar = tqdm(total=len(samples), desc=f"tokenbench {self.method.name} keep={self.budget.label()}",
                   disable=self.rank != 0)
        with self.adapter.reduction(Reduction(method, keep_of, seed=self.seed, artefact=self.artefact,
                                              budget_scope=self.budget_scope)) as router:
            for (max_new_tokens, until), idx in groups.items():
                group = [samples[i] for i in idx]
                for b in self.adapter.batches(group, self.batch_size):
                    chunk = [group[j] for j in b]
                    self.check(self.adapter.layout_of(chunk[0]))
                    gen = self.adapter.generate(self.adapter.encode(chunk), max_new_tokens, router=router)
                    for j, text in zip(b, gen.texts):
                        answers[idx[j]] = cut_at(text, until)
                    bar.update(len(chunk))
        bar.close()
        return answers

    @staticmethod
    def sample(context: str, doc_to_visual, doc, task: str, split: str, doc_id: int):
        """The request as a tokenbench sample: its one image (read again when its batch is encoded, so that a task's
        images are not all held decoded), the context as the question."""
        from tokenbench.contract.task import ImageRef, Sample

        def images():
            visuals = doc_to_visual(doc) or []
            if len(visuals) != 1 or not hasattr(visuals[0], "convert"):
                kinds = sorted({type(v).__name__ for v in visuals}) or ["none"]
                raise ConfigError(f"task {task!r} doc {doc_id}: model tokenbench takes one image per request, this one "
                                  f"has {len(visuals)} visual(s) ({', '.join(kinds)}); videos, several images and "
                                  "text-only requests are not supported")
            return visuals[0].convert("RGB")

        size = images().size
        return Sample(id=f"{task}/{split}/{doc_id}", image=ImageRef(images, size), question=context, answer=None)

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        raise ConfigError("model tokenbench does not score loglikelihood requests (multiple-choice tasks scored by "
                          "likelihood); use a task with output_type generate_until")

    def generate_until_multi_round(self, requests) -> list[str]:
        raise ConfigError("model tokenbench does not run multi-round generation; use a single-round task "
                          "(output_type generate_until)")
