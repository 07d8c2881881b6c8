"""PyramidDrop (Xing et al., "PyramidDrop: Accelerating Your Large Vision-Language Models via Pyramid Visual
Redundancy Reduction", CVPR 2025, arXiv:2410.17247; official code Cooperx521/PyramidDrop,
``llava/model/modeling_llama_pdrop.py``: ``pdrop_forward``, ``pdrop_rank_drop``).

Rule: the LLM runs in S+1 stages. Before each stage layer (8, 16, 24 on 32-layer LLaVA-1.5) the layer's input is normed
with that layer's own ``input_layernorm``, the **last prompt token**'s query and every key are projected with its q/k
and RoPE, the causal softmax over all keys is averaged over heads, and the top ``int(N * lambda^s)`` image tokens (a
share of the *original* N, truncated like the official ``int()``) are kept, in order, for this and later layers. The
attention row is recomputed for that one query: no eager attention.

Budget (``budget_kind = "layer_mean"``): PyramidDrop has no single "kept" count, so the run's budget is the mean number
of visual tokens per LLM layer. With ``fit_budget=True`` (default) lambda is solved (bisection) so that mean is as
close to the budget as integer counts allow; the paper's own setting is ``fit_budget=False`` (lambda = 0.5: ratios
0.5/0.25/0.125, a mean of about 270 of 576 tokens on LLaVA-1.5-7B). A budget below what lambda = ``lam`` gives at the
default layers moves the pyramid earlier instead of flattening it: the first stage goes to the latest layer at which
lambda >= ``lam`` still meets the budget (layer 0 at the latest), the other stages evenly spaced after it, and lambda
is then fitted (papers that compare PDrop at 64-192 tokens retune its layers too; the official repo ships no such
setting). On LLaVA-1.5-7B: 270 -> 8/16/24 keeping 288/144/72 (the paper's own), 192 -> 1/11/21 keeping
304/160/84, 64 -> 0/10/21 keeping 151/39/10. Every row reports the mean it reached.

Under the ``nominal`` budget convention (``official=true``) "keep k" means what a pyramid ending at k means: the
paper's layers (8/16/24, scaled, never moved) and lambda = (k/N)^(1/3), so the last stage keeps k (int() elsewhere):
64 of 576 keeps 276/133/64 after layers 8/16/24, a layer mean of 262.25, next to the paper's own lambda = 0.5
(288/144/72, 270). The repo ships no setting for 64-192; this reading keeps its schedule and only sets its end.

Deviation, stated: the official code renumbers positions contiguously after each drop; tokenbench keeps every kept
token's original position id (as FastV, DART, VTW and SparseVLM v2 do), so all in-LLM methods share one convention.
"""

from dataclasses import dataclass, replace

from tokenbench.api import Need, Step, TokenReducer, at_depth, fit_schedule, layer_mean, register_method


@register_method("pdrop")
@dataclass(frozen=True)
class PyramidDrop(TokenReducer):
    stage = "prune"
    budget_kind = "layer_mean"
    budget_scopes = ("global", "crop")  # ctx.topk at every stage
    layers: tuple[int, ...] | None = None  # stage layers; None: (8, 16, 24) on 32 layers (official layer_list), scaled
    lam: float = 0.5  # lambda: stage s keeps int(N * lam^s) (official image_token_ratio_list 0.5, 0.25, 0.125)
    fit_budget: bool = True  # solve lam for the run's layer-mean budget; False: the paper's fixed ratios
    official: bool = False  # the paper's layers, never moved, and lam so that the last stage keeps the budget

    def nominal(self):
        return replace(self, official=True) if self.fit_budget else self

    def check(self, n_layers):
        if not 0 < self.lam <= 1:
            raise self.option_error("lam", "must be in (0, 1] (stage s keeps int(N * lam^s))", 0.5)
        if self.lam == 1 and not self.fit_budget:
            raise self.option_error("lam", "with fit_budget=False keeps every token at every stage (the unreduced "
                                    "model); use lam in (0, 1)", 0.5)
        example = ",".join(str(x) for x in _spaced(n_layers // 4, 3, n_layers)) if n_layers >= 3 else "0,"
        if self.layers is not None and not self.layers:
            raise self.option_error("layers", "lists no stage layer, so nothing would be dropped; give at least one, "
                                    "or leave it unset for (8, 16, 24) of 32 at this depth", example)
        layers = self._layers(n_layers)
        if list(layers) != sorted(set(layers)) or not all(0 <= x < n_layers for x in layers):
            raise self.option_error("layers", f"must be strictly increasing layers inside 0..{n_layers - 1} for this "
                                    f"{n_layers}-layer model", example)

    def _layers(self, n_layers: int) -> tuple[int, ...]:
        if self.layers is not None:
            return tuple(self.layers)
        return at_depth((8, 16, 24), n_layers, option="pdrop.layers")

    def steps(self, n_layers):
        return tuple(Step(layer, needs=(Need("attn", layer=layer, queries="last"),))
                     for layer in self._layers(n_layers))

    def plan(self, keep, n_visual, n_layers):
        layers = self._layers(n_layers)
        if not self.fit_budget:
            stages = _stages(layers, n_visual, self.lam)
        elif self.official:  # lam^S = keep / N: the paper's pyramid, ending at the budget
            stages = _stages(layers, n_visual, (keep / n_visual) ** (1 / len(layers)))
            stages[-1] = (stages[-1][0], keep)
        else:
            if self.layers is None:  # move the pyramid earlier until lambda >= lam meets the budget (or layer 0)
                first = layers[0]
                while first > 0 and layer_mean(n_visual, n_layers, _stages(layers, n_visual, self.lam)) > keep:
                    first -= 1
                    layers = _spaced(first, len(layers), n_layers)
            stages = fit_schedule(lambda lam: _stages(layers, n_visual, lam), keep, n_visual, n_layers)
        return tuple(Step(layer, needs=(Need("attn", layer=layer, queries="last"),), keep=count)
                     for layer, count in stages)

    def reduces(self, keep, n_visual):
        return keep < n_visual or not self.fit_budget

    def select(self, ctx):
        scores = ctx.signal(Need("attn", layer=ctx.layer, queries="last"))[:, :, 0, :].mean(dim=1)  # heads averaged
        return ctx.topk(scores)


def _spaced(first: int, n_stages: int, n_layers: int) -> tuple[int, ...]:
    """``n_stages`` layers from ``first``, evenly spaced over the rest of the depth: (8, 16, 24) for 8 of 32."""
    span = max(n_layers - first, n_stages)
    return tuple(min(n_layers - 1, first + j * span // n_stages) for j in range(n_stages))


def _stages(layers, n_visual: int, lam: float) -> list[tuple[int, int]]:
    return [(layer, int(n_visual * lam ** (s + 1))) for s, layer in enumerate(layers)]
