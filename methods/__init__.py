"""Token-reduction methods: one file per method, found without a central list.

Adding a method:

1. Create ``methods/<name>.py`` with a frozen dataclass subclassing :class:`tokenbench.api.TokenReducer`, decorated
   with ``@register_method("<name>")`` above ``@dataclass(frozen=True)``. Its fields are its options, each with a
   default and a comment citing where the default comes from.
2. Set ``stage`` (``pre_llm``, ``prune`` or ``route``), return the decision points from ``steps(n_layers)`` with the
   signals each needs (:class:`tokenbench.api.Need`), and return the kept indices from ``select(ctx)``.
3. Run ``pytest``: the contract suite picks the method up on every model (keep-all equals ``full``, exact budgets,
   batch equals one-by-one, cached generation equals recomputation).

A method never touches the model: the adapter executes its selection.
"""
