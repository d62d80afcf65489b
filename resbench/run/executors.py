"""Executors: where a run's jobs run. ``local`` runs them one after another in this process; ``process``
runs them in a pool of worker processes on this machine (``ray``, in :mod:`resbench.run.ray_executor`,
across a cluster).

The contract (see ``register_executors`` in :mod:`resbench.hookspecs`): ``map(jobs)`` runs every job
once and yields, in the driver, each output a job yields, as soon as it arrives (one job's outputs in
order). A job is a picklable callable whose call yields picklable outputs and touches no store. A job
whose worker is lost is run again (its rows are the same, and the store keeps a row once); when it is
lost too often, the executor yields ``job.lost(reason)`` instead, which marks the job's cells failed.
An executor's ``trial_batch`` (optional; ``None`` or 0 for one job per group) asks the driver to split
each group's trials into jobs of that many trials, so that more workers than groups have work.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import queue
import signal
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

import pydantic

from resbench.errors import ResbenchError
from resbench.options import Options
from resbench.plugins import hookimpl

__all__ = ["LocalExecutor", "LocalOptions", "ProcessExecutor", "ProcessOptions", "register_executors",
           "trial_batch_option"]

logger = logging.getLogger(__name__)
#: How often a job may lose its worker before its cells are marked failed.
MAX_ATTEMPTS = 3
_POLL_SECONDS = 0.2


def trial_batch_option(default: int) -> Any:
    """The ``trial_batch`` option of the built-in executors: how many trials of a group one job runs."""
    return pydantic.Field(default=default, ge=0, le=100_000, description="split each group's trials into jobs of "
                          "this many trials (0: one job per group); the rows are the same either way")


class LocalOptions(Options):
    """Options of ``local``."""

    trial_batch: int = trial_batch_option(0)


class LocalExecutor:
    """Run jobs in this process, in order (the default; uses the device resbench was given)."""

    Options = LocalOptions

    def __init__(self, options: LocalOptions) -> None:
        self.options = options
        self.trial_batch = options.trial_batch

    def map(self, jobs: Iterable[Any]) -> Iterator[Any]:
        """Run each job and yield its outputs as they come."""
        for job in jobs:
            yield from job()


#: Worker processes per CPU at most: each computes on one core, so more only compete for the cores.
WORKERS_PER_CPU = 4


def _cpus() -> int:
    return max(1, os.cpu_count() or 1)


class ProcessOptions(Options):
    """Options of ``process``."""

    trial_batch: int = trial_batch_option(10)
    workers: int = pydantic.Field(default_factory=_cpus, ge=1,
                                  description=f"worker processes (default: one per CPU; at most {WORKERS_PER_CPU} "
                                  "per CPU)")

    @pydantic.field_validator("workers")
    @classmethod
    def _check_workers(cls, workers: int) -> int:
        if workers > WORKERS_PER_CPU * _cpus():
            raise ValueError(f"at most {WORKERS_PER_CPU * _cpus()} on this machine ({WORKERS_PER_CPU} per CPU, "
                             f"{_cpus()} CPUs): each worker computes on one core")
        return workers


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when the driver dies (a killed driver leaves no orphans computing)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _work(tasks: Any, outputs: Any, worker: int) -> None:
    """A worker's loop: take (index, job) from its own queue, send the job's outputs, then ("done", index);
    None ends the loop."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    import torch

    torch.set_num_threads(1)  # one core per worker: several workers must not fight over cores
    while (task := tasks.get()) is not None:
        index, job = task
        try:
            for output in job():
                outputs.put(("output", worker, index, output))
        except BaseException as error:
            outputs.put(("error", worker, index, f"{type(error).__name__}: {error}"))
        else:
            outputs.put(("done", worker, index, None))


@dataclass
class _Pool:
    """Worker processes, the queues between them and the driver, and which job each worker holds."""

    context: Any
    outputs: Any
    tasks: dict[int, Any]
    processes: dict[int, BaseProcess]
    holding: dict[int, int]

    def start_worker(self, worker: int) -> None:
        """Start (or replace) worker ``worker`` with a fresh task queue of its own."""
        self.tasks[worker] = self.context.Queue()
        process = self.context.Process(target=_work, args=(self.tasks[worker], self.outputs, worker), daemon=True)
        process.start()
        self.processes[worker] = process

    def stop(self) -> None:
        """Ask the workers to end, then make sure they have."""
        for worker, process in self.processes.items():
            if process.is_alive():
                self.tasks[worker].put(None)
        for process in self.processes.values():
            process.join(timeout=2)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
        for channel in [*self.tasks.values(), self.outputs]:
            channel.close()
            channel.cancel_join_thread()


class ProcessExecutor:
    """Run jobs in a pool of worker processes on this machine (``--workers N``), one CPU thread each."""

    Options = ProcessOptions

    def __init__(self, options: ProcessOptions) -> None:
        self.options = options
        self.trial_batch = options.trial_batch
        self._pool: _Pool | None = None

    def _started(self) -> _Pool:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")  # no inherited locks, threads or CUDA state
            self._pool = _Pool(context, context.Queue(), {}, {}, {})
            for worker in range(self.options.workers):
                try:
                    self._pool.start_worker(worker)
                except OSError as error:  # the system's limit on processes or memory
                    self.close()
                    raise ResbenchError(f"cannot start worker process {worker + 1} of {self.options.workers}: "
                                        f"{error.strerror or error}; pass fewer --workers") from None
        return self._pool

    def close(self) -> None:
        """Stop the workers."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.stop()

    def map(self, jobs: Iterable[Any]) -> Iterator[Any]:
        """Run the jobs on the workers; yield their outputs as they arrive."""
        jobs = list(jobs)
        if not jobs:
            return
        pool = self._started()
        attempts = [1] * len(jobs)
        waiting = deque(range(len(jobs)))
        unfinished = set(range(len(jobs)))
        try:
            while unfinished:
                for worker in pool.processes:
                    if waiting and worker not in pool.holding:
                        pool.holding[worker] = index = waiting.popleft()
                        pool.tasks[worker].put((index, jobs[index]))
                try:
                    kind, worker, index, payload = pool.outputs.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    yield from self._replace_lost_workers(pool, jobs, attempts, waiting, unfinished)
                    continue
                if kind == "output":
                    yield payload
                else:
                    pool.holding.pop(worker, None)
                    unfinished.discard(index)
                    if kind == "error":
                        yield from jobs[index].lost(f"the worker failed: {payload}")
        except BaseException:
            self.close()
            raise

    def _replace_lost_workers(
        self, pool: _Pool, jobs: list[Any], attempts: list[int], waiting: deque[int], unfinished: set[int]
    ) -> Iterator[Any]:
        """A worker that died (killed, out of memory) is replaced; its job runs again or, too often lost, fails."""
        for worker, process in list(pool.processes.items()):
            if process.is_alive():
                continue
            reason = f"worker process {process.pid} died (exit status {process.exitcode})"
            logger.warning("%s", reason)
            pool.start_worker(worker)
            index = pool.holding.pop(worker, None)
            if index is None:
                continue
            if attempts[index] < MAX_ATTEMPTS:
                attempts[index] += 1
                waiting.appendleft(index)
            else:
                unfinished.discard(index)
                yield from jobs[index].lost(f"{reason}, {MAX_ATTEMPTS} times")


@hookimpl
def register_executors(register: Any) -> None:
    """Register ``local`` and ``process``."""
    register("local", LocalExecutor)
    register("process", ProcessExecutor)
