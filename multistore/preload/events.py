"""Progress events of a preload, so any display (tables, logs, JSON) can follow it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Phase = Literal["waiting", "download", "verify", "unpack", "convert", "done", "failed", "skipped"]


@dataclass(frozen=True)
class PreloadEvent:
    """One step of preloading ``data_id`` (a file key) of ``store`` (e.g. ``zenodo:13333034``).

    ``bytes_*`` count downloaded bytes, ``files_*`` count unpacked or
    converted files of the current phase; ``None`` when unknown.
    """

    store: str
    data_id: str
    phase: Phase
    bytes_done: int | None = None
    bytes_total: int | None = None
    files_done: int | None = None
    files_total: int | None = None
    message: str = ""

    @property
    def fraction(self) -> float | None:
        """Progress of the current phase in [0, 1], when it can be known."""
        if self.phase in ("done", "skipped"):
            return 1.0
        if self.bytes_total:
            return min(1.0, (self.bytes_done or 0) / self.bytes_total)
        if self.files_total:
            return min(1.0, (self.files_done or 0) / self.files_total)
        return None


ProgressCallback = Callable[[PreloadEvent], None]
