"""Execution engine (torch-land): per-instance decoder-layer routing, the attention probe, the logical-length cache,
greedy generation. Adapters use it; methods never see it. Imported only when a model runs."""
