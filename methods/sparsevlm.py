"""SparseVLM (Zhang et al., "SparseVLM: Visual Token Sparsification for Efficient Vision-Language Model Inference",
ICML 2025, arXiv:2410.04417; official code Gumpest/SparseVLMs, ``llava/model/language_model/modelling_sparse_llama.py``,
``score.py``), with the v2.0 rules (``USE_VERSION=2_0``) by default.

Rule:

1. **text raters**, once, on the LLM's input embeddings: m = softmax over the text of V T^T, averaged over the visual
   tokens; the raters are the text tokens with m > mean(m). Text is every token after the image (the question and the
   answer prompt; the official ``hidden_states[:, text_token_start:]``), not the system prompt;
2. at each pruning layer (official ``pruning_loc`` 2, 6, 15 on 32 layers) that layer's own attention probabilities
   from the raters to the visual tokens are divided by the RoPE-only logits (v2's "gravity correction": the rotated
   all-ones query and key, q.k / sqrt(head_dim), no mask, no softmax); the ``heads`` heads with the largest
   rater-to-visual mass are kept (14 of 32 on LLaVA-1.5-7B), and the score is the mean over those heads and the
   raters; the top count survive the layer's output, i.e. layers after it see only them, at their original positions
   (v2 keeps position ids);
3. v2 merges nothing (v1's recycling of dropped tokens into cluster centres is off in v2).

``version="1.0"`` scores with the plain head-mean attention (no correction, every head); its recycling and
renumbered positions are not implemented.

Budget (``budget_kind = "layer_mean"``): SparseVLM's budgets are layer averages. The official code supports four, as
per-stage counts (v2: 192 -> 300/200/118, 128 -> 238/108/60, 96 -> 246/54/28, 64 -> 66/34/20, after layers 2/6/15).
Its own averages miscount one layer at 576 (the counted 2 full layers are 3: layers 0-2 all see 576), so "192" is a
real mean of 206.75. tokenbench meets the real mean: the per-stage counts keep the shape (relative sizes) of the
official row nearest to the budget's share of N, scaled so the mean over layers is the budget. ``counts=300,200,118``
runs an official row as is (the row then reports its real mean). Below the first stage's floor the stages move earlier.
Under the ``nominal`` budget convention (``official=true``) the budget is the paper's own "keep k" instead: the
official row of the nearest budget (by share of N) scaled by k / that budget, at the official layers, so "64" of 576
runs 66/34/20 as the paper did (a real layer mean of 81.8). Each stage keeps ``min(count, tokens left - 1)``, as the official ``score.py`` does (``topk(min(count,
v_token_num - 1))``): a count that reaches the tokens left still drops one.
"""

from dataclasses import dataclass, replace

from tokenbench.api import REFERENCE_DEPTH, Need, Step, TokenReducer, at_depth, fit_schedule, register_method

#: official v2 per-stage counts (score.py), for LLaVA-1.5's 576 visual tokens, keyed by the nominal budget
V2_COUNTS = {64: (66, 34, 20), 96: (246, 54, 28), 128: (238, 108, 60), 192: (300, 200, 118)}
REFERENCE_TOKENS = 576
VERSIONS = ("2.0", "1.0")


def capped(counts, n_visual: int) -> list[int]:
    """Each stage's count as the official code applies it: ``min(count, tokens left - 1)`` (score.py's
    ``topk(min(sparse_token_list[...], v_token_num - 1))``), so a stage always drops at least one token."""
    out, left = [], n_visual
    for count in counts:
        left = max(0, min(count, left - 1))
        out.append(left)
    return out


@register_method("sparsevlm")
@dataclass(frozen=True)
class SparseVLM(TokenReducer):
    stage = "prune"
    budget_kind = "layer_mean"
    budget_scopes = ("global", "crop")  # ctx.topk at every stage
    layers: tuple[int, ...] = (2, 6, 15)  # pruning_loc: these layers' outputs are pruned (32-layer values, scaled)
    counts: tuple[int, ...] | None = None  # fixed per-stage counts; None: fitted to the budget (official shape)
    heads: int = 0  # v2 heads scored; 0 = 14 of every 32 (official: 14 on LLaVA-1.5-7B); more than the model has: all
    version: str = "2.0"  # "2.0" (gravity correction, head selection) | "1.0" (head-mean attention)
    official: bool = False  # the official per-stage row for the budget (the paper's "keep k"); False: a layer mean

    def nominal(self):
        return self if self.counts is not None else replace(self, official=True)

    def check(self, n_layers):
        if self.version not in VERSIONS:
            raise self.option_error("version", f"must be one of {', '.join(VERSIONS)}", "1.0")
        if self.heads < 0:
            raise self.option_error("heads", "must be at least 0 (0: 14 of every 32 heads, as the official code)", 8)
        last = REFERENCE_DEPTH - 2  # a pruning layer's output takes effect before the next layer, which must exist
        if (not self.layers or list(self.layers) != sorted(set(self.layers)) or self.layers[0] < 0
                or self.layers[-1] > last):
            raise self.option_error("layers", f"must be strictly increasing pruning layers in 0..{last} (given for "
                                    f"{REFERENCE_DEPTH} layers, placed at this depth), at least one", "2,6,15")
        if self.counts is not None:
            example = ",".join(str(max(1, 16 >> i)) for i in range(len(self.layers)))
            if len(self.counts) != len(self.layers):
                raise self.option_error("counts", f"needs one count per pruning layer {self.layers}", example)
            if any(c < 1 for c in self.counts) or list(self.counts) != sorted(self.counts, reverse=True):
                raise self.option_error("counts", "must be at least 1 each and never grow from one stage to the next "
                                        "(a stage keeps some of the tokens the one before kept)", example)
        self._pruned(n_layers)  # the layers fit this depth

    def _pruned(self, n_layers: int) -> tuple[int, ...]:
        """The pruning layers for this depth, each < n_layers - 1: pruning layer l's output takes effect before layer
        l + 1, and that layer is placed by the rule every method shares (:func:`tokenbench.api.at_depth`)."""
        return tuple(x - 1 for x in at_depth(tuple(x + 1 for x in self.layers), n_layers, option="sparsevlm.layers"))

    @staticmethod
    def _needs(signal_layer: int) -> tuple[Need, ...]:
        return (Need("hidden", layer=0), Need("hidden", layer=0, tokens="text"),
                Need("attn", layer=signal_layer, queries="text"), Need("layer_input", layer=signal_layer))

    def _steps(self, pruned, counts=None):
        # pruning layer l's output = a prune step before layer l + 1 reading layer l's attention
        return tuple(Step(layer + 1, needs=self._needs(layer), keep=None if counts is None else counts[i])
                     for i, layer in enumerate(pruned))

    def steps(self, n_layers):
        return self._steps(self._pruned(n_layers))

    def plan(self, keep, n_visual, n_layers):
        pruned = self._pruned(n_layers)
        if self.counts is not None:
            if self.counts[0] > n_visual:
                scaled = [max(1, c * n_visual // REFERENCE_TOKENS) for c in self.counts]
                raise self.option_error("counts", f"keeps more than this image's {n_visual} visual tokens; use counts "
                                        f"in 1..{n_visual} (the official rows are for {REFERENCE_TOKENS})",
                                        ",".join(map(str, scaled)))
            return self._steps(pruned, capped(self.counts, n_visual))
        nominal = min(V2_COUNTS, key=lambda b: abs(b / REFERENCE_TOKENS - keep / n_visual))
        if self.official:  # the official row of the nearest budget, scaled by keep / that budget; layers as given
            return self._steps(pruned, capped([max(1, round(c * keep / nominal)) for c in V2_COUNTS[nominal]],
                                              n_visual))
        shape = [c / REFERENCE_TOKENS for c in V2_COUNTS[nominal]]
        while pruned[0] > 0 and (pruned[0] + 1) * n_visual / n_layers > keep:  # below the floor: move earlier
            pruned = tuple(x - 1 for x in pruned)
        steps_at = [layer + 1 for layer in pruned]

        def family(c: float):
            return list(zip(steps_at, capped([round(c * f * n_visual) for f in shape], n_visual)))

        stages = fit_schedule(family, keep, n_visual, n_layers, hi=1 / min(shape))
        return self._steps(pruned, [count for _, count in stages])

    def reduces(self, keep, n_visual):
        return keep < n_visual or self.counts is not None

    def select(self, ctx):
        import torch

        signal_layer = ctx.layer - 1
        v0, t0 = ctx.signal(Need("hidden", layer=0)), ctx.signal(Need("hidden", layer=0, tokens="text"))
        text = ctx.text_after_image  # (B, T)
        # raters: softmax over the text of V.T^T, averaged over the visual tokens, above its mean
        logits = torch.matmul(v0.float(), t0.float().transpose(1, 2)).masked_fill(~text[:, None, :], float("-inf"))
        m = logits.softmax(dim=2).mean(dim=1)  # (B, T), zero off the text
        mean = m.sum(1, keepdim=True) / text.sum(1, keepdim=True)
        raters = text & (m > mean)
        attn = ctx.signal(Need("attn", layer=signal_layer, queries="text")).float()  # (B, H, T, n_active)
        if self.version == "2.0":
            inp = ctx.signal(Need("layer_input", layer=signal_layer))
            ones = torch.ones(inp.normed.shape[0], 1, inp.normed.shape[1], inp.head_dim, device=attn.device,
                              dtype=inp.normed.dtype)
            rotated = inp.rope(ones)[:, 0].float()  # (B, T_all, head_dim): RoPE of an all-ones vector per position
            r_text = rotated.gather(1, inp.text[..., None].expand(-1, -1, inp.head_dim))
            r_vis = rotated.gather(1, inp.visual[..., None].expand(-1, -1, inp.head_dim))
            attn = attn / (torch.matmul(r_text, r_vis.transpose(1, 2)) * inp.head_dim ** -0.5)[:, None]
            n_heads = attn.shape[1]
            k = self.heads or max(1, round(14 * n_heads / 32))
            mass = (attn * raters[:, None, :, None]).sum(dim=(2, 3))  # (B, H)
            top = mass.topk(min(k, n_heads), dim=1).indices
            attn = attn.gather(1, top[:, :, None, None].expand(-1, -1, *attn.shape[2:]))
        per_rater = attn.mean(dim=1)  # (B, T, n_active)
        scores = (per_rater * raters[..., None]).sum(1) / raters.sum(1, keepdim=True).clamp(min=1)
        return ctx.topk(scores)

    def select_macs(self, dims, n_text, n_active, layer, n_visual=0):
        # the rater matmul (every visual x every text embedding at the input, redone at each step) and, in v2, the
        # RoPE-only logits (one head)
        return n_visual * n_text * dims.hidden + (n_text * n_active * dims.head_dim if self.version == "2.0" else 0)
