"""tokenbench.measure.flops: analytic MAC counts checked against torch's FlopCounterMode on tiny real models.

FlopCounterMode counts 1 MAC = 2 FLOPs and full-rectangle attention, the convention of tokenbench.measure.flops.
On CPU with real tensors, SDPA dispatches to ``aten._scaled_dot_product_flash_attention_for_cpu``, which
torch 2.13's flop registry does not know (it would count 0), hence ``_SDPA_CPU_FIX``.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from tokenbench.measure.flops import (
    LMDims,
    PrefillCount,
    attention_rows_macs,
    fastv_convention_macs,
    linear_macs,
    llm_layer_macs,
    llm_prefill_macs,
    lm_head_macs,
    mlp_projector_macs,
    vit_layer_macs,
)
from tokenbench.models.clip import VisionDims, clip_vision_macs

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from tokenbench.measure.flopcount import _custom_mapping  # noqa: E402

_SDPA_CPU_FIX = _custom_mapping()  # the CPU flash-attention op needs a formula of its own

N_TOKENS = 37


def _count(fn):
    """Run ``fn()`` under FlopCounterMode (CPU-SDPA fix, no grad); return (total FLOPs, per-module counts)."""
    with torch.no_grad(), FlopCounterMode(display=False, depth=None, custom_mapping=_SDPA_CPU_FIX) as fc:
        fn()
    per_module = {name: sum(ops.values()) for name, ops in fc.get_flop_counts().items()}
    return fc.get_total_flops(), per_module


def _rel(measured: int, expected: int) -> float:
    return abs(measured - expected) / expected


@pytest.fixture(scope="module")
def llama_config():
    return transformers.LlamaConfig(
        hidden_size=128,
        intermediate_size=352,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,  # GQA: k/v are half as wide as q
        vocab_size=300,
    )


@pytest.fixture(scope="module")
def clip_config():
    return transformers.CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=56,
        patch_size=14,
    )


def _llama_model(cfg, cls):
    torch.manual_seed(0)
    return cls._from_config(cfg, attn_implementation="sdpa").eval()


# --------------------------------------------------------------------------------------------------
# Cross-checks against FlopCounterMode
# --------------------------------------------------------------------------------------------------


def test_sdpa_cpu_op_still_needs_the_fix():
    """If a torch upgrade registers the CPU flash op, the custom mapping becomes redundant (not wrong)."""
    from torch.utils.flop_counter import flop_registry

    assert torch.ops.aten._scaled_dot_product_flash_attention_for_cpu not in flop_registry, (
        "torch now counts the CPU SDPA op itself; _SDPA_CPU_FIX (here and in tokenbench) can be dropped"
    )


def test_llm_prefill_matches_flopcounter_total_and_per_layer(llama_config):
    lm = LMDims.from_config(llama_config)
    assert (lm.n_heads, lm.n_kv_heads, lm.head_dim) == (4, 2, 32)
    model = _llama_model(llama_config, transformers.LlamaModel)
    x = torch.randn(1, N_TOKENS, lm.hidden)

    total, per_module = _count(lambda: model(inputs_embeds=x, use_cache=False))

    per_layer = llm_prefill_macs(lm, [N_TOKENS] * lm.n_layers)
    expected = 2 * sum(per_layer)
    assert total > 0
    # Attention must have been counted: without the fix it would be missing entirely.
    attn_flops = 2 * 2 * N_TOKENS * N_TOKENS * lm.n_heads * lm.head_dim * lm.n_layers
    assert total > expected - attn_flops // 2, "SDPA attention FLOPs were not counted"
    rel = _rel(total, expected)
    assert rel <= 5e-3, f"FlopCounterMode {total} vs analytic {expected}: rel. error {rel:.3e}"
    for i, macs in enumerate(per_layer):
        measured = per_module[f"LlamaModel.layers.{i}"]
        assert measured == 2 * macs, (
            f"layer {i}: FlopCounterMode {measured} vs analytic {2 * macs} (rel. {_rel(measured, 2 * macs):.3e})"
        )


@pytest.mark.parametrize("n_new", [1, 5])
def test_llm_layer_with_kv_cache_counts_rectangle(llama_config, n_new):
    """Decode/extend with a KV cache: n_q new tokens against n_kv = cache + n_q keys."""
    lm = LMDims.from_config(llama_config)
    model = _llama_model(llama_config, transformers.LlamaModel)
    # transformers 5.24 renamed the argument and output field `past_key_values` -> `cache` (the old name
    # raises a FutureWarning, removal announced for 5.40); older 5.x only know `past_key_values`.
    cache_name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    with torch.no_grad():
        cache = getattr(model(inputs_embeds=torch.randn(1, N_TOKENS, lm.hidden), use_cache=True), cache_name)
    x = torch.randn(1, n_new, lm.hidden)
    position_ids = torch.arange(N_TOKENS, N_TOKENS + n_new)[None]

    total, per_module = _count(
        lambda: model(inputs_embeds=x, position_ids=position_ids, use_cache=True, **{cache_name: cache})
    )

    expected_layer = 2 * llm_layer_macs(lm, n_new, N_TOKENS + n_new)
    for i in range(lm.n_layers):
        measured = per_module[f"LlamaModel.layers.{i}"]
        assert measured == expected_layer, (
            f"layer {i}, n_q={n_new}, n_kv={N_TOKENS + n_new}: FlopCounterMode {measured} vs analytic "
            f"{expected_layer} (rel. {_rel(measured, expected_layer):.3e})"
        )
    rel = _rel(total, lm.n_layers * expected_layer)
    assert rel <= 5e-3, f"total rel. error {rel:.3e}"


def test_lm_head_matches_flopcounter(llama_config):
    lm = LMDims.from_config(llama_config)
    model = _llama_model(llama_config, transformers.LlamaForCausalLM)
    x = torch.randn(1, N_TOKENS, lm.hidden)

    total, per_module = _count(lambda: model(inputs_embeds=x, use_cache=False))

    head = 2 * lm_head_macs(lm, N_TOKENS)
    assert per_module["LlamaForCausalLM.lm_head"] == head
    expected = 2 * sum(llm_prefill_macs(lm, [N_TOKENS] * lm.n_layers)) + head
    rel = _rel(total, expected)
    assert rel <= 5e-3, f"FlopCounterMode {total} vs analytic {expected}: rel. error {rel:.3e}"


def test_clip_vision_matches_flopcounter(clip_config):
    v = VisionDims.from_config(clip_config)
    assert (v.n_patches, v.n_tokens) == (16, 17)
    torch.manual_seed(0)
    model = transformers.CLIPVisionModel._from_config(clip_config, attn_implementation="sdpa").eval()
    pixels = torch.randn(2, 3, 56, 56)

    total, per_module = _count(lambda: model(pixel_values=pixels))

    expected = 2 * clip_vision_macs(v, n_images=2)
    rel = _rel(total, expected)
    assert rel <= 1e-2, f"FlopCounterMode {total} vs analytic {expected}: rel. error {rel:.3e}"
    # 5.24: "CLIPVisionModel.encoder.layers.0"; older versions nest it under ".vision_model".
    (layer,) = [flops for name, flops in per_module.items() if name.endswith("encoder.layers.0")]
    expected_layer = 2 * 2 * vit_layer_macs(v, v.n_tokens)  # 2 images, 2 FLOPs per MAC
    assert layer == expected_layer, f"layer 0: FlopCounterMode {layer} vs analytic {expected_layer}"


def test_tiny_llava_end_to_end_matches_breakdown(llama_config, clip_config):
    """Whole LLaVA forward = all vision layers (on patches + CLS) + projector (patches only) + LLM + lm_head."""
    cfg = transformers.LlavaConfig(
        text_config=llama_config,
        vision_config=clip_config,
        image_token_index=299,
        image_seq_length=16,
    )
    torch.manual_seed(0)
    model = transformers.LlavaForConditionalGeneration._from_config(cfg, attn_implementation="sdpa").eval()
    lm, v = LMDims.from_config(cfg), VisionDims.from_config(cfg)
    n_text = 12
    ids = torch.cat([torch.full((1, v.n_patches), 299), torch.randint(0, 290, (1, n_text))], dim=1)
    pixels = torch.randn(1, 3, 56, 56)
    n = v.n_patches + n_text

    total, _ = _count(lambda: model(input_ids=ids, pixel_values=pixels, use_cache=False))

    count = PrefillCount(
        vision=clip_vision_macs(v),
        projector=mlp_projector_macs((v.hidden, lm.hidden, lm.hidden), v.n_patches),
        per_layer=llm_prefill_macs(lm, [n] * lm.n_layers),
        lm_head=lm_head_macs(lm, n),
    )
    rel = _rel(total, count.total_flops)
    assert rel <= 5e-3, f"FlopCounterMode {total} vs analytic {count.total_flops}: rel. error {rel:.3e}"


# --------------------------------------------------------------------------------------------------
# Published / previously measured numbers at full size
# --------------------------------------------------------------------------------------------------

LLAMA_7B = LMDims(hidden=4096, n_heads=32, n_kv_heads=32, head_dim=128, intermediate=11008, n_layers=32, vocab=32064)
QWEN25VL_7B = LMDims(hidden=3584, n_heads=28, n_kv_heads=4, head_dim=128, intermediate=18944, n_layers=28, vocab=152064)
CLIP_L_336 = VisionDims(hidden=1024, n_layers=24, intermediate=4096, patch_size=14, image_size=336)


def test_fastv_convention_reproduces_literature_number():
    macs = fastv_convention_macs(636, 4096, 11008, 32)
    assert macs == pytest.approx(3.31e12, rel=1e-2)


def test_fastv_convention_equals_exact_count_with_two_matrix_ffn():
    """With MHA and m=0 the exact count and the FastV form agree term by term; the FFN differs by n d m."""
    n = 636
    exact = sum(llm_prefill_macs(LLAMA_7B, [n] * 32))
    fastv = fastv_convention_macs(n, 4096, 11008, 32)
    assert exact - fastv == 32 * n * 4096 * 11008
    assert exact == pytest.approx(4.22e12, rel=1e-2)  # methods.md 3.1: "4.22 T with 3ndm"


@pytest.mark.parametrize(
    ("lm", "n", "flops"),
    [
        (LLAMA_7B, 640, 8.504e12),  # transformers-notes Q4: FlopCounterMode on meta, full LLaVA-1.5-7B LM
        (QWEN25VL_7B, 208, 2.732e12),  # Qwen2.5-VL-7B LM, GQA 28/4
        (QWEN25VL_7B, 640, 8.517e12),
    ],
)
def test_full_size_llm_matches_measured_flopcounter(lm, n, flops):
    assert 2 * sum(llm_prefill_macs(lm, [n] * lm.n_layers)) == pytest.approx(flops, rel=2e-4)


def test_fastv_schedule_matches_measured_analytic():
    """FastV K=2 keep 50 % on LLaVA-1.5-7B: 640 tokens in 2 layers, 352 in 30 (transformers-notes Q4)."""
    per_layer = llm_prefill_macs(LLAMA_7B, [640] * 2 + [352] * 30)
    assert 2 * sum(per_layer) == pytest.approx(4.867e12, rel=2e-4)


def test_clip_l336_plus_projector_matches_measured():
    macs = clip_vision_macs(CLIP_L_336) + mlp_projector_macs((1024, 4096, 4096), CLIP_L_336.n_patches)
    assert 2 * macs == pytest.approx(4.06e11, rel=2e-3)


# --------------------------------------------------------------------------------------------------
# Configs, helpers, breakdown
# --------------------------------------------------------------------------------------------------


def test_lmdims_from_config_defaults():
    cfg = transformers.LlamaConfig(hidden_size=128, num_attention_heads=4, intermediate_size=256, num_hidden_layers=2)
    lm = LMDims.from_config(cfg)
    assert lm.n_kv_heads == lm.n_heads == 4
    assert lm.head_dim == 32

    cfg.head_dim = None
    assert LMDims.from_config(cfg).head_dim == 32

    duck = SimpleNamespace(
        hidden_size=96, num_attention_heads=3, intermediate_size=200, num_hidden_layers=1, vocab_size=10
    )
    lm = LMDims.from_config(duck)  # no num_key_value_heads, no head_dim attribute at all
    assert (lm.n_kv_heads, lm.head_dim) == (3, 32)

    explicit = SimpleNamespace(**vars(duck), num_key_value_heads=1, head_dim=64)  # H*hd != d is allowed
    lm = LMDims.from_config(explicit)
    assert (lm.n_kv_heads, lm.head_dim, lm.q_dim, lm.kv_dim) == (1, 64, 192, 64)


def test_from_config_accepts_composite_vlm_config():
    cfg = transformers.LlavaConfig()  # defaults: Llama-7B text, CLIP ViT-L/14-336 vision
    lm, v = LMDims.from_config(cfg), VisionDims.from_config(cfg)
    assert (lm.hidden, lm.n_layers, lm.intermediate) == (4096, 32, 11008)
    assert v == CLIP_L_336
    assert v.n_tokens == 577


def test_dims_reject_bad_values():
    with pytest.raises(ValueError, match="n_kv_heads"):
        LMDims(hidden=64, n_heads=4, n_kv_heads=3, head_dim=16, intermediate=1, n_layers=1, vocab=1)
    with pytest.raises(ValueError, match="hidden"):
        VisionDims(hidden=0, n_layers=1, intermediate=1, patch_size=1, image_size=1)
    with pytest.raises(ValueError, match="n_q"):
        llm_layer_macs(LLAMA_7B, -1, 3)
    with pytest.raises(TypeError, match="n_q"):
        llm_layer_macs(LLAMA_7B, 3.0, 3)


def test_llm_prefill_needs_one_entry_per_layer():
    with pytest.raises(ValueError, match="32 layers"):
        llm_prefill_macs(LLAMA_7B, [636] * 31)


def test_layer_formula_terms():
    lm = LMDims(hidden=8, n_heads=4, n_kv_heads=2, head_dim=3, intermediate=5, n_layers=1, vocab=7)
    # q,o: 2*n_q*8*12; k,v: 2*n_q*8*6; attn: 2*n_q*n_kv*12; ffn: 3*n_q*8*5
    assert llm_layer_macs(lm, 2, 9) == 2 * 2 * 8 * 12 + 2 * 2 * 8 * 6 + 2 * 2 * 9 * 12 + 3 * 2 * 8 * 5
    assert llm_layer_macs(lm, 0, 9) == 0
    assert lm_head_macs(lm, 3) == 3 * 8 * 7
    assert linear_macs(3, 4, 5) == 60
    assert mlp_projector_macs((4, 5, 6), 2) == 2 * 4 * 5 + 2 * 5 * 6
    with pytest.raises(ValueError):
        mlp_projector_macs((4,), 2)


def test_attention_rows_macs():
    lm = LMDims(hidden=8, n_heads=4, n_kv_heads=2, head_dim=3, intermediate=5, n_layers=1, vocab=7)
    # FastV's probe: the last token's row against 10 keys.
    assert attention_rows_macs(lm, 1, 10) == 1 * 8 * 12 + 10 * 8 * 6 + 1 * 10 * 12
    assert attention_rows_macs(lm, 1, 10, project_keys=False) == 1 * 8 * 12 + 1 * 10 * 12
    # All rows against all keys is the QK^T half of the layer's attention plus q and k projections.
    n = 6
    assert attention_rows_macs(lm, n, n) == n * 8 * 12 + n * 8 * 6 + n * n * 12


def test_prefill_count_breakdown_and_json():
    c = PrefillCount(vision=10, projector=3, per_layer=[5, 5, 2], lm_head=7, overhead=1)
    assert c.llm == 12
    assert c.total_macs == 33
    assert c.total_flops == 66
    d = c.as_flops_dict()
    assert d == {
        "vision": 20,
        "projector": 6,
        "llm": 24,
        "lm_head": 14,
        "overhead": 2,
        "total": 66,
        "per_layer": [10, 10, 4],
    }
    assert json.loads(json.dumps(d)) == d
    assert all(isinstance(x, int) for x in d["per_layer"])
    with pytest.raises(ValueError, match="sum\\(per_layer\\)"):
        PrefillCount(llm=11, per_layer=[5, 5])
    assert PrefillCount(llm=4).total_flops == 8


def test_vision_dims_replace_for_truncated_tower():
    short = dataclasses.replace(CLIP_L_336, n_layers=23)
    assert clip_vision_macs(CLIP_L_336) - clip_vision_macs(short) == vit_layer_macs(CLIP_L_336, 577)


def test_import_does_not_import_torch():
    code = "import sys, tokenbench.measure.flops; assert 'torch' not in sys.modules, 'tokenbench.measure.flops imported torch'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------------------------------
# Decode steps, the FastV formula per layer, and fvcore as a second, independent counter
# --------------------------------------------------------------------------------------------------


def test_decode_macs_sums_one_token_layers_over_a_growing_cache():
    from tokenbench.measure.flops import decode_macs

    lm = LMDims(hidden=8, n_heads=2, n_kv_heads=1, head_dim=4, intermediate=16, n_layers=2, vocab=10)
    per_layer = decode_macs(lm, [5, 3], n_steps=2)
    assert per_layer == [llm_layer_macs(lm, 1, 6) + llm_layer_macs(lm, 1, 7),
                         llm_layer_macs(lm, 1, 4) + llm_layer_macs(lm, 1, 5)]
    assert decode_macs(lm, [5, 3], n_steps=0) == [0, 0]
    with pytest.raises(ValueError, match="2 layers"):
        decode_macs(lm, [5], n_steps=1)


def test_fastv_formula_on_the_shipped_llava_1_5_7b_config():
    """The literature's numbers from the shipped config: 3.31 T for 576 image + 60 text tokens (FastV's Table), and
    the 1.29 / 0.96 / 0.63 T that VisionZip, DART and others print for 192 / 128 / 64 tokens from layer 0."""
    from tokenbench.measure.flops import fastv_formula_macs
    from tokenbench.harness.resolve import resolve_model

    lm = resolve_model("llava-1.5-7b").load_config().lm_dims()
    assert fastv_formula_macs(lm, [576 + 60] * lm.n_layers) == pytest.approx(3.31e12, rel=1e-2)
    assert fastv_formula_macs(lm, [636] * 32) == fastv_convention_macs(636, lm.hidden, lm.intermediate, 32)
    for keep, papers in ((192, 1.29e12), (128, 0.96e12), (64, 0.63e12)):
        assert fastv_formula_macs(lm, [keep + 60] * lm.n_layers) == pytest.approx(papers, rel=1e-2)


class _LastHidden(torch.nn.Module):
    """A traceable view of a transformers model: one tensor in (as ``arg``), the last hidden state out."""

    def __init__(self, model, arg: str, **kwargs):
        super().__init__()
        self.model, self.arg, self.kwargs = model, arg, kwargs

    def forward(self, x):
        return self.model(**{self.arg: x}, **self.kwargs).last_hidden_state


def _fvcore_matmul_macs(module, inputs):
    """fvcore's count (it counts one multiply-add as one flop) of the matmul, linear and conv work, traced by
    torch.jit; its layer_norm count is left out (elementwise work, which tokenbench's convention leaves out)."""
    import warnings

    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape, matmul_flop_jit

    def matmul(inputs, outputs):  # an outer product (inner dimension 1: 5.17's rotary angles) is elementwise work
        return 0 if get_shape(inputs[0])[-1] == 1 else matmul_flop_jit(inputs, outputs)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warnings about Python control flow
        analysis = FlopCountAnalysis(module, inputs).set_op_handle("aten::matmul", matmul)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        by_op = analysis.by_operator()
    return sum(v for op, v in by_op.items() if op != "layer_norm")


def test_llm_prefill_matches_fvcore(llama_config):
    """fvcore traces the eager-attention Llama (it has no handle for SDPA) and counts MACs: it equals ours exactly."""
    pytest.importorskip("fvcore")
    model = _llama_model(llama_config, transformers.LlamaModel)
    model.config._attn_implementation = "eager"
    ids = torch.randint(0, llama_config.vocab_size, (1, N_TOKENS))
    expected = sum(llm_prefill_macs(LMDims.from_config(llama_config), [N_TOKENS] * llama_config.num_hidden_layers))
    assert _fvcore_matmul_macs(_LastHidden(model, "input_ids", use_cache=False), (ids,)) == expected


def test_clip_vision_matches_fvcore(clip_config):
    pytest.importorskip("fvcore")
    torch.manual_seed(0)
    tower = transformers.CLIPVisionModel._from_config(clip_config, attn_implementation="eager").eval()
    pixels = torch.randn(1, 3, clip_config.image_size, clip_config.image_size)
    counted = _fvcore_matmul_macs(_LastHidden(tower, "pixel_values"), (pixels,))
    assert counted == clip_vision_macs(VisionDims.from_config(clip_config))
