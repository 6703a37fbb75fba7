"""Tile planning: which pixel requests fetch a grid, before any request is sent.

Earth Engine refuses requests over ``request_byte_limit`` bytes (counted as
width x height x sum over bands of (dtype bytes + 1 mask byte)) or over 32768
pixels per axis. Planning up front, with the mask byte counted and a 10 %
margin, means the server never has to reject a request; splitting after a
failure (as some tools do) wastes a round trip per tile and level.

Requests are aligned to the output chunks (the target grid's ``tile_size``),
so each dask block, and each Zarr chunk the writer stores, needs only its own
requests. A chunk too big for one request is split into a ``kx`` x ``ky``
regular sub-grid of that chunk, choosing the fewest requests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...errors import StoreError
from ...grid import Window

DEFAULT_REQUEST_BYTE_LIMIT = 50331648  # 48 MB, Earth Engine's limit
MAX_DIMENSION = 32768  # pixels per axis
SAFETY = 0.9  # plan to this share of the limit


class PlanError(StoreError, ValueError):
    """No request layout satisfies the limits (e.g. one pixel is bigger than the budget)."""


def bytes_per_pixel(dtypes: Sequence[np.dtype | str]) -> int:
    """Bytes Earth Engine counts per pixel: each band's size plus its mask byte."""
    return sum(np.dtype(dt).itemsize + 1 for dt in dtypes)


def request_bytes(width: int, height: int, dtypes: Sequence[np.dtype | str]) -> int:
    return width * height * bytes_per_pixel(dtypes)


def request_budget(request_byte_limit: int) -> int:
    return int(SAFETY * request_byte_limit)


@dataclass(frozen=True)
class ChunkPlan:
    """One output chunk (a dask block per time step) and the requests that fill it."""

    chunk: Window
    requests: tuple[Window, ...]  # absolute windows in the grid, tiling ``chunk``


@dataclass(frozen=True)
class RequestPlan:
    """What fetching a dataset costs, for ``multistore plan`` and the fetcher."""

    data_id: str
    n_time_steps: int
    chunks: tuple[ChunkPlan, ...]
    bands: tuple[str, ...]
    bytes_per_pixel: int
    request_byte_limit: int

    @property
    def requests_per_step(self) -> int:
        return sum(len(c.requests) for c in self.chunks)

    @property
    def n_requests(self) -> int:
        return self.n_time_steps * self.requests_per_step

    @property
    def bytes(self) -> int:
        """Bytes requested (Earth Engine's count, mask bytes included)."""
        per_step = sum(w.width * w.height for c in self.chunks for w in c.requests)
        return self.n_time_steps * per_step * self.bytes_per_pixel

    @property
    def max_request_bytes(self) -> int:
        sizes = [w.width * w.height for c in self.chunks for w in c.requests]
        return max(sizes, default=0) * self.bytes_per_pixel

    @property
    def tiles(self) -> tuple[Window, ...]:
        return tuple(w for c in self.chunks for w in c.requests)

    def __str__(self) -> str:
        return (
            f"{self.n_requests} requests, {_mb(self.bytes)} ({len(self.chunks)} chunks x "
            f"{self.n_time_steps} time steps; largest request {_mb(self.max_request_bytes)} "
            f"of the {_mb(self.request_byte_limit)} limit)"
        )

    def summary(self) -> dict[str, object]:
        return {
            "data_id": self.data_id,
            "time_steps": self.n_time_steps,
            "chunks": len(self.chunks),
            "requests": self.n_requests,
            "bytes": self.bytes,
            "max_request_bytes": self.max_request_bytes,
            "request_byte_limit": self.request_byte_limit,
        }


def split_counts(
    width: int, height: int, bpp: int, budget: int, max_dimension: int = MAX_DIMENSION
) -> tuple[int, int]:
    """The fewest ``(kx, ky)`` pieces so that every piece fits the budget and the axis limit."""
    if bpp > budget:
        raise PlanError(
            f"one pixel needs {bpp} bytes, more than the request budget of {budget} bytes"
        )
    best: tuple[int, int, int, float] | None = None  # (count, kx, ky, squareness)
    kx = max(1, math.ceil(width / max_dimension))
    while kx <= width:
        piece_w = math.ceil(width / kx)
        rows_fit = min(max_dimension, budget // (bpp * piece_w))
        if rows_fit >= 1:
            ky = math.ceil(height / rows_fit)
            count = kx * ky
            piece_h = math.ceil(height / ky)
            squareness = abs(math.log(piece_w / piece_h))
            if best is None or (count, squareness) < (best[0], best[3]):
                best = (count, kx, ky, squareness)
        if best is not None and kx >= best[0]:
            break
        kx += 1
    assert best is not None  # kx == width gives piece_w 1, which fits since bpp <= budget
    return best[1], best[2]


def split_window(window: Window, kx: int, ky: int) -> tuple[Window, ...]:
    """A regular ``kx`` x ``ky`` sub-grid of ``window`` (last row/column may be smaller)."""
    pw, ph = math.ceil(window.width / kx), math.ceil(window.height / ky)
    out = []
    for r in range(window.row_off, window.row_off + window.height, ph):
        for c in range(window.col_off, window.col_off + window.width, pw):
            out.append(
                Window(
                    c,
                    r,
                    min(pw, window.col_off + window.width - c),
                    min(ph, window.row_off + window.height - r),
                )
            )
    return tuple(out)


def plan_chunks(
    windows: Sequence[Window],
    dtypes: Sequence[np.dtype | str],
    request_byte_limit: int = DEFAULT_REQUEST_BYTE_LIMIT,
    max_dimension: int = MAX_DIMENSION,
) -> tuple[ChunkPlan, ...]:
    """The requests for each output chunk."""
    bpp = bytes_per_pixel(dtypes)
    budget = request_budget(request_byte_limit)
    plans = []
    for window in windows:
        kx, ky = split_counts(window.width, window.height, bpp, budget, max_dimension)
        plans.append(ChunkPlan(window, split_window(window, kx, ky)))
    return tuple(plans)


def quarter(window: Window) -> tuple[Window, ...]:
    """Four (or two, for 1-pixel-wide windows) parts: the fallback after a size error."""
    kx = 2 if window.width > 1 else 1
    ky = 2 if window.height > 1 else 1
    if kx == ky == 1:
        raise PlanError(f"a single pixel at {window} is rejected as too large")
    return split_window(window, kx, ky)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} B"
