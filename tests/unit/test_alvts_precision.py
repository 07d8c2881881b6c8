"""ALVTS's selector in low precision: its top-k choice on a bfloat16 or float16 model against the same model in float32.

The contract inputs (three synthetic samples at 392 x 280) run through each tiny model loaded in float32, bfloat16 and
float16; at every layer the selector scores the unreduced layer input with the same SVD factors (one artefact for every
dtype), and the top N/9 sets are compared. ``python tests/unit/test_alvts_precision.py`` prints the figures (README,
"ALVTS, the reference method").
"""

from __future__ import annotations

import pytest
import torch

from tokenbench import testing
from tokenbench.harness import calibrate as calibration
from tokenbench.api import Need, Step, build_method

SIZE = (392, 280)
LOW = ("bfloat16", "float16")
MODELS = ("tiny-llava", "tiny-llava-next", "tiny-qwen2.5-vl", "mini-llava")


def topk_agreement(model: str, dtype: str, samples=None) -> float:
    """Mean over layers and samples of |top-k(dtype) ∩ top-k(float32)| / k, k = N/9, for ALVTS's selector with the
    float32 SVD factors scoring each layer's unreduced input."""
    from tokenbench.harness.resolve import resolve_model

    samples = samples or testing.synthetic_samples(3, seed=1, size=SIZE)
    scores = {}
    for dt in ("float32", dtype):
        adapter = resolve_model(model).load(dtype=dt)
        method = build_method("alvts", {"calibration": "svd"})
        factors = method.prepare(adapter.weights()).artefact
        steps = tuple(Step(layer, needs=(Need("layer_input", layer=layer),)) for layer in range(adapter.n_layers))
        (batch,) = list(calibration.visitor(adapter, steps, {"s": samples}, batch_size=len(samples))("s"))
        from tokenbench.methods.alvts.selector import selector_scores

        with torch.inference_mode():
            scores[dt] = {layer: selector_scores(ctx.signal(Need("layer_input", layer=layer)),
                                                 factors.factors(layer, ctx.signal(Need("layer_input", layer=layer))
                                                                 .normed)).float()
                          for layer, ctx in batch.items()}
    hits = []
    for layer, ref in scores["float32"].items():
        k = max(1, ref.shape[-1] // 9)
        truth = torch.zeros_like(ref, dtype=torch.bool).scatter_(1, ref.topk(k, dim=-1).indices, True)
        ours = scores[dtype][layer].topk(k, dim=-1).indices
        hits.append(truth.gather(1, ours).float().mean(dim=-1))
    return float(torch.cat(hits).mean())


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("model", MODELS)
def test_low_precision_selector_keeps_most_of_the_float32_choice(model, dtype):
    """A regression guard, not a tuned figure: the measured agreement (printed by this file as a script) is 1.000 for
    every model and both dtypes on a CPU, where the selector's projections run in float32 and only the model's own
    hidden states are in low precision; below 0.8 the low-precision path would be choosing a different set."""
    assert topk_agreement(model, dtype) >= 0.8


if __name__ == "__main__":  # pragma: no cover - prints the figures quoted in README
    from tokenbench.hf.quiet import quiet_transformers as _quiet_transformers

    _quiet_transformers()
    for m in MODELS:
        print(m, {dt: round(topk_agreement(m, dt), 3) for dt in LOW})
