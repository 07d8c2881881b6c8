"""ALVTS: Adaptive Layer-wise Visual Token Selection (Chen et al., "One Layer's Trash is Another Layer's Treasure",
CVPR 2026, arXiv:2606.14277). No official code exists; this follows docs/methods.md §1 (equations from the paper's
notes [N1][N2]) and makes every choice the paper leaves open an option.

Rule: before each selected decoder layer, a low-rank selector scores the active visual tokens with
S(i) = S_V2V(i) * S_T2V(i) computed on an approximation of that layer's attention (``selector.py``); the top
``keep`` = floor(r * N) of them and every text token go through the layer, the others skip it unchanged and rejoin in
their original order before the next layer; by default a skipped token stays a key and value of the layer it skips
(``skipped_as_kv``, below). Every token keeps its original position id. The selector's factors come
from a truncated SVD of W_Q and W_K (singular values split as square roots), optionally fitted so that the selector's
scores match the true attention's (``tokenbench calibrate alvts``; ``fit.py``). The LVLM itself is never changed.

Open choices (default first, with the reason):

=================  =====================================================================================================
option             meaning
=================  =====================================================================================================
rank=0             R of the factors; 0 = hidden/16, which gives the paper's R=256 on LLaVA-1.5-7B (4096) and R=128 on
                   Qwen2.5-VL-3B (2048); 8 on tiny-llava (128)
layers=None        layers with a selector; None = every layer ("before each decoder layer" [N1][N2])
skipped_as_kv=T    True: a skipped token stays a key and value of the layer it skips; only the routed tokens (text and
                   the selected visual ones) get queries, the output projection and the MLP, while K/V are computed
                   for every active token (the skipped ones from their unchanged hidden states, at their own
                   positions) and the routed tokens attend to all of them. False: a skipped token is neither query
                   nor key/value there ("skips the layer entirely" [N3]). The sources do not settle it (methods.md
                   §1.4); the default is the variant that reproduces what the paper reports. Evidence (mini-llava,
                   500 held-out samples, accuracy at keep 16/32/48 of 144, i.e. 1/9, 2/9, 1/3; full 0.986):
                   True 0.966/0.968/0.968 (98 % retention at 89 % fewer tokens, the paper's headline shape: 96.7 %);
                   False 0.552/0.620/0.686, below FastV's 0.590/0.732/0.778. A second trained LLaVA the project had
                   never seen (4 layers, 64 visual tokens, 7 kept, 400 samples) splits the same way: full 0.88,
                   True 0.80, False 0.46, FastV 0.62. Routing from a later first layer changes neither. The leaderboard
                   shows both variants as their own rows
pooling=mean       heads pooled by mean (the head-averaged map the score is defined on); ``max`` is FitPrune's pooling
causal=True        the selector masks causally, like the layer it approximates (the oracle S* is causal)
rope=True          the selector rotates q~/k~ with the layer's own RoPE (M-RoPE on Qwen2.5-VL), as the layer does
static=False       the paper's ablation "w/o dynamic selection": score once at ``static_layer`` and drop the rest for
                   every later layer (FastV's strategy with the ALVTS score)
static_layer=None  that layer; None: FastV's K=2 of 32 layers (as in the ablation), placed by the shared depth rule
calibration=auto   ``auto``: the artefact shipped in the checkpoint directory (``calibration/alvts/<tag>.safetensors``)
                   if there is one, else the one `calibrate` wrote at the default location, else the SVD
                   initialisation, said in the output and the JSON row; ``svd``: SVD initialisation only; or a path
=================  =====================================================================================================

Decode (not switchable): the selection is fixed by the prefill, and each layer's KV cache holds the tokens that layer
attended to: text and every active visual token with skipped_as_kv (the K/V it computed anyway), text and the routed
visual tokens without. FLOPs count exactly what runs: q/o/MLP for the routed tokens, k/v for every key, attention as
routed x keys, and the selector (``selector.selector_macs``). Re-selecting per generated token would need every visual token's K/V at
every layer and give up the memory saving (docs/methods.md §1.4).
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenbench.api import ConfigError, Need, Step, TokenReducer, layer_at_depth, register_method

POOLINGS = ("mean", "max")


@register_method("alvts")
@dataclass(frozen=True)
class ALVTS(TokenReducer):
    stage = "route"
    budget_scopes = ("global", "crop")  # ctx.topk at every layer
    rank: int = 0  # R; 0 = hidden/16 (paper: 256 for LLaVA-1.5-7B, 128 for Qwen2.5-VL-3B)
    layers: tuple[int, ...] | None = None  # None = every layer, as in the paper
    skipped_as_kv: bool = True  # skipped tokens stay keys/values of the layer they skip; False: they leave it entirely
    pooling: str = "mean"  # mean | max over heads
    causal: bool = True  # the selector's mask, like the layer's
    rope: bool = True  # the selector's positions, like the layer's
    static: bool = False  # ablation: select once at static_layer and prune (FastV's strategy, ALVTS's score)
    static_layer: int | None = None  # the ablation's layer; None: FastV's K=2 of 32, at this depth
    calibration: str = "auto"  # auto | svd | path to a `tokenbench calibrate alvts` artefact

    # -- options -------------------------------------------------------------------------------------------------------
    def check(self, n_layers: int) -> None:
        if self.rank < 0:
            raise self.option_error("rank", "must be >= 1, or 0 for hidden/16", 8)
        if self.pooling not in POOLINGS:
            raise self.option_error("pooling", f"must be one of {', '.join(POOLINGS)}", "max")
        if self.static_layer is not None and not self.static:
            raise ConfigError(f"method 'alvts' option 'static_layer'={self.static_layer!r} applies only to the static "
                              "ablation, and static is False, so it would change nothing. Example: -a alvts.static=true "
                              f"-a alvts.static_layer={self.static_layer}")
        if self.static and self.layers is not None:
            raise ConfigError(f"method 'alvts' option 'layers'={self.layers!r} does not apply to the static "
                              "ablation, which selects once at static_layer, so it would change nothing; drop "
                              "-a alvts.layers=..., or drop -a alvts.static=true to route at those layers")
        if self.static:
            if self.static_layer is not None and not 0 <= self.static_layer < n_layers:
                raise self.option_error("static_layer", f"must be in 0..{n_layers - 1} for this {n_layers}-layer "
                                        "model", max(1, n_layers // 4))
            self.selected_layers(n_layers)  # the default static layer fits this depth
        example = ",".join(str(x) for x in range(min(3, n_layers)))
        if self.layers is not None and not all(0 <= layer < n_layers for layer in self.layers):
            raise self.option_error("layers", f"must list layers inside 0..{n_layers - 1} for this {n_layers}-layer "
                                    "model (or leave it unset for all)", example)
        if self.layers is not None and (not self.layers or len(set(self.layers)) != len(self.layers)):
            raise self.option_error("layers", "must list distinct layers, at least one (or leave it unset for all)",
                                    example)

    def resolved_rank(self, hidden: int) -> int:
        return self.rank or max(1, hidden // 16)

    def selected_layers(self, n_layers: int) -> tuple[int, ...]:
        if self.static:
            return (layer_at_depth(self.static_layer, 2, n_layers, "alvts.static_layer"),)
        return tuple(sorted(self.layers)) if self.layers is not None else tuple(range(n_layers))

    # -- plan ----------------------------------------------------------------------------------------------------------
    def steps(self, n_layers):
        stage = "prune" if self.static else None
        return tuple(
            Step(layer, needs=(Need("layer_input", layer=layer),), stage=stage,
                 skipped_as_kv=self.skipped_as_kv and not self.static)  # the static ablation drops tokens for good
            for layer in self.selected_layers(n_layers)
        )

    def select(self, ctx):
        from tokenbench.methods.alvts.selector import selector_scores

        inp = ctx.signal(Need("layer_input", layer=ctx.layer))
        factors = ctx.artefact.factors(ctx.layer, like=inp.normed)
        scores = selector_scores(inp, factors, self.pooling, self.causal, self.rope)
        return ctx.topk(scores)

    def reduces(self, keep: int, n_visual: int) -> bool:
        return keep < n_visual  # at r = 1 every token goes through every layer: the unmodified model

    def select_macs(self, dims, n_text: int, n_active: int, layer: int, n_visual: int = 0) -> int:
        from tokenbench.methods.alvts.selector import selector_macs

        return selector_macs(dims, self.resolved_rank(dims.hidden), n_text + n_active, self.pooling, self.causal)

    # -- factors -------------------------------------------------------------------------------------------------------
    def prepare(self, weights):
        from tokenbench.methods.alvts import fit

        return fit.prepare(self, weights)

    def calibration_steps(self, n_layers):
        return tuple(
            Step(layer, needs=(Need("layer_input", layer=layer),))
            for layer in range(n_layers)
        )

    def calibrate(self, weights, data, epochs: int = 3, lr: float = 1e-2, log=print):
        from tokenbench.methods.alvts import fit

        return fit.calibrate(self, weights, data, epochs=epochs, lr=lr, log=log)

