"""JSON lines (``--log-format json``): one object per status change, then a summary."""

from __future__ import annotations

import json
import threading
import time
from typing import TextIO

from ..status import DatasetResult, StatusBoard
from .base import Display


def result_record(r: DatasetResult) -> dict:
    return {
        "dataset": r.identifier,
        "kind": r.kind,
        "status": str(r.status),
        "progress": None if r.progress is None else round(r.progress, 4),
        "output": r.output,
        "message": r.message,
        "duration_s": None if r.duration_s is None else round(r.duration_s, 3),
    }


class JsonDisplay(Display):
    def __init__(self, stream: TextIO):
        self._stream = stream
        self._lock = threading.Lock()

    def _emit(self, record: dict) -> None:
        with self._lock:
            self._stream.write(json.dumps(record) + "\n")
            self._stream.flush()

    def on_update(self, r: DatasetResult) -> None:
        self._emit({"event": "status", "time": time.time(), **result_record(r)})

    def stop(self, board: StatusBoard) -> None:
        self._emit(
            {
                "event": "summary",
                "time": time.time(),
                "results": [result_record(r) for r in board.results()],
            }
        )
