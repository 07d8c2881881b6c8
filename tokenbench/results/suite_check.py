"""``tokenbench leaderboard --check``: run mini suites afresh and compare them with the committed boards, one suite
after another in this process, or ``jobs`` suites at once, each in a worker process of its own.

Why workers: the mini models are so small that a second torch thread buys little (measured on 2 AMD EPYC cores: one
suite's cells took 63.6 s on one thread and 59.5 s on two), so two suites on one thread each finish far sooner than
one after the other on two. A check compares no timing column (:data:`tokenbench.results.leaderboard.DETERMINISTIC`),
so suites slowing each other change nothing it compares; ``--update`` times every row for the board and therefore
always runs alone (the CLI refuses ``--jobs`` with it).

The workers are started with ``spawn`` (no state inherited from this process: each imports tokenbench afresh and
receives its suite as plain data), ignore Ctrl-C (this process handles it, stops them and says so), get the cores
divided among them as torch threads, and exit if this process dies. SIGTERM (which the CLI raises as
:class:`tokenbench.cli.Terminated`) stops the workers as Ctrl-C does; a check writes nothing, so nothing is lost.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

def check_suite(suite: dict[str, Any], root: str, quiet: bool = True) -> tuple[list[str], int, float]:
    """Run ``suite`` as ``--check`` does (each row timed once, without warm-up; refused methods as rows) and compare it
    with the committed board under ``root``: (differences, rows, seconds)."""
    from tokenbench.harness.compare import compare
    from tokenbench.hf.quiet import quiet_transformers
    from tokenbench.results import leaderboard as lb
    from tokenbench.results import suites

    start = time.perf_counter()
    quiet_transformers()
    refused: dict = {}
    rows = compare(suites.suite_spec(suite, check=True), progress=not quiet, refused=refused)
    rows += suites.refused_rows(refused, rows)
    return lb.check(rows, root), len(rows), time.perf_counter() - start


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_suites(chosen: list[dict[str, Any]], root: str, jobs: int = 1, quiet: bool = False,
                 on_done: Callable[[str, int, float], None] | None = None) -> tuple[list[str], int]:
    """Check every suite of ``chosen``, ``jobs`` at a time: (their differences in ``chosen``'s order, rows checked).
    ``on_done(model, rows, seconds)`` is told of each suite as it finishes."""
    jobs = min(jobs, len(chosen))
    if jobs <= 1:
        results = []
        for suite in chosen:
            results.append(check_suite(suite, root, quiet))
            if on_done:
                on_done(suite["model"], results[-1][1], results[-1][2])
    else:
        results = _in_workers(chosen, root, jobs, on_done)
    return [p for problems, _, _ in results for p in problems], sum(n for _, n, _ in results)


def _in_workers(chosen: list[dict[str, Any]], root: str, jobs: int, on_done) -> list[tuple[list[str], int, float]]:
    """The suites in ``jobs`` spawned worker processes, each with its share of the cores as torch threads; any
    interruption (Ctrl-C, SIGTERM, an error) stops every worker before it propagates."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    threads = max(1, cores() // jobs)
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_setup,
                               initargs=(threads, os.getpid()))
    try:
        futures = {pool.submit(check_suite, suite, root): suite["model"] for suite in chosen}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                _, n, seconds = future.result()  # a worker's error is raised here
                if on_done:
                    on_done(futures[future], n, seconds)
        return [future.result() for future in futures]
    except BaseException:
        for child in multiprocessing.active_children():
            child.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _worker_setup(threads: int, parent: int) -> None:
    """A worker: Ctrl-C is the parent's to handle; ``threads`` torch threads; exit when the parent is gone."""
    import signal
    import threading

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
