"""Execute a method's plan on one model instance: per-layer gather/scatter, RoPE at original positions, masks, cache.

What happens at each layer (where a step runs, its stage and keep, which signals are probed before or after it, the
visual tokens each layer computes and sees) is :mod:`tokenbench.engine.routing`'s rule, the one ``tokenbench flops``
predicts; this module executes it. :class:`Router` is a context manager that replaces ``forward`` on each
decoder-layer *instance* (never the class) and adds a pre-hook on the language model, and removes all of them on
exit. Inside, for the prefill:

* before layer ``l`` it computes the signals the method declared at ``l`` (attention rows, keys, ...) over the
  tokens the layer would see, then, if ``l`` is a step, calls ``method.select`` and turns the answer into the set
  of visual tokens layer ``l`` processes: ``prune`` shrinks the active set for ``l`` and every later layer, ``route``
  picks a subset for ``l`` only;
* the layer runs on all non-visual tokens plus that subset, gathered in their original order with their own
  position embeddings and the matching rows/columns of the 4-D mask (``None`` stays ``None``: causal over a sorted
  subset is still causal); the outputs are scattered back, so skipped tokens pass through unchanged;
* at a route step with ``skipped_as_kv`` the skipped tokens stay keys and values of the layer: queries, the output
  projection and the MLP run on the routed tokens only, while K/V are computed for every active token (the skipped
  ones from their unchanged hidden states, at their own positions) and joined in sequence order inside the layer's
  own attention (``run_subset(keys=...)``);
* with a cache, layer ``l`` stores K/V for the tokens it attended to (what it processed; every active token with
  ``skipped_as_kv``); ``kv_pos[l]`` records their positions, and every decode step's mask is sliced to them, so each
  new token attends to what that layer kept.

A ``pre_llm`` step runs in a pre-hook on the language model: it may replace the kept visual embeddings (merging),
and the unselected tokens are pruned from layer 0 on. Kept tokens keep their original position ids throughout.
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass, field

import torch

from tokenbench.api import Need, Reduction, ReductionContext, Selection, Step, VisualLayout
from tokenbench.engine import probe
from tokenbench.engine.routing import LayerRule, check_steps, plan_routing
from tokenbench.errors import PluginValidationError


@dataclass
class Record:
    """What the router saw and did during one prefill; the harness turns it into token counts and FLOPs."""

    visual_per_layer: list[int] = field(default_factory=list)  # visual tokens each LLM layer processed (its queries)
    kv_per_layer: list[int] = field(default_factory=list)  # visual tokens each layer saw as keys/values and cached:
    # visual_per_layer except at route steps with skipped_as_kv, where every active token is a key
    layer_visual: list[torch.Tensor] = field(default_factory=list)  # (B, n) original visual indices, per layer
    layer_keys: list[torch.Tensor] = field(default_factory=list)  # (B, n') visual tokens visible as keys, per layer
    # (equal to layer_visual except at route steps with skipped_as_kv, where every active token is a key)
    select_calls: list[tuple[int, int]] = field(default_factory=list)  # (step layer, n_active): for Method.select_macs
    n_visual: int = 0  # visual tokens per image before any reduction
    selections: dict[int, torch.Tensor] = field(default_factory=dict)  # step layer -> kept original visual indices
    probes: list[tuple[int, str, str | None, int, int]] = field(default_factory=list)  # (layer, kind, queries, n_vis_keys, n_rows_visual)
    overhead_spans: list = field(default_factory=list)  # (start, end) Clock marks around signal work and select
    pre_llm_macs: int = 0  # cost of pre-LLM signals computed for the method (e.g. the CLS attention row)
    position_ids: torch.Tensor | None = None  # (B, L) the prompt's positions after a renumbering pre-LLM selection
    pre_llm_embeds: torch.Tensor | None = None  # (B, L, D) the LLM's input embeddings after a merging selection
    clock: object = None  # the tokenbench.measure.timing.Clock the spans were marked on

    @property
    def overhead_s(self) -> float:
        """Seconds spent in the method's own work (signals and select) during the prefill. On CUDA the spans are
        events on the stream, read here (after the run), so measuring them added no synchronisation."""
        return sum(self.clock.seconds(a, b) for a, b in self.overhead_spans)


@dataclass
class Tokens:
    """The visual/non-visual layout of one batch (left padded), from the adapter."""

    visual: torch.Tensor  # (B, N) sequence positions of the visual tokens, ascending
    other: torch.Tensor  # (B, L - N) sequence positions of every other token (text and padding), ascending
    valid: torch.Tensor  # (B, L) bool, False on padding
    sample_keys: tuple[str, ...]  # one per sample: seeds its random generator, so batching never changes a draw
    layout: VisualLayout  # shared by every sample of the batch (the harness groups samples by layout)


class Router:
    def __init__(
        self,
        reduction: Reduction,
        layers: torch.nn.ModuleList,
        language_model: torch.nn.Module,
        pre_llm_providers: dict | None = None,
    ) -> None:
        """``reduction.keep``: visual tokens to keep per image, or a function of the image's visual-token count (a
        budget given as a ratio, resolved for each batch's layout)."""
        method = reduction.method
        self.method, self.budget, self.layers, self.lm = method, reduction.keep, layers, language_model
        self.seed, self.artefact, self.budget_scope = reduction.seed, reduction.artefact, reduction.budget_scope
        self.providers = pre_llm_providers or {}
        self.n_layers = len(layers)
        check_steps(method, tuple(method.steps(self.n_layers)), self.n_layers)  # the declared plan, checked up front
        self.tokens: Tokens | None = None
        self.record = Record()
        self._handles: list = []

    # -- install / remove ----------------------------------------------------------------------------------------------
    def __enter__(self) -> "Router":
        for idx, layer in enumerate(self.layers):
            if "forward" in layer.__dict__:
                raise RuntimeError(f"decoder layer {idx} already has an instance forward; nested routers?")
            original = layer.forward
            layer.forward = types.MethodType(self._make_forward(idx, original), layer)
        self._handles.append(self.lm.register_forward_pre_hook(self._lm_pre_hook, with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for layer in self.layers:
            layer.__dict__.pop("forward", None)
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def start(self, tokens: Tokens) -> None:
        """Begin a new sequence (prefill next). At a budget where the method changes nothing (``reduces`` is False,
        e.g. ALVTS keeping every token) the model runs untouched, so it reproduces ``full`` exactly."""
        b, n = tokens.visual.shape
        self.layout = tokens.layout
        if n != self.layout.n_visual:
            raise ValueError(f"batch has {n} visual tokens per sample, layout says {self.layout.n_visual}")
        self.keep = self.budget if isinstance(self.budget, int) else self.budget(n)
        from tokenbench.measure.timing import Clock

        self.record = Record(n_visual=n, clock=Clock(str(tokens.visual.device)))
        steps = tuple(self.method.plan(self.keep, n, self.n_layers))
        check_steps(self.method, steps, self.n_layers)
        self.routing = plan_routing(self.method, self.n_layers, n, self.keep, steps)  # what each layer does
        if not self.routing.reduces:
            self.tokens = None
            self.record.visual_per_layer = list(self.routing.visual_per_layer)
            self.record.kv_per_layer = list(self.routing.kv_per_layer)
            return
        self.tokens = tokens
        self.active = torch.arange(n, device=tokens.visual.device).expand(b, n)
        self.signals: dict[Need, torch.Tensor] = {}
        self.kv_pos: dict[int, torch.Tensor] = {}
        self.past_len = 0

    # -- language-model hooks ------------------------------------------------------------------------------------------
    @staticmethod
    def _cache_of(kwargs):
        return kwargs.get("cache", kwargs.get("past_key_values"))

    def _lm_pre_hook(self, module, args, kwargs):
        if self.tokens is None:  # a forward outside adapter.generate: leave it alone
            return None
        embeds = kwargs.get("inputs_embeds")
        cache = self._cache_of(kwargs)
        if cache is not None and not hasattr(cache, "logical_length"):
            raise TypeError("a routed model needs tokenbench.engine.cache.LogicalLengthCache (use adapter.generate)")
        self.past_len = cache.logical_length if cache is not None else 0
        if self.past_len == 0 and self.routing.pre_llm is not None:
            kwargs["inputs_embeds"], renumber = self._pre_llm(embeds)
            if renumber:
                kwargs["position_ids"] = self._renumber(kwargs.get("position_ids"))
            return args, kwargs
        return None

    def _renumber(self, pos):
        """Contiguous positions for the tokens left after a pre-LLM selection with ``renumber``: the text after the
        image moves up by the number of dropped visual tokens (padding and dropped tokens keep theirs, unused)."""
        t = self.tokens
        if not isinstance(pos, torch.Tensor) or pos.dim() != 2 or self.layout.n_structural:
            raise PluginValidationError(
                f"method {self.method.name!r} asked to renumber positions, which needs a model with 1-D position ids "
                "and no structural tokens in the image span (LLaVA-1.5); keep original positions on this model")
        present = t.valid.clone()  # every valid token but the dropped visual ones (visual tokens are never padding)
        present.scatter_(1, t.visual, False)
        present.scatter_(1, t.visual.gather(1, self.active), True)
        new = torch.where(present, present.long().cumsum(1) - 1, pos.expand_as(present))
        self.record.position_ids = new
        return new

    def _pre_llm(self, embeds: torch.Tensor) -> torch.Tensor:
        t = self.tokens
        rule = self.routing.pre_llm
        step = rule.step
        if step.alternatives:  # the first need set this model provides; select sees exactly that set
            from dataclasses import replace

            from tokenbench.api import resolve_needs

            step = replace(step, needs=resolve_needs(step, {"visual_embeds", *self.providers}), alternatives=())
        t0 = self._tic()
        for need in step.needs:
            if need.kind == "visual_embeds":
                self.signals[need] = probe._take(embeds, t.visual)
            elif need.kind in self.providers:  # computed by the adapter during the vision tower's forward
                self.signals[need], macs = self.providers[need.kind]()
                self.record.pre_llm_macs += macs
            else:
                raise PluginValidationError(f"method {self.method.name!r} needs {need}, which this model does not provide")
        chosen, out = self._select(rule, step)
        embeds_out, renumber = embeds, False
        if isinstance(out, Selection):
            self.record.pre_llm_macs += out.macs
        if isinstance(out, Selection) and (out.embeds is not None or out.features is not None):
            new = out.embeds
            if out.features is not None:
                if "project" not in self.providers:
                    raise PluginValidationError(f"method {self.method.name!r} returned vision features, but this "
                                                "model gives no projector for them")
                new, macs = self.providers["project"](out.features)
                self.record.pre_llm_macs += macs
            if not out.renumber:  # row i belongs to indices[:, i]: put the rows in ascending slot order
                order = out.indices.to(new.device).argsort(dim=1)
                new = new.gather(1, order[..., None].expand_as(new))
            pos = t.visual.gather(1, chosen)
            embeds_out = embeds.clone()
            embeds_out.scatter_(1, pos[..., None].expand(-1, -1, embeds.shape[-1]), new.to(embeds.dtype))
            self.record.pre_llm_embeds = embeds_out
            renumber = out.renumber
        self._toc(t0)
        return embeds_out, renumber

    # -- selection -------------------------------------------------------------------------------------------------------
    def _generators(self, layer: int) -> list[torch.Generator]:
        """One generator per sample, seeded from (run seed, sample id, step layer): reproducible, independent of
        batching, and a different draw at each step."""
        gens = []
        for key in self.tokens.sample_keys:
            g = torch.Generator(device="cpu")
            g.manual_seed(hash_seed(self.seed, f"{key}@{layer}"))
            gens.append(g)
        return gens

    def _select(self, rule: LayerRule, step: Step | None = None) -> tuple[torch.Tensor, object]:
        """Call the method for ``rule``'s step (``step``: the pre-LLM step with its need set resolved) and check its
        answer; update ``self.active`` where the step prunes (prune, pre_llm).

        Returns the chosen original visual indices (B, k), ascending, and the method's answer as it came."""
        step = rule.step if step is None else step
        want = rule.keep
        text_valid = self.tokens.valid.gather(1, self.tokens.other)  # the non-visual tokens that are not padding
        ctx = ReductionContext(
            layer=step.layer,
            keep=want,
            budget=self.keep,
            n_visual=self.layout.n_visual,
            n_layers=self.n_layers,
            active=self.active,
            layout=self.layout,
            signals={n: self.signals[n] for n in step.needs},
            text_query_mask=text_valid,
            text_after_image=text_valid & (self.tokens.other > self.tokens.visual[:, -1:]),
            generators=self._generators(step.layer),
            artefact=self.artefact,
            budget_scope=self.budget_scope,
        )
        self.record.select_calls.append((step.layer, int(self.active.shape[1])))
        out = self.method.select(ctx)
        idx = out.indices if isinstance(out, Selection) else out
        name = self.method.name
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.shape[0] != self.active.shape[0]:
            raise PluginValidationError(
                f"method {name!r} select() must return a (batch, k) index tensor, got "
                f"{getattr(idx, 'shape', type(idx).__name__)}"
            )
        n_act = self.active.shape[1]
        idx = idx.to(self.active.device, torch.long)
        if idx.shape[1] > n_act or (idx.numel() and (idx.min() < 0 or idx.max() >= n_act)):
            raise PluginValidationError(f"method {name!r} returned indices outside 0..{n_act - 1} at layer {step.layer}")
        if idx.shape[1] != want:
            raise PluginValidationError(
                f"method {name!r} kept {idx.shape[1]} visual tokens at layer {step.layer}; its plan says {want} "
                "(ctx.keep). Return exactly ctx.keep indices, or declare the count in Step(keep=...)"
            )
        order = idx.sort(dim=1)
        if idx.shape[1] > 1 and (order.values[:, 1:] == order.values[:, :-1]).any():
            raise PluginValidationError(f"method {name!r} returned duplicate indices at layer {step.layer}")
        chosen = self.active.gather(1, order.values)
        self._check_crop_quotas(ctx, order.values, idx.shape[1])
        self.record.selections[step.layer] = chosen
        if rule.prunes:
            self.active = chosen
        if isinstance(out, Selection) and (out.embeds is not None or out.features is not None or out.renumber):
            if self.method.stage != "pre_llm":
                raise PluginValidationError(f"method {name!r}: only pre_llm methods may merge or renumber")
        return chosen, out

    def _check_crop_quotas(self, ctx: ReductionContext, picked: torch.Tensor, k: int) -> None:
        """Under ``--budget-scope crop`` every region must get its share; a method that ranks globally is refused."""
        shares = ctx.crop_shares(k)
        if shares is None:
            return
        owner, quotas = shares
        for b in range(picked.shape[0]):
            got = torch.bincount(owner[b][picked[b]], minlength=len(quotas[b])).tolist()
            if got != quotas[b]:
                raise PluginValidationError(
                    f"method {self.method.name!r} ignored the per-crop budget at layer {ctx.layer}: kept {got} per "
                    f"crop, the split is {quotas[b]}. Run it with --budget-scope global; its author can select with "
                    "ctx.topk(scores), which honours the split, or declare budget_scopes = ('global',) so that the "
                    "pair is refused before any compute"
                )

    # -- the layer wrapper ---------------------------------------------------------------------------------------------
    def _make_forward(self, idx: int, original):
        router = self

        def forward(layer_self, hidden_states, *args, **kwargs):
            return router._layer_forward(idx, layer_self, original, hidden_states, args, kwargs)

        return forward

    def _layer_forward(self, idx, layer, original, hidden, args, kwargs):
        if self.tokens is None:
            return original(hidden, *args, **kwargs)
        if self.past_len == 0 and hidden.shape[1] == self.tokens.valid.shape[1]:
            return self._prefill_layer(idx, layer, original, hidden, args, kwargs)
        return self._decode_layer(idx, original, hidden, args, kwargs)

    def _prefill_layer(self, idx, layer, original, hidden, args, kwargs):
        t = self.tokens
        cos, sin = kwargs["position_embeddings"]
        b = hidden.shape[0]
        cos, sin = cos.expand(b, *cos.shape[1:]), sin.expand(b, *sin.shape[1:])
        rule = self.routing.layers[idx]
        visual = keys = self.active  # before this layer's step: a skipped_as_kv step keeps every active token as a key
        if rule.probes:
            # signals this layer's own step reads are computed before it; those only later steps read describe the
            # layer as it runs, so they come after its selection (SparseVLM reads layer l's attention to prune after l)
            t0 = self._tic()
            self._compute_needs(idx, layer, hidden, cos, sin, rule.before)
            if rule.step is not None:
                visual = self._select(rule)[0]
            self._compute_needs(idx, layer, hidden, cos, sin, rule.after)
            self._toc(t0)
        if not rule.skipped_as_kv:
            keys = visual
        self._count(rule, visual, keys)
        sel = torch.cat([t.other, t.visual.gather(1, keys)], dim=1).sort(dim=1).values
        if kwargs.get("use_cache") and self._cache_of(kwargs) is not None:
            self.kv_pos[idx] = sel
        if keys is not visual:  # skipped_as_kv: queries for the routed tokens only, keys/values for every key
            routed = torch.cat([t.other, t.visual.gather(1, visual)], dim=1).sort(dim=1).values
            return run_subset(original, hidden, routed, cos, sin, args, kwargs, keys=sel, layer=layer)
        return run_subset(original, hidden, sel, cos, sin, args, kwargs)

    def _count(self, rule: LayerRule, visual: torch.Tensor, keys: torch.Tensor) -> None:
        """Record the visual tokens layer ``rule.layer`` computes (queries) and attends to (and caches), which are the
        counts its routing rule predicts (``tokenbench flops`` reports those without running the model)."""
        computed, seen = int(visual.shape[1]), int(keys.shape[1])
        if (computed, seen) != (rule.computed, rule.seen):
            raise RuntimeError(f"layer {rule.layer} computed {computed} visual tokens and saw {seen}; its routing rule "
                               f"says {rule.computed} and {rule.seen} (tokenbench.engine.routing)")
        self.record.visual_per_layer.append(computed)
        self.record.kv_per_layer.append(seen)
        self.record.layer_visual.append(visual)
        self.record.layer_keys.append(keys)

    def _decode_layer(self, idx, original, hidden, args, kwargs):
        mask = kwargs.get("attention_mask")
        kept = self.kv_pos.get(idx)
        if kept is None:
            return original(hidden, *args, **kwargs)
        b = hidden.shape[0]
        new = torch.arange(self.past_len, self.past_len + hidden.shape[1], device=kept.device).expand(b, -1)
        cols = torch.cat([kept, new], dim=1)  # this layer's cached positions, then the new tokens'
        if isinstance(mask, torch.Tensor) and kept.shape[1] < self.past_len:
            mask = mask.expand(b, *mask.shape[1:])
            kwargs = dict(kwargs)
            kwargs["attention_mask"] = mask.gather(3, cols[:, None, None, :].expand(-1, mask.shape[1], mask.shape[2], -1))
        if kwargs.get("use_cache"):
            self.kv_pos[idx] = cols
        return original(hidden, *args, **kwargs)

    # -- signals ---------------------------------------------------------------------------------------------------------
    def _compute_needs(self, idx, layer, hidden, cos, sin, needs) -> None:
        if not needs:
            return
        t = self.tokens
        vis_pos = t.visual.gather(1, self.active)  # (B, n_active) sequence positions of the active visual tokens
        for need in needs:
            pos = t.other if need.tokens == "text" else vis_pos
            if need.kind == "hidden":
                value = probe._take(hidden, pos)
            elif need.kind == "normed":
                value = probe.normed(layer, hidden, pos)
            elif need.kind == "final_normed":
                value = self.lm.norm(probe._take(hidden, pos))
            elif need.kind == "keys":
                value = probe.keys(layer, hidden, cos, sin, pos)
            elif need.kind == "layer_input":
                value = probe.layer_input(layer, hidden, cos, sin, t.other, vis_pos, t.valid)
            elif need.kind == "attn":
                key_idx = torch.cat([t.other, vis_pos], dim=1).sort(dim=1).values
                key_valid = t.valid.gather(1, key_idx)
                queries = {
                    "last": key_idx[:, -1:],
                    "text": t.other,
                    "visual": vis_pos,
                }[need.queries]
                rows = probe.attention_rows(layer, hidden, cos, sin, key_idx, key_valid, queries)
                cols = torch.searchsorted(key_idx, vis_pos)
                value = rows.gather(3, cols[:, None, None, :].expand(-1, rows.shape[1], rows.shape[2], -1))
            else:
                raise PluginValidationError(f"need {need} cannot be computed inside the LLM")
            n_rows = {"last": 1, "text": -1, "visual": int(vis_pos.shape[1])}.get(need.queries, 0)
            self.record.probes.append((idx, need.kind, need.queries or need.tokens, int(vis_pos.shape[1]), n_rows))
            self.signals[need] = value

    # -- timing of the method's own work ---------------------------------------------------------------------------------
    def _tic(self):
        return self.record.clock.mark()

    def _toc(self, t0) -> None:
        self.record.overhead_spans.append((t0, self.record.clock.mark()))


def run_subset(original, hidden, sel, cos, sin, args, kwargs, keys=None, layer=None):
    """Run the layer ``original`` on the tokens at ``sel`` (B, n) only, with their own position embeddings (``cos``,
    ``sin`` expanded to the batch), position ids and mask rows/columns; scatter the outputs back into ``hidden``.

    ``keys`` (B, n_kv), a superset of ``sel`` (sequence positions, ascending), makes the tokens of ``keys`` that are
    not in ``sel`` keys and values of the layer without being its queries: their K/V come from their current hidden
    states at their own positions (``layer``'s input norm, k/v projections and RoPE, as the layer computes them), and
    join the routed tokens' K/V in sequence order inside the layer's own attention (:class:`_WithKeysOnly`), so the
    routed tokens attend to all of them, on the layer's own attention backend. Queries, the output projection and the
    MLP run on ``sel`` only; with a cache the layer stores K/V for every key."""
    b, length = hidden.shape[:2]
    cols = sel if keys is None else keys
    if sel.shape[1] == length:  # nothing removed at this layer: run it untouched
        return original(hidden, *args, **kwargs)
    kwargs = dict(kwargs)
    kwargs["position_embeddings"] = (probe._take(cos, sel), probe._take(sin, sel))
    pos_ids = kwargs.get("position_ids")
    if isinstance(pos_ids, torch.Tensor):
        kwargs["position_ids"] = pos_ids.expand(*pos_ids.shape[:-2], b, length).gather(
            -1, sel.expand(*pos_ids.shape[:-2], *sel.shape)
        )
    mask = kwargs.get("attention_mask")
    if isinstance(mask, torch.Tensor):
        mask = mask.expand(b, *mask.shape[1:])
        rows = mask.gather(2, sel[:, None, :, None].expand(-1, mask.shape[1], -1, mask.shape[3]))
        kwargs["attention_mask"] = rows.gather(3, cols[:, None, None, :].expand(-1, mask.shape[1], sel.shape[1], -1))
    elif keys is not None:  # no mask means causal over equal query and key sets; here the key set is larger
        allowed = keys[:, None, None, :] <= sel[:, None, :, None]
        if getattr(layer.self_attn.config, "_attn_implementation", "sdpa") == "eager":  # eager adds its mask
            allowed = torch.zeros(allowed.shape, dtype=hidden.dtype, device=hidden.device).masked_fill_(
                ~allowed, torch.finfo(hidden.dtype).min)
        kwargs["attention_mask"] = allowed
    if keys is not None:
        name = _cache_kwarg_of(type(layer))
        kwargs[name] = _WithKeysOnly(kwargs.get(name), layer, hidden, sel, keys, cos, sin)
    out = original(probe._take(hidden, sel), *args, **kwargs)
    out_h = out[0] if isinstance(out, tuple) else out
    merged = hidden.scatter(1, sel[..., None].expand(-1, -1, hidden.shape[-1]), out_h)
    return (merged, *out[1:]) if isinstance(out, tuple) else merged


@functools.cache
def _cache_kwarg_of(layer_class) -> str:
    """A decoder layer class's name for its cache argument: ``cache`` (transformers 5.24) or ``past_key_values``
    (5.17); read once per class, not on every routed layer call."""
    import inspect

    return "cache" if "cache" in inspect.signature(layer_class.forward).parameters else "past_key_values"


class _WithKeysOnly:
    """Stands in for the layer's cache during one routed prefill call: the attention hands it the routed tokens' K/V
    (as it hands any cache) and gets back K/V for every key, in sequence order: the routed tokens' own, and those of
    the keys-only tokens, computed here from their unchanged hidden states. With a real cache, the joined K/V are what
    it stores for the layer (so decoding attends to every key); without one they are only returned."""

    def __init__(self, cache, layer, hidden, sel, keys, cos, sin) -> None:
        self.cache, self.n_keys = cache, keys.shape[1]
        self.at_sel = torch.searchsorted(keys, sel)  # columns (in keys) of the routed tokens
        only = torch.ones(keys.shape, dtype=torch.bool, device=keys.device)
        only.scatter_(1, self.at_sel, False)
        self.at_only = only.nonzero()[:, 1].view(keys.shape[0], -1)  # columns (in keys) of the keys-only tokens
        pos = keys.gather(1, self.at_only)
        attn = layer.self_attn
        x = probe.normed(layer, hidden, pos)
        self.k = probe._rope(probe._heads(attn.k_proj(x), attn.head_dim), probe._take(cos, pos), probe._take(sin, pos))
        self.v = probe._heads(attn.v_proj(x), attn.head_dim)

    def _join(self, routed: torch.Tensor, only: torch.Tensor) -> torch.Tensor:
        b, h, _, d = routed.shape
        out = routed.new_empty(b, h, self.n_keys, d)
        out.scatter_(2, self.at_sel[:, None, :, None].expand(-1, h, -1, d), routed)
        out.scatter_(2, self.at_only[:, None, :, None].expand(-1, h, -1, d), only.to(routed.dtype))
        return out

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        keys, values = self._join(key_states, self.k), self._join(value_states, self.v)
        if self.cache is not None:
            return self.cache.update(keys, values, layer_idx, *args, **kwargs)
        return keys, values


def hash_seed(seed: int, key: str) -> int:
    """A stable 63-bit seed from the run seed and a sample key (Python's hash() is salted per process)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little") & ((1 << 63) - 1)
