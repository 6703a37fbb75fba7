"""Run dask work on the scheduler named in ``general.dask``.

One ``DaskRunner`` per run owns the executor (a shared thread pool, a process
pool or a ``dask.distributed`` client), so several cubes computing at once
share the same workers instead of each starting its own pool.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.callbacks import Callback
from dask.highlevelgraph import HighLevelGraph

from .config.model import DaskConfig

log = logging.getLogger(__name__)

Progress = Callable[[float], None]

_RAMP = 16  # the first wave has 1/_RAMP of general.dask.wave_chunks, then sizes double


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


class ComputeStopped(RuntimeError):
    """A compute call was stopped because work it belongs to failed."""


class _Tasks:
    """The tasks one compute call hands to the shared thread pool (dask's ``pool=``).

    dask's threaded scheduler raises on the first failed task while the tasks
    already running go on in the pool: they could store chunks into a cube that
    is being removed. A failed call stops submitting and waits for those (a few
    tasks, one per thread at most); a stopped call fails at its next submission.
    """

    def __init__(self, pool: ThreadPoolExecutor):
        self._pool = pool
        self._max_workers = pool._max_workers  # dask sizes its batches by it
        self._running: set[Future] = set()
        self._lock = threading.Lock()
        self._stopped = False

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        with self._lock:
            if self._stopped:
                raise ComputeStopped("stopped: other work of this run failed")
            future = self._pool.submit(fn, *args, **kwargs)
            self._running.add(future)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, future: Future) -> None:
        with self._lock:
            self._running.discard(future)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True

    def wait(self) -> None:
        with self._lock:
            running = list(self._running)
        futures_wait(running)


def _progress_callbacks(progress: Progress | None) -> dict[str, Any]:
    return {} if progress is None else {"callbacks": [_TaskProgress(progress)._callback]}


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
        if c.scheduler == "threads":
            return self._compute_threads(obj, progress, self._tasks())
        if self._client is not None:
            future = self._client.compute(obj)
            if progress is None:
                return self._client.gather(future)
            feed = _watch_cluster_progress(self._client, future, progress)
            result = self._client.gather(future)
            # The scheduler's last count may reach the client after the result does.
            feed.finish()
            return result
        kwargs = _progress_callbacks(progress)
        if c.scheduler == "processes":
            return dask.compute(obj, scheduler="processes", num_workers=c.num_workers, **kwargs)[0]
        return dask.compute(obj, scheduler="synchronous", **kwargs)[0]

    def _tasks(self) -> _Tasks:
        if self._pool is None:
            raise RuntimeError("DaskRunner.start() must be called before computing")
        return _Tasks(self._pool)

    def _compute_threads(self, obj: Any, progress: Progress | None, tasks: _Tasks) -> Any:
        """``compute`` on the shared pool: returns or raises only once none of its tasks
        runs any more."""
        try:
            return dask.compute(
                obj, scheduler="threads", pool=tasks, **_progress_callbacks(progress)
            )[0]
        except BaseException:
            tasks.stop()
            tasks.wait()
            raise

    def compute_in_waves(self, arrays: Sequence[Any], progress: Progress | None = None) -> None:
        """Compute ``arrays`` for their side effects (stored chunks) in bands of block rows.

        Up to ``wave_chunks`` blocks go in one compute call; bigger collections are cut by
        :func:`row_band_waves` and each wave's graph is built only when it is submitted.
        The first waves are smaller, so the first chunks are stored soon after the
        start. With threads or a cluster the next wave is submitted while one runs.
        ``progress`` gets the share of finished tasks over all waves.
        """
        most = self.config.wave_chunks
        waves = row_band_waves(arrays, most, first_chunks=max(1, most // _RAMP))
        if not isinstance(waves, RowBands):
            self.compute(waves[0], progress)
            return
        shares = _WaveShares(progress, [waves.blocks(i) for i in range(len(waves))])
        with _long_lived_frozen():
            self._compute_waves(waves, shares)

    def _compute_waves(self, waves: RowBands, shares: _WaveShares) -> None:
        if self._client is not None:
            _two_in_flight(waves, lambda i, wave: self._submit(wave, shares.reporter(i)))
        elif self.config.scheduler == "threads":  # the waves share the one thread pool
            with ThreadPoolExecutor(2, thread_name_prefix="multistore-wave") as submitter:

                def submit(i: int, wave: Any) -> tuple[Callable[[], Any], Callable[[], Any]]:
                    tasks = self._tasks()

                    def cancel() -> None:
                        future.cancel()
                        tasks.stop()

                    future = submitter.submit(
                        self._compute_threads, wave, shares.reporter(i), tasks
                    )
                    return future.result, cancel

                _two_in_flight(waves, submit)
        else:
            for i, wave in enumerate(waves):
                self.compute(wave, progress=shares.reporter(i))
                gc.collect()

    def _submit(
        self, wave: Any, report: Progress | None
    ) -> tuple[Callable[[], Any], Callable[[], Any]]:
        """Start ``wave`` on the cluster: how to wait for it and how to cancel it."""
        futures = self._client.compute(wave)
        feed = None if report is None else _watch_cluster_progress(self._client, futures, report)

        def wait() -> None:
            self._client.gather(futures)
            if feed is not None:
                feed.finish()

        return wait, functools.partial(self._client.cancel, futures)


def _two_in_flight(
    waves: Sequence[Any],
    submit: Callable[[int, Any], tuple[Callable[[], Any], Callable[[], Any]]],
) -> None:
    """Keep two waves running, so workers do not idle at a wave's tail while the next
    wave's graph is built; a failed wave cancels the one behind it and waits for it to
    end, so nothing of the run is still storing chunks when the failure is reported.
    The garbage of each finished wave is collected (:func:`_long_lived_frozen`)."""
    pending: deque[tuple[Callable[[], Any], Callable[[], Any]]] = deque()
    try:
        for i, wave in enumerate(waves):
            pending.append(submit(i, wave))
            if len(pending) > 1:
                pending[0][0]()  # stays pending until it returns, so Ctrl-C stops it too
                pending.popleft()
                gc.collect()
        while pending:
            pending[0][0]()
            pending.popleft()
    finally:
        for _, cancel in pending:
            cancel()
        for wait, _ in pending:
            with suppress(BaseException):  # the first failure is the one reported
                wait()


@contextmanager
def _long_lived_frozen() -> Iterator[None]:
    """Lets the waves collect their own garbage cheaply: see :func:`_two_in_flight`.

    ``dask.order`` leaves its working state (closures, sets and dicts the size of
    the wave's graph) as reference cycles on every compute call, and Python collects
    its oldest generation only once that has grown by a quarter, which a long build
    of many waves rarely reaches: at 10^5 tiles the garbage of every wave piled up to
    1.6 GiB instead of 0.8 GiB. A full collection walks every long-lived object (the
    cube's whole graph, about 0.5 s there, holding the GIL), so the objects alive
    when the waves start are frozen for the waves' duration and each collection
    walks only what the waves made.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class _WaveShares:
    """The share of a run in waves: the waves' shares weighted by their blocks (two may
    run at once, and the first waves are smaller)."""

    def __init__(self, report: Progress | None, sizes: Sequence[int]):
        self._report = report
        self._weights = [n / (sum(sizes) or 1) for n in sizes]
        self._shares = [0.0] * len(sizes)
        self._lock = threading.Lock()

    def reporter(self, wave: int) -> Progress | None:
        return None if self._report is None else functools.partial(self._update, wave)

    def _update(self, wave: int, share: float) -> None:
        with self._lock:
            self._shares[wave] = max(self._shares[wave], share)
            self._report(sum(w * s for w, s in zip(self._weights, self._shares, strict=True)))


def _blocks(write: Any) -> int:
    return int(np.prod(write.numblocks)) if isinstance(write, da.Array) else 1


def row_band_waves(
    writes: Sequence[Any], max_chunks: int, first_chunks: int | None = None
) -> Sequence[list[Any]]:
    """Split dask arrays with the same block rows into waves of about ``max_chunks`` blocks.

    A wave is a band of block rows of every array at once, so variables warped
    together in one task (and the source chunks that neighbouring tiles share) stay
    in the same wave instead of being computed again in another. Each wave is a
    slice of the same lazy graph, sliced when it is looked up: computing it
    materialises only its own tasks.
    Anything that is not an array keeps everything in one wave.
    With ``first_chunks``, the first wave has about that many blocks and each next
    one twice as many, up to ``max_chunks``: preparing a wave's graph takes time in
    proportion to its size, and nothing is stored before the first wave runs.
    """
    arrays = [w for w in writes if isinstance(w, da.Array)]
    total = sum(_blocks(a) for a in arrays)
    if len(arrays) < len(writes) or total <= max_chunks:
        return [list(writes)]
    rows = max((a.numblocks[-2] for a in arrays if a.ndim >= 2), default=1)
    banded = tuple(a for a in arrays if a.ndim >= 2 and a.numblocks[-2] == rows)
    rest = tuple(a for a in arrays if not any(a is b for b in banded))
    per_row = sum(_blocks(a) // rows for a in banded) or 1
    most = max(1, max_chunks // per_row)
    step = most if first_chunks is None else max(1, min(first_chunks, max_chunks) // per_row)
    starts = []
    r0 = 0
    while r0 < rows:
        starts.append(r0)
        r0 += step
        step = min(2 * step, most)
    return RowBands(banded, rest, tuple(starts), rows, per_row)


@dataclass(frozen=True)
class RowBands(Sequence[list[Any]]):
    """Waves of :func:`row_band_waves`: wave ``i`` is block rows ``starts[i]`` up to the next
    start of every banded array, and the first wave also carries the ``rest``."""

    banded: tuple[Any, ...]
    rest: tuple[Any, ...]
    starts: tuple[int, ...]
    rows: int
    per_row: int

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        r0, r1 = self._rows(i)
        # the keys of the whole graph, listed once per cube (cached on the graph all waves share)
        wave = [
            _culled(a.blocks[..., r0:r1, :], a.dask.get_all_external_keys()) for a in self.banded
        ]
        return wave + list(self.rest) if i in (0, -len(self)) else wave

    def blocks(self, i: int) -> int:
        """The blocks of wave ``i``, without slicing it."""
        r0, r1 = self._rows(i)
        extra = sum(_blocks(a) for a in self.rest) if i in (0, -len(self)) else 0
        return (r1 - r0) * self.per_row + extra

    def _rows(self, i: int) -> tuple[int, int]:
        i = range(len(self))[i]  # negative indices, and IndexError past the end
        return self.starts[i], (self.starts[i + 1] if i + 1 < len(self) else self.rows)


def _culled(a: da.Array, external: set) -> da.Array:
    """``a`` with only the tasks its blocks need, each layer culled or dropped
    (``external``: every output key of the graph, with which old-style tasks' dependencies
    are found).

    ``HighLevelGraph.cull`` keeps every layer below the point where the requested keys
    stop depending on anything, uncut: a wave of chunks that all need no source (tiles
    outside it, or chunks a resumed write skips) kept the whole cube's warp layers, and
    materialising them planned every tile at once. Culled here, dask's own cull
    finds nothing left to keep.
    """
    graph = a.dask
    wanted = set(dask.core.flatten(a.__dask_keys__()))
    layers: dict[str, Any] = {}
    for name in reversed(graph._toposort_layers()):
        if not wanted:
            break
        layer, deps = graph.layers[name].cull(wanted, external)
        if not deps:
            continue
        for key, needs in deps.items():
            wanted |= needs
            wanted.discard(key)
        layers[name] = layer
    kept = set(layers)
    dependencies = {name: graph.dependencies[name] & kept for name in layers}
    return da.Array(HighLevelGraph(layers, dependencies), a.name, a.chunks, meta=a._meta)


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
