"""Run dask work on the scheduler named in ``general.dask``.

One ``DaskRunner`` per run owns the executor (a shared thread pool, a process
pool or a ``dask.distributed`` client), so several cubes computing at once
share the same workers instead of each starting its own pool.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import dask
from dask.callbacks import Callback

from .config.model import DaskConfig

log = logging.getLogger(__name__)

Progress = Callable[[float], None]


class _TaskProgress(Callback):
    """Reports the share of finished tasks of one compute call (local schedulers)."""

    def __init__(self, report: Progress):
        super().__init__()
        self._report = report
        self._total = 1
        self._done = 0
        self._lock = threading.Lock()
        self._last = -1.0

    def _start_state(self, dsk, state):
        self._total = max(1, len(state["ready"]) + len(state["waiting"]) + len(state["running"]))

    def _posttask(self, key, result, dsk, state, worker_id):
        with self._lock:
            self._done += 1
            share = min(1.0, self._done / self._total)
            if share - self._last >= 0.01 or share == 1.0:
                self._last = share
                self._report(share)


class DaskRunner:
    def __init__(self, config: DaskConfig):
        self.config = config
        self._pool: ThreadPoolExecutor | None = None
        self._client = None
        self._cluster = None

    @property
    def description(self) -> str:
        c = self.config
        if c.scheduler == "distributed":
            if self._client is not None:
                return f"distributed ({self._client.scheduler.address})"
            return "distributed"
        workers = c.num_workers or os.cpu_count()
        return c.scheduler if c.scheduler == "synchronous" else f"{c.scheduler} ({workers} workers)"

    def start(self) -> DaskRunner:
        c = self.config
        if c.scheduler == "threads":
            self._pool = ThreadPoolExecutor(
                c.num_workers or os.cpu_count(), thread_name_prefix="multistore-dask"
            )
        elif c.scheduler == "distributed":
            from distributed import Client, LocalCluster

            from .quota import QuotaPlugin, attach_client

            if c.address:
                self._client = Client(c.address, set_as_default=False)
            elif c.cluster:
                self._cluster = batch_cluster(c)
                self._client = Client(self._cluster, set_as_default=False)
            else:
                self._cluster = LocalCluster(
                    n_workers=c.n_workers or 2,
                    threads_per_worker=c.threads_per_worker or 1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.WARNING,
                )
                self._client = Client(self._cluster, set_as_default=False)
            # Service quotas (Earth Engine concurrency, Zenodo pacing) hold cluster-wide.
            self._client.register_plugin(QuotaPlugin())
            attach_client(self._client)
        return self

    def close(self, wait: bool = True) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
        if self._client is not None:
            from .quota import detach_client

            detach_client(self._client)
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()

    def compute(self, obj: Any, progress: Progress | None = None) -> Any:
        c = self.config
        if self._client is not None:
            future = self._client.compute(obj)
            if progress is None:
                return self._client.gather(future)
            feed = _watch_cluster_progress(self._client, future, progress)
            result = self._client.gather(future)
            # The scheduler's last count may reach the client after the result does.
            feed.finish()
            return result
        kwargs: dict[str, Any] = {}
        if progress is not None:
            kwargs["callbacks"] = [_TaskProgress(progress)._callback]
        if c.scheduler == "threads":
            return dask.compute(obj, scheduler="threads", pool=self._pool, **kwargs)[0]
        if c.scheduler == "processes":
            return dask.compute(obj, scheduler="processes", num_workers=c.num_workers, **kwargs)[0]
        return dask.compute(obj, scheduler="synchronous", **kwargs)[0]


def _watch_cluster_progress(client: Any, future: Any, report: Progress) -> Any:
    """Report the share of finished tasks behind ``future`` (or a list of them) as the scheduler counts them.

    Tasks run in worker processes, so the local callbacks that count them under the
    threads scheduler see nothing; the scheduler feeds the counts to the client instead
    (what dask's own progress bars use), and ``report`` runs in the client's I/O thread.
    """
    from distributed import futures_of
    from distributed.diagnostics.progressbar import ProgressBar

    class _Feed(ProgressBar):
        last = -1.0
        lock: threading.Lock

        def _draw_bar(self, remaining: int = 0, all: int = 0, **kwargs: Any) -> None:  # noqa: A002
            self._report(1.0 - remaining / all if all else 1.0)

        def _report(self, share: float) -> None:
            with self.lock:  # the I/O thread and the caller both report
                if share - self.last >= 0.01 or (share == 1.0 and self.last < 1.0):
                    self.last = share
                    report(share)

        def finish(self) -> None:
            self._report(1.0)

    feed = _Feed(futures_of(future), scheduler=client.scheduler.address, interval="200ms")
    feed.lock = threading.Lock()
    client.loop.add_callback(feed.listen)
    return feed


def batch_cluster(c: DaskConfig) -> Any:
    """A dask-jobqueue cluster: each batch job runs one worker with ``cores`` threads.

    Jobs come and go with the work between ``adapt`` minimum and maximum, else
    ``n_workers`` (default 1) jobs are submitted at once.
    """
    import dask_jobqueue

    classes = {
        "slurm": dask_jobqueue.SLURMCluster,
        "pbs": dask_jobqueue.PBSCluster,
        "sge": dask_jobqueue.SGECluster,
    }
    kwargs: dict[str, Any] = {
        "cores": c.cores,
        "memory": c.memory,
        "processes": 1,
        "walltime": c.walltime,
        "queue": c.queue,
        "job_extra_directives": list(c.job_extra_directives),
        "scheduler_options": {"dashboard_address": None},
    }
    # SGE calls the account a project.
    kwargs["project" if c.cluster == "sge" else "account"] = c.account
    cluster = classes[c.cluster](**kwargs)
    if c.adapt is not None:
        cluster.adapt(minimum_jobs=c.adapt[0], maximum_jobs=c.adapt[1])
    else:
        cluster.scale(jobs=c.n_workers or 1)
    return cluster


@contextmanager
def dask_runner(config: DaskConfig) -> Iterator[DaskRunner]:
    runner = DaskRunner(config).start()
    try:
        yield runner
    except BaseException:
        runner.close(wait=False)  # e.g. Ctrl-C: do not wait for running tiles
        raise
    runner.close()
