"""What LLaVA-NeXT and Qwen2.5-VL add to the adapter contract: layouts that match what transformers builds, M-RoPE
positions that survive reduction, per-crop budgets, refusals of impossible pairs, and batching by layout."""

from __future__ import annotations

import pytest
import torch

from test_engine import ClsTop
from tokenbench import testing
from tokenbench.api import Reduction, Need, Step, TokenReducer, split_budget
from tokenbench.errors import IncompatibleError, PluginValidationError

SIZES = [(336, 336), (392, 280), (280, 392), (500, 120), (120, 500), (301, 187)]


def sample_of(size=(336, 336)):
    """One synthetic sample whose image is resized to ``size`` = (width, height)."""
    return testing.synthetic_samples(1, seed=3, size=size)[0]


# -- layouts --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["tiny-llava-next", "tiny-qwen2.5-vl"])
@pytest.mark.parametrize("size", SIZES)
def test_layout_from_the_config_matches_the_processor(model, size, adapter_factory):
    """The layout computed from the image size alone (no pixels) is what the processor produces."""
    adapter = adapter_factory(model)
    s = sample_of(size)
    layout = adapter.layout(size)
    batch = adapter.encode([s])  # raises if the processor's count differs
    image_tokens = int((batch.inputs["input_ids"] == adapter.model.config.image_token_id).sum())
    assert image_tokens == layout.n_visual + layout.n_structural
    assert sum(r.size for r in layout.crops) == layout.n_visual
    covered = sorted(i for r in layout.crops for i in r.indices())
    assert covered == list(range(layout.n_visual)), "the regions must partition the visual tokens"


@pytest.mark.parametrize("size", SIZES)
def test_llava_next_regions_are_where_transformers_puts_each_crop(size, adapter_factory):
    """Feed transformers' own pack_image_features tokens labelled (crop, row, col), and read the labels back at the
    positions the layout gives: every region holds its own crop's tokens, in row-major order, and the newlines sit
    where the adapter says they do."""
    adapter = adapter_factory("tiny-llava-next")
    cfg = adapter.model.config
    g = cfg.vision_config.image_size // cfg.vision_config.patch_size
    layout = adapter.layout(size)
    _, ny, nx, _, _ = adapter._geometry(size)
    n_crops = 1 + ny * nx
    labels = torch.zeros(n_crops, g * g, 3)
    for c in range(n_crops):
        labels[c, :, 0] = c
        labels[c, :, 1] = torch.arange(g * g) // g
        labels[c, :, 2] = torch.arange(g * g) % g
    newline = torch.full((3,), -1.0)
    (packed,), _ = adapter.model.model.pack_image_features([labels], torch.tensor([[size[1], size[0]]]), "default",
                                                           newline)
    is_newline = (packed == -1).all(-1)
    assert int(is_newline.sum()) == layout.n_structural
    visual = packed[~is_newline]
    assert visual.shape[0] == layout.n_visual
    base = layout.crops[0]
    assert base.name == "base" and bool((visual[base.indices(), 0] == 0).all())
    for region in layout.crops[1:]:
        i, j = (int(v) for v in region.name.split()[1].split(","))
        got = visual[region.indices()]
        assert bool((got[:, 0] == 1 + i * nx + j).all()), f"{region.name} holds another crop's tokens"
        rows = got[:, 1].view(region.rows, region.cols)
        cols = got[:, 2].view(region.rows, region.cols)
        assert bool((rows[1:] > rows[:-1]).all()) and bool((cols[:, 1:] > cols[:, :-1]).all()), "row-major order"


def test_newline_tokens_are_never_candidates(adapter_factory):
    """On LLaVA-NeXT the row-end newlines are always kept: they are in every layer's computed set as non-visual."""
    adapter = adapter_factory("tiny-llava-next")
    s = sample_of((392, 280))
    batch = adapter.encode([s])
    ids = batch.inputs["input_ids"][0]
    image_positions = (ids == adapter.model.config.image_token_id).nonzero().squeeze(1)
    visual = set(batch.tokens.visual[0].tolist())
    newlines = [p for p in image_positions.tolist() if p not in visual]
    assert len(newlines) == batch.layout.n_structural
    assert set(newlines) <= set(batch.tokens.other[0].tolist())
    assert batch.n_text[0] == int(batch.tokens.valid[0].sum()) - batch.layout.n_visual  # newlines count as text


# -- Qwen2.5-VL positions --------------------------------------------------------------------------------------------------
def test_qwen_position_ids_are_the_3d_grid(adapter_factory):
    adapter = adapter_factory("tiny-qwen2.5-vl")
    s = sample_of((392, 280))
    batch = adapter.encode([s])
    pos = adapter.position_ids(batch.inputs, batch.inputs["attention_mask"])[:, 0]  # (3, L)
    gh, gw = batch.layout.grid
    vis = batch.tokens.visual[0]
    start = int(vis[0])  # text before the image has ids 0..start-1 on every axis
    assert torch.equal(pos[:, :start], torch.arange(start).expand(3, -1))
    h, w = torch.arange(gh).repeat_interleave(gw), torch.arange(gw).repeat(gh)
    assert torch.equal(pos[:, vis], torch.stack([torch.zeros_like(h), h, w]) + start)
    after = pos[:, int(vis[-1]) + 1:]
    assert torch.equal(after, (torch.arange(after.shape[1]) + start + max(gh, gw)).expand(3, -1))


@pytest.mark.parametrize("method", ["fastv", "alvts", "random"])
def test_qwen_kept_tokens_keep_their_own_mrope_rotation(method, adapter_factory, monkeypatch):
    """At every layer, the rotary embedding each processed token gets under reduction is the one it has in the
    unreduced sequence (its own t/h/w ids), for the kept visual tokens and the text after the image alike. A routed
    layer with skipped tokens as keys (ALVTS) runs from the layer's parts (engine.subset.routed_layer): there, the
    queries' rotations and the keys' are checked."""
    from tokenbench.engine import router as router_module

    adapter = adapter_factory("tiny-qwen2.5-vl")
    batch = adapter.encode([sample_of((392, 280))])
    seen, keys_seen = [], []

    def capture(module, args, kwargs):
        seen.append((kwargs["hidden_states"].shape[1], kwargs["position_embeddings"][0].clone()))

    routed = router_module.routed_layer

    def spy(layer, hidden, queries, keys, *args, **kwargs):
        seen.append((queries.positions.shape[1], queries.cos.clone(), queries.positions[0]))
        keys_seen.append((keys.positions[0], keys.cos.clone()))
        return routed(layer, hidden, queries, keys, *args, **kwargs)

    monkeypatch.setattr(router_module, "routed_layer", spy)

    handles = [layer.self_attn.register_forward_pre_hook(capture, with_kwargs=True)
               for layer in adapter.decoder_layers()]
    try:
        from tokenbench.api import Prepared, build_method

        adapter.generate(batch, 1)
        full_cos = seen[0][1][0]  # (L, head_dim): layer 0 of the unreduced run sees every token
        seen.clear()
        m = build_method(method, {"calibration": "svd"} if method == "alvts" else {})
        with adapter.reduction(Reduction(m, batch.layout.n_visual // 9, artefact=Prepared.of(m.prepare(adapter.weights())).artefact)) as r:
            adapter.generate(batch, 1, router=r)
    finally:
        for h in handles:
            h.remove()
    t = batch.tokens
    assert len(seen) == adapter.n_layers
    shrunk = 0
    for layer, (n, cos, *order) in enumerate(seen):
        positions = torch.cat([t.other[0], t.visual[0][r.record.layer_visual[layer][0]]])
        positions = order[0] if order else positions.sort().values  # a routed layer's rows: in their own order
        assert sorted(positions.tolist()) == sorted(torch.cat([t.other[0], t.visual[0][r.record.layer_visual[layer][0]]]).tolist())
        assert n == positions.numel()
        assert torch.equal(cos[0], full_cos[positions]), f"layer {layer}: a token got another token's rotation"
        shrunk += n < full_cos.shape[0]
    assert shrunk, "the reduction must have removed tokens from some layer"
    for positions, cos in keys_seen:  # keys (every active token) at their own positions
        assert torch.equal(cos[0], full_cos[positions]), "a key got another token's rotation"
    assert (method == "alvts") == bool(keys_seen)


# -- refusals ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model, reason", [("tiny-qwen2.5-vl", "no CLS token")])  # LLaVA-NeXT provides it: test_next_signals
def test_a_method_needing_cls_is_refused_with_both_names_and_the_reason(model, reason, adapter_factory):
    adapter = adapter_factory(model)
    with pytest.raises(IncompatibleError) as err:
        adapter.check_compatible(ClsTop())
    message = str(err.value)
    assert "cls_test" in message and model in message and reason in message


def test_cls_methods_still_run_on_llava(adapter_factory):
    adapter = adapter_factory("tiny-llava")
    adapter.check_compatible(ClsTop())
    _, record, _ = testing.run(adapter, ClsTop(), 64, [sample_of()])
    assert record.selections[-1].shape == (1, 64)


# -- budgets ------------------------------------------------------------------------------------------------------------------
def test_split_budget_is_proportional_and_exact():
    assert split_budget(10, [576, 288, 288]) == [5, 3, 2]
    assert split_budget(0, [3, 4]) == [0, 0]
    assert split_budget(7, [3, 4]) == [3, 4]
    for keep in range(0, 31):
        quotas = split_budget(keep, [7, 0, 13, 10])
        assert sum(quotas) == keep and all(0 <= q <= c for q, c in zip(quotas, [7, 0, 13, 10]))
    with pytest.raises(ValueError):
        split_budget(31, [7, 0, 13, 10])


@pytest.mark.parametrize("method", ["fastv", "alvts", "random"])
def test_per_crop_budget_gives_each_crop_its_share(method, adapter_factory):
    from tokenbench.api import Prepared, build_method

    adapter = adapter_factory("tiny-llava-next")
    batch = adapter.encode([sample_of((392, 280))])
    layout, keep = batch.layout, 40
    m = build_method(method, {"calibration": "svd"} if method == "alvts" else {})
    art = Prepared.of(m.prepare(adapter.weights())).artefact
    with adapter.reduction(Reduction(m, keep, artefact=art, budget_scope="crop")) as r:
        adapter.generate(batch, 1, router=r)
    owner = torch.empty(layout.n_visual, dtype=torch.long)
    for i, region in enumerate(layout.crops):
        owner[region.indices()] = i
    first = min(r.record.selections)
    got = torch.bincount(owner[r.record.selections[first][0]], minlength=len(layout.crops)).tolist()
    assert got == split_budget(keep, [region.size for region in layout.crops])


def test_a_method_ignoring_the_per_crop_budget_is_refused(adapter_factory):
    class GlobalTopK(TokenReducer):
        stage = "prune"
        name = "global_topk"

        def steps(self, n_layers):
            return (Step(1, needs=(Need("attn", layer=0, queries="last"),)),)

        def select(self, ctx):  # ranks every token together, whatever the scope
            return ctx.signal(Need("attn", layer=0, queries="last")).mean(dim=1)[:, 0].topk(ctx.keep).indices

    adapter = adapter_factory("tiny-llava-next")
    batch = adapter.encode([sample_of((392, 280))])
    with adapter.reduction(Reduction(GlobalTopK(), 3, budget_scope="crop")) as r, \
            pytest.raises(PluginValidationError, match="per-crop budget"):
        adapter.generate(batch, 1, router=r)


# -- batching by layout ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["tiny-llava-next", "tiny-qwen2.5-vl"])
def test_mixed_image_sizes_run_in_layout_batches_and_equal_one_by_one(model):
    """A split with four aspect ratios: the harness batches samples that share a layout, and every answer, KL and
    FLOPs count equals the batch-size-1 run."""
    from tokenbench.budgets import Budget
    from tokenbench.harness.compare import RunSpec, compare

    def rows(batch_size):
        spec = RunSpec(methods=(("fastv", {}),), model=model, budgets=(Budget(ratio=0.25),), limit=6,
                       batch_size=batch_size, warmup=0, repeats=1, task_options={"aspect": "mixed"})
        return compare(spec, progress=False)

    batched, single = rows(4), rows(1)
    for a, b in zip(batched, single):
        assert a["accuracy"] == b["accuracy"] and a["agreement"] == b["agreement"]
        assert a["flops_prefill"] == b["flops_prefill"] and a["n_visual"] == b["n_visual"]
        assert a["kl_first_token"] == pytest.approx(b["kl_first_token"], abs=1e-6)
    assert not isinstance(batched[0]["n_visual"], int), "the split must mix visual-token counts"
