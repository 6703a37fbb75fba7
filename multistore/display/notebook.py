"""An HTML table updated in place in Jupyter (one display handle, throttled updates)."""

from __future__ import annotations

import html
import threading
import time
from typing import Any

from ..status import DatasetResult, Status, StatusBoard
from .base import Display, rows

_COLOURS = {
    Status.COMPLETED: "#2e7d32",
    Status.SKIPPED: "#b28704",
    Status.FAILED: "#c62828",
    Status.WAITING: "#777",
}


def results_html(results: list[DatasetResult], title: str = "") -> str:
    head = "".join(
        f"<th style='text-align:left'>{c}</th>"
        for c in ("dataset", "status", "progress", "time", "details")
    )
    body = []
    for row in rows(results):
        colour = _COLOURS.get(row.status, "#1565c0")
        bar = ""
        if row.progress:
            bar = (
                f"<progress value='{row.progress.rstrip('%')}' max='100'></progress> {row.progress}"
            )
        body.append(
            "<tr>"
            f"<td>{html.escape(row.identifier)}</td>"
            f"<td style='color:{colour};font-weight:bold'>{row.status}</td>"
            f"<td>{bar}</td><td>{row.duration}</td>"
            f"<td style='text-align:left'>{html.escape(row.details)}</td>"
            "</tr>"
        )
    caption = (
        f"<caption style='text-align:left'><b>{html.escape(title)}</b></caption>" if title else ""
    )
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class NotebookDisplay(Display):
    MIN_INTERVAL_S = 0.25

    def __init__(self, title: str, handle: Any = None):
        """``handle``: where updates go (``.update(html)``); default: a new IPython display."""
        self._title = title
        self._handle = handle
        self._board: StatusBoard | None = None
        self._lock = threading.Lock()
        self._last = 0.0

    def start(self, board: StatusBoard) -> None:
        from IPython.display import HTML, display

        self._board = board
        first = HTML(results_html(board.results(), self._title))
        with self._lock:
            if self._handle is None:
                self._handle = display(first, display_id=True)
            else:
                self._handle.update(first)

    def on_update(self, r: DatasetResult) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.MIN_INTERVAL_S and not r.status.is_final:
                return
            self._last = now
            self._send()

    def _refresh(self) -> None:
        with self._lock:
            self._send()

    def _send(self) -> None:
        """Snapshot and send in one critical section (hold ``_lock``): updates from
        parallel cubes then reach the notebook in snapshot order, never older after newer."""
        from IPython.display import HTML

        if self._handle is not None and self._board is not None:
            self._handle.update(HTML(results_html(self._board.results(), self._title)))

    def stop(self, board: StatusBoard) -> None:
        self._refresh()
