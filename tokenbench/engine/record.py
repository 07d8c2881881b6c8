"""What one routed prefill starts from and leaves behind: :class:`Tokens`, the visual/non-visual layout of a batch (the
adapter builds it when it encodes the batch, on the host), and :class:`Record`, what the router saw and did (the
harness turns it into token counts and FLOPs; the tests read its selections)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tokenbench.api import VisualLayout


@dataclass
class Record:
    """What the router saw and did during one prefill; the harness turns it into token counts and FLOPs."""

    visual_per_layer: list[int] = field(default_factory=list)  # visual tokens each LLM layer processed (its queries)
    kv_per_layer: list[int] = field(default_factory=list)  # visual tokens each layer saw as keys/values and cached:
    # visual_per_layer except at route steps with skipped_as_kv, where every active token is a key
    layer_visual: list[torch.Tensor] = field(default_factory=list)  # (B, n) original visual indices, per layer
    layer_keys: list[torch.Tensor] = field(default_factory=list)  # (B, n') visual tokens visible as keys, per layer
    # (equal to layer_visual except at route steps with skipped_as_kv, where every active token is a key)
    select_calls: list[tuple[int, int]] = field(default_factory=list)  # (step layer, n_active): for Method.select_macs
    n_visual: int = 0  # visual tokens per image before any reduction
    picked: dict[int, torch.Tensor] = field(default_factory=dict)  # step layer -> kept original visual indices, in
    # the method's order at route steps (the router needs no order there), ascending at pruning steps
    probes: list[tuple[int, str, str | None, int, int]] = field(default_factory=list)  # (layer, kind, queries, n_vis_keys, n_rows_visual)
    overhead_spans: list = field(default_factory=list)  # (start, end) Clock marks around signal work and select
    pre_llm_macs: int = 0  # cost of pre-LLM signals computed for the method (e.g. the CLS attention row)
    position_ids: torch.Tensor | None = None  # (B, L) the prompt's positions after a renumbering pre-LLM selection
    pre_llm_embeds: torch.Tensor | None = None  # (B, L, D) the LLM's input embeddings after a merging selection
    clock: object = None  # the tokenbench.measure.timing.Clock the spans were marked on

    @property
    def selections(self) -> dict[int, torch.Tensor]:
        """Step layer -> kept original visual indices (B, k), ascending (sorted when asked, not during the run)."""
        return {layer: idx.sort(dim=1).values for layer, idx in self.picked.items()}

    @property
    def overhead_s(self) -> float:
        """Seconds spent in the method's own work (signals and select) during the prefill. On CUDA the spans are
        events on the stream, read here (after the run), so measuring them added no synchronisation."""
        return sum(self.clock.seconds(a, b) for a, b in self.overhead_spans)


@dataclass
class Tokens:
    """The visual/non-visual layout of one batch (left padded), from the adapter."""

    visual: torch.Tensor  # (B, N) sequence positions of the visual tokens, ascending
    other: torch.Tensor  # (B, L - N) sequence positions of every other token (text and padding), ascending
    valid: torch.Tensor  # (B, L) bool, False on padding
    sample_keys: tuple[str, ...]  # one per sample: seeds its random generator, so batching never changes a draw
    layout: VisualLayout  # shared by every sample of the batch (the harness groups samples by layout)
    visual_span: tuple[int, int] | None = None  # (start, stop) when every sample's visual tokens are the positions
    # start..stop-1 (one contiguous run at the same place): a slice serves where a gather would
    n_after_image: tuple[int, ...] = ()  # per sample: its valid non-visual tokens after the image (known on the host)
