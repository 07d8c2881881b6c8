"""Other harnesses tokenbench plugs into: lmms-eval (``lmms``)."""
