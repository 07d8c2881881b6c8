"""Scheduler arrays: ``compare ... --shard I/N`` computes shard I of N of every cell into its own results store and
exits without scoring; ``tokenbench results merge`` (:mod:`tokenbench.results.merge`) joins the shards' stores; the
ordinary ``compare`` on the merged store then computes nothing and prints the rows.

A shard is exactly a data-parallel rank (:class:`tokenbench.harness.parallel.Share`): every N-th batch of every cell,
from the I-th on, batched as one process batches them, so any mix of shards and processes gives the records one
process computes. ``--shard slurm`` reads the shard from a SLURM job array's environment (``SLURM_ARRAY_TASK_ID``
minus ``SLURM_ARRAY_TASK_MIN``, of ``SLURM_ARRAY_TASK_COUNT``), so ``--array=0-3`` and ``--array=1-4`` both work.
"""

from __future__ import annotations

import os
import re
from typing import Mapping

from tokenbench.errors import ConfigError

SLURM = "slurm"
_FORM = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(value: str, environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``"I/N"`` (I from 0 to N-1) or ``"slurm"`` -> (I, N), or a clear error."""
    if value.strip().lower() == SLURM:
        return _slurm(os.environ if environ is None else environ)
    match = _FORM.match(value)
    if not match:
        raise ConfigError(f"--shard {value!r} is not I/N (e.g. --shard 0/4: the first of 4 shards, I from 0 to N-1) "
                          f"or {SLURM!r} (read from a SLURM job array's environment)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise ConfigError(f"--shard {value!r}: I must be 0 to N-1 and N at least 1 (the shards of 4 are 0/4, 1/4, 2/4 "
                          "and 3/4)")
    return index, count


def _slurm(environ: Mapping[str, str]) -> tuple[int, int]:
    names = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT")
    missing = [n for n in names if not environ.get(n)]
    if missing:
        raise ConfigError(f"--shard slurm reads {' and '.join(names)}, and {' and '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} not set: run it inside a job array (sbatch "
                          "--array=0-3 ...) or give --shard I/N")
    raw = {n: environ[n] for n in (*names, "SLURM_ARRAY_TASK_MIN") if environ.get(n)}
    bad = [f"{n}={v!r}" for n, v in raw.items() if not v.strip().isdigit()]
    if bad:
        raise ConfigError(f"--shard slurm: {', '.join(bad)} is not a whole number; give --shard I/N instead")
    first = int(raw.get("SLURM_ARRAY_TASK_MIN", "0"))
    index, count = int(raw["SLURM_ARRAY_TASK_ID"]) - first, int(raw["SLURM_ARRAY_TASK_COUNT"])
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard slurm: task {raw['SLURM_ARRAY_TASK_ID']} of an array of {count} starting at "
                          f"{first} is not one of its shards; use a contiguous array (--array=0-{max(count, 1) - 1}) "
                          "or give --shard I/N")
    return index, count


def check_shard(spec, shard: tuple[int, int], processes: int, json_path: str | None) -> None:
    """What a shard pass needs: a store of its own, no other split of the samples, and no rows asked of it."""
    index, count = shard
    if spec.store is None:
        raise ConfigError(f"--shard {index}/{count} computes its samples into the results store, and --no-store "
                          "gives none: pass --store PATH (a file of this shard's own, merged later with `tokenbench "
                          "results merge`)")
    if processes > 1:
        raise ConfigError(f"--shard {index}/{count} with several processes: each splits the samples; run the shard in "
                          "one process, or the processes without --shard")
    if json_path is not None:
        raise ConfigError(f"--shard {index}/{count} scores nothing, so it writes no rows: drop --json and give it to "
                          "the compare on the merged store")


def run_shard(spec, shard: tuple[int, int], progress: bool = True) -> dict[str, int]:
    """Compute shard ``shard`` of every cell of ``spec`` into its store: the samples computed per cell (store key),
    those read back from an earlier run of the same shard not included."""
    from tokenbench.harness import compare as runner

    computed: dict[str, int] = {}
    runner.compare(spec, progress=progress, shard=shard, computed=computed)
    return computed
