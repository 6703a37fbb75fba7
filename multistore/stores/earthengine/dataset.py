"""An opened query (``Prepared``: images, steps, grid, planned requests, band handling)
and the lazy dataset that fetches its pixels."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from ...errors import SourceOpenError
from ...grid import TargetGrid
from ...retry import RetryPolicy
from .export import ExportSettings
from .fetch import FetchCounters
from .gcs import geotiff_source
from .grids import pixel_grid
from .planner import ChunkPlan, RequestPlan
from .query import (
    ImageInfo,
    Query,
    Recipe,
    Step,
)
from .resume import TileCache
from .session import SessionParams
from .source import ChunkSource


@dataclass(frozen=True)
class Prepared:
    """An opened query: images, time steps, grid, planned requests and band handling."""

    data_id: str
    query: Query
    images: tuple[ImageInfo, ...]
    steps: tuple[Step, ...]
    recipe: Recipe
    grid: TargetGrid
    chunks: tuple[ChunkPlan, ...]
    bands: tuple[str, ...]  # output order
    request_bands: tuple[str, ...]  # order in the NPY response (grouped by type)
    request_dtypes: tuple[str, ...]
    out_dtypes: dict[str, str]
    fills: dict[str, float]
    sentinels: dict[str, float]
    scales: dict[str, tuple[float, float]]
    names: dict[str, str]  # band -> variable name
    with_time: bool
    request_byte_limit: int
    params: dict[str, Any] = field(default_factory=dict)
    # gcs exports: per step the GeoTIFFs (bucket/object, row offset, col offset) to read
    export_files: tuple[tuple[tuple[str, int, int], ...], ...] | None = None


def lazy_dataset(
    p: Prepared,
    session: SessionParams,
    policy: RetryPolicy,
    counters: FetchCounters,
    byte_limit: int,
) -> xr.Dataset:
    """One dask block per output chunk and time step, all bands of a block fetched at once."""
    cache = (
        TileCache(p.params["tile_cache"], p.data_id, p.params.get("tile_cache_storage_options"))
        if p.params.get("tile_cache")
        else None
    )
    source = ChunkSource(
        session=session,
        recipe=p.recipe,
        steps=p.steps,
        pixel_grid=pixel_grid(p.grid),
        chunks=p.chunks,
        request_bands=p.request_bands,
        request_dtypes=p.request_dtypes,
        out_dtypes=p.out_dtypes,
        fills=p.fills,
        sentinels=p.sentinels,
        scales=p.scales,
        policy=policy,
        counters=counters,
        cache=cache,
        data_id=p.data_id,
    )
    if p.export_files is not None:
        source = geotiff_source(
            source, p.export_files, dict(p.params.get("export_storage_options") or {})
        )
    row_chunks, col_chunks = p.grid.chunks
    n_cols = len(col_chunks)
    token = tokenize(
        p.data_id,
        session.key,
        repr(p.recipe),
        p.grid.to_dict(),
        byte_limit,
        repr(p.steps),
        repr(p.export_files),
    )
    fetch_name = f"ee-fetch-{token}"
    n_steps = len(p.steps) if p.with_time else 1
    fetch_layer = {}
    for t in range(n_steps):
        for ci in range(len(p.chunks)):
            iy, ix = divmod(ci, n_cols)
            key = (fetch_name, t, iy, ix) if p.with_time else (fetch_name, iy, ix)
            fetch_layer[key] = (source, t, ci)
    coords: dict[str, Any] = dict(p.grid.coords())
    dims: tuple[str, ...] = (p.grid.y_name, p.grid.x_name)
    chunks: tuple[tuple[int, ...], ...] = (row_chunks, col_chunks)
    if p.with_time:
        times = pd.to_datetime([s.time_ms for s in p.steps], unit="ms")
        coords["time"] = xr.DataArray(np.asarray(times, dtype="datetime64[ns]"), dims="time")
        dims = ("time", *dims)
        chunks = ((1,) * n_steps, *chunks)
    data_vars = {}
    for b in p.bands:
        name = f"ee-{b}-{token}"
        layer = {(name, *key[1:]): (_band_block, key, b, p.with_time) for key in fetch_layer}
        graph = HighLevelGraph(
            {fetch_name: fetch_layer, name: layer}, {fetch_name: set(), name: {fetch_name}}
        )
        arr = da.Array(graph, name, chunks, dtype=np.dtype(p.out_dtypes[b]))
        attrs = {"grid_mapping": "spatial_ref", "source_band": b}
        if b in p.scales:
            attrs["scale_factor_applied"], attrs["add_offset_applied"] = p.scales[b]
        var = xr.DataArray(arr, dims=dims, attrs=attrs)
        var.encoding["_FillValue"] = p.fills[b]
        var.encoding["chunks"] = tuple(c[0] for c in chunks)
        data_vars[p.names[b]] = var
    attrs = {
        "source": "Google Earth Engine",
        "ee_data_id": p.data_id,
        "ee_temporal_resolution": p.params.get("temporal_resolution", "raw"),
        "ee_reducer": p.recipe.reducer,
        "ee_image_count": len(p.images),
    }
    if p.query.time_range:
        attrs["ee_time_range"] = list(p.query.time_range)
    if p.query.filters:
        attrs["ee_filters"] = [str(f) for f in p.query.filters]
    if not p.with_time and p.steps[0].time_ms is not None:
        attrs["time_start"] = pd.Timestamp(p.steps[0].time_ms, unit="ms").isoformat()
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _band_block(fetched: Mapping[str, np.ndarray], band: str, with_time: bool) -> np.ndarray:
    return fetched[band][np.newaxis] if with_time else fetched[band]


def plan_of(p: Prepared) -> RequestPlan:
    return RequestPlan(
        data_id=p.data_id,
        n_time_steps=len(p.steps) if p.with_time else 1,
        chunks=p.chunks,
        bands=p.request_bands,
        bytes_per_pixel=sum(np.dtype(dt).itemsize + 1 for dt in p.request_dtypes),
        request_byte_limit=p.request_byte_limit,
    )


def read_exports(
    p: Prepared, settings: ExportSettings, names: Sequence[str], steps: Sequence[Step]
) -> Prepared:
    """``p`` reading what its finished exports wrote (GeoTIFFs on GCS, or assets) instead
    of computing the recipe again."""
    from .gcs import exported_files

    if settings.via == "gcs":
        options = dict(settings.storage_options)
        files = []
        for name in names:
            found = exported_files(settings.bucket or "", name, options)
            if not found:
                raise SourceOpenError(
                    f"earthengine: the export of {p.data_id} finished but "
                    f"gs://{settings.bucket}/{name}*.tif is missing"
                )
            files.append(tuple(found))
        return dataclasses.replace(p, steps=tuple(steps), export_files=tuple(files))
    asset_ids = names
    recipe = Recipe(Query(asset_ids[0], False), "mosaic", p.recipe.bands, p.recipe.groups)
    exported_steps = tuple(
        Step(s.time_ms, image_id=a) for s, a in zip(steps, asset_ids, strict=True)
    )
    return dataclasses.replace(p, recipe=recipe, steps=exported_steps)
