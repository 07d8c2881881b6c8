"""Model adapters: one file per model family, registered with ``@register_model``.

Adding a model family:

1. Create ``models/<family>.py`` with a subclass of :class:`tokenbench.hf.adapter.ModelAdapter` that loads the
   checkpoint, formats prompts, reports where the visual tokens are (``encode``/``layout``), exposes the decoder
   layers and the dimensions for the FLOPs counter.
2. Register one factory per preset (hub id) and a tiny variant built from a config with random weights.
3. Run ``pytest``: the contract suite runs every method on the new model.
"""
