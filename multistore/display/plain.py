"""Plain log lines for pipes, files and batch systems (one line per change)."""

from __future__ import annotations

import threading
import time
from typing import TextIO

from ..status import DatasetResult, Status, StatusBoard
from .base import Display, rows


class LogDisplay(Display):
    def __init__(self, stream: TextIO):
        self._stream = stream
        self._lock = threading.Lock()
        self._last: dict[str, tuple[Status, int]] = {}

    def on_update(self, r: DatasetResult) -> None:
        # progress is logged in steps of 10% so logs stay readable
        step = int((r.progress or 0) * 10)
        key = (r.status, step)
        with self._lock:
            if self._last.get(r.identifier) == key:
                return
            self._last[r.identifier] = key
            progress = f" {r.progress:.0%}" if r.progress is not None else ""
            message = f" - {r.message}" if r.message else ""
            stamp = time.strftime("%H:%M:%S")
            print(
                f"{stamp} {r.identifier}: {r.status}{progress}{message}",
                file=self._stream,
                flush=True,
            )

    def stop(self, board: StatusBoard) -> None:
        table = rows(board.results())
        if not table:
            return
        width = max(len(r.identifier) for r in table)
        lines = [f"{'dataset'.ljust(width)}  {'status':9}  {'time':>9}  details"]
        lines += [
            f"{r.identifier.ljust(width)}  {str(r.status):9}  {r.duration:>9}  {r.details}"
            for r in table
        ]
        with self._lock:
            print("summary:\n" + "\n".join(lines), file=self._stream, flush=True)
