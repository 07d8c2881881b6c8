"""FastV (Chen et al., "An Image is Worth 1/2 Tokens After Layer 2", ECCV 2024, arXiv:2403.06764).

Rule, as in the official code (pkunlp-icler/FastV, ``modeling_llama.py``, ``LlamaModel.forward``): at layer K take
layer K-1's attention probabilities, average over heads, read the row of the **last** input token, and keep the
``keep`` image tokens it attends to most; they alone (with every text token) go through layers K.. (the others are
dropped for good), with their **original position ids**. The paper's prose describes the average attention
received from all tokens; the released code uses the last token, and so do we.

Budget: the harness's ``keep`` (FastV's R is 1 - keep/N). Defaults: K=2 (the paper's default, for 32 layers; other
depths place it by :func:`tokenbench.api.at_depth`, the rule every method shares: 1 at 12 layers, 2 at 28).
The attention row is recomputed for that one query (norm, q/k projections, RoPE) instead of switching the model to
eager attention; its cost is counted as method overhead.
"""

from dataclasses import dataclass

from tokenbench.api import Need, Step, TokenReducer, layer_at_depth, register_method


@register_method("fastv")
@dataclass(frozen=True)
class FastV(TokenReducer):
    stage = "prune"
    budget_scopes = ("global", "crop")  # ctx.topk
    layer: int | None = None  # K: layers 0..K-1 see every token, layers K.. only the kept ones; None: K=2 of 32, at depth

    def check(self, n_layers):
        if self.layer is not None and not 1 <= self.layer < n_layers:
            raise self.option_error("layer", f"must be in 1..{n_layers - 1} for this {n_layers}-layer model (it ranks "
                                    "by layer K-1's attention and prunes from layer K)", max(1, n_layers // 2))
        layer_at_depth(self.layer, 2, n_layers, "fastv.layer")

    def steps(self, n_layers):
        k = layer_at_depth(self.layer, 2, n_layers, "fastv.layer")
        return (Step(k, needs=(Need("attn", layer=k - 1, queries="last"),)),)

    def select(self, ctx):
        need = Need("attn", layer=ctx.layer - 1, queries="last")
        scores = ctx.signal(need)[:, :, 0, :].mean(dim=1)  # (B, n_active): last query, mean over heads
        return ctx.topk(scores)
