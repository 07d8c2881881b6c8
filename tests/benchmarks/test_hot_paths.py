"""Micro-benchmarks of the hot paths at LLaVA-1.5-7B's layer size (hidden 4096, 32 heads, 576 image + 60 text tokens,
bfloat16): ALVTS's low-rank selector scoring, the routing gather/scatter around a layer, FastV's attention row.

Not part of the default test run (the `benchmark` marker is deselected there). Run them with:

    python -m pytest tests/benchmarks -m benchmark --benchmark-enable

Each body also checks what it computed, so a benchmark of a broken path fails instead of timing it.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.benchmark

D, HEADS, HEAD_DIM, FFN, N_VISUAL, N_TEXT, KEEP, RANK = 4096, 32, 128, 11008, 576, 60, 64, 256
DTYPE = torch.bfloat16


@pytest.fixture(scope="module")
def layer_setup():
    """One Llama decoder layer at LLaVA-1.5-7B's size (random weights), a hidden state, its RoPE and token indices."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    config = LlamaConfig(hidden_size=D, num_attention_heads=HEADS, num_key_value_heads=HEADS, intermediate_size=FFN,
                         num_hidden_layers=1)
    torch.manual_seed(0)
    layer = LlamaDecoderLayer(config, layer_idx=0).to(DTYPE).eval()
    n = N_TEXT + N_VISUAL
    hidden = torch.randn(1, n, D, dtype=DTYPE)
    positions = torch.arange(n)[None]
    cos, sin = LlamaRotaryEmbedding(config)(hidden, positions)
    visual = torch.arange(5, 5 + N_VISUAL)[None]  # the image span after a 5-token prefix, as in LLaVA's prompt
    other = torch.cat([torch.arange(5), torch.arange(5 + N_VISUAL, n)])[None]
    return layer, hidden, cos, sin, visual, other


@pytest.fixture(scope="module")
def selector_input(layer_setup):
    from tokenbench.engine import probe

    layer, hidden, cos, sin, visual, other = layer_setup
    inp = probe.layer_input(layer, hidden, cos, sin, other, visual, torch.ones(1, hidden.shape[1], dtype=torch.bool))
    g = torch.Generator().manual_seed(0)
    factors = tuple(torch.randn(*shape, generator=g, dtype=DTYPE) / 64 for shape in
                    ((HEADS * HEAD_DIM, RANK), (RANK, D), (HEADS * HEAD_DIM, RANK), (RANK, D)))
    return inp, factors


@pytest.mark.benchmark(group="alvts-selector")
@pytest.mark.parametrize("impl", ["blockwise", "reference"])
def test_alvts_selector_scores(benchmark, selector_input, impl):
    """ALVTS's importance scores of the visual tokens from a rank-256 selector (its per-layer cost), as the method runs
    it (``blockwise``: the factors in the selector's compute dtype, no T x T map) and as it ran before the rewrite
    (``reference``: tests/alvts_reference.py, the float32 (B, H, T, T) map). Both in one run, one group: the ratio of
    their medians is the speed-up. The blockwise scores must equal the reference's to float tolerance."""
    import alvts_reference
    from tokenbench.methods.alvts.selector import compute_dtype, selector_scores

    inp, factors = selector_input
    with torch.inference_mode():
        expected = alvts_reference.selector_scores(inp, factors)
        if impl == "blockwise":
            from tokenbench.methods.alvts.fit import stack

            ours = tuple(f.to(compute_dtype(inp.normed)) for f in factors)  # as fit.Factors caches them for a run
            ours = (*ours, *(None if t is None else t for t in stack(*ours)))
            scores = benchmark(selector_scores, inp, ours)
            torch.testing.assert_close(scores, expected, rtol=2e-2, atol=1e-9)  # bf16 projections vs float32 ones
            assert set(scores.topk(KEEP).indices[0].tolist()) == set(expected.topk(KEEP).indices[0].tolist())
        else:
            scores = benchmark(alvts_reference.selector_scores, inp, factors)
    assert scores.shape == (1, N_VISUAL) and torch.isfinite(scores).all()


def test_route_gather_scatter(benchmark, layer_setup):
    """The router's work around a layer that processes text + 64 visual tokens: gather the tokens with their RoPE
    rows, run the layer (identity here, so only the routing is timed), scatter back."""
    from tokenbench.engine.subset import TokenSet, run_subset

    _, hidden, cos, sin, visual, other = layer_setup
    sel = torch.cat([other, visual[:, ::9][:, :KEEP]], dim=1).sort(dim=1).values

    def identity(h, *args, **kwargs):
        return h

    def route():  # the token set is built once per prefill and shared by every layer that computes the same tokens
        return run_subset(identity, hidden, TokenSet.of(sel, cos, sin), (), {"position_embeddings": (cos, sin),
                                                                            "attention_mask": None})

    with torch.inference_mode():
        out = benchmark(route)
    assert torch.equal(out, hidden)  # the identity layer leaves every token where it was


def test_fastv_attention_row(benchmark, layer_setup):
    """FastV's signal: the last token's attention row over every key at layer K, recomputed with the layer's own
    norm, q/k projections and RoPE."""
    from tokenbench.engine import probe

    layer, hidden, cos, sin, _, _ = layer_setup
    n = hidden.shape[1]
    keys = torch.arange(n)[None]
    with torch.inference_mode():
        rows = benchmark(probe.attention_rows, layer, hidden, cos, sin, keys, torch.ones(1, n, dtype=torch.bool),
                         keys[:, -1:])
    assert rows.shape == (1, HEADS, 1, n)
    torch.testing.assert_close(rows.sum(-1), torch.ones(1, HEADS, 1))
