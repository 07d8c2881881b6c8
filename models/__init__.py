"""Model adapters: one file per model family, registered with ``@register_model``.

Adding a model family touches only this directory:

1. Create ``models/<family>.py`` with a subclass of :class:`tokenbench.hf.adapter.ModelAdapter` that sets ``family``
   (the one spelling of its family key), ``lmms_eval_model`` (lmms-eval's model name, whose prompts the benchmark tasks
   use for it), ``model_types`` and ``provides``, loads the checkpoint, formats prompts, reports where the visual
   tokens are (``encode``/``layout``) and counts its vision tower and projector (``encoder_macs``, from the generic
   formulas of :mod:`tokenbench.measure.flops`, as ``clip.py`` and ``qwen_vision.py`` do).
2. A signal kind only its tower gives is declared with :func:`tokenbench.api.declare_signal` in its module (as
   ``clip.py`` declares ``cls_attn`` and ``qwen_vision.py`` ``vision_received``) and computed in ``pre_llm_signals``.
3. Register one factory per preset (hub id) and a tiny variant built from a config with random weights
   (:class:`tokenbench.models.tiny.TinyVariant`).
4. Run ``pytest``: the contract suite runs every method on the new model.

Modules here are imported whenever models are listed or an unknown signal kind or family is looked up: keep torch and
transformers imports inside functions.
"""
