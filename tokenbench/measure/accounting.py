"""Turn what the router recorded into token counts and prefill FLOPs for one sample.

Counts follow :mod:`tokenbench.measure.flops` (MACs; FLOPs = 2 x MACs). A sample's LLM layer ``l`` processes its own
non-visual tokens (padding excluded, so batching never changes a count) plus the visual tokens that layer actually
computed on. The method's overhead is the signal work it asked for (attention probes: query and key projections,
scores) plus the matmuls its own ``select`` does (``TokenReducer.select_macs``, e.g. ALVTS's low-rank selector).
"""

from __future__ import annotations

from tokenbench.engine.routing import Routing, plan_routing
from tokenbench.measure import flops


def overhead_by_layer(lm: flops.LMDims, n_text: int, record, method=None) -> dict[int, int]:
    """The method's own work in MACs at each LLM layer (its signals there and its ``select``), keyed by layer; ``-1``
    holds a pre-LLM ``select``. The pre-LLM signals' cost (``record.pre_llm_macs``) is not in it."""
    out: dict[int, int] = {}
    for layer, kind, queries, n_vis_keys, n_rows_visual in record.probes:
        macs = 0
        if kind == "attn":
            rows = {"last": 1, "text": n_text, "visual": n_rows_visual}[queries]
            macs = flops.attention_rows_macs(lm, rows, n_text + n_vis_keys)
        elif kind == "keys":  # ``queries`` holds Need.tokens here: "text" = the keys of every non-visual token
            macs = flops.linear_macs(n_text if queries == "text" else n_vis_keys, lm.hidden, lm.kv_dim)
        # "hidden", "normed", "final_normed", "layer_input": no matmul
        out[layer] = out.get(layer, 0) + macs
    if method is not None:
        for layer, n_active in record.select_calls:
            out[layer] = out.get(layer, 0) + method.select_macs(lm, n_text, n_active, layer, record.n_visual)
    return out


def kv_counts(record, visual_per_layer: list[int]) -> list[int]:
    """The visual tokens each layer attended to and cached: the record's ``kv_per_layer`` (a Record or a Routing), else
    what each layer processed."""
    kv = getattr(record, "kv_per_layer", None) if record is not None else None
    return list(kv) if kv else list(visual_per_layer)


def prefill_count(lm: flops.LMDims, encoder: dict[str, int], n_text: int, visual_per_layer: list[int],
                  record=None, method=None) -> flops.PrefillCount:
    """``record`` is the router's :class:`~tokenbench.engine.router.Record` (``None`` for an unreduced run) and
    ``method`` the method that ran (its ``select_macs``). A layer whose keys cover more visual tokens than its queries
    (``record.kv_per_layer``: ALVTS with skipped tokens as keys) is counted with both."""
    per_layer = flops.llm_prefill_macs(lm, [n_text + v for v in visual_per_layer],
                                       [n_text + v for v in kv_counts(record, visual_per_layer)])
    overhead = 0
    if record is not None:
        overhead = record.pre_llm_macs + sum(overhead_by_layer(lm, n_text, record, method).values())
    return flops.PrefillCount(
        vision=encoder["vision"], projector=encoder["projector"], llm=sum(per_layer),
        lm_head=flops.lm_head_macs(lm, 1),  # the prefill computes the first answer token's logits only
        overhead=overhead, per_layer=per_layer,
    )


def decode_count(lm: flops.LMDims, n_text: int, cached_per_layer: list[int], n_steps: int) -> tuple[list[int], int]:
    """(per-layer MACs, lm_head MACs) of ``n_steps`` decode steps after a prefill in which layer ``l`` cached
    ``n_text + cached_per_layer[l]`` tokens (:func:`kv_counts`)."""
    return (flops.decode_macs(lm, [n_text + v for v in cached_per_layer], n_steps), flops.lm_head_macs(lm, n_steps))


def decode_flops(lm: flops.LMDims, n_text: int, cached_per_layer: list[int], n_steps: int) -> int:
    """Total FLOPs (2 x MACs) of :func:`decode_count`: every layer and the lm_head."""
    layers, head = decode_count(lm, n_text, cached_per_layer, n_steps)
    return 2 * (sum(layers) + head)


def plan(method, n_layers: int, n_visual: int, keep: int) -> Routing:
    """What the router will do for ``method`` at ``keep``, from its steps alone (``tokenbench flops``, the budget
    conventions): :func:`tokenbench.engine.routing.plan_routing`, the rules the router executes. It has the count
    fields of the router's Record that :func:`prefill_count` reads; each step keeps its planned count (``Step.keep``,
    else ``keep``; the router enforces it) and no pre-LLM signal cost is counted (adapter-specific, e.g. the CLS row)."""
    return plan_routing(method, n_layers, n_visual, keep)
