"""The results store: every finished batch of samples saved at once, so that no run loses or recomputes work.

One SQLite file (the standard library's ``sqlite3``, WAL mode), by default ``<cache>/results.sqlite``
(``$TOKENBENCH_CACHE`` or ``~/.cache/tokenbench``); ``--store PATH`` names another, ``--no-store`` runs without one.

- ``cells``: one per (model, task, method, budget) configuration, keyed by a hash of everything that can change its
  per-sample results (:func:`cell_key`): the model (name, source, revision, config and weights fingerprint), dtype,
  device type and attention backend, the task (name, version, options), the method (name, resolved options, the source
  file of its class, its artefact's hash), the budget and its scope, seed, batch size, and the code (tokenbench's
  version and a hash of its source files, so results of other code are never served).
- ``samples``: one JSON record per (cell, sample id): the answer, the first token's statistics (``full``: its top
  log-probabilities; a method: its KL to ``full``'s), visual tokens per layer, FLOPs, KV-cache bytes. A batch is
  written in one transaction: it is in the store whole or not at all, and a rerun recomputes exactly the batches that
  are missing, batched as before (so its numbers are bit-identical to an uninterrupted run's).
- ``runs``: one per ``compare``, with its spec and its rows as they finish, for ``tokenbench results``.

Timings are never stored for reuse: every run measures them fresh. Two processes may write one store at once (SQLite
locks the file; each waits up to a minute for the other's transaction), except on a network filesystem
(:mod:`tokenbench.results.fstype`), where WAL's shared memory and SQLite's locks cannot be trusted between hosts: there
the store is opened in exclusive locking mode (one writer; another process waiting for it fails after a minute), and
a data-parallel run is refused (:func:`tokenbench.harness.parallel.check`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from typing import Any, Iterable

from tokenbench.errors import ConfigError

SCHEMA = "1"
DEFAULT_NAME = "results.sqlite"


def default_path() -> str:
    from tokenbench.paths import cache_dir

    return os.path.join(cache_dir(), DEFAULT_NAME)


def digest(value: Any) -> str:
    """sha256 of ``value`` as canonical JSON."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def file_digest(path: str | None) -> str | None:
    """sha256 of a file's bytes (``None`` for no file)."""
    if not path or not os.path.isfile(path):
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_CODE: str | None = None


def code_digest() -> str:
    """A hash of tokenbench's own source files (core, methods, models, tasks): results computed by other code are
    never reused, even within one version number."""
    global _CODE
    if _CODE is None:
        import importlib.util

        h = hashlib.sha256()
        for package in ("tokenbench", "tokenbench.methods", "tokenbench.models", "tokenbench.tasks"):
            for root in importlib.util.find_spec(package).submodule_search_locations or ():
                for dirpath, dirnames, files in os.walk(root):
                    dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
                    for name in sorted(f for f in files if f.endswith(".py")):
                        with open(os.path.join(dirpath, name), "rb") as fh:
                            h.update(f"{package}:{os.path.relpath(os.path.join(dirpath, name), root)}".encode()
                                     + b"\0" + fh.read())
        _CODE = h.hexdigest()
    return _CODE


def run_state(run: dict) -> str:
    """A run's state as the store holds it, except that a run still marked running whose process is gone on this host
    was killed (e.g. ``kill -9``): ``killed``. A process of another host, or one not ours to signal, is taken as
    running."""
    import socket

    proc = run["spec"].get("process") or {}
    if run["state"] == "running" and proc.get("host") == socket.gethostname() and proc.get("pid"):
        try:
            os.kill(proc["pid"], 0)
        except ProcessLookupError:
            return "killed"
        except PermissionError:
            pass
    return run["state"]


class Store:
    """A results store at ``path`` (created when missing). Every error is a :class:`ConfigError` naming the file."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self.remote: str | None = None
        directory = os.path.dirname(self.path)
        if os.path.isdir(self.path):
            raise ConfigError(f"--store {path!r} is a directory; give a file name (e.g. {DEFAULT_NAME})")
        try:
            os.makedirs(directory, exist_ok=True)
            from tokenbench.results.fstype import remote_type

            self.remote = remote_type(directory)  # a network filesystem: this process is the store's only writer
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)  # transactions are explicit
            self.db.execute("PRAGMA busy_timeout = 60000")
            if self.remote:  # WAL without shared memory: safe for one connection, and no other can open the file
                self.db.execute("PRAGMA locking_mode = EXCLUSIVE")
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = NORMAL")
            self._create()
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc):
                raise ConfigError(f"results store {self.path!r} is in use: another process has held it for over a "
                                  "minute" + (f" (on a network filesystem, {self.remote}, a store has one writer at a "
                                              "time)" if self.remote else "") + "; wait for it, or give --store "
                                  "OTHER_FILE") from None
            raise self._error("cannot be opened", exc) from None
        except (sqlite3.Error, OSError) as exc:
            raise self._error("cannot be opened", exc) from None

    def _error(self, what: str, exc: BaseException) -> ConfigError:
        return ConfigError(
            f"results store {self.path!r} {what} ({type(exc).__name__}: {exc}). If the file is damaged, move it away "
            f"or delete it to start afresh (its stored samples are then recomputed), or run with --store OTHER_FILE "
            f"or --no-store"
        )

    def _create(self) -> None:
        with self._transaction():
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self.db.execute("CREATE TABLE IF NOT EXISTS cells (key TEXT PRIMARY KEY, spec TEXT NOT NULL, "
                            "created REAL NOT NULL)")
            self.db.execute("CREATE TABLE IF NOT EXISTS samples (cell TEXT NOT NULL, sample TEXT NOT NULL, "
                            "record TEXT NOT NULL, PRIMARY KEY (cell, sample))")
            self.db.execute("CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT "
                            "NULL, spec TEXT NOT NULL, rows TEXT NOT NULL, cells TEXT NOT NULL, state TEXT NOT NULL)")
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA,))
        (schema,) = self.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if schema != SCHEMA:
            raise ConfigError(f"results store {self.path!r} has schema {schema}, this tokenbench writes {SCHEMA}; "
                              "use another --store file")

    def _transaction(self):
        store = self

        class _Tx:
            def __enter__(self):
                store.db.execute("BEGIN IMMEDIATE")  # take the write lock now: waits for another writer's commit

            def __exit__(self, kind, exc, tb):
                store.db.execute("COMMIT" if kind is None else "ROLLBACK")
                return False

        return _Tx()

    def _guard(self, what: str, fn):
        try:
            return fn()
        except sqlite3.Error as exc:
            raise self._error(what, exc) from None

    # -- samples ---------------------------------------------------------------------------------------------------
    def records(self, cell: str) -> dict[str, dict]:
        """sample id -> record of every sample stored for ``cell``."""
        rows = self._guard("cannot be read", lambda: self.db.execute(
            "SELECT sample, record FROM samples WHERE cell = ?", (cell,)).fetchall())
        return {sample: self._json(record, f"the record of sample {sample!r}") for sample, record in rows}

    def _json(self, text: str, what: str):
        """``text`` parsed, or the store's one-line error naming what in it is damaged."""
        try:
            return json.loads(text)
        except (TypeError, ValueError) as exc:
            raise self._error(f"holds damaged data ({what} is not JSON)", exc) from None

    def put(self, cell: str, spec: dict, records: dict[str, dict]) -> None:
        """Store one batch's ``records`` (sample id -> record) of ``cell`` in one transaction."""
        def write():
            with self._transaction():
                self.db.execute("INSERT OR IGNORE INTO cells VALUES (?, ?, ?)",
                                (cell, json.dumps(spec, sort_keys=True, default=str), time.time()))
                self.db.executemany("INSERT OR REPLACE INTO samples VALUES (?, ?, ?)",
                                    [(cell, sid, json.dumps(rec)) for sid, rec in records.items()])

        self._guard("could not be written (the samples stored before are kept)", write)

    # -- runs ------------------------------------------------------------------------------------------------------
    def start_run(self, spec: dict) -> int:
        def write():
            with self._transaction():
                cur = self.db.execute("INSERT INTO runs (created, spec, rows, cells, state) VALUES (?, ?, '[]', '[]', "
                                      "'running')", (time.time(), json.dumps(spec, default=str)))
            return cur.lastrowid

        return self._guard("could not be written", write)

    def update_run(self, run: int, rows: list[dict], cells: list[str], state: str = "running") -> None:
        def write():
            with self._transaction():
                self.db.execute("UPDATE runs SET rows = ?, cells = ?, state = ? WHERE id = ?",
                                (json.dumps(rows, default=str), json.dumps(cells), state, run))

        self._guard("could not be written", write)

    def runs(self) -> list[dict]:
        rows = self._guard("cannot be read", lambda: self.db.execute(
            "SELECT id, created, spec, rows, cells, state FROM runs ORDER BY id").fetchall())
        return [{"id": i, "created": c, "spec": self._json(s, f"run {i}'s spec"), "rows": self._json(r, f"run {i}'s rows"),
                 "cells": self._json(k, f"run {i}'s cells"), "state": st} for i, c, s, r, k, st in rows]

    def run(self, run_id: int) -> dict:
        for r in self.runs():
            if r["id"] == run_id:
                return r
        ids = [r["id"] for r in self.runs()]
        raise ConfigError(f"the store {self.path!r} has no run {run_id}; its runs: "
                          f"{', '.join(map(str, ids)) or '(none)'} (see `tokenbench results list`)")

    def delete_run(self, run_id: int) -> int:
        """Delete run ``run_id`` and the samples of its cells that no other run uses; returns the samples deleted."""
        target = self.run(run_id)
        others = {c for r in self.runs() if r["id"] != run_id for c in r["cells"]}
        orphans = [c for c in target["cells"] if c not in others]

        def write():
            with self._transaction():
                self.db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
                n = 0
                for c in orphans:
                    n += self.db.execute("DELETE FROM samples WHERE cell = ?", (c,)).rowcount
                    self.db.execute("DELETE FROM cells WHERE key = ?", (c,))
            return n

        return self._guard("could not be written", write)

    def cell_records(self, cells: Iterable[str]) -> list[tuple[str, dict, str, dict]]:
        """(cell, its spec, sample id, record) for every stored sample of ``cells``."""
        out = []
        for c in cells:
            spec = self._guard("cannot be read", lambda: self.db.execute(
                "SELECT spec FROM cells WHERE key = ?", (c,)).fetchone())
            for sid, rec in self.records(c).items():
                out.append((c, self._json(spec[0], f"cell {c[:16]}...'s spec") if spec else {}, sid, rec))
        return out

    def close(self) -> None:
        self.db.close()
