"""Offline fixtures of the benchmark tasks: a few rows per task in the real hub schema, with generated images.

Each family module (``yesno``, ``vqa``, ``choice``, ``caption``) defines ``FIXTURES``: task name -> a function
returning a ``datasets.Dataset`` (the split the task reads) in the schema of the task's hub dataset. Tasks whose data
spans two datasets (GQA's questions and images) return a ``datasets.DatasetDict`` laid out as their docstring says.
:func:`tokenbench.testing.write_task_data` writes a fixture in every local form ``--data`` accepts.
"""

from __future__ import annotations

import importlib

FIXTURES: dict = {}
for _family in ("yesno", "vqa", "choice", "caption"):
    try:
        FIXTURES.update(importlib.import_module(f"task_fixtures.{_family}").FIXTURES)
    except ModuleNotFoundError as exc:  # a family not written yet
        if exc.name != f"task_fixtures.{_family}":
            raise
