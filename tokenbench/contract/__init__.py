"""The contracts between tokenbench and its plugins, with no torch at import: ``method`` (what a reduction method
declares, reads and returns), ``signals`` (the signal kinds, core and model-declared), ``layout`` (where visual tokens
sit), ``model`` (the adapter interface the harness calls, model families), ``weights`` (read access to decoder
weights), ``calibration`` (what calibration exchanges), ``task`` (samples, prompts, scoring), ``schedule`` (layer
schedules and the depth rule), ``plugins`` (the three registries and their checks) and ``registry`` (how names are
found). Plugins import these names from :mod:`tokenbench.api`. Nothing here imports harness/, cli/, results/ or hf/.
"""
