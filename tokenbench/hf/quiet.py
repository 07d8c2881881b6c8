"""Quiet transformers: no progress bars and no log lines below errors, for commands whose output is a table."""

from __future__ import annotations


def quiet_transformers() -> None:
    """Turn off transformers' progress bars and every log message below an error (imports transformers)."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
