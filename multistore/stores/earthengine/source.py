"""Fetching one output chunk of one time step, inside dask tasks (threads or processes).

``ChunkSource`` is the only object a dask graph of this store holds: small,
picklable, and able to set up the ``ee`` client itself in a fresh worker.
It reads the chunk from the tile cache when there, else fetches its planned
requests, then turns sentinels into fill values and applies scales.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...retry import RetryPolicy
from .fetch import FetchCounters, PixelGrid, fetch_window
from .planner import ChunkPlan
from .query import Recipe, Step
from .resume import TileCache, tile_key
from .session import SessionParams, ensure_initialized


@dataclass(frozen=True)
class ChunkSource:
    """Fetches one output chunk of one time step: ``source(t, chunk_index) -> {band: array}``.

    Picklable: a worker process initialises the ``ee`` client from ``session``
    on its first call.
    """

    session: SessionParams
    recipe: Recipe
    steps: tuple[Step, ...]
    pixel_grid: PixelGrid
    chunks: tuple[ChunkPlan, ...]
    request_bands: tuple[str, ...]
    request_dtypes: tuple[str, ...]
    out_dtypes: Mapping[str, str]
    fills: Mapping[str, float]
    sentinels: Mapping[str, float]
    scales: Mapping[str, tuple[float, float]]
    policy: RetryPolicy
    counters: FetchCounters
    cache: TileCache | None
    data_id: str

    def __call__(self, t: int, ci: int) -> dict[str, np.ndarray]:
        return self.postprocess(self.raw(t, ci))

    def key(self, t: int, ci: int) -> str:
        w = self.chunks[ci].chunk
        return tile_key(
            [
                self.recipe.describe(self.steps[t]),
                self.pixel_grid.crs_value,
                self.pixel_grid.transform,
                [w.col_off, w.row_off, w.width, w.height],
                list(self.request_bands),
                list(self.request_dtypes),
            ]
        )

    def raw(self, t: int, ci: int) -> np.ndarray:
        """The chunk's structured array as the server sent it (sentinels in masked pixels)."""
        key = self.key(t, ci) if self.cache is not None else ""
        if self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None:
                return cached
        ensure_initialized(self.session)
        chunk = self.chunks[ci].chunk
        step = self.steps[t]
        what = f"{self.data_id} step {t}"
        out = np.zeros(
            (chunk.height, chunk.width),
            dtype=list(zip(self.request_bands, self.request_dtypes, strict=True)),
        )
        for req in self.chunks[ci].requests:
            arr = fetch_window(
                lambda: step_expression(self.recipe, step),
                self.pixel_grid,
                req,
                self.request_bands,
                self.request_dtypes,
                self.policy,
                self.counters,
                what,
            )
            r, c = req.row_off - chunk.row_off, req.col_off - chunk.col_off
            out[r : r + req.height, c : c + req.width] = arr
        if self.cache is not None:
            self.cache.put(key, out)
        return out

    def postprocess(self, arr: np.ndarray) -> dict[str, np.ndarray]:
        result = {}
        for b in self.request_bands:
            raw = arr[b]
            masked = raw == np.asarray(self.sentinels[b], dtype=raw.dtype)
            out_dt = np.dtype(self.out_dtypes[b])
            if b in self.scales:
                scale, offset = self.scales[b]
                values = (raw.astype("float64") * scale + offset).astype(out_dt)
            else:
                values = raw.astype(out_dt, copy=True)
            fill = self.fills[b]
            values[masked] = (
                np.nan if fill is None or (isinstance(fill, float) and math.isnan(fill)) else fill
            )
            result[b] = values
        return result


def _encoded_step_image(recipe: Recipe, step: Step) -> Any:
    import ee

    return ee.serializer.encode(recipe.image(step))


_cached_step_expression = functools.lru_cache(maxsize=64)(_encoded_step_image)


def step_expression(recipe: Recipe, step: Step) -> Any:
    """The step's ``ee.Image`` serialised by ee's serializer, once per process: building
    and serialising it costs client CPU on every request otherwise, which limits
    throughput at high concurrency."""
    try:
        return _cached_step_expression(recipe, step)
    except TypeError:  # an unhashable filter value (e.g. a list)
        return _encoded_step_image(recipe, step)
