"""Service quotas that hold for a whole ``dask.distributed`` cluster, not one process.

Earth Engine allows a project a number of concurrent requests and Zenodo a
number of requests per minute. A limiter inside each process lets eight worker
processes send eight times that. While a ``DaskRunner`` runs on a distributed
cluster it attaches every worker process (a worker plugin) and its own client
process to the cluster; limiters then take leases from a ``distributed.Semaphore``
held by the scheduler, named per quota (service, endpoint, limit). Outside a
cluster (threads, processes, synchronous) nothing is attached and callers fall
back to their per-process limiter.

The attachment is per-process state by nature (which scheduler this process
talks to), kept in one ``_Attachment`` object, like the ``ee`` client's own state.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from distributed import WorkerPlugin

log = logging.getLogger(__name__)

PLUGIN_NAME = "multistore-quotas"


class _Attachment:
    """The scheduler this process takes quota leases from, and its semaphores."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.owner: object | None = None
        self.scheduler: Any = None
        self.loop: Any = None
        self.semaphores: dict[str, Any] = {}

    def attach(self, owner: object, scheduler: Any, loop: Any) -> None:
        with self.lock:
            self._drop()
            self.owner, self.scheduler, self.loop = owner, scheduler, loop

    def detach(self, owner: object) -> None:
        with self.lock:
            if self.owner is owner:
                self._drop()

    def _drop(self) -> None:
        for semaphore in self.semaphores.values():
            callback = getattr(semaphore, "refresh_callback", None)
            if callback is not None:
                callback.stop()
        self.semaphores.clear()
        self.owner = self.scheduler = self.loop = None

    def semaphore(self, name: str, max_leases: int) -> Any:
        """The cluster semaphore ``name``, or None when this process is not attached."""
        with self.lock:
            if self.owner is None:
                return None
            semaphore = self.semaphores.get(name)
            if semaphore is None:
                from distributed import Semaphore

                semaphore = Semaphore(
                    max_leases=max_leases, name=name, scheduler_rpc=self.scheduler, loop=self.loop
                )
                self.semaphores[name] = semaphore
            return semaphore


_PROCESS = _Attachment()


def attach_client(client: Any) -> None:
    """Take quota leases from ``client``'s scheduler in this (the client's) process too."""
    _PROCESS.attach(client, client.scheduler, client.loop)


def detach_client(client: Any) -> None:
    """End the run's attachment: later limiters in this process are per-process again."""
    _PROCESS.detach(client)


class QuotaPlugin(WorkerPlugin):
    """Attaches each worker process to its scheduler's quotas."""

    name = PLUGIN_NAME

    def setup(self, worker: Any) -> None:
        _PROCESS.attach(worker, worker.scheduler, worker.loop)

    def teardown(self, worker: Any) -> None:
        _PROCESS.detach(worker)


@contextmanager
def concurrency_slot(name: str, capacity: int, local: Any) -> Iterator[None]:
    """Hold one of ``capacity`` cluster-wide slots named ``name``; else one of ``local``'s."""
    semaphore = _PROCESS.semaphore(f"multistore-concurrency:{name}:{capacity}", capacity)
    if semaphore is None:
        with local:
            yield
        return
    semaphore.acquire()
    try:
        yield
    finally:
        semaphore.release()


def take_rate_slot(name: str, per_window: int, window_s: float) -> bool:
    """Wait until a request fits ``per_window`` requests in any ``window_s`` cluster-wide.

    A request holds a lease of a semaphore of ``per_window`` leases for ``window_s``
    seconds: at most ``per_window`` were sent in any window, whichever process sent
    them. Returns False (nothing taken) when this process is not attached.
    """
    semaphore = _PROCESS.semaphore(f"multistore-rate:{name}:{per_window}/{window_s:g}s", per_window)
    if semaphore is None:
        return False
    semaphore.acquire()
    timer = threading.Timer(window_s, _release_quietly, (semaphore,))
    timer.daemon = True
    timer.start()
    return True


def _release_quietly(semaphore: Any) -> None:
    # After a detach (end of run) the scheduler may be gone: its lease expires there anyway.
    try:
        semaphore.release()
    except Exception as e:
        log.debug("quota lease not released (it expires on the scheduler): %s", e)
