"""What every display implements, plus the table rows they share."""

from __future__ import annotations

from dataclasses import dataclass

from ..status import DatasetResult, Status, StatusBoard

STATUS_STYLE = {
    Status.WAITING: "dim",
    Status.PRELOADING: "cyan",
    Status.OPENING: "cyan",
    Status.PROCESSING: "cyan",
    Status.REGRIDDING: "blue",
    Status.WRITING: "magenta",
    Status.COMPLETED: "green",
    Status.SKIPPED: "yellow",
    Status.FAILED: "bold red",
}


@dataclass(frozen=True)
class Row:
    identifier: str
    kind: str
    status: Status
    progress: str
    duration: str
    details: str


def row_of(r: DatasetResult) -> Row:
    progress = f"{r.progress:.0%}" if r.progress is not None else ""
    duration = f"{r.duration_s:.1f} s" if r.duration_s is not None else ""
    details = r.message
    if r.status in (Status.COMPLETED, Status.SKIPPED) and r.output:
        details = f"{r.output} — {r.message}" if r.message else r.output
    return Row(r.identifier, r.kind, r.status, progress, duration, details)


def rows(results: list[DatasetResult]) -> list[Row]:
    return [row_of(r) for r in results]


class Display:
    """A display that shows nothing (mode ``none``); the base of the others."""

    def start(self, board: StatusBoard) -> None:
        pass

    def on_update(self, result: DatasetResult) -> None:
        pass

    def stop(self, board: StatusBoard) -> None:
        pass
