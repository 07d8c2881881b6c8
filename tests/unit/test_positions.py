"""Position ids after a pre-LLM cut (tokenbench.contract.positions): each pre-LLM method does what its official code
does. The official DivPrune, CDPruner, VisPruner, SCOPE and VisionZip code all gather the kept tokens into a shorter
image and pass the LLM no position ids, so positions are contiguous; the reference here does exactly that (the kept
rows of the LLM's input, run as a shorter sequence with transformers' default positions, answer tokens appended) and
the routed run with the default ``positions=auto`` must give its logits at every generated step. ``original`` must
not (the gap moves the logits), and M-RoPE (Qwen2.5-VL) keeps its ids and refuses ``contiguous`` up front."""

import pytest
import torch

from tokenbench.api import IncompatibleError, Reduction, build_method
from tokenbench.contract.positions import check_positions
from tokenbench.testing import synthetic_samples

PRE_LLM = {  # method -> the tiny models it runs on (a CLS tower for the CLS methods)
    "divprune": ("tiny-llava", "tiny-llava-next"),
    "cdpruner": ("tiny-llava", "tiny-llava-next"),
    "vispruner": ("tiny-llava", "tiny-llava-next"),
    "scope": ("tiny-llava", "tiny-llava-next"),
    "visionzip": ("tiny-llava", "tiny-llava-next"),
    "pool": ("tiny-llava", "tiny-llava-next"),
}
CASES = [(m, model) for m, models in PRE_LLM.items() for model in models]


def _routed(adapter, method, keep, sample):
    """The routed greedy run, with the LLM's input as the router hands it over (merged rows in their slots)."""
    captured = {}

    def grab(module, args, kwargs):
        if "embeds" not in captured:
            captured["embeds"] = kwargs["inputs_embeds"].detach().clone()

    batch = adapter.encode([sample])
    with adapter.reduction(Reduction(method, keep)) as router:
        handle = adapter.language_model().register_forward_pre_hook(grab, with_kwargs=True)  # after the router's
        try:
            gen = adapter.generate(batch, 3, router=router, ignore_eos=True)
        finally:
            handle.remove()
    return gen, router.record, batch, captured["embeds"]


def _shorter_sequence_logits(adapter, batch, record, embeds, answer):
    """The official mechanism: drop the unkept visual tokens from the LLM's input and run the shorter sequence (the
    answer's tokens appended) with no position ids, so transformers numbers it 0, 1, 2, ..."""
    t = batch.tokens
    keep = torch.ones(embeds.shape[1], dtype=torch.bool)
    keep[t.visual[0]] = False
    keep[t.visual[0][record.picked[-1][0]]] = True
    short = embeds[:, keep]
    extra = adapter.model.get_input_embeddings()(torch.tensor([answer[:-1]]))
    with torch.inference_mode():
        hidden = adapter.language_model()(inputs_embeds=torch.cat([short, extra.to(short.dtype)], dim=1)).last_hidden_state
        return adapter.model.lm_head(hidden[0, short.shape[1] - 1:]).float()


@pytest.mark.parametrize("name,model", CASES)
def test_default_positions_equal_the_official_shorter_sequence(adapter_factory, name, model):
    adapter = adapter_factory(model)
    sample = synthetic_samples(1, seed=3)[0]
    keep = 24
    gen, record, batch, embeds = _routed(adapter, build_method(name), keep, sample)
    assert record.position_ids is not None, f"{name}: positions=auto on {model} must renumber (official code)"
    ref = _shorter_sequence_logits(adapter, batch, record, embeds, gen.token_ids[0])
    got = torch.cat(gen.step_logits)
    torch.testing.assert_close(got, ref, atol=2e-4, rtol=1e-4)
    kept, krec, kbatch, kembeds = _routed(adapter, build_method(name, {"positions": "original"}), keep, sample)
    assert krec.position_ids is None
    moved = (kept.step_logits[0] - ref[:1]).abs().max()
    assert moved > 1e-3, f"{name}: original positions gave the shorter sequence's logits; the test cannot tell"


def test_qwen_keeps_its_m_rope_ids_and_refuses_contiguous(adapter_factory):
    adapter = adapter_factory("tiny-qwen2.5-vl")
    sample = synthetic_samples(1, seed=3)[0]
    for name in ("divprune", "cdpruner", "pool", "visionzip"):
        gen, record, _, _ = _routed(adapter, build_method(name), 8, sample)
        assert record.position_ids is None, f"{name} renumbered M-RoPE ids"
        layout = adapter.layout_of(sample)
        with pytest.raises(IncompatibleError, match="positions=contiguous needs one position id per token"):
            check_positions(build_method(name, {"positions": "contiguous"}), layout)
        check_positions(build_method(name, {"positions": "original"}), layout)


def test_positions_is_checked_and_every_pre_llm_method_has_it():
    from tokenbench.api import METHODS, ConfigError

    shipped = [n for n in METHODS.names() if METHODS.get(n).__module__.startswith("tokenbench.methods.")]
    assert {"divprune", "cdpruner", "vispruner", "scope", "visionzip", "pool"} <= set(shipped)
    for name in shipped:  # plugins registered by other tests may say what they like
        m = build_method(name)
        assert (m.stage == "pre_llm") == hasattr(m, "positions"), f"{name}: positions belongs to pre-LLM methods"
    with pytest.raises(ConfigError, match=r"positions='shorter' must be one of auto, contiguous, original"):
        build_method("divprune", {"positions": "shorter"})
