"""Measure FLOPs with torch's FlopCounterMode (1 MAC = 2 FLOPs, full-rectangle attention: tokenbench.flops' convention).

PyTorch's counter has no formula for the CPU flash-attention op that SDPA dispatches to on CPU; it is added here
(the same formula as for the other SDPA kernels), so CPU and CUDA runs count alike.
"""

from __future__ import annotations

from typing import Callable


def _custom_mapping() -> dict:
    import torch
    from torch.utils.flop_counter import sdpa_flop_count

    return {
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: (
            lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v)
        )
    }


def measure(fn: Callable[[], object]) -> int:
    """Total FLOPs of the matmul/attention work ``fn()`` does (run without grad)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_custom_mapping()) as counter:
        fn()
    return int(counter.get_total_flops())
