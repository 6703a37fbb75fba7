"""Let each warp task read its own source window instead of sharing source chunks.

With shared chunks, dask's scheduler reads source chunks far ahead of the
warps that need them (peak memory grew with the source's width: 1 GB of
source chunks held for a 12000 px wide stack). Instead, every warp task
carries the small piece of the source graph that produces its chunks and runs
it inline, as odc-stac's loader does: memory is bounded by chunk size x
workers, at the price of reading chunks shared by neighbouring tiles more
than once (cheap next to warping).

This is only done when it cannot multiply real work: if any computed node of
the source graph feeds more than one of the chunks (e.g. a rechunk of big
chunks, a reduction), the shared-chunk graph is kept.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import dask.array as da
import dask.core
import numpy as np
from dask._task_spec import convert_legacy_graph

# Nodes per chunk above which inlining is not attempted (a deep graph is real work).
_MAX_NODES_PER_CHUNK = 32

# Decoded chunks kept for the other tasks that need them (see ``ChunkCache``).
SHARED_CHUNK_BYTES = 128 * 2**20


class ChunkCache:
    """Decoded source chunks that neighbouring warp tasks share, each dropped after its last use.

    A chunk under the windows of k tiles would otherwise be read and decoded k
    times (about 2.3 times on average in the regrid benchmark). Every task
    counts its use; a chunk is kept only while other tasks still need it and
    while the kept chunks stay under ``budget`` bytes, so memory stays bounded
    whatever order the scheduler runs tasks in; a chunk not kept is simply read
    again. Within one process (the threaded scheduler) all tasks share it; a
    pickled copy (processes, distributed) starts empty and only costs re-reads.
    """

    def __init__(self, uses: Mapping[Hashable, int], budget: int = SHARED_CHUNK_BYTES):
        self._initial = dict(uses)
        self._budget = budget
        self._left = dict(uses)
        self._values: dict[Hashable, np.ndarray] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        # chunks one task is reading now: others that need them wait instead of reading too
        self._reading: dict[Hashable, threading.Event] = {}

    def __reduce__(self) -> tuple:
        return ChunkCache, (self._initial, self._budget)

    def claim(
        self, keys: Iterable[Hashable]
    ) -> tuple[dict[Hashable, Any], list[Hashable], dict[Hashable, threading.Event]]:
        """Split ``keys`` into kept values (use counted), keys this task must read
        (call ``put`` or ``release`` for each), and keys another task is reading now."""
        found: dict[Hashable, Any] = {}
        mine: list[Hashable] = []
        theirs: dict[Hashable, threading.Event] = {}
        with self._lock:
            for key in keys:
                if key in found or key in theirs or key in mine:
                    continue
                value = self._values.get(key)
                if value is not None:
                    self._used(key)
                    found[key] = value
                elif key in self._reading:
                    theirs[key] = self._reading[key]
                else:
                    if self._left.get(key, 0) > 1:  # only chunks others will want are announced
                        self._reading[key] = threading.Event()
                    mine.append(key)
        return found, mine, theirs

    def release(self, key: Hashable) -> None:
        """Wake the tasks waiting for ``key`` (its read ended, kept or not)."""
        with self._lock:
            event = self._reading.pop(key, None)
        if event is not None:
            event.set()

    def take(self, key: Hashable) -> Any:
        """The kept value of ``key`` (counting this use), or None when it must be read."""
        with self._lock:
            value = self._values.get(key)
            if value is not None:
                self._used(key)
            return value

    def put(self, key: Hashable, value: Any) -> None:
        """Count the use of a value just read, and keep it if other tasks still need it."""
        with self._lock:
            left = self._left.get(key, 0) - 1
            self._left[key] = left
            size = getattr(value, "nbytes", None)
            if left > 0 and size is not None and self._bytes + size <= self._budget:
                if isinstance(value, np.ndarray):
                    value.setflags(write=False)  # shared: no task may change it
                self._values[key] = value
                self._bytes += size
            event = self._reading.pop(key, None)
        if event is not None:
            event.set()

    def _used(self, key: Hashable) -> None:
        left = self._left.get(key, 0) - 1
        self._left[key] = left
        if left <= 0:
            value = self._values.pop(key, None)
            if value is not None:
                self._bytes -= value.nbytes


@dataclass(frozen=True, eq=False)
class WindowReader:
    """The source sub-graph producing ``keys``, run synchronously inside a task.

    ``steps`` are the sub-graph's nodes in dependency order, sorted once when
    the graph is built: running them is a plain loop, without the ordering and
    bookkeeping of ``dask.local.get_sync`` (about 7% of a warp task's time, measured
    in docs/performance.md), and gives the same values.
    """

    steps: tuple[Any, ...]
    keys: tuple[Hashable, ...]
    # per key: the nodes it needs (to run only those of chunks not found in ``cache``)
    needs: tuple[frozenset, ...] = ()
    cache: ChunkCache | None = None

    @property
    def graph(self) -> dict[Hashable, Any]:
        """The sub-graph, by key."""
        return {node.key: node for node in self.steps}

    def read(self) -> list[np.ndarray]:
        cache = self.cache
        if cache is None:
            return self._run(self.keys)
        found, mine, theirs = cache.claim(self.keys)
        try:
            values = self._run(mine)
        except BaseException:
            for key in mine:
                cache.release(key)
            raise
        for key, value in zip(mine, values, strict=True):
            cache.put(key, value)
            found[key] = value
        missed: list[Hashable] = []
        for key, event in theirs.items():
            event.wait()
            value = cache.take(key)
            if value is None:  # the reader failed or could not keep it: read it here
                missed.append(key)
            else:
                found[key] = value
        if missed:
            for key, value in zip(missed, self._run(missed), strict=True):
                cache.put(key, value)
                found[key] = value
        return [found[k] for k in self.keys]

    def _run(self, keys: Iterable[Hashable]) -> list[Any]:
        """Values of ``keys``, running only the nodes they need."""
        keys = list(keys)
        if not keys:
            return []
        steps = self.steps
        if len(keys) < len(self.keys) and self.needs:
            needs = dict(zip(self.keys, self.needs, strict=True))
            wanted: set[Hashable] = set().union(*(needs[k] for k in keys))
            steps = tuple(node for node in steps if node.key in wanted)
        values: dict[Hashable, Any] = {}
        for node in steps:
            values[node.key] = node(values)
        return [values[k] for k in keys]


def _in_order(graph: Mapping[Hashable, Any]) -> tuple[Any, ...]:
    """The nodes of ``graph`` (dask task specs) with every node after its dependencies."""
    done: set[Hashable] = set()
    steps: list[Any] = []
    for root in graph:
        if root in done:
            continue
        stack = [(root, False)]
        while stack:
            key, expanded = stack.pop()
            if key in done:
                continue
            node = graph[key]
            if expanded:
                done.add(key)
                steps.append(node)
                continue
            stack.append((key, True))
            stack.extend((dep, False) for dep in node.dependencies if dep not in done)
    return tuple(steps)


class SourceGraph:
    """The flattened graph of source arrays, for cutting per-task sub-graphs."""

    def __init__(self, *arrays: da.Array):
        self._dsk: dict[Hashable, Any] = {}
        for arr in arrays:
            self._dsk.update(arr.__dask_graph__())
        self._closures: dict[Hashable, frozenset] = {}

    def closure(self, key: Hashable) -> frozenset:
        """``key`` and every node it depends on."""
        done = self._closures.get(key)
        if done is not None:
            return done
        seen = {key}
        stack = [key]
        while stack:
            k = stack.pop()
            for dep in dask.core.get_dependencies(self._dsk, k):
                if dep not in seen:
                    seen.add(dep)
                    stack.append(dep)
        result = frozenset(seen)
        self._closures[key] = result
        return result

    def can_inline(self, tasks: Iterable[Iterable[Hashable]]) -> bool:
        """True when letting each task run its chunks' sub-graphs multiplies no computed node
        beyond the re-reads of single chunks.

        ``tasks`` are the chunk keys each warp task needs. A chunk needed by k
        tasks is read k times; that is accepted. A computed node shared by
        several chunks (a rechunk of big chunks, a reduction) must not be run
        by more tasks than any one of those chunks is: a 16-band block behind
        16 band variables that are always warped together passes, one big block
        split into chunks that different tiles need does not.
        """
        needed_by: dict[Hashable, set[int]] = {}
        for i, keys in enumerate(tasks):
            for key in keys:
                needed_by.setdefault(key, set()).add(i)
        runs: dict[Hashable, set[int]] = {}  # computed node -> tasks that would run it
        most: dict[Hashable, int] = {}  # computed node -> most tasks of one chunk behind it
        for key, users in needed_by.items():
            nodes = self.closure(key)
            if len(nodes) > _MAX_NODES_PER_CHUNK:
                return False
            for node in nodes:
                if not dask.core.get_dependencies(self._dsk, node):
                    continue  # a literal or a leaf read: free to repeat
                runs.setdefault(node, set()).update(users)
                most[node] = max(most.get(node, 0), len(users))
        return all(len(users) <= most[node] for node, users in runs.items())

    def reader(self, keys: Iterable[Hashable], cache: ChunkCache | None = None) -> WindowReader:
        keys = tuple(keys)
        steps, needs = self._steps(keys)
        return WindowReader(steps, keys, needs, cache)

    def _steps(self, keys: tuple[Hashable, ...]) -> tuple[tuple, tuple[frozenset, ...]]:
        """The ordered sub-graph behind ``keys`` and each key's closure."""
        nodes: set[Hashable] = set()
        for key in keys:
            nodes |= self.closure(key)
        graph = convert_legacy_graph({k: self._dsk[k] for k in nodes})
        return _in_order(graph), tuple(self.closure(k) for k in keys)

    def readers(self, tasks: Iterable[Iterable[Hashable]]) -> list[WindowReader]:
        """One reader per task, sharing one ``ChunkCache`` for the chunks several tasks read."""
        tasks = [tuple(keys) for keys in tasks]
        uses: dict[Hashable, int] = {}
        for keys in tasks:
            for key in keys:
                uses[key] = uses.get(key, 0) + 1
        cache = ChunkCache({k: n for k, n in uses.items() if n > 1})
        # Neighbouring small tiles often read the same chunks: their sub-graph is cut once.
        cut: dict[tuple, tuple[tuple, tuple[frozenset, ...]]] = {}
        readers = []
        for keys in tasks:
            if keys not in cut:
                cut[keys] = self._steps(keys)
            steps, needs = cut[keys]
            readers.append(WindowReader(steps, keys, needs, cache))
        return readers
