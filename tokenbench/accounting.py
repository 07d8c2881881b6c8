"""Turn what the router recorded into token counts and prefill FLOPs for one sample.

Counts follow :mod:`tokenbench.flops` (MACs; FLOPs = 2 x MACs). A sample's LLM layer ``l`` processes its own
non-visual tokens (padding excluded, so batching never changes a count) plus the visual tokens that layer actually
computed on. The method's overhead is the signal work it asked for (attention probes: query and key projections,
scores) plus the matmuls its own ``select`` does (``TokenReducer.select_macs``, e.g. ALVTS's low-rank selector).
"""

from __future__ import annotations

from tokenbench import flops


def prefill_count(lm: flops.LMDims, encoder: dict[str, int], n_text: int, visual_per_layer: list[int],
                  record=None, method=None) -> flops.PrefillCount:
    """``record`` is the router's :class:`~tokenbench.engine.router.Record` (``None`` for an unreduced run) and
    ``method`` the method that ran (its ``select_macs``)."""
    per_layer = flops.llm_prefill_macs(lm, [n_text + v for v in visual_per_layer])
    overhead = record.pre_llm_macs if record is not None else 0
    for _layer, kind, queries, n_vis_keys, n_rows_visual in (record.probes if record is not None else ()):
        if kind == "attn":
            rows = {"last": 1, "text": n_text, "visual": n_rows_visual}[queries]
            overhead += flops.attention_rows_macs(lm, rows, n_text + n_vis_keys)
        elif kind == "keys":
            overhead += flops.linear_macs(n_vis_keys, lm.hidden, lm.kv_dim)
        # "hidden", "normed", "layer_input": no matmul
    if record is not None and method is not None:
        overhead += sum(method.select_macs(lm, n_text, n_active, layer) for layer, n_active in record.select_calls)
    return flops.PrefillCount(
        vision=encoder["vision"], projector=encoder["projector"], llm=sum(per_layer),
        lm_head=flops.lm_head_macs(lm, 1),  # the prefill computes the first answer token's logits only
        overhead=overhead, per_layer=per_layer,
    )
