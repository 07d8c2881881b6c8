"""The executor: one (method, budget) cell over a task's samples, batch by batch, through the store (reused batches are
read back, new ones saved whole), sharded over processes when asked; and the records' first-token statistics."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from tokenbench.api import Reduction, TokenReducer, build_method
from tokenbench.budgets import Budget
from tokenbench.results.rows import options_of


#: how many of full's most likely first tokens the store keeps per sample (all of them for a vocabulary this small)
TOP_K = 256


def first_token_kl(ref_ids: list[int], ref_logprobs: list[float], logprobs) -> float:
    """KL(full || method) of the first answer token over full's :data:`TOP_K` most likely tokens plus one bin for the
    rest of the vocabulary: exact when the vocabulary has at most TOP_K tokens, else the KL of both distributions
    coarsened to those bins (a lower bound of the full KL; the top 256 tokens hold nearly all of a first token's
    mass). Computed the same way whether full ran in this process or was read back from the store."""
    import torch

    p_log = torch.tensor(ref_logprobs, dtype=torch.float64)
    q_log = logprobs.double()[torch.tensor(ref_ids)]
    kl = float((p_log.exp() * (p_log - q_log)).sum())
    p_rest = 1.0 - float(p_log.exp().sum())
    if len(ref_ids) < logprobs.shape[-1] and p_rest > 1e-12:
        q_rest = max(1.0 - float(q_log.exp().sum()), 1e-300)
        kl += p_rest * (math.log(p_rest) - math.log(q_rest))
    return max(kl, 0.0)


def _source_digest(cls) -> str | None:
    """sha256 of the file defining ``cls`` (a method's rule): a plugin's edited method never reuses stored results."""
    import inspect

    from tokenbench.results.store import file_digest

    try:
        return file_digest(inspect.getsourcefile(cls))
    except TypeError:
        return None


def _artefact_digest(prepared) -> str | None:
    """sha256 over a prepared artefact's tensors (and what its ``info`` records), or None when there is none."""
    import hashlib

    if prepared.artefact is None:
        return None
    h = hashlib.sha256(json.dumps(prepared.info, sort_keys=True, default=str).encode())

    def visit(x):
        import torch

        if isinstance(x, torch.Tensor):
            h.update(str((x.dtype, tuple(x.shape))).encode())
            h.update(x.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                h.update(str(k).encode())
                visit(x[k])
        elif isinstance(x, (list, tuple)):
            for v in x:
                visit(v)
        elif dataclasses.is_dataclass(x):
            for f in dataclasses.fields(x):
                h.update(f.name.encode())
                visit(getattr(x, f.name))
        else:
            h.update(repr(x).encode())

    visit(prepared.artefact)
    return h.hexdigest()


@dataclass
class MethodRun:
    answers: list[str]
    correct: list[float]
    kl: list[float]  # per sample: KL(full || method) of the first answer token (see first_token_kl)
    visual_per_layer: list[list[int]]
    flops: list[Any]  # PrefillCount per sample
    decode_flops: list[tuple[int, int]]  # per sample: (FLOPs of its decode steps, FLOPs of its first decode step)
    fastv_formula: list[int]  # per sample: the FastV formula over its LLM layers (MACs, as the papers print them)
    kv_bytes: float  # per sample
    keeps: list[int]  # the budget resolved for each sample's image
    n_visual: list[int]  # each sample's visual tokens before reduction
    scored: Any = None  # the task's tokenbench.contract.task.Scored
    method_keeps: list[int] = field(default_factory=list)  # what the method ran at under the convention


class _Context:
    def __init__(self, spec, task, adapter, samples, prov, progress, failed=None):
        self.spec, self.task, self.adapter, self.samples, self.prov = spec, task, adapter, samples, prov
        self.progress = progress
        self.failed = failed or {}  # sample id -> why it could not run (left out of every method's run)
        self.task_name = spec.task  # the registered name
        self.lm = adapter.lm_dims()
        self.artefact = None  # the current method's prepared artefact
        self.artefact_digest = None  # its hash, for the store key
        self.store = None  # a tokenbench.results.store.Store, or None to run without one
        self.reference = None  # full's records by sample id, once full has run (its first-token statistics)
        self.reused = self.computed = 0  # samples read back from the store / computed, over this context
        self.cells: list[str] = []
        self.model_fingerprint = None
        self.shard: tuple[int, int] | None = None  # (rank, world): compute only this process's batches (compare)
        self.computed_by: dict[str, int] = {}  # cell -> samples this run's processes computed (compare's shard passes)
        self.too_long: str | None = None  # set by full's run: samples longer than the model's positions
        self.match = None  # the budget convention of the current runs (tokenbench.budgets.Convention)
        self.keep_of: Callable[[int], int] | None = None  # n_visual -> the method's own budget under it

    def run(self, method: TokenReducer, budget: Budget) -> MethodRun:
        """Every sample, in batches of samples that share a visual layout; results in the samples' order. With a
        store, batches already stored for this cell are read back and every new batch is stored as it finishes."""
        import dataclasses as dc

        import torch
        from tqdm.auto import tqdm

        from tokenbench.measure.accounting import decode_flops, kv_counts, prefill_count
        from tokenbench.measure.flops import fastv_formula_macs

        cell, cell_spec = self.cell(method, budget)
        stored = self.store.records(cell) if self.store is not None else {}
        self.reused = self.computed = 0
        records: dict[str, dict] = {}
        n_layers = self.adapter.n_layers
        batches = self.adapter.batches(self.samples, self.spec.batch_size)
        if self.shard is not None:  # one of several processes (tokenbench.harness.parallel): every world-th batch, as batched
            rank, world = self.shard  # in one process, so that every record is the one a single process computes
            batches = batches[rank::world]
        bar = tqdm(total=sum(map(len, batches)), desc=f"{method.name} keep={budget.label()}", unit="sample",
                   disable=True if not self.progress else None, leave=False)  # None: only on a TTY
        with self.adapter.reduction(self.reduction(method)) as router:
            for idx in batches:
                chunk = [self.samples[i] for i in idx]
                if all(s.id in stored for s in chunk):  # this batch finished in an earlier run
                    records.update({s.id: stored[s.id] for s in chunk})
                    self.reused += len(chunk)
                    bar.update(len(chunk))
                    continue
                batch = self.adapter.encode(chunk)
                gen = self.adapter.generate(batch, self.task.max_new_tokens, router=router)
                rec = router.record if router is not None else None
                n_visual = batch.layout.n_visual
                per_layer = rec.visual_per_layer if rec is not None else [n_visual] * n_layers
                cached = kv_counts(rec, per_layer)  # what each layer attended to and cached (keys)
                encoder = self.adapter.encoder_macs(tuple(chunk[0].image.size))
                first = torch.log_softmax(gen.first_logits.float(), dim=-1)
                new = {}
                for j, (s, text, n_text) in enumerate(zip(chunk, gen.texts, batch.n_text)):
                    new[s.id] = {
                        "answer": text,
                        "visual_per_layer": list(per_layer),
                        "keep": budget.resolve(n_visual),
                        "method_keep": self.keep_of(n_visual),
                        "n_visual": n_visual,
                        "n_text": n_text,
                        "flops": dc.asdict(prefill_count(self.lm, encoder, n_text, per_layer, rec, method)),
                        "decode_flops": [decode_flops(self.lm, n_text, cached, len(gen.token_ids[j]) - 1),
                                         decode_flops(self.lm, n_text, cached, 1)],
                        "fastv_formula": fastv_formula_macs(self.lm, [n_text + v for v in per_layer],
                                                            [n_text + v for v in cached]),
                        "kv_bytes": gen.kv_cache_bytes / len(chunk),
                        **self.first_token(s.id, first[j]),
                    }
                if self.store is not None:
                    self.store.put(cell, cell_spec, new)  # the batch is saved whole, or not at all
                records.update(new)
                self.computed += len(chunk)
                bar.update(len(chunk))
        bar.close()
        if self.shard is not None:  # this process's share is stored; the merge scores every sample
            self.computed_by[cell] = self.computed_by.get(cell, 0) + self.computed
            if method.name == "full":  # the methods' KL needs full's records of this process's samples only
                self.reference = records
            return None
        moved = min(self.computed_by.get(cell, 0), self.reused)  # computed by this run's processes, read back here
        self.reused, self.computed = self.reused - moved, self.computed + moved
        if cell not in self.cells:
            self.cells.append(cell)
        ordered = [records[s.id] for s in self.samples]
        if method.name == "full":
            self.reference = records
            self.too_long = self.longer_than_positions(ordered)
        answers = [r["answer"] for r in ordered]
        scored = self.task.evaluate(self.samples, answers)
        if len(scored.per_sample) != len(self.samples):
            raise ValueError(f"task {self.task.name!r}: evaluate() gave {len(scored.per_sample)} scores for "
                             f"{len(self.samples)} samples")
        from tokenbench.measure.flops import PrefillCount

        return MethodRun(answers, list(scored.per_sample), [r["kl"] for r in ordered],
                         [r["visual_per_layer"] for r in ordered], [PrefillCount(**r["flops"]) for r in ordered],
                         [tuple(r["decode_flops"]) for r in ordered], [r["fastv_formula"] for r in ordered],
                         sum(r["kv_bytes"] for r in ordered) / len(ordered), [r["keep"] for r in ordered],
                         [r["n_visual"] for r in ordered], scored, [r.get("method_keep", r["keep"]) for r in ordered])

    def longer_than_positions(self, records: list[dict]) -> str | None:
        """A warning when some samples' prompt plus answer exceeds the positions the model was trained on (its
        ``max_position_embeddings``): it runs, but what it says there is unreliable."""
        limit = getattr(self.adapter.text_config(), "max_position_embeddings", None)
        if not limit:
            return None
        need = self.task.max_new_tokens
        lengths = [(s.id, r.get("n_text", 0) + r["n_visual"] + need) for s, r in zip(self.samples, records)]
        over = [(sid, n) for sid, n in lengths if n > limit]
        if not over:
            return None
        sid, n = max(over, key=lambda x: x[1])
        return (f"task {self.task_name!r}: {len(over)} of {len(self.samples)} samples need more positions (prompt + "
                f"{need} answer tokens; longest {sid!r}: {n}) than model {self.adapter.name!r} has "
                f"({limit}); their results are unreliable. Use shorter prompts or a model with more positions")

    def first_token(self, sample_id: str, logprobs) -> dict[str, Any]:
        """What the store keeps of a sample's first-token distribution: for ``full`` (no reference yet) its
        :data:`TOP_K` most likely tokens with their log-probabilities; for a method its KL to full's."""
        if self.reference is None:
            k = min(TOP_K, logprobs.shape[-1])
            top = logprobs.topk(k)
            return {"kl": 0.0, "top_ids": top.indices.tolist(), "top_logprobs": top.values.tolist()}
        ref = self.reference[sample_id]
        return {"kl": first_token_kl(ref["top_ids"], ref["top_logprobs"], logprobs)}

    def cell(self, method: TokenReducer, budget: Budget) -> tuple[str, dict]:
        """The store key of (this model and task, ``method``, ``budget``) and the spec it hashes: everything that can
        change a sample's stored record (see :mod:`tokenbench.results.store`)."""
        from tokenbench import __version__
        from tokenbench.results.store import code_digest, digest

        spec, adapter = self.spec, self.adapter
        if self.model_fingerprint is None:  # hashes the first and last layers' weights: once per context
            self.model_fingerprint = adapter.weights().fingerprint()
        cell = {
            "model": {"name": adapter.name, "source": adapter.source, "revision": adapter.revision,
                      **self.model_fingerprint},
            "dtype": spec.dtype, "device_type": spec.device.split(":")[0], "attn": spec.attn_implementation,
            "task": {"name": self.task_name, "version": self.task.version, "options": options_of(self.task)},
            "method": {"name": method.name, "params": method.params(), "code": _source_digest(type(method)),
                       "artefact": self.artefact_digest},
            "budget": budget.label(), "budget_scope": spec.budget_scope, "seed": spec.seed,
            "match": None if method.name == "full" else self.match.label,
            "batch_size": spec.batch_size, "max_new_tokens": self.task.max_new_tokens,
            "tokenbench": __version__, "code": code_digest(), "first_token_top_k": TOP_K,
        }
        return digest(cell), cell

    def reduction(self, method: TokenReducer) -> Reduction:
        """``method`` as this context installs it: its keep rule, the run's seed and budget scope, its artefact."""
        return Reduction(method, self.keep_of, seed=self.spec.seed, artefact=self.artefact,
                         budget_scope=self.spec.budget_scope)

    def time(self, method: TokenReducer, budget: Budget):
        """Batch-1 latency on the first sample by the protocol of :mod:`tokenbench.measure.latency`
        (:func:`~tokenbench.measure.latency.time_with_full`), ``max_new_tokens`` of the task decoded: a method is timed
        interleaved with ``full`` (its speed-ups are ratios of medians from the same rounds); ``full``'s own row is timed
        alone."""
        from tokenbench.measure.latency import FULL, time_with_full

        spec = self.spec
        batch = self.adapter.encode(self.samples[:1])
        variants = {"method": self.reduction(method)}
        if method.name != "full":
            variants[FULL] = Reduction(build_method("full"), batch.layout.n_visual, seed=spec.seed,
                                       budget_scope=spec.budget_scope)
        return time_with_full(self.adapter, batch, variants, self.task.max_new_tokens, spec.warmup, spec.repeats,
                              peak=("method",))["method"]

    def row(self, method, budget: Budget, run: MethodRun, ref: MethodRun, timing) -> dict[str, Any]:
        """The row of ``method`` at ``budget`` (its ``run``, ``full``'s ``ref``, its ``timing``), in the schema of
        :mod:`tokenbench.results.rows`."""
        from tokenbench.results import rows

        n, spec = len(run.answers), self.spec
        parts = [f.as_flops_dict() for f in run.flops]
        return {
            **rows.identity_fields(method, label=method.name, model=self.adapter.name, task=self.task_name,
                                   budget=budget, budget_scope=spec.budget_scope, convention=self.match,
                                   keep=rows.common(run.keeps), method_keep=rows.common(run.method_keeps),
                                   keep_ratio=sum(k / v for k, v in zip(run.keeps, run.n_visual)) / n,
                                   n_visual=rows.common(run.n_visual), n_samples=n),
            **rows.quality_fields(self.task, self.samples, self.failed, run, ref),
            **rows.flops_fields(sum(f.total_flops for f in run.flops) / n, sum(f.total_flops for f in ref.flops) / n,
                                {k: sum(p[k] for p in parts) / n for k in ("vision", "projector", "llm", "lm_head",
                                                                           "overhead")},
                                tokens_llm_input=sum(v[0] for v in run.visual_per_layer) / n,
                                tokens_avg_layer=sum(sum(v) / len(v) for v in run.visual_per_layer) / n,
                                decode=sum(d for d, _ in run.decode_flops) / n,
                                decode_step=sum(f for _, f in run.decode_flops) / n,
                                fastv_formula=sum(run.fastv_formula) / n),
            **rows.timing_fields(timing, decode_tokens=self.task.max_new_tokens, kv_cache_bytes=run.kv_bytes),
            **rows.setup_fields(method, device=spec.device, dtype=spec.dtype,
                                attn_implementation=spec.attn_implementation, batch_size=spec.batch_size),
            **rows.provenance_fields(self.prov, task=self.task, model_source=self.adapter.source, seed=spec.seed,
                                     processes=spec.processes, limit=spec.limit,
                                     store=None if self.store is None else {
                                         "path": self.store.path, "samples_reused": self.reused,
                                         "samples_computed": self.computed}),
        }
