"""A DynamicCache whose *logical* length is the number of positions the sequence has, not what layer 0 holds.

After a pruned or routed prefill each layer's cache holds only the tokens that layer processed, so layer 0's
length (what ``DynamicCache.get_seq_length`` reads) no longer tells where the sequence ends. transformers uses that
length for default position ids and for the mask sizes (``get_mask_sizes(query_length, layer_idx)`` in both 5.17 and
5.24). This subclass reports the logical length instead; the router slices each layer's mask columns down to what
that layer holds.
"""

from __future__ import annotations

from transformers import DynamicCache


class LogicalLengthCache(DynamicCache):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.logical_length = 0  # positions processed before the current forward (advanced by the caller)

    def get_seq_length(self, layer_idx: int = 0) -> int:  # noqa: ARG002 - one length for all layers
        return self.logical_length

    def get_mask_sizes(self, query_length, layer_idx: int = 0):  # noqa: ARG002
        q = query_length if isinstance(query_length, int) else int(query_length.shape[0])
        return self.logical_length + q, 0

    def physical_lengths(self) -> list[int]:
        return [int(layer.keys.shape[-2]) if getattr(layer, "keys", None) is not None else 0 for layer in self.layers]

    def nbytes(self) -> int:
        total = 0
        for layer in self.layers:
            for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
                if t is not None:
                    total += t.numel() * t.element_size()
        return total
