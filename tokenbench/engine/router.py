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
* the layer runs on all non-visual tokens plus that subset (a :class:`~tokenbench.engine.subset.TokenSet`, built
  once per prefill and shared by every layer that computes the same tokens), gathered in their original order with
  their own position embeddings and the matching rows/columns of the 4-D mask (``None`` stays ``None``: causal over a
  sorted subset is still causal); the outputs are scattered back, so skipped tokens pass through unchanged;
* at a route step with ``skipped_as_kv`` the skipped tokens stay keys and values of the layer: queries, the output
  projection and the MLP run on the routed tokens only, while K/V come from one projection of every active token's
  normed input, inside one attention call (:func:`~tokenbench.engine.subset.routed_layer`);
* nothing reads a value back on the host inside the layer loop: what ``select`` returned is checked after the
  prefill, with one sync (an answer straight from ``ctx.topk`` needs none);
* with a cache, layer ``l`` stores K/V for the tokens it attended to (what it processed; every active token with
  ``skipped_as_kv``); ``kv_pos[l]`` records their positions, and every decode step's mask is sliced to them, so each
  new token attends to what that layer kept.

A ``pre_llm`` step runs in a pre-hook on the language model: it may replace the kept visual embeddings (merging),
and the unselected tokens are pruned from layer 0 on. Kept tokens keep their original position ids throughout.
"""

from __future__ import annotations

import types

import torch

from tokenbench.api import Need, Reduction, ReductionContext, Selection, Step
from tokenbench.engine import probe
from tokenbench.engine.record import Record, Tokens  # noqa: F401 (Tokens: importable from here too)
from tokenbench.engine.routing import LayerRule, check_steps, plan_routing
from tokenbench.engine.subset import TokenSet, check_layer, routed_layer, run_subset, take
from tokenbench.errors import PluginValidationError


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
        self._previous = []
        for idx, layer in enumerate(self.layers):
            previous = layer.__dict__.get("forward")  # None, or the compiled forward (engine.compiled)
            if getattr(getattr(previous, "__func__", None), "_tokenbench_router", False):
                raise RuntimeError(f"decoder layer {idx} already has a router installed; nested routers?")
            self._previous.append(previous)
            original = layer.forward
            forward = self._make_forward(idx, original)
            forward._tokenbench_router = True
            layer.forward = types.MethodType(forward, layer)
        self._handles.append(self.lm.register_forward_pre_hook(self._lm_pre_hook, with_kwargs=True))
        self._handles.append(self.lm.register_forward_hook(self._lm_post_hook))
        if any(s.skipped_as_kv for s in self.method.steps(self.n_layers)):
            for layer in self.layers:
                check_layer(layer)
        return self

    def __exit__(self, *exc) -> None:
        for layer, previous in zip(self.layers, self._previous):
            if previous is None:
                layer.__dict__.pop("forward", None)
            else:
                layer.forward = previous
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
        self.active = self._everything = torch.arange(n, device=tokens.visual.device).expand(b, n)
        self.signals: dict[Need, torch.Tensor] = {}
        self.kv_pos: dict[int, torch.Tensor] = {}
        self.past_len = 0
        self._sets: dict[tuple, tuple[torch.Tensor, TokenSet]] = {}  # token sets of this prefill, built once each
        self._checks: list[tuple] = []  # answers of select() still to check, on the device (see _verify)
        self._normed: tuple | None = None  # (layer, token set, normed input) the layer_input signal computed

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

    def _lm_post_hook(self, module, args, output):
        if self.tokens is not None and self._checks:  # the end of the prefill: check what select() returned
            self._verify()
        return None

    def _renumber(self, pos):
        """Contiguous positions for the tokens left after a pre-LLM selection with ``renumber``: the text after the
        image moves up by the number of dropped visual tokens (padding and dropped tokens keep theirs, unused).
        Structural tokens in the image span (LLaVA-NeXT's newlines) are tokens like the text: each takes the next
        position, as in the official code's shorter sequence."""
        t = self.tokens
        if not isinstance(pos, torch.Tensor) or pos.dim() != 2:
            raise PluginValidationError(
                f"method {self.method.name!r} asked to renumber positions, which needs a model with 1-D position ids "
                "(LLaVA); keep original positions on this model (positions=auto or original)")
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

            step = replace(step, needs=resolve_needs(step, {"visual_embeds", "text_embeds", *self.providers}),
                           alternatives=())
        t0 = self._tic()
        for need in step.needs:
            if need.kind == "visual_embeds":
                self.signals[need] = take(embeds, t.visual)
            elif need.kind == "text_embeds":
                self.signals[need] = take(embeds, t.other)
            elif need.kind in self.providers:  # computed by the adapter during the vision tower's forward
                self.signals[need], macs = self.providers[need.kind]()
                self.record.pre_llm_macs += macs
            else:
                raise PluginValidationError(f"method {self.method.name!r} needs {need}, which this model does not provide")
        chosen, out = self._select(rule, step)
        embeds_out, renumber = embeds, isinstance(out, Selection) and out.renumber
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

        Returns the chosen original visual indices (B, k) (ascending at a pruning step; in the method's order at a
        route step, whose rows need none) and the method's answer as it came."""
        step = rule.step if step is None else step
        want = rule.keep
        ctx = self._context(step, want)
        self.record.select_calls.append((step.layer, int(self.active.shape[1])))
        out = self._method_select(ctx, rule.stage)
        idx = out.indices if isinstance(out, Selection) else out
        name = self.method.name
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.shape[0] != self.active.shape[0]:
            raise PluginValidationError(
                f"method {name!r} select() must return a (batch, k) index tensor, got "
                f"{getattr(idx, 'shape', type(idx).__name__)}"
            )
        n_act = self.active.shape[1]
        if idx.shape[1] > n_act:
            raise PluginValidationError(f"method {name!r} returned {idx.shape[1]} indices at layer {step.layer}, "
                                        f"more than the {n_act} active visual tokens")
        if idx.shape[1] != want:
            raise PluginValidationError(
                f"method {name!r} kept {idx.shape[1]} visual tokens at layer {step.layer}; its plan says {want} "
                "(ctx.keep). Return exactly ctx.keep indices, or declare the count in Step(keep=...)"
            )
        trusted = any(idx is made for made in ctx.made)  # ctx.topk's own answer: distinct and in range
        picked = idx.to(self.active.device, torch.long)
        if not trusted and picked.numel():
            # checked at the end of the prefill with one host sync (_verify), not here: reading a value on the host
            # inside the layer loop would stall the device at every step. Until then, clamped: a bad answer indexes
            # nothing outside the active tokens
            self._checks.append((picked, n_act, step.layer))
            picked = picked.clamp(0, n_act - 1)
        if rule.prunes:  # the new active set, ascending (a route step's rows need no order: not sorted here)
            picked = picked.sort(dim=1).values
        chosen = picked if self.active is self._everything else self.active.gather(1, picked)
        self._check_crop_quotas(ctx, picked, idx.shape[1])
        self.record.picked[step.layer] = chosen
        if rule.prunes:
            self.active = chosen
        if isinstance(out, Selection) and (out.embeds is not None or out.features is not None or out.renumber):
            if self.method.stage != "pre_llm":
                raise PluginValidationError(f"method {name!r}: only pre_llm methods may merge or renumber")
        return chosen, out

    def _context(self, step: Step, want: int) -> ReductionContext:
        """What ``select`` sees at ``step``: the budget, the active tokens, the signals it declared, the text rows."""
        text_valid, after_image = self._memo("text", self._text_rows)
        return ReductionContext(
            layer=step.layer,
            keep=want,
            budget=self.keep,
            n_visual=self.layout.n_visual,
            n_layers=self.n_layers,
            active=self.active,
            layout=self.layout,
            signals={n: self.signals[n] for n in step.needs},
            text_query_mask=text_valid,
            text_after_image=after_image,
            n_text_after_image=self.tokens.n_after_image,
            generators=self._generators(step.layer),
            artefact=self.artefact,
            budget_scope=self.budget_scope,
        )

    def _method_select(self, ctx, stage: str | None):
        """The method's ``select``; under compiled layers (engine.compiled), a route step's is compiled too (the
        routed step, run at every layer; a pruning step selects once, and a long Python loop there, CDPruner's
        greedy, would only be unrolled into a long compilation)."""
        if stage != "route":
            return self.method.select(ctx)
        from tokenbench.engine.compiled import compiled_for

        return compiled_for(self.layers[0], type(self.method).select)(self.method, ctx)

    def _text_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(the non-visual tokens that are not padding, those of them after the image), (B, M) each."""
        t = self.tokens
        valid = t.valid.gather(1, t.other)
        return valid, valid & (t.other > t.visual[:, -1:])

    def _verify(self) -> None:
        """Check every answer of ``select`` this prefill (indices inside the active tokens, no duplicates) with one
        host sync, and name the first bad one."""
        checks, self._checks = [(p.sort(dim=1).values, n, layer) for p, n, layer in self._checks], []
        flags = [(p.amin() < 0) | (p.amax() >= n) | (p[:, 1:] == p[:, :-1]).any() for p, n, _ in checks]
        if not bool(torch.stack(flags).any()):
            return
        name = self.method.name
        for p, n, layer in checks:
            if bool((p.amin() < 0) | (p.amax() >= n)):
                raise PluginValidationError(f"method {name!r} returned indices outside 0..{n - 1} at layer {layer}")
            if bool((p[:, 1:] == p[:, :-1]).any()):
                raise PluginValidationError(f"method {name!r} returned duplicate indices at layer {layer}")

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
        cos, sin = kwargs["position_embeddings"]  # the same tensors at every layer of one forward
        b = hidden.shape[0]
        if cos.shape[0] != b:
            cos, sin = self._memo(("expand", id(cos)), lambda: (cos.expand(b, *cos.shape[1:]),
                                                                 sin.expand(b, *sin.shape[1:])))
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
        key_set = self._token_set(keys, cos, sin)
        cache = self._cache_of(kwargs)
        if kwargs.get("use_cache") and cache is not None:
            self.kv_pos[idx] = key_set.positions
        queries = self._token_set(visual, cos, sin, ordered=keys is visual)  # a routed layer's queries need no order
        if keys is not visual and not queries.full:  # skipped_as_kv: queries for the routed tokens, K/V for every key
            normed = self._normed[2] if self._normed and self._normed[0] == idx and self._normed[1] is key_set else None
            return routed_layer(layer, hidden, queries, key_set, kwargs.get("attention_mask"), cache, normed=normed)
        return run_subset(original, hidden, key_set, args, kwargs)

    def _memo(self, key, build):
        """A value built once per prefill (``key`` holds tensor ids: the tensors are kept with it)."""
        if key not in self._sets:
            self._sets[key] = build()
        return self._sets[key]

    def _token_set(self, visual: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, ordered: bool = True) -> TokenSet:
        """Every non-visual token plus the visual tokens ``visual`` (original indices), as a :class:`TokenSet` built
        once per prefill: every layer that computes the same tokens (the same index tensor) shares it. ``ordered``:
        positions in sequence order (what a layer's own forward needs: causal over a sorted subset is causal);
        without, the non-visual tokens then the visual ones (rows of a routed layer, whose mask is explicit)."""
        key = ("set", id(visual), id(cos), ordered)
        if key not in self._sets:
            t = self.tokens
            if visual is self._everything or visual.shape[1] == self.layout.n_visual:  # the whole sequence (a
                # selection is sorted and checked distinct, so all N of them are 0..N-1): nothing to gather
                positions = torch.arange(t.valid.shape[1], device=t.valid.device).expand(t.valid.shape)
                tokens = TokenSet.of(positions, cos, sin, full=True)
            else:
                positions = torch.cat([t.other, t.visual.gather(1, visual)], dim=1)
                if ordered:
                    positions = positions.sort(dim=1).values
                both = self._memo(("cos|sin", id(cos)), lambda: torch.cat([cos, sin], dim=-1))  # one gather for both
                tokens = TokenSet.of(positions, cos, sin, both=both)
            self._sets[key] = (visual, cos, tokens)  # the tensors stay referenced: their ids stay unique
        return self._sets[key][2]

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
        tokens = self._token_set(self.active, cos, sin)  # what the layer would see: every active token
        vis_pos = t.visual if tokens.full else tokens._memo("visual", lambda: t.visual.gather(1, self.active))
        # (B, n_active) sequence positions of the active visual tokens
        for need in needs:
            pos = t.other if need.tokens == "text" else vis_pos
            if need.kind == "hidden":
                value = take(hidden, pos)
            elif need.kind == "normed":
                value = probe.normed(layer, hidden, pos)
            elif need.kind == "final_normed":
                value = self.lm.norm(take(hidden, pos))
            elif need.kind == "keys":
                value = probe.keys(layer, hidden, cos, sin, pos)
            elif need.kind == "layer_input":
                value = probe.layer_input(layer, hidden, tokens, t.other, vis_pos, t.valid,
                                          t.visual_span if tokens.full else None)
                self._normed = (idx, tokens, value.normed)  # the routed layer's keys need the same normed input
            elif need.kind == "attn":
                key_idx = tokens.positions
                queries = {
                    "last": key_idx[:, -1:],
                    "text": t.other,
                    "visual": vis_pos,
                }[need.queries]
                rows = probe.attention_rows(layer, hidden, cos, sin, key_idx, tokens.valid(t.valid), queries)
                cols = tokens.columns_of("visual", vis_pos)
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


def hash_seed(seed: int, key: str) -> int:
    """A stable 63-bit seed from the run seed and a sample key (Python's hash() is salted per process)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little") & ((1 << 63) - 1)
