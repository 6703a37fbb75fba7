"""A live rich table in the terminal, and a summary table at the end."""

from __future__ import annotations

from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ..status import DatasetResult, StatusBoard
from .base import STATUS_STYLE, Display, rows


def results_table(results: list[DatasetResult], title: str) -> Table:
    table = Table(title=title, expand=False)
    for col in ("dataset", "status", "progress", "time", "details"):
        table.add_column(col, overflow="fold")
    for row in rows(results):
        name = row.identifier if row.kind == "dataset" else f"[italic]{row.identifier}[/]"
        table.add_row(
            name,
            f"[{STATUS_STYLE[row.status]}]{row.status}[/]",
            row.progress,
            row.duration,
            row.details,
        )
    return table


class RichDisplay(Display):
    def __init__(self, title: str, stream: TextIO | None = None):
        self._title = title
        self._console = Console(file=stream, stderr=stream is None)
        self._live: Live | None = None
        self._board: StatusBoard | None = None

    def _render(self) -> Table:
        return results_table(self._board.results() if self._board else [], self._title)

    def start(self, board: StatusBoard) -> None:
        self._board = board
        self._live = Live(
            get_renderable=self._render, console=self._console, refresh_per_second=4, transient=True
        )
        self._live.start()

    def stop(self, board: StatusBoard) -> None:
        if self._live is not None:
            self._live.stop()
        self._console.print(results_table(board.results(), f"{self._title}: summary"))
