"""Execution engine: the routing rules (``routing``, torch-free: what each LLM layer does under a method's steps, also
what ``tokenbench flops`` predicts), per-instance decoder-layer routing that executes them (``router``), the attention
probe, the logical-length cache. Adapters use it; methods never see it. The torch modules are imported only when a
model runs."""
