"""The executor: runs the cells of a plan (:class:`tokenbench.harness.plan.Cell`) over one task's samples, batch by
batch, through the store (reused batches are read back, new ones saved whole), sharded over processes when asked
(:class:`tokenbench.harness.parallel.Share`); times a cell by the latency protocol and writes its row
(:mod:`tokenbench.results.rows`). Also the records' first-token statistics and the store key of a cell."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from tokenbench.api import Reduction, build_method
from tokenbench.harness.parallel import Share
from tokenbench.harness.plan import Cell
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


def artefact_digest(prepared) -> str | None:
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
    """A cell's records over every sample, in the samples' order, and the task's scores of its answers."""

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
    key: str = ""  # the cell's store key
    positions: list[str] = field(default_factory=list)  # per sample: contiguous (renumbered) or original

    @classmethod
    def of(cls, records: list[dict], scored, key: str) -> "MethodRun":
        """From the stored records of every sample (in order) and the task's scores of their answers."""
        from tokenbench.measure.flops import PrefillCount

        return cls([r["answer"] for r in records], list(scored.per_sample), [r["kl"] for r in records],
                   [r["visual_per_layer"] for r in records], [PrefillCount(**r["flops"]) for r in records],
                   [tuple(r["decode_flops"]) for r in records], [r["fastv_formula"] for r in records],
                   sum(r["kv_bytes"] for r in records) / len(records), [r["keep"] for r in records],
                   [r["n_visual"] for r in records], scored, [r.get("method_keep", r["keep"]) for r in records], key,
                   [r.get("positions", "original") for r in records])


class Executor:
    """Runs cells on one task's ``samples`` with a loaded model (``adapter``): ``run`` (every sample, through the
    ``store``), ``time`` (the latency protocol on the first sample) and ``row``. ``full``'s cell runs first: its records
    are the reference of every method's first-token KL. ``share``: this process's part of a data-parallel run
    (:class:`tokenbench.harness.parallel.Share`); ``failed``: sample id -> why it could not load (left out of every
    run, reported in the rows); ``prov``: the run's provenance; ``progress``: show a bar (on a TTY)."""

    def __init__(self, spec, task_name: str, task, adapter, samples: list, failed: dict[str, str], prov: dict, *,
                 store=None, share: Share | None = None, progress: bool = True) -> None:
        self.spec, self.task_name, self.task, self.adapter = spec, task_name, task, adapter
        self.samples, self.failed, self.prov = samples, failed, prov
        self.store, self.share, self.progress = store, share or Share(), progress
        self.lm = adapter.lm_dims()
        self.reference: dict[str, dict] | None = None  # full's records by sample id, once full has run
        self.too_long: str | None = None  # full's run: a warning if samples are longer than the model's positions
        self.reused = self.computed = 0  # the last run's samples read back from the store / computed
        self._fingerprint: dict | None = None  # the model's weights, hashed once (for the store keys)

    # -- running a cell ----------------------------------------------------------------------------------------------
    def run(self, cell: Cell) -> MethodRun | None:
        """Every sample, in batches of samples that share a visual layout; results in the samples' order. With a
        store, batches already stored for this cell are read back and every new batch is stored as it finishes.
        ``None`` in a shard pass: this process's share is stored, and the merge scores every sample."""
        key, key_spec = self.key(cell)
        records = self._compute(cell, key, key_spec)
        self.reused, self.computed = self.share.counted(key, self.reused, self.computed)
        if cell.method.name == "full":  # the methods' KL needs full's records (in a shard pass: of this share)
            self.reference = records
        if self.share.partial:
            return None
        ordered = [records[s.id] for s in self.samples]
        if cell.method.name == "full":
            self.too_long = self.longer_than_positions(ordered)
        return MethodRun.of(ordered, self._score([r["answer"] for r in ordered]), key)

    def _compute(self, cell: Cell, key: str, key_spec: dict) -> dict[str, dict]:
        """The batch loop: this process's batches, each read back from the store or computed and stored whole."""
        from tqdm.auto import tqdm

        stored = self.store.records(key) if self.store is not None else {}
        self.reused = self.computed = 0
        records: dict[str, dict] = {}
        batches = self.share.batches(self.adapter.batches(self.samples, self.spec.batch_size))
        bar = tqdm(total=sum(map(len, batches)), desc=f"{cell.method.name} keep={cell.budget.label()}", unit="sample",
                   disable=True if not self.progress else None, leave=False)  # None: only on a TTY
        with self.adapter.reduction(self.reduction(cell)) as router:
            for idx in batches:
                chunk = [self.samples[i] for i in idx]
                if all(s.id in stored for s in chunk):  # this batch finished in an earlier run
                    records.update({s.id: stored[s.id] for s in chunk})
                    self.reused += len(chunk)
                else:
                    new = self._record_batch(cell, chunk, router)
                    if self.store is not None:
                        self.store.put(key, key_spec, new)  # the batch is saved whole, or not at all
                    records.update(new)
                    self.computed += len(chunk)
                bar.update(len(chunk))
        bar.close()
        return records

    def _record_batch(self, cell: Cell, chunk: list, router) -> dict[str, dict]:
        """One batch generated under ``router``: each sample's stored record (answer, visual tokens per layer, budget,
        FLOPs of prefill and decode, the FastV formula, KV cache, first-token statistics)."""
        import dataclasses as dc

        import torch

        from tokenbench.contract.positions import positions_of
        from tokenbench.measure.accounting import decode_flops, kv_counts, prefill_count
        from tokenbench.measure.flops import fastv_formula_macs

        batch = self.adapter.encode(chunk)
        gen = self.adapter.generate(batch, self.task.max_new_tokens, router=router)
        rec = router.record if router is not None else None
        n_visual, lm = batch.layout.n_visual, self.lm
        per_layer = rec.visual_per_layer if rec is not None else [n_visual] * self.adapter.n_layers
        cached = kv_counts(rec, per_layer)  # what each layer attended to and cached (keys)
        encoder = self.adapter.encoder_macs(tuple(chunk[0].image.size))
        first = torch.log_softmax(gen.first_logits.float(), dim=-1)
        new = {}
        for j, (s, text, n_text) in enumerate(zip(chunk, gen.texts, batch.n_text)):
            new[s.id] = {
                "answer": text,
                "visual_per_layer": list(per_layer),
                "keep": cell.budget.resolve(n_visual),
                "method_keep": cell.keep_of(n_visual),
                "n_visual": n_visual,
                "n_text": n_text,
                "flops": dc.asdict(prefill_count(lm, encoder, n_text, per_layer, rec, cell.method)),
                "decode_flops": [decode_flops(lm, n_text, cached, len(gen.token_ids[j]) - 1),
                                 decode_flops(lm, n_text, cached, 1)],
                "fastv_formula": fastv_formula_macs(lm, [n_text + v for v in per_layer], [n_text + v for v in cached]),
                "kv_bytes": gen.kv_cache_bytes / len(chunk),
                "positions": positions_of(rec is not None and rec.position_ids is not None),
                **self.first_token(s.id, first[j]),
            }
        return new

    def _score(self, answers: list[str]):
        """The task's scores of ``answers`` (one per sample, in order)."""
        scored = self.task.evaluate(self.samples, answers)
        if len(scored.per_sample) != len(self.samples):
            raise ValueError(f"task {self.task.name!r}: evaluate() gave {len(scored.per_sample)} scores for "
                             f"{len(self.samples)} samples")
        return scored

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

    def key(self, cell: Cell) -> tuple[str, dict]:
        """The store key of (this model and task, the cell) and the spec it hashes: everything that can change a
        sample's stored record (see :mod:`tokenbench.results.store`)."""
        from tokenbench import __version__
        from tokenbench.results.store import code_digest, digest

        spec, adapter, method = self.spec, self.adapter, cell.method
        if self._fingerprint is None:  # hashes the first and last layers' weights: once per executor
            self._fingerprint = adapter.weights().fingerprint()
        key_spec = {
            "model": {"name": adapter.name, "source": adapter.source, "revision": adapter.revision,
                      **self._fingerprint, **adapter.input_setup()},
            "dtype": spec.dtype, "device_type": spec.device.split(":")[0], "attn": spec.attn_implementation,
            "task": {"name": self.task_name, "version": self.task.version, "options": options_of(self.task)},
            "method": {"name": method.name, "params": method.params(), "code": _source_digest(type(method)),
                       "artefact": cell.artefact_digest},
            "budget": cell.budget.label(), "budget_scope": spec.budget_scope, "seed": spec.seed,
            "match": None if method.name == "full" else cell.convention.label,
            "batch_size": spec.batch_size, "max_new_tokens": self.task.max_new_tokens,
            "tokenbench": __version__, "code": code_digest(), "first_token_top_k": TOP_K,
        }
        return digest(key_spec), key_spec

    def reduction(self, cell: Cell) -> Reduction:
        """``cell``'s method as this executor installs it: its keep rule, the run's seed and budget scope, its
        artefact."""
        return Reduction(cell.method, cell.keep_of, seed=self.spec.seed, artefact=cell.artefact,
                         budget_scope=self.spec.budget_scope)

    # -- timing and the row ------------------------------------------------------------------------------------------
    def time(self, cell: Cell):
        """Batch-1 latency on the first sample by the protocol of :mod:`tokenbench.measure.latency`
        (:func:`~tokenbench.measure.latency.time_with_full`), ``max_new_tokens`` of the task decoded: a method is timed
        interleaved with ``full`` (its speed-ups are ratios of medians from the same rounds); ``full``'s own row is timed
        alone."""
        from tokenbench.measure.latency import FULL, time_with_full

        spec = self.spec
        batch = self.adapter.encode(self.samples[:1])
        variants = {"method": self.reduction(cell)}
        if cell.method.name != "full":
            variants[FULL] = Reduction(build_method("full"), batch.layout.n_visual, seed=spec.seed,
                                       budget_scope=spec.budget_scope)
        return time_with_full(self.adapter, batch, variants, self.task.max_new_tokens, spec.warmup, spec.repeats,
                              peak=("method",), compile=spec.compile)["method"]

    def count(self, cell: Cell):
        """The kernels and host syncs of ``cell``'s prefill on the sample :meth:`time` uses (one untimed prefill,
        batch 1: :func:`tokenbench.measure.kernels.count_prefill`); exact on any machine."""
        from tokenbench.measure.kernels import count_prefill

        return count_prefill(self.adapter, self.adapter.encode(self.samples[:1]), self.reduction(cell))[0]

    def row(self, cell: Cell, run: MethodRun, ref: MethodRun, timing, warnings: list[str], kernels) -> dict[str, Any]:
        """The row of ``cell`` (its ``run``, ``full``'s ``ref``, its ``timing`` and prefill ``kernels`` (:meth:`count`);
        ``warnings``: the task's), in the schema of :mod:`tokenbench.results.rows`."""
        from tokenbench.results import rows

        n, spec = len(run.answers), self.spec
        parts = [f.as_flops_dict() for f in run.flops]
        info, prep_warnings, prepare_s = cell.preparation()
        return {
            **rows.identity_fields(cell.method, label=cell.label, model=self.adapter.name, task=self.task_name,
                                   budget=cell.budget, budget_scope=spec.budget_scope, convention=cell.convention,
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
            **rows.model_input_fields(self.adapter.input_setup(), positions=run.positions,
                                      n_visual=run.n_visual),
            **rows.kernel_fields(kernels, self.adapter.n_layers),
            **rows.timing_fields(timing, decode_tokens=self.task.max_new_tokens, kv_cache_bytes=run.kv_bytes),
            **rows.setup_fields(cell.method, device=spec.device, dtype=spec.dtype,
                                attn_implementation=spec.attn_implementation, batch_size=spec.batch_size),
            **rows.provenance_fields(self.prov, task=self.task, model_source=self.adapter.source, seed=spec.seed,
                                     processes=spec.processes, limit=spec.limit,
                                     store=None if self.store is None else {
                                         "path": self.store.path, "samples_reused": self.reused,
                                         "samples_computed": self.computed}),
            **rows.preparation_fields(info, prep_warnings + warnings, prepare_s),
        }
