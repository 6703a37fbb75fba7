"""Per-dataset status of a run: plain data plus a thread-safe board that displays subscribe to."""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace


class Status(enum.Enum):
    WAITING = "waiting"
    PRELOADING = "preloading"
    OPENING = "opening"
    PROCESSING = "processing"
    REGRIDDING = "regridding"
    WRITING = "writing"
    COMPLETED = "completed"
    SKIPPED = "skipped"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (Status.COMPLETED, Status.SKIPPED, Status.FAILED)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class DatasetResult:
    """What happened to one dataset (or one preload job) in a run."""

    identifier: str
    status: Status = Status.WAITING
    output: str | None = None  # where the cube is (storage-relative path)
    message: str = ""  # one line: why skipped, why failed, or the current step
    error: BaseException | None = field(default=None, compare=False, repr=False)
    progress: float | None = None  # 0..1 while writing/preloading
    started: float | None = None
    finished: float | None = None
    kind: str = "dataset"  # "dataset" or "preload"

    @property
    def duration_s(self) -> float | None:
        if self.started is None:
            return None
        return (self.finished or time.time()) - self.started

    @property
    def ok(self) -> bool:
        return self.status in (Status.COMPLETED, Status.SKIPPED)


Listener = Callable[[DatasetResult], None]


class StatusBoard:
    """Holds the latest ``DatasetResult`` per identifier and tells listeners of every change."""

    def __init__(self, identifiers: Iterable[str] = (), kind: str = "dataset"):
        self._lock = threading.Lock()
        self._results: dict[str, DatasetResult] = {
            i: DatasetResult(identifier=i, kind=kind) for i in identifiers
        }
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def add(self, identifier: str, kind: str = "dataset") -> None:
        with self._lock:
            self._results.setdefault(identifier, DatasetResult(identifier=identifier, kind=kind))

    def update(self, identifier: str, **changes) -> DatasetResult:
        status = changes.get("status")
        with self._lock:
            current = self._results.get(identifier) or DatasetResult(identifier=identifier)
            if (
                status is not None
                and current.started is None
                and status
                not in (
                    Status.WAITING,
                    Status.SKIPPED,
                )
            ):
                changes.setdefault("started", time.time())
            if status is not None and status.is_final:
                changes.setdefault("finished", time.time())
                if status is not Status.WRITING:
                    changes.setdefault("progress", None)
            new = replace(current, **changes)
            self._results[identifier] = new
        for listener in list(self._listeners):
            listener(new)
        return new

    def get(self, identifier: str) -> DatasetResult:
        with self._lock:
            return self._results[identifier]

    def results(self) -> list[DatasetResult]:
        with self._lock:
            return list(self._results.values())
