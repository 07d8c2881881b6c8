"""Offline fixtures of the benchmark tasks: a few rows per task in the real hub schema, with generated images.

Each family module (``yesno``, ``vqa``, ``choice``, ``caption``) defines ``FIXTURES``: task name -> a function
returning a ``datasets.Dataset`` (the split the task reads) in the schema of the task's hub dataset, and may define
``WRITERS`` for tasks whose local copy has its own layout (GQA's questions and images). :func:`write` writes a
task's fixture in every local form ``--data`` accepts.
"""

from __future__ import annotations

import importlib

FIXTURES: dict = {}
WRITERS: dict = {}
for _family in ("yesno", "vqa", "choice", "caption"):
    try:
        _module = importlib.import_module(f"task_fixtures.{_family}")
    except ModuleNotFoundError as exc:  # a family not written yet
        if exc.name != f"task_fixtures.{_family}":
            raise
        continue
    FIXTURES.update(_module.FIXTURES)
    WRITERS.update(getattr(_module, "WRITERS", {}))


def write(name: str, directory: str) -> dict[str, str]:
    """Task ``name``'s fixture written under ``directory`` in every local form; form -> the path for ``--data``."""
    from tokenbench.api import TASKS
    from tokenbench.testing import write_task_data

    if name in WRITERS:
        return WRITERS[name](FIXTURES[name](), directory)
    cls = TASKS.get(name)
    return write_task_data(FIXTURES[name](), directory, config=cls.config, split=cls.split)
