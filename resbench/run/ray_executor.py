"""The ``ray`` executor (extra ``resbench[ray]``): a run's jobs as Ray tasks, on one machine or a cluster.

Each job (a baseline, a fitted method, a group's trials or a batch of them, see ``trial_batch``) becomes
a Ray task that streams its outputs back (a generator task) and declares what it needs (one CPU; one
GPU with ``--device cuda``). Ray retries a task whose worker or node is lost; the retried job yields
the same rows and the store keeps each once, so nothing is duplicated. Baselines and fitted
methods reach the workers through the artifact cache directory, which the nodes must share (a network
file system on a real cluster); the preceding baseline and preparation jobs fill it, each once, and a
later job that does not find them there fails its cells, naming the folder, rather than training again.

``--address HOST:PORT`` joins a running cluster (``ray start --head`` on one node, ``ray start
--address`` on the others); without it, a Ray instance is started on this machine for the run, bound to
the loopback address. A small guard process stops that Ray's processes when the driver ends without
shutting it down (killed), so none outlives the run.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import socket
import subprocess
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import pydantic

from resbench.errors import UsageError
from resbench.options import Options
from resbench.plugins import hookimpl
from resbench.run.executors import trial_batch_option

__all__ = ["RayExecutor", "RayOptions", "register_executors"]

logger = logging.getLogger(__name__)
#: How often Ray runs a task again whose worker or node was lost.
MAX_RETRIES = 3
#: Jobs in flight at once (each holds a driver thread that relays its outputs).
MAX_IN_FLIGHT = 64
#: How long the check of ``--address`` waits for the cluster to accept a connection.
CONNECT_SECONDS = 5.0
_DONE = object()


class RayOptions(Options):
    """Options of ``ray``."""

    address: str | None = pydantic.Field(default=None, description="cluster to join, HOST:PORT "
                                         "(default: start Ray on this machine)")
    cpus: int | None = pydantic.Field(default=None, ge=1, description="CPUs of a Ray started on this machine "
                                      "(default: all)")
    node_ip_address: str = pydantic.Field(default="127.0.0.1", description="address of a Ray started on this "
                                          "machine (loopback by default)")
    trial_batch: int = trial_batch_option(10)


def _check_listening(address: str) -> None:
    """Refuse (bad input, before the store is touched) a ``HOST:PORT`` where nothing accepts connections:
    Ray would otherwise wait for it forever. Other address forms (``auto``) are left to Ray."""
    host, separator, port = address.removeprefix("ray://").rpartition(":")
    if not separator or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UsageError(f"--address {address}: no Ray cluster answers there ({reason}); start one with "
                         "'ray start --head' or pass its address") from None


#: The guard: it watches the driver's end of a pipe and notes the processes the given Ray processes started
#: (agents, workers; on Linux), at once and then every second. When the pipe closes without the driver saying "done" (a
#: clean shutdown), the driver died: the guard kills every process it noted.
_GUARD = """
import os, select, signal, sys

def family(known):
    parents = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        try:
            with open(f"/proc/{entry}/stat") as status:
                parents[int(entry)] = int(status.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            pass
    found = list(known)
    for pid in found:
        found += [child for child, parent in parents.items() if parent == pid and child not in found]
    return found

known, said = family([int(pid) for pid in sys.argv[1:]]), b""
print("watching", flush=True)
while True:
    if select.select([sys.stdin], [], [], 1.0)[0]:
        chunk = os.read(sys.stdin.fileno(), 16)
        if not chunk:
            break
        said += chunk
    else:
        known = family(known)
if said != b"done":
    for pid in family(known):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
"""


def _ray_processes(ray: Any) -> list[int]:
    """The process ids of the Ray started here (its head processes: they start and reap its workers)."""
    worker = getattr(getattr(ray, "_private", None), "worker", None)
    processes = getattr(getattr(worker, "_global_node", None), "all_processes", None) or {}
    return [info.process.pid for infos in processes.values() for info in infos if getattr(info, "process", None)]


def _guard(pids: list[int]) -> subprocess.Popen[bytes]:
    """Start the guard of a Ray started here (see :data:`_GUARD`), once it has noted the processes to stop."""
    guard = subprocess.Popen([sys.executable, "-c", _GUARD, *map(str, pids)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    if guard.stdout is not None:
        guard.stdout.readline()
        guard.stdout.close()
    return guard


def _run_job(job: Any) -> Iterator[Any]:
    """The Ray task: run one job where Ray placed it, streaming its outputs back."""
    import torch

    torch.set_num_threads(max(1, int(job.resources.get("num_cpus", 1))))
    yield from job()


class RayExecutor:
    """Run jobs as Ray tasks on a local Ray or a cluster (``--address``)."""

    Options = RayOptions

    def __init__(self, options: RayOptions) -> None:
        try:
            import ray
        except ImportError:
            raise UsageError("the ray executor needs Ray: pip install 'resbench[ray]'") from None
        if options.address is not None:
            _check_listening(options.address)
        self.options = options
        self.trial_batch = options.trial_batch
        self._ray = ray
        self._started_here = False
        self._guard: subprocess.Popen[bytes] | None = None

    def _connect(self) -> None:
        ray = self._ray
        if ray.is_initialized():
            return
        if self.options.address is not None:
            ray.init(address=self.options.address, log_to_driver=False, configure_logging=False)
        else:
            ray.init(address="local", num_cpus=self.options.cpus, include_dashboard=False, log_to_driver=False,
                     configure_logging=False, _node_ip_address=self.options.node_ip_address)
            self._guard = _guard(_ray_processes(ray))
        self._started_here = True

    def close(self) -> None:
        """Disconnect from (or stop) the Ray this executor started."""
        if self._started_here:
            self._ray.shutdown()
            self._started_here = False
        guard, self._guard = self._guard, None
        if guard is not None and guard.stdin is not None:
            guard.stdin.write(b"done")
            guard.stdin.close()
            guard.wait()

    def map(self, jobs: Iterable[Any]) -> Iterator[Any]:
        """Submit the jobs as Ray tasks; yield their outputs as they arrive."""
        jobs = list(jobs)
        if not jobs:
            return
        self._connect()
        task = self._ray.remote(_run_job)
        outputs: queue.Queue[Any] = queue.Queue()

        def relay(job: Any) -> None:
            try:
                resources = job.resources
                stream: Any = task.options(num_cpus=resources.get("num_cpus", 1), num_gpus=resources.get("num_gpus", 0),
                                      max_retries=MAX_RETRIES).remote(job)
                for reference in stream:
                    outputs.put(self._ray.get(reference))
            except Exception as error:  # lost for good (retries spent) or not schedulable
                logger.warning("a Ray task failed: %s", error)
                for output in job.lost(f"the Ray task failed: {type(error).__name__}: {error}"):
                    outputs.put(output)
            finally:
                outputs.put(_DONE)

        with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(jobs), MAX_IN_FLIGHT)) as threads:
            for job in jobs:
                threads.submit(relay, job)
            finished = 0
            while finished < len(jobs):
                output = outputs.get()
                if output is _DONE:
                    finished += 1
                else:
                    yield output


@hookimpl
def register_executors(register: Any) -> None:
    """Register ``ray`` (it needs the ``resbench[ray]`` extra only when used)."""
    register("ray", RayExecutor)
