"""``tokenbench results merge OUT A B ...``: the stores of a run's shards (or of any runs) joined into one.

Cells are keyed by everything that can change a record (:mod:`tokenbench.results.store`), so the same key in two stores
is the same configuration and its records are joined sample by sample. A sample both stores hold must have the same
record (shards of one run never overlap; a store merged twice holds the same records): a different one means the two
were computed differently under one key, and the merge refuses, naming both files, the cell and the sample. Runs are
copied too (one already in OUT is not copied again). The whole merge is one transaction: OUT gets every input or, on
any error, nothing; the inputs are opened read-only.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass

from tokenbench.errors import ConfigError


@dataclass
class Merged:
    """What one input brought: cells and samples new to OUT, samples OUT already held (identical), runs copied."""

    path: str
    cells: int = 0
    samples: int = 0
    already: int = 0
    runs: int = 0


def merge_stores(out: str, inputs: list[str]) -> tuple[list[Merged], float]:
    """Merge ``inputs`` into ``out`` (created when missing): what each brought, and the seconds it took."""
    from tokenbench.results.store import Store

    start = time.perf_counter()
    if not inputs:
        raise ConfigError("give the stores to merge after OUT: tokenbench results merge OUT.sqlite A.sqlite B.sqlite")
    out_path = os.path.abspath(os.path.expanduser(out))
    seen: set[str] = set()
    for path in inputs:
        full = os.path.abspath(os.path.expanduser(path))
        if full == out_path:
            raise ConfigError(f"{path!r} is both OUT and an input; merge into a new file (OUT is created) or name it "
                              "once, as OUT")
        if full in seen:
            raise ConfigError(f"{path!r} is named twice; name each store once")
        seen.add(full)
        if not os.path.isfile(full):
            raise ConfigError(f"no results store at {path!r}" + (" (a directory)" if os.path.isdir(full) else "")
                              + ": give the store files the shards wrote (--store PATH of each)")
    store = Store(out)  # creates OUT with the schema, or checks an existing one's
    merged: list[Merged] = []
    origin: dict[tuple[str, str], str] = {}  # (cell, sample) -> the input it came from, in this merge
    try:
        store.db.execute("BEGIN IMMEDIATE")
        for path in inputs:
            merged.append(_merge_one(store, path, origin))
        store.db.execute("COMMIT")
    except BaseException:
        store.db.execute("ROLLBACK")
        raise
    finally:
        store.close()
    return merged, time.perf_counter() - start


def _merge_one(store, path: str, origin: dict[tuple[str, str], str]) -> Merged:
    """One input (opened read-only) into OUT's open transaction, checked as it goes: a store of this schema, with no
    record that differs from OUT's under the same key."""
    from tokenbench.results.store import SCHEMA

    got = Merged(path)
    uri = "file:" + os.path.abspath(os.path.expanduser(path)).replace("?", "%3f").replace("#", "%23") + "?mode=ro"
    try:
        src = sqlite3.connect(uri, uri=True, timeout=60)
    except sqlite3.Error as exc:
        raise _damaged(path, exc) from None
    try:
        tables = {r[0] for r in src.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"meta", "cells", "samples", "runs"} <= tables:
            raise ConfigError(f"{path!r} is not a tokenbench results store (it lacks the cells, samples and runs "
                              "tables `compare --store` writes); nothing was merged")
        schema = src.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if schema is None or schema[0] != SCHEMA:
            raise ConfigError(f"results store {path!r} has schema {schema and schema[0]}, this tokenbench writes "
                              f"{SCHEMA}; merge stores of one tokenbench version (nothing was merged)")
        for key, spec, created in src.execute("SELECT key, spec, created FROM cells").fetchall():
            got.cells += store.db.execute("INSERT OR IGNORE INTO cells VALUES (?, ?, ?)", (key, spec, created)).rowcount
            ours = dict(store.db.execute("SELECT sample, record FROM samples WHERE cell = ?", (key,)).fetchall())
            new = []
            for sample, record in src.execute("SELECT sample, record FROM samples WHERE cell = ?", (key,)):
                if sample not in ours:
                    new.append((key, sample, record))
                elif record == ours[sample] or _same(record, ours[sample]):
                    got.already += 1
                else:
                    raise _conflict(path, origin.get((key, sample), store.path), key, sample)
            store.db.executemany("INSERT INTO samples VALUES (?, ?, ?)", new)
            origin.update({(key, sample): path for _, sample, _ in new})
            got.samples += len(new)
        known = set(store.db.execute("SELECT created, spec FROM runs").fetchall())
        for created, spec, rows, cells, state in src.execute(
                "SELECT created, spec, rows, cells, state FROM runs ORDER BY id").fetchall():
            if (created, spec) not in known:
                store.db.execute("INSERT INTO runs (created, spec, rows, cells, state) VALUES (?, ?, ?, ?, ?)",
                                 (created, spec, rows, cells, state))
                got.runs += 1
    except sqlite3.Error as exc:
        raise _damaged(path, exc) from None
    finally:
        src.close()
    return got


def _same(a: str, b: str) -> bool:
    """Two records equal as JSON (their text may differ in key order or spacing)."""
    try:
        return json.loads(a) == json.loads(b)
    except ValueError:
        return False


def _conflict(path: str, other: str, cell: str, sample: str) -> ConfigError:
    return ConfigError(
        f"{path!r} and {other!r} hold different records of sample {sample!r} under one cell key ({cell[:16]}...): the "
        "two were computed differently under the same configuration (another machine's arithmetic, or an edited "
        "environment), so they cannot be joined; nothing was merged. Merge the stores of one run's shards, or "
        "recompute one of them")


def _damaged(path: str, exc: BaseException) -> ConfigError:
    return ConfigError(f"results store {path!r} cannot be read ({type(exc).__name__}: {exc}); nothing was merged. If "
                       "it is damaged, rerun the shard that wrote it (with a fresh --store) and merge again")
