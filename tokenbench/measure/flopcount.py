"""Measure FLOPs with torch's FlopCounterMode (1 MAC = 2 FLOPs, full-rectangle attention: tokenbench.measure.flops' convention).

PyTorch's counter has no formula for the CPU flash-attention op that SDPA dispatches to on CPU; it is added here
(the same formula as for the other SDPA kernels), so CPU and CUDA runs count alike. Outer products (a matmul whose
inner dimension is 1, such as transformers 5.17's rotary angles) count 0, like the elementwise work they are.
"""

from __future__ import annotations

from typing import Callable


def _custom_mapping() -> dict:
    import torch
    from torch.utils.flop_counter import bmm_flop, mm_flop, sdpa_flop_count

    def outer_free(formula):
        # A product with inner dimension 1 is an outer product: elementwise work, which the convention leaves out.
        # transformers 5.17 builds the rotary angles as inv_freq (.., hd/2, 1) @ positions (.., 1, L); 5.24 multiplies.
        return lambda a, b, *args, out_shape=None, **kwargs: 0 if a[-1] == 1 else formula(a, b)

    return {
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: (
            lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v)
        ),
        torch.ops.aten.mm: outer_free(mm_flop),
        torch.ops.aten.bmm: outer_free(bmm_flop),
    }


def measure(fn: Callable[[], object]) -> int:
    """Total FLOPs of the matmul/attention work ``fn()`` does (run without grad)."""
    return measure_modules(fn)[0]


def measure_modules(fn: Callable[[], object]) -> tuple[int, dict[str, int]]:
    """(total FLOPs, FLOPs per module) of what ``fn()`` does. Modules are named as FlopCounterMode names them: the
    root's class name, then the dotted path (``LlavaForConditionalGeneration.model.language_model.layers.0``); a
    module's count includes its submodules'."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False, depth=None, custom_mapping=_custom_mapping()) as counter:
        fn()
    per_module = {name: int(sum(ops.values())) for name, ops in counter.get_flop_counts().items()}
    return int(counter.get_total_flops()), per_module
