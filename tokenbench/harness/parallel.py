"""Data-parallel runs on accelerate, merged through the results store.

``accelerate launch --multi_gpu --num_processes N -m tokenbench compare ...`` (or ``tokenbench compare ...
--processes N``, which runs exactly that) starts N copies of the command. Each computes its share of every cell (full
first, then each method, convention and budget): every N-th batch of the samples, batched exactly as one process
batches them, so that every stored record is the one a single process computes. Each finished batch goes to the
results store, which must be a file every process sees. Then process 0 runs the ordinary single-process comparison
over all the samples with the same store: it reads every sample back, scores, times on its own device (alone: the
others have finished) and prints the rows, which say ``processes: N``. A process that dies loses only its unfinished
batch; the launcher then stops the others, and the same command run again computes only what the store lacks.

Without a launcher (``WORLD_SIZE`` unset or 1) nothing here imports accelerate: :func:`compare` is
:func:`tokenbench.harness.compare.compare`. :class:`Share` is what the executor knows of it: which batches are this
process's, and which samples the run's processes computed.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from tokenbench.errors import ConfigError

#: how long a process that finished its share waits for the others (they run equal shares of the same cells)
WAIT = datetime.timedelta(hours=24)

#: what accelerate launch runs (torchrun; on a machine without GPUs too, where the processes use gloo), with every
#: setting given so that no accelerate config file is needed
LAUNCH = ("--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no")


def world_size() -> int:
    """The processes of this launch, from the environment the launcher sets (torchrun; mpirun's too), else 1."""
    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        raw = os.environ.get(name)
        if raw:
            if not raw.isdigit() or int(raw) < 1:
                raise ConfigError(f"{name}={raw!r} is not a number of processes; unset it, or start the run with "
                                  "`accelerate launch --num_processes N`")
            return int(raw)
    return 1


@dataclass
class Share:
    """A process's part in a data-parallel run, as the executor (:mod:`tokenbench.harness.execute`) sees it.

    ``shard=(rank, world)``: the shard pass: this process computes only every world-th batch of every cell, from the
    rank-th on (batched exactly as one process batches them, so every record is the one a single process computes),
    into the store, and counts the samples it computed per cell (store key) into ``computed``; nothing is scored,
    timed or recorded. ``shard=None``: an ordinary run, or the merge, whose ``computed`` holds the counts summed over
    the processes, so that its rows count those samples as computed by this run rather than read back."""

    shard: tuple[int, int] | None = None
    computed: dict[str, int] = field(default_factory=dict)

    @property
    def partial(self) -> bool:
        """True in a shard pass: this process computes its share of the samples and nothing else."""
        return self.shard is not None

    def batches(self, batches: list) -> list:
        """This process's batches of a cell."""
        if self.shard is None:
            return batches
        rank, world = self.shard
        return batches[rank::world]

    def counted(self, key: str, reused: int, computed: int) -> tuple[int, int]:
        """A cell's samples (read back, computed here) as the run counts them: in a shard pass ``computed`` is added to
        the process's tally; in the merge, the samples this run's processes computed move from read back to
        computed."""
        if self.shard is not None:
            self.computed[key] = self.computed.get(key, 0) + computed
            return reused, computed
        moved = min(self.computed.get(key, 0), reused)
        return reused - moved, computed + moved

    @staticmethod
    def summed(shares: list[dict[str, int]]) -> dict[str, int]:
        """The processes' tallies added up, for the merge."""
        total: dict[str, int] = {}
        for share in shares:
            for key, n in share.items():
                total[key] = total.get(key, 0) + n
        return total


def compare(spec, on_row: Callable[[dict[str, Any]], None] | None = None, progress: bool = True,
            on_warning: Callable[[str], None] | None = None) -> list[dict]:
    """:func:`tokenbench.harness.compare.compare` over this launch's processes: the rows on process 0, ``[]`` on the others."""
    from tokenbench.harness import compare as runner

    world = world_size()
    if world == 1:
        return runner.compare(spec, on_row=on_row, progress=progress, on_warning=on_warning)
    check(spec, world)
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:  # a launcher sets both; a stray WORLD_SIZE in a shell's environment does not
        raise ConfigError(f"this process was told of {world} processes (WORLD_SIZE or an MPI launcher's size) but "
                          f"not where to meet them ({' and '.join(missing)} unset): start the run with `accelerate "
                          "launch` or --processes N, or unset the stray variable for a single-process run")
    from accelerate import PartialState
    from accelerate.utils import gather_object

    # gloo, on GPUs too: the processes exchange only a few counts; the samples go through the store
    state = PartialState(cpu=True, timeout=WAIT)
    rank, local = state.process_index, state.local_process_index
    device = spec.device
    if device == "cuda":  # each process its own GPU
        import torch

        if local >= torch.cuda.device_count():
            raise ConfigError(f"process {local} of this machine has no GPU of its own (it has "
                              f"{torch.cuda.device_count()}); launch at most that many processes per machine")
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    computed: dict[str, int] = {}  # cell -> samples this process computed
    runner.compare(dataclasses.replace(spec, device=device), progress=progress and rank == 0,
                   shard=(rank, world), computed=computed)
    shares = gather_object([computed])  # returns once every process has stored its share
    state.destroy_process_group()
    if rank != 0:
        return []
    return runner.compare(dataclasses.replace(spec, processes=world), on_row=on_row, progress=progress,
                          on_warning=on_warning, computed=Share.summed(shares))


def check(spec, world: int) -> None:
    """What a run over ``world`` processes needs: a store they all write, and a device each can call its own."""
    if spec.store is None:
        raise ConfigError(f"{world} processes share their samples through the results store; pass --store PATH on a "
                          "filesystem every process sees, not --no-store")
    from tokenbench.results.fstype import remote_type

    remote = remote_type(os.path.dirname(os.path.abspath(os.path.expanduser(spec.store))))
    if remote:
        raise ConfigError(f"--store {spec.store!r} is on a network filesystem ({remote}), where SQLite cannot share "
                          f"one file between {world} processes safely (its WAL index and locks stay on one host): give "
                          "each job a store on local disk with `--shard I/N`, then `tokenbench results merge` them")
    if spec.device not in ("cpu", "cuda"):
        raise ConfigError(f"--device {spec.device!r} with {world} processes: give --device cuda (each process uses "
                          "its own GPU, cuda:<local rank>) or --device cpu")


def launch(processes: int, spec, argv: list[str]) -> None:
    """``--processes N``: this process becomes ``accelerate launch`` with N processes, each running this command
    (``argv``, tokenbench's arguments)."""
    import importlib.util

    check(spec, processes)
    if spec.device == "cuda":  # one GPU per process on this machine (under a launcher each rank checks its own)
        import torch

        if torch.cuda.device_count() < processes:
            raise ConfigError(f"--processes {processes} --device cuda needs a GPU per process, and this machine has "
                              f"{torch.cuda.device_count()}: give at most that many processes, or --device cpu")
    if importlib.util.find_spec("accelerate") is None:
        raise ConfigError("--processes needs accelerate: pip install accelerate")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "accelerate.commands.launch", *LAUNCH,
                              "--num_processes", str(processes), "-m", "tokenbench", *argv])
