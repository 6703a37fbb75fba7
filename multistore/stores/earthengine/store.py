"""``earthengine``: an xcube data store for Google Earth Engine images and collections.

Opening is cheap and lazy: one ``getInfo`` lists the query's images (ids,
dates, band types, native grid), the planner lays out the pixel requests,
and the result is a dask-backed dataset with one block per output chunk and
time step. Pixels are fetched only when the writer computes a block, all
bands of a block in one request (or a few, when the planner splits it).
Compositing (mosaic, mean, ...) and reprojection happen server-side, onto the
project's target grid when one is given, so no local regrid is needed.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import pyproj
import xarray as xr
from affine import Affine
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph
from xcube.core.store import DATASET_TYPE, DataStore, DataTypeLike
from xcube.core.store.descriptor import DatasetDescriptor, VariableDescriptor
from xcube.util.jsonschema import (
    JsonArraySchema,
    JsonBooleanSchema,
    JsonComplexSchema,
    JsonIntegerSchema,
    JsonNumberSchema,
    JsonObjectSchema,
    JsonStringSchema,
)

from ...errors import ConfigError, FetchError, Problem, SourceGridError, SourceOpenError
from ...filters import parse_comparison
from ...grid import TargetGrid
from ..contract import open_progress
from .catalog import CATALOG_TTL_S, CATALOG_URL, CatalogEntry, fetcher, load_catalog
from .export import (
    EXPORT_DESTINATIONS,
    ExportSettings,
    cancel_task,
    delete_exports,
    export_steps,
    submit_steps,
    task_list,
    task_status,
)
from .fetch import FetchCounters, PixelGrid, RetryPolicy, call_with_retries
from .gcs import geotiff_source
from .planner import DEFAULT_REQUEST_BYTE_LIMIT, ChunkPlan, RequestPlan, plan_chunks
from .query import (
    EE_TYPE,
    REDUCERS,
    RESAMPLING,
    TEMPORAL_RESOLUTIONS,
    BandGroup,
    ImageInfo,
    MaskRule,
    Processing,
    Query,
    Recipe,
    Step,
    image_info,
    list_images,
    time_steps,
)
from .resume import TileCache
from .session import DEFAULT_CONCURRENCY, HIGH_VOLUME_URL, SessionParams, ensure_initialized
from .source import ChunkSource

LOG = logging.getLogger(__name__)

DEFAULT_TILE_SIZE = 1024


# -- parameters ------------------------------------------------------------------------


def _store_params_schema() -> JsonObjectSchema:
    return JsonObjectSchema(
        properties=dict(
            project=JsonStringSchema(title="Google Cloud project used for quota and billing"),
            url=JsonStringSchema(default=HIGH_VOLUME_URL, title="Earth Engine API base URL"),
            credentials=JsonStringSchema(
                default="persistent",
                title="'persistent', 'none', a service-account key file path or the key JSON",
            ),
            max_concurrency=JsonIntegerSchema(minimum=1, default=DEFAULT_CONCURRENCY),
            request_byte_limit=JsonIntegerSchema(minimum=1024, default=DEFAULT_REQUEST_BYTE_LIMIT),
            max_retries=JsonIntegerSchema(minimum=0, maximum=50, default=6),
            deadline_s=JsonNumberSchema(exclusive_minimum=0, default=120.0),
            backoff_s=JsonNumberSchema(minimum=0, default=0.5),
            catalog_url=JsonStringSchema(
                default=CATALOG_URL, title="root of the STAC catalog for search/describe"
            ),
            catalog_cache=JsonStringSchema(
                title="folder caching the catalog (default ~/.cache/multistore/earthengine)"
            ),
            catalog_ttl_s=JsonNumberSchema(minimum=0, default=CATALOG_TTL_S),
        ),
        additional_properties=False,
    )


def _open_params_schema() -> JsonObjectSchema:
    mask_rule = JsonObjectSchema(
        properties=dict(
            band=JsonStringSchema(min_length=1),
            values=JsonArraySchema(items=JsonNumberSchema(), min_items=1),
            bits=JsonArraySchema(items=JsonIntegerSchema(minimum=0, maximum=62), min_items=1),
        ),
        required=["band"],
        additional_properties=False,
    )
    number_or_pair = JsonComplexSchema(
        one_of=[
            JsonNumberSchema(),
            JsonArraySchema(items=JsonNumberSchema(), min_items=2, max_items=2),
        ]
    )
    return JsonObjectSchema(
        properties=dict(
            time_range=JsonArraySchema(items=JsonStringSchema(), min_items=2, max_items=2),
            mask=JsonComplexSchema(one_of=[mask_rule, JsonArraySchema(items=mask_rule)]),
            expressions=JsonObjectSchema(
                additional_properties=JsonStringSchema(min_length=1),
                title="{band name: ee.Image.expression text}, evaluated per image",
            ),
            resampling=JsonStringSchema(enum=list(RESAMPLING)),
            image_hook=JsonObjectSchema(
                properties=dict(
                    module_path=JsonStringSchema(min_length=1),
                    function_name=JsonStringSchema(min_length=1),
                ),
                required=["module_path", "function_name"],
                additional_properties=False,
            ),
            bands=JsonComplexSchema(
                one_of=[
                    JsonArraySchema(items=JsonStringSchema(), min_items=1),
                    JsonObjectSchema(
                        properties=dict(
                            include=JsonArraySchema(items=JsonStringSchema(), min_items=1),
                            exclude=JsonArraySchema(items=JsonStringSchema()),
                        ),
                        additional_properties=False,
                    ),
                ]
            ),
            filters=JsonArraySchema(items=JsonStringSchema()),
            temporal_resolution=JsonStringSchema(enum=TEMPORAL_RESOLUTIONS, default="raw"),
            reducer=JsonStringSchema(enum=REDUCERS, default="mosaic"),
            rename_map=JsonObjectSchema(additional_properties=JsonStringSchema()),
            scale_map=JsonObjectSchema(additional_properties=number_or_pair),
            fill_value=JsonNumberSchema(nullable=True),
            fill_values=JsonObjectSchema(additional_properties=JsonNumberSchema(nullable=True)),
            target_grid=JsonObjectSchema(additional_properties=True),
            crs=JsonStringSchema(),
            scale=number_or_pair,
            bbox=JsonArraySchema(items=JsonNumberSchema(), min_items=4, max_items=4),
            tile_size=JsonComplexSchema(
                one_of=[
                    JsonIntegerSchema(minimum=1),
                    JsonArraySchema(items=JsonIntegerSchema(minimum=1), min_items=2, max_items=2),
                ]
            ),
            tile_cache=JsonStringSchema(
                title="folder or fsspec URL keeping fetched tiles (resume)"
            ),
            tile_cache_storage_options=JsonObjectSchema(additional_properties=True),
            with_time=JsonBooleanSchema(title="keep a time dimension for a single image"),
            export_via=JsonStringSchema(
                enum=list(EXPORT_DESTINATIONS),
                title="compute each time step in a batch export task first",
            ),
            export_asset_root=JsonStringSchema(
                title="folder for exported assets: projects/<p>/assets/<dir>"
            ),
            export_bucket=JsonStringSchema(title="Cloud Storage bucket (export_via: gcs)"),
            export_prefix=JsonStringSchema(
                default="multistore", title="object name prefix (gcs) or Drive folder (drive)"
            ),
            export_file_dimensions=JsonIntegerSchema(
                minimum=1,
                title="split exported GeoTIFFs into files of this many pixels per side "
                "(Earth Engine wants a multiple of 256)",
            ),
            export_storage_options=JsonObjectSchema(
                additional_properties=True,
                title="gcsfs options for reading gcs exports (token, endpoint_url, ...)",
            ),
            export_poll_s=JsonNumberSchema(exclusive_minimum=0, default=10.0),
            alignment_group=JsonStringSchema(
                min_length=1,
                title="without a grid: only the images on this native grid (see alignment_groups)",
            ),
            keep_exports=JsonBooleanSchema(
                default=False,
                title="keep exported assets / Cloud Storage files after the cube is complete",
            ),
            export_timeout_s=JsonNumberSchema(exclusive_minimum=0),
        ),
        additional_properties=False,
    )


def _validate(schema: JsonObjectSchema, params: Mapping[str, Any], where: str) -> None:
    import jsonschema

    validator = jsonschema.Draft7Validator(schema.to_dict())
    problems = [
        Problem(".".join([where, *map(str, e.absolute_path)]), e.message)
        for e in sorted(validator.iter_errors(dict(params)), key=str)
    ]
    if problems:
        raise ConfigError(problems)


@dataclass(frozen=True)
class _Prepared:
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


# -- the store -------------------------------------------------------------------------


class EarthEngineDataStore(DataStore):
    """Earth Engine ImageCollections and Images as lazy datasets, fetched in planned tiles."""

    def __init__(self, **store_params: Any):
        _validate(_store_params_schema(), store_params, "store_params")
        self._session = SessionParams(
            project=store_params.get("project"),
            url=store_params.get("url", HIGH_VOLUME_URL).rstrip("/"),
            credentials=store_params.get("credentials", "persistent"),
            max_concurrency=store_params.get("max_concurrency", DEFAULT_CONCURRENCY),
            max_retries=store_params.get("max_retries", 6),
            deadline_s=float(store_params.get("deadline_s", 120.0)),
        )
        self._byte_limit = int(store_params.get("request_byte_limit", DEFAULT_REQUEST_BYTE_LIMIT))
        self._policy = RetryPolicy(
            max_retries=self._session.max_retries,
            backoff_s=float(store_params.get("backoff_s", 0.5)),
        )
        self.counters = FetchCounters()
        self._catalog_url = store_params.get("catalog_url", CATALOG_URL)
        self._catalog_cache = store_params.get("catalog_cache")
        self._catalog_ttl_s = float(store_params.get("catalog_ttl_s", CATALOG_TTL_S))
        self._catalog_entries: list[CatalogEntry] | None = None
        # exports read by datasets opened here, until the pipeline releases them
        self._exports: dict[str, tuple[ExportSettings, list[str]]] = {}
        # called with (finished, total) while batch exports run, e.g. by a status display
        self.export_progress: Callable[[int, int], None] | None = None

    def __repr__(self) -> str:
        return f"EarthEngineDataStore(url={self._session.url!r}, project={self._session.project!r})"

    # -- xcube DataStore API -------------------------------------------------------------

    @classmethod
    def get_data_store_params_schema(cls) -> JsonObjectSchema:
        return _store_params_schema()

    @classmethod
    def get_data_types(cls) -> tuple[str, ...]:
        return (DATASET_TYPE.alias,)

    def get_data_types_for_data(self, data_id: str) -> tuple[str, ...]:
        return (DATASET_TYPE.alias,)

    def get_data_ids(
        self, data_type: DataTypeLike = None, include_attrs: Any = False
    ) -> Iterator[Any]:
        """The ids of the public catalog (``catalog_url``): the API itself cannot enumerate
        it. Any other ImageCollection or Image asset id can still be opened."""
        for entry in self.catalog():
            yield (entry.id, {"title": entry.title}) if include_attrs else entry.id

    def has_data(self, data_id: str, data_type: DataTypeLike = None) -> bool:
        try:
            self._asset_kind(data_id)
        except FetchError as e:
            if not e.permanent:  # still unreachable after retries: not an answer
                raise
            return False
        except SourceOpenError:
            return False
        return True

    def get_data_opener_ids(
        self, data_id: str | None = None, data_type: DataTypeLike = None
    ) -> tuple[str, ...]:
        return ("dataset:earthengine:earthengine",)

    def get_open_data_params_schema(
        self, data_id: str | None = None, opener_id: str | None = None
    ) -> JsonObjectSchema:
        return _open_params_schema()

    def open_data(
        self, data_id: str, opener_id: str | None = None, **open_params: Any
    ) -> xr.Dataset:
        prepared = self._prepare(data_id, open_params)
        if open_params.get("export_via"):
            self._export_settings(open_params)  # before any task starts
            prepared = self._exported(prepared)
        return self._dataset(prepared)

    def describe_data(
        self, data_id: str, data_type: DataTypeLike = None, **open_params: Any
    ) -> DatasetDescriptor:
        """Bands with dtypes, resolution, time extent and image count for the query."""
        p = self._prepare(data_id, open_params)
        times = [i.time for i in p.images if i.time is not None]
        t_dims = {"time": len(p.steps)} if p.with_time else {}
        dims = {**t_dims, p.grid.y_name: p.grid.height, p.grid.x_name: p.grid.width}
        var_dims = (*t_dims, p.grid.y_name, p.grid.x_name)
        west, south, east, north = p.grid.bounds
        crs = p.grid.crs
        return DatasetDescriptor(
            data_id=data_id,
            crs=f"EPSG:{crs.to_epsg()}" if crs.to_epsg() else crs.to_wkt(),
            bbox=[west, south, east, north],
            time_range=[times[0].strftime("%Y-%m-%d"), times[-1].strftime("%Y-%m-%d")]
            if times
            else None,
            spatial_res=p.grid.resolution[0],
            dims=dims,
            data_vars={
                p.names[b]: VariableDescriptor(
                    p.names[b], p.out_dtypes[b], var_dims, attrs={"band": b}
                )
                for b in p.bands
            },
            attrs={
                "image_count": len(p.images),
                "time_steps": len(p.steps),
                "native_band_types": dict(p.images[0].band_types),
                "requests": plan_of(p).n_requests,
            },
        )

    def get_search_params_schema(self, data_type: DataTypeLike = None) -> JsonObjectSchema:
        schema = _open_params_schema()
        return JsonObjectSchema(
            properties=dict(
                data_id=JsonStringSchema(title="ImageCollection id"),
                time_range=schema.properties["time_range"],
                filters=schema.properties["filters"],
            ),
            required=["data_id"],
            additional_properties=False,
        )

    def search_data(
        self, data_type: DataTypeLike = None, **search_params: Any
    ) -> Iterator[DatasetDescriptor]:
        """One descriptor per image of a collection query (``data_id``, ``time_range``, ``filters``)."""
        _validate(self.get_search_params_schema(), search_params, "search_params")
        params = dict(search_params)
        collection = params.pop("data_id")
        for info in self._images(collection, params):
            yield DatasetDescriptor(
                data_id=info.id,
                crs=info.crs,
                time_range=(info.time.isoformat(), info.time.isoformat())
                if info.time is not None
                else None,
                data_vars={b: VariableDescriptor(b, dt, ("y", "x")) for b, dt in info.band_types},
                attrs={
                    k: v for k, v in info.properties.items() if isinstance(v, str | int | float)
                },
            )

    # -- multistore extras ---------------------------------------------------------------

    def catalog(self) -> list[CatalogEntry]:
        """The public catalog's datasets, read once per store (and cached on disk)."""
        if self._catalog_entries is None:
            import requests

            cache = (
                Path(self._catalog_cache).expanduser()
                if self._catalog_cache
                else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                / "multistore"
                / "earthengine"
            )
            with requests.Session() as session:
                fetch = fetcher(session, self._policy, self.counters, self._session.deadline_s)
                self._catalog_entries = load_catalog(
                    self._catalog_url,
                    fetch,
                    cache,
                    self._catalog_ttl_s,
                    max_workers=self._session.max_concurrency,
                )
        return self._catalog_entries

    def search_catalog(
        self,
        text: str | None = None,
        bbox: Sequence[float] | None = None,
        time_range: Sequence[str | None] | None = None,
    ) -> list[CatalogEntry]:
        """Catalog datasets matching all words of ``text``, intersecting ``bbox`` (lon/lat)
        and ``time_range``."""
        return [e for e in self.catalog() if e.matches(text, bbox, time_range)]

    def catalog_entry(self, data_id: str) -> CatalogEntry:
        """One dataset of the catalog; ``SourceOpenError`` naming close ids when unknown."""
        entries = {e.id: e for e in self.catalog()}
        if data_id in entries:
            return entries[data_id]
        close = difflib.get_close_matches(data_id, list(entries), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise SourceOpenError(f"earthengine: {data_id!r} is not in the catalog{hint}")

    def search(self, data_id: str, **params: Any) -> list[tuple[str, pd.Timestamp | None]]:
        """Image ids and dates of a query (``time_range``, ``filters``), oldest first."""
        _validate(self.get_search_params_schema(), {"data_id": data_id, **params}, "search_params")
        return [(i.id, i.time) for i in self._images(data_id, params)]

    def source_identity(self, data_id: str, **open_params: Any) -> dict[str, Any]:
        """Image ids with ``system:version`` and the resolved bands (for lockfiles)."""
        images = self._images(data_id, open_params)
        native = [b for b, _ in images[0].band_types] if images else []
        return {
            "content": {
                "images": [
                    {"id": i.id, "version": i.version, "time_ms": i.time_ms} for i in images
                ],
                "bands": list(open_params.get("bands") or native),
            }
        }

    def plan_requests(self, data_id: str, **open_params: Any) -> RequestPlan:
        """The pixel requests ``open_data`` would send (for ``multistore plan``)."""
        return plan_of(self._prepare(data_id, open_params))

    # -- preparation ---------------------------------------------------------------------

    def _asset_kind(self, data_id: str) -> bool:
        """True for ImageCollections, False for Images."""
        import ee

        ensure_initialized(self._session)
        asset = call_with_retries(
            lambda: ee.data.getAsset(data_id),
            self._policy,
            self.counters,
            f"reading asset {data_id!r}",
        )
        kind = asset.get("type")
        if kind not in ("IMAGE", "IMAGE_COLLECTION"):
            raise SourceOpenError(
                f"earthengine: {data_id!r} is a {kind}, not an Image or ImageCollection"
            )
        return kind == "IMAGE_COLLECTION"

    def _images(self, data_id: str, params: Mapping[str, Any]) -> list[ImageInfo]:
        query = self._query(data_id, params, self._asset_kind(data_id))
        return list_images(query, self._policy, self.counters)

    @staticmethod
    def _query(data_id: str, params: Mapping[str, Any], is_collection: bool) -> Query:
        filters = tuple(
            parse_comparison(f, f"open_params.filters[{i}]")
            for i, f in enumerate(params.get("filters") or ())
        )
        time_range = tuple(params["time_range"]) if params.get("time_range") else None
        if not is_collection:
            if filters or time_range:
                LOG.info(
                    "earthengine: %s is one image; time_range and filters are ignored", data_id
                )
            return Query(data_id, False)
        return Query(data_id, True, time_range, filters)

    def _prepare(self, data_id: str, params: Mapping[str, Any]) -> _Prepared:
        _validate(_open_params_schema(), params, "open_params")
        is_collection = self._asset_kind(data_id)
        query = self._query(data_id, params, is_collection)
        images = list_images(query, self._policy, self.counters)
        if not images:
            raise SourceOpenError(
                f"earthengine: no image of {data_id} matches the query "
                f"(time_range={params.get('time_range')}, filters={params.get('filters')})"
            )
        if params.get("alignment_group"):
            groups = alignment_groups(images)
            wanted = params["alignment_group"]
            if wanted not in groups:
                raise SourceOpenError(
                    f"earthengine: no alignment group {wanted!r} among the images of "
                    f"{data_id}; groups: {sorted(groups)}"
                )
            members = set(groups[wanted])
            images = [i for i in images if i.id in members]
        native = dict(images[0].band_types)
        spec = params.get("bands")
        derived = list(params.get("expressions") or {})
        if isinstance(spec, list):  # a list may name expression bands, e.g. [B4, ndvi]
            bands = select_bands(data_id, [*native, *derived], spec)
        else:
            bands = select_bands(data_id, list(native), spec)
        processing = _processing(params, list(native))
        if processing is not None and (processing.expressions or processing.hook_path):
            # band math and hooks add bands: ask Earth Engine for the processed types
            first = images[0].id
            info = call_with_retries(
                lambda: image_info(processing.apply(_ee_image(first)).getInfo()),
                self._policy,
                self.counters,
                f"describing processed image {first}",
            )
            processed = dict(info.band_types)
            gone = [b for b in bands if b not in processed]
            if gone:
                raise SourceOpenError(
                    f"earthengine: image_hook removed band(s) {gone} of {data_id}; "
                    f"processed bands: {list(processed)}"
                )
            listed = isinstance(spec, list) and any(b in derived for b in spec)
            if not listed:  # a list naming expression bands picks them; else all are added
                bands = (*bands, *(b for b in processed if b not in native and b not in bands))
            native = processed
        resolution = params.get("temporal_resolution", "raw") if is_collection else "raw"
        reducer = params.get("reducer", "mosaic")
        steps = time_steps(images, resolution)

        scales = {b: _scale_pair(v) for b, v in (params.get("scale_map") or {}).items()}
        unknown = [b for b in scales if b not in bands]
        if unknown:
            raise ConfigError(
                [Problem("open_params.scale_map", f"no band(s) {unknown} among {list(bands)}")]
            )
        averaged = resolution != "raw" and reducer in ("mean", "median")
        req_dtype, out_dtype, fills, sentinels = {}, {}, {}, {}
        for b in bands:
            nat = np.dtype(native[b])
            req = np.dtype("float64" if nat == np.float64 else "float32") if averaged else nat
            out = np.dtype("float64" if req == np.float64 else "float32") if b in scales else req
            fill = _fill_value(b, out, params)
            req_dtype[b], out_dtype[b], fills[b] = req.name, out.name, fill
            sentinels[b] = _sentinel(req, None if b in scales else fill)
        groups: dict[tuple[str, float], list[str]] = {}
        for b in bands:
            groups.setdefault((req_dtype[b], sentinels[b]), []).append(b)
        band_groups = tuple(BandGroup(tuple(bs), EE_TYPE[dt], s) for (dt, s), bs in groups.items())
        request_bands = tuple(b for g in band_groups for b in g.bands)
        recipe = Recipe(query, reducer, bands, band_groups, processing)

        grid = self._grid(data_id, params, images, bands[0])
        request_dtypes = tuple(req_dtype[b] for b in request_bands)
        chunks = plan_chunks(list(grid.windows()), request_dtypes, self._byte_limit)
        rename = dict(params.get("rename_map") or {})
        names = {b: rename.get(b, b) for b in bands}
        with_time = is_collection or bool(params.get("with_time", False))
        return _Prepared(
            data_id,
            query,
            tuple(images),
            tuple(steps),
            recipe,
            grid,
            chunks,
            bands,
            request_bands,
            request_dtypes,
            out_dtype,
            fills,
            sentinels,
            scales,
            names,
            with_time,
            self._byte_limit,
            dict(params),
        )

    def _grid(
        self, data_id: str, params: Mapping[str, Any], images: list[ImageInfo], band: str
    ) -> TargetGrid:
        tile_size = params.get("tile_size", DEFAULT_TILE_SIZE)
        if params.get("target_grid"):
            try:
                return TargetGrid.from_dict(params["target_grid"])
            except (KeyError, TypeError, ValueError, pyproj.exceptions.CRSError) as e:
                raise ConfigError(
                    [Problem("open_params.target_grid", f"not a target grid: {e}")]
                ) from None
        if params.get("crs") or params.get("scale"):
            if not (params.get("crs") and params.get("scale") and params.get("bbox")):
                raise ConfigError(
                    [
                        Problem(
                            "open_params",
                            "crs, scale and bbox (in that crs) must be given together",
                        )
                    ]
                )
            return TargetGrid.from_bbox(params["bbox"], params["crs"], params["scale"], tile_size)
        return _native_grid(data_id, images, params.get("bbox"), tile_size)

    def _export_settings(self, params: Mapping[str, Any]) -> ExportSettings:
        via = params["export_via"]
        required = {"asset": ["export_asset_root"], "gcs": ["export_bucket"], "drive": []}[via]
        missing = [
            Problem(f"open_params.{name}", f"required with export_via: {via}")
            for name in required
            if not params.get(name)
        ]
        if missing:
            raise ConfigError(missing)
        root = params.get("export_asset_root") if via == "asset" else None
        return ExportSettings(
            via=via,
            root=root or params.get("export_prefix", "multistore"),
            bucket=params.get("export_bucket"),
            poll_s=float(params.get("export_poll_s", 10.0)),
            timeout_s=params.get("export_timeout_s"),
            file_dimensions=params.get("export_file_dimensions"),
            storage_options=tuple(sorted((params.get("export_storage_options") or {}).items())),
        )

    def _exported(self, p: _Prepared) -> _Prepared:
        """Run batch exports of every step, then read what they wrote instead."""
        from .gcs import exported_files

        settings = self._export_settings(p.params)
        steps = p.steps if p.with_time else p.steps[:1]
        progress = self.export_progress or _pipeline_progress(p.data_id)
        names = export_steps(
            p.recipe,
            steps,
            _pixel_grid(p.grid),
            p.grid.width,
            p.grid.height,
            settings,
            p.data_id,
            progress,
            self._policy,
            self.counters,
        )
        self._exports[_exports_key(p.data_id, p.params)] = (settings, list(names))
        if settings.via == "drive":
            raise SourceOpenError(
                f"earthengine: {p.data_id} was exported to Google Drive, folder "
                f"{settings.root!r}, files {', '.join(repr(n + '*.tif') for n in names)}; "
                "Drive exports cannot be read back into a cube: download them from Drive, "
                "or use export_via: gcs or asset"
            )
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

    # -- detached exports ----------------------------------------------------------------

    def submit_exports(self, data_id: str, **open_params: Any) -> list[tuple[str, str]]:
        """Start the export tasks ``open_data`` would wait for, and return at once:
        ``(export name, done | running | started)`` per time step."""
        if not open_params.get("export_via"):
            raise ConfigError([Problem("open_params.export_via", "required to submit exports")])
        p = self._prepare(data_id, open_params)
        settings = self._export_settings(open_params)
        return submit_steps(
            p.recipe,
            p.steps if p.with_time else p.steps[:1],
            _pixel_grid(p.grid),
            p.grid.width,
            p.grid.height,
            settings,
            data_id,
            self._policy,
            self.counters,
        )

    def alignment_groups(self, data_id: str, **params: Any) -> dict[str, list[str]]:
        """The query's images grouped by native grid (CRS + transform): ``{group: [ids]}``.
        Open one group with ``alignment_group: <group>`` and no grid mapping."""
        _validate(self.get_search_params_schema(), {"data_id": data_id, **params}, "search_params")
        return alignment_groups(self._images(data_id, params))

    def release_exports(self, data_id: str, **open_params: Any) -> int:
        """The cube built from ``open_data(data_id, **open_params)`` is complete: delete
        the exports it read, unless ``keep_exports``. The number of assets/files deleted."""
        entry = self._exports.pop(_exports_key(data_id, open_params), None)
        if entry is None or open_params.get("keep_exports"):
            return 0
        settings, names = entry
        ensure_initialized(self._session)
        deleted = delete_exports(settings, names, self._policy, self.counters)
        LOG.info("earthengine: deleted %d export(s) of %s", deleted, data_id)
        return deleted

    def list_tasks(self, state: str | None = None, recent: int | None = None) -> list[dict]:
        """The project's batch tasks, newest first (Earth Engine operations)."""
        ensure_initialized(self._session)
        tasks = call_with_retries(task_list, self._policy, self.counters, "listing tasks")
        if state:
            tasks = [t for t in tasks if t.get("state") == state.upper()]
        tasks = sorted(tasks, key=lambda t: t.get("creation_timestamp_ms") or 0, reverse=True)
        return tasks[:recent] if recent else tasks

    def task_states(self, task_ids: Sequence[str]) -> list[dict]:
        """The current status of each task (ids or operation names)."""
        ensure_initialized(self._session)
        return [
            call_with_retries(
                lambda i=i: task_status(i),
                self._policy,
                self.counters,
                f"reading task {i}",
            )
            for i in task_ids
        ]

    def wait_tasks(
        self,
        task_ids: Sequence[str],
        poll_s: float = 10.0,
        timeout_s: float | None = None,
        report: Callable[[dict], None] | None = None,
    ) -> list[dict]:
        """Poll until every task has ended; their final statuses (``report`` sees each end)."""
        import time

        start = time.monotonic()
        pending = list(task_ids)
        final: dict[str, dict] = {}
        while pending:
            for status in self.task_states(pending):
                if status.get("state") in _ENDED:
                    final[status["id"]] = status
                    if report is not None:
                        report(status)
            pending = [i for i in pending if _task_id(i) not in final]
            if not pending:
                break
            if timeout_s is not None and time.monotonic() - start > timeout_s:
                raise FetchError(f"earthengine: tasks {pending} not finished after {timeout_s} s")
            time.sleep(poll_s)
        return [final[_task_id(i)] for i in task_ids]

    def cancel_tasks(self, task_ids: Sequence[str]) -> None:
        """Cancel the tasks (ids or operation names); finished tasks are left as they are."""
        ensure_initialized(self._session)
        for i in task_ids:
            call_with_retries(
                lambda i=i: cancel_task(i),
                self._policy,
                self.counters,
                f"cancelling task {i}",
            )

    # -- the lazy dataset ----------------------------------------------------------------

    def _dataset(self, p: _Prepared) -> xr.Dataset:
        cache = (
            TileCache(p.params["tile_cache"], p.data_id, p.params.get("tile_cache_storage_options"))
            if p.params.get("tile_cache")
            else None
        )
        source = ChunkSource(
            session=self._session,
            recipe=p.recipe,
            steps=p.steps,
            pixel_grid=_pixel_grid(p.grid),
            chunks=p.chunks,
            request_bands=p.request_bands,
            request_dtypes=p.request_dtypes,
            out_dtypes=p.out_dtypes,
            fills=p.fills,
            sentinels=p.sentinels,
            scales=p.scales,
            policy=self._policy,
            counters=self.counters,
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
            self._session.key,
            repr(p.recipe),
            p.grid.to_dict(),
            self._byte_limit,
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


def _pipeline_progress(data_id: str) -> Callable[[int, int], None] | None:
    """Export progress for the pipeline's status table, when a dataset is being generated."""
    report = open_progress()
    if report is None:
        return None
    return lambda done, total: report(done, total, f"earthengine export {data_id}: {done}/{total}")


def _band_block(fetched: Mapping[str, np.ndarray], band: str, with_time: bool) -> np.ndarray:
    return fetched[band][np.newaxis] if with_time else fetched[band]


def plan_of(p: _Prepared) -> RequestPlan:
    return RequestPlan(
        data_id=p.data_id,
        n_time_steps=len(p.steps) if p.with_time else 1,
        chunks=p.chunks,
        bands=p.request_bands,
        bytes_per_pixel=sum(np.dtype(dt).itemsize + 1 for dt in p.request_dtypes),
        request_byte_limit=p.request_byte_limit,
    )


# -- helpers ---------------------------------------------------------------------------


def select_bands(data_id: str, native: list[str], spec: Any) -> tuple[str, ...]:
    """The bands to fetch: all, a list of names (in that order), or ``{include, exclude}``
    regular expressions matched in full against the native names (native order kept)."""
    if not spec:
        return tuple(native)
    if isinstance(spec, list | tuple):
        missing = [b for b in spec if b not in native]
        if missing:
            raise SourceOpenError(
                f"earthengine: {data_id} has no band(s) {missing}; bands: {native}"
            )
        return tuple(spec)
    patterns = {}
    for key in ("include", "exclude"):
        for i, text in enumerate(spec.get(key) or ()):
            try:
                patterns.setdefault(key, []).append(re.compile(text))
            except re.error as e:
                raise ConfigError(
                    [Problem(f"open_params.bands.{key}[{i}]", f"not a regular expression: {e}")]
                ) from None
    include = patterns.get("include") or [re.compile(".*")]
    exclude = patterns.get("exclude") or []
    picked = tuple(
        b
        for b in native
        if any(p.fullmatch(b) for p in include) and not any(p.fullmatch(b) for p in exclude)
    )
    if not picked:
        raise SourceOpenError(
            f"earthengine: no band of {data_id} matches bands {dict(spec)}; bands: {native}"
        )
    return picked


_ENDED = ("COMPLETED", "FAILED", "CANCELLED", "UNKNOWN")


def _task_id(name: str) -> str:
    """A task id from an id or an operation name (``projects/p/operations/<id>``)."""
    return name.rsplit("/", 1)[-1]


def _exports_key(data_id: str, params: Mapping[str, Any]) -> str:
    """Identifies an opened source among the exports to release; tile caches do not
    change what was exported."""
    keep = {k: v for k, v in params.items() if not k.startswith("tile_cache")}
    return json.dumps([data_id, keep], sort_keys=True, default=str)


def _ee_image(image_id: str) -> Any:
    import ee

    return ee.Image(image_id)


def _processing(params: Mapping[str, Any], native: list[str]) -> Processing | None:
    """The per-image processing of the open params, checked against the native bands."""
    import ast
    import hashlib
    from pathlib import Path

    masks_param = params.get("mask")
    rules = []
    if masks_param:
        for i, m in enumerate([masks_param] if isinstance(masks_param, dict) else masks_param):
            where = "open_params.mask" + ("" if isinstance(masks_param, dict) else f"[{i}]")
            if m["band"] not in native:
                raise ConfigError([Problem(f"{where}.band", f"no band {m['band']!r} in {native}")])
            if not m.get("values") and not m.get("bits"):
                raise ConfigError([Problem(where, "give values or bits to mask")])
            rules.append(
                MaskRule(m["band"], tuple(m.get("values") or ()), tuple(m.get("bits") or ()))
            )
    expressions = []
    known = list(native)
    for name, text in (params.get("expressions") or {}).items():
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError as e:
            raise ConfigError(
                [Problem(f"open_params.expressions.{name}", f"not an expression: {e.msg}")]
            ) from None
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        expressions.append((name, text, tuple(b for b in known if b in used)))
        known.append(name)
    hook = params.get("image_hook")
    hook_path = hook_fn = digest = None
    if hook:
        path = Path(hook["module_path"]).expanduser().resolve()
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as e:
            raise ConfigError(
                [Problem("open_params.image_hook.module_path", f"cannot read {path}: {e}")]
            ) from None
        hook_path, hook_fn = str(path), hook["function_name"]
    resampling = params.get("resampling")
    if not (rules or expressions or hook or (resampling and resampling != "nearest")):
        return None
    return Processing(tuple(rules), tuple(expressions), resampling, hook_path, hook_fn, digest)


def _scale_pair(value: Any) -> tuple[float, float]:
    if isinstance(value, list | tuple):
        return float(value[0]), float(value[1])
    return float(value), 0.0


def _fill_value(band: str, dtype: np.dtype, params: Mapping[str, Any]) -> float | int:
    """The user's fill value, else NaN for floats, the type's max (unsigned) or min (signed)."""
    per_band = params.get("fill_values") or {}
    value = per_band.get(band, params.get("fill_value"))
    if dtype.kind == "f":
        return float("nan") if value is None else float(value)
    info = np.iinfo(dtype)
    if value is None:
        return int(info.max if dtype.kind == "u" else info.min)
    if not float(value).is_integer() or not info.min <= value <= info.max:
        raise ConfigError(
            [
                Problem(
                    f"open_params.fill_values.{band}", f"{value} is not a valid {dtype.name} value"
                )
            ]
        )
    return int(value)


def _sentinel(req: np.dtype, fill: float | int | None) -> float | int:
    """The value masked pixels are set to server-side (JSON cannot carry NaN)."""
    if req.kind == "f":
        if fill is not None and not math.isnan(fill):
            return float(fill)
        return float(np.finfo(req).min)
    if fill is not None:
        return int(fill)
    info = np.iinfo(req)
    return int(info.max if req.kind == "u" else info.min)


def _pixel_grid(grid: TargetGrid) -> PixelGrid:
    epsg = grid.crs.to_epsg()
    t = grid.transform
    transform = (t.a, t.b, t.c, t.d, t.e, t.f)
    if epsg is not None:
        return PixelGrid("crsCode", f"EPSG:{epsg}", transform)
    return PixelGrid("crsWkt", grid.crs.to_wkt(pyproj.enums.WktVersion.WKT1_GDAL), transform)


def _native_grid(data_id: str, images: list[ImageInfo], bbox: Any, tile_size: Any) -> TargetGrid:
    """The images' own grid; all images must share it. ``bbox`` (lon/lat) crops it."""
    groups = alignment_groups(images)
    if len(groups) > 1:
        raise SourceGridError(
            f"earthengine: the images of {data_id} lie on {len(groups)} different native grids "
            f"({', '.join(sorted(groups))}); give crs, scale and bbox, or a grid_mapping, to put "
            "them on one grid, open one with alignment_group, or write one cube per group "
            "with `multistore ee download`"
        )
    crs, transform = images[0].crs, images[0].transform
    sizes = {i.dimensions for i in images if i.dimensions is not None}
    # same origin and pixel size: the group's grid covers its largest image
    dims = (max(d[0] for d in sizes), max(d[1] for d in sizes)) if sizes else None
    if crs is None or transform is None:
        raise SourceGridError(
            f"earthengine: {data_id} has no native grid; give crs, scale and bbox"
        )
    a, b, c, d, e, f = transform
    if b != 0 or d != 0 or a <= 0 or e >= 0:
        raise SourceGridError(
            f"earthengine: the native grid of {data_id} is not north-up ({transform})"
        )
    wkt = pyproj.CRS.from_user_input(crs).to_wkt()
    if bbox is None:
        if dims is None:
            raise SourceGridError(f"earthengine: {data_id} has no native size; give a bbox")
        return TargetGrid(wkt, Affine(a, 0.0, c, 0.0, e, f), dims[0], dims[1], _pair(tile_size))
    to_native = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    west, south, east, north = to_native.transform_bounds(*bbox)
    col0, col1 = _floor((west - c) / a), _ceil((east - c) / a)
    row0, row1 = _floor((f - north) / -e), _ceil((f - south) / -e)
    return TargetGrid(
        wkt,
        Affine(a, 0.0, c + col0 * a, 0.0, e, f + row0 * e),
        max(1, col1 - col0),
        max(1, row1 - row0),
        _pair(tile_size),
    )


def alignment_groups(images: Sequence[ImageInfo]) -> dict[str, list[str]]:
    """Images with identical native CRS and transform (origin and pixel size), by a group
    name made of the CRS and the origin, e.g. ``EPSG32632_x560000_y5000000_r10``."""
    by_key: dict[tuple[Any, Any], list[str]] = {}
    for img in images:
        by_key.setdefault((img.crs, img.transform), []).append(img.id)
    names: dict[str, list[str]] = {}
    for (crs, transform), ids in by_key.items():
        tag = re.sub(r"[^A-Za-z0-9]", "", str(crs or "nocrs"))[:24] or "crs"
        name = (
            f"{tag}_x{_num(transform[2])}_y{_num(transform[5])}_r{_num(abs(transform[0]))}"
            if transform
            else f"{tag}_notransform"
        )
        name = re.sub(r"[^A-Za-z0-9_.-]", "", name.replace("-", "m"))
        if name in names:  # same origin and x size, differing elsewhere (rare): disambiguate
            name += "_" + hashlib.sha256(repr((crs, transform)).encode()).hexdigest()[:8]
        names[name] = ids
    return names


def _num(v: float) -> str:
    """A number for a name: no exponent, no trailing zeros (5000000, 0.0001)."""
    return f"{v:.10f}".rstrip("0").rstrip(".")


def _floor(v: float) -> int:
    """Floor, but values within 1e-6 px of a whole number are that number (float noise)."""
    return round(v) if abs(v - round(v)) < 1e-6 else math.floor(v)


def _ceil(v: float) -> int:
    return round(v) if abs(v - round(v)) < 1e-6 else math.ceil(v)


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, list | tuple) else (int(v), int(v))
