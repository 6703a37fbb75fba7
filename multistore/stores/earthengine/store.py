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
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr
from xcube.core.store import DataStore, DataTypeLike
from xcube.core.store.descriptor import DatasetDescriptor, VariableDescriptor
from xcube.util.jsonschema import JsonObjectSchema, JsonStringSchema

from ...errors import ConfigError, FetchError, Problem, SourceOpenError
from ...filters import parse_comparison
from ..contract import DatasetsOnly
from ..validation import check_params
from . import tasks
from .bands import band_types, ee_image, image_processing, scale_pair, select_bands
from .catalog import CATALOG_TTL_S, CATALOG_URL, CatalogEntry, fetcher, load_catalog
from .dataset import Prepared, lazy_dataset, plan_of, read_exports
from .export import (
    ExportSettings,
    delete_exports,
    export_settings,
    export_steps,
    exports_key,
    pipeline_progress,
    submit_steps,
)
from .fetch import EE_RETRY_POLICY, FetchCounters, call_with_retries
from .grids import alignment_groups, images_of_group, pixel_grid, query_grid
from .params import open_params_schema, store_params_schema
from .planner import DEFAULT_REQUEST_BYTE_LIMIT, RequestPlan, plan_chunks
from .query import ImageInfo, Query, Recipe, image_info, list_images, time_steps
from .session import DEFAULT_CONCURRENCY, HIGH_VOLUME_URL, SessionParams, ensure_initialized

LOG = logging.getLogger(__name__)


class EarthEngineDataStore(DatasetsOnly, DataStore):
    """Earth Engine ImageCollections and Images as lazy datasets, fetched in planned tiles."""

    def __init__(self, **store_params: Any):
        check_params(store_params_schema(), store_params, "store_params")
        self._session = SessionParams(
            project=store_params.get("project"),
            url=store_params.get("url", HIGH_VOLUME_URL).rstrip("/"),
            credentials=store_params.get("credentials", "persistent"),
            max_concurrency=store_params.get("max_concurrency", DEFAULT_CONCURRENCY),
            max_retries=store_params.get("max_retries", 6),
            deadline_s=float(store_params.get("deadline_s", 120.0)),
        )
        self._byte_limit = int(store_params.get("request_byte_limit", DEFAULT_REQUEST_BYTE_LIMIT))
        self._policy = dataclasses.replace(
            EE_RETRY_POLICY,
            max_retries=self._session.max_retries,
            backoff_s=float(store_params.get("backoff_s", EE_RETRY_POLICY.backoff_s)),
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
        return store_params_schema()

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
        return open_params_schema()

    def open_data(
        self, data_id: str, opener_id: str | None = None, **open_params: Any
    ) -> xr.Dataset:
        prepared = self._prepare(data_id, open_params)
        if open_params.get("export_via"):
            export_settings(open_params)  # before any task starts
            prepared = self._exported(prepared)
        return lazy_dataset(prepared, self._session, self._policy, self.counters, self._byte_limit)

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
        schema = open_params_schema()
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
        check_params(self.get_search_params_schema(), search_params, "search_params")
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
        return [(i.id, i.time) for i in self._searched(data_id, params)]

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

    def _searched(self, data_id: str, params: Mapping[str, Any]) -> list[ImageInfo]:
        check_params(
            self.get_search_params_schema(), {"data_id": data_id, **params}, "search_params"
        )
        return self._images(data_id, params)

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

    def _prepare(self, data_id: str, params: Mapping[str, Any]) -> Prepared:
        check_params(open_params_schema(), params, "open_params")
        is_collection = self._asset_kind(data_id)
        query = self._query(data_id, params, is_collection)
        images = list_images(query, self._policy, self.counters)
        if not images:
            raise SourceOpenError(
                f"earthengine: no image of {data_id} matches the query "
                f"(time_range={params.get('time_range')}, filters={params.get('filters')})"
            )
        if params.get("alignment_group"):
            images = images_of_group(data_id, images, params["alignment_group"])
        native = dict(images[0].band_types)
        spec = params.get("bands")
        derived = list(params.get("expressions") or {})
        if isinstance(spec, list):  # a list may name expression bands, e.g. [B4, ndvi]
            bands = select_bands(data_id, [*native, *derived], spec)
        else:
            bands = select_bands(data_id, list(native), spec)
        processing = image_processing(params, list(native))
        if processing is not None and (processing.expressions or processing.hook_path):
            # band math and hooks add bands: ask Earth Engine for the processed types
            first = images[0].id
            info = call_with_retries(
                lambda: image_info(processing.apply(ee_image(first)).getInfo()),
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

        scales = {b: scale_pair(v) for b, v in (params.get("scale_map") or {}).items()}
        unknown = [b for b in scales if b not in bands]
        if unknown:
            raise ConfigError(
                [Problem("open_params.scale_map", f"no band(s) {unknown} among {list(bands)}")]
            )
        averaged = resolution != "raw" and reducer in ("mean", "median")
        req_dtype, out_dtype, fills, sentinels, band_groups = band_types(
            bands, native, scales, averaged, params
        )
        request_bands = tuple(b for g in band_groups for b in g.bands)
        recipe = Recipe(query, reducer, bands, band_groups, processing)

        grid = query_grid(data_id, params, images)
        request_dtypes = tuple(req_dtype[b] for b in request_bands)
        chunks = plan_chunks(list(grid.windows()), request_dtypes, self._byte_limit)
        rename = dict(params.get("rename_map") or {})
        names = {b: rename.get(b, b) for b in bands}
        with_time = is_collection or bool(params.get("with_time", False))
        return Prepared(
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

    def _exported(self, p: Prepared) -> Prepared:
        """Run batch exports of every step, then read what they wrote instead."""

        settings = export_settings(p.params)
        steps = p.steps if p.with_time else p.steps[:1]
        progress = self.export_progress or pipeline_progress(p.data_id)
        names = export_steps(
            p.recipe,
            steps,
            pixel_grid(p.grid),
            p.grid.width,
            p.grid.height,
            settings,
            p.data_id,
            progress,
            self._policy,
            self.counters,
        )
        self._exports[exports_key(p.data_id, p.params)] = (settings, list(names))
        if settings.via == "drive":
            raise SourceOpenError(
                f"earthengine: {p.data_id} was exported to Google Drive, folder "
                f"{settings.root!r}, files {', '.join(repr(n + '*.tif') for n in names)}; "
                "Drive exports cannot be read back into a cube: download them from Drive, "
                "or use export_via: gcs or asset"
            )
        return read_exports(p, settings, names, steps)

    # -- detached exports ----------------------------------------------------------------

    def submit_exports(self, data_id: str, **open_params: Any) -> list[tuple[str, str]]:
        """Start the export tasks ``open_data`` would wait for, and return at once:
        ``(export name, done | running | started)`` per time step."""
        if not open_params.get("export_via"):
            raise ConfigError([Problem("open_params.export_via", "required to submit exports")])
        p = self._prepare(data_id, open_params)
        settings = export_settings(open_params)
        return submit_steps(
            p.recipe,
            p.steps if p.with_time else p.steps[:1],
            pixel_grid(p.grid),
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
        return alignment_groups(self._searched(data_id, params))

    def fetch_retries(self) -> int:
        return self.counters.retries

    def release_exports(self, data_id: str, **open_params: Any) -> int:
        """The cube built from ``open_data(data_id, **open_params)`` is complete: delete
        the exports it read, unless ``keep_exports``. The number of assets/files deleted."""
        entry = self._exports.pop(exports_key(data_id, open_params), None)
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
        return tasks.list_tasks(self._policy, self.counters, state, recent)

    def task_states(self, task_ids: Sequence[str]) -> list[dict]:
        """The current status of each task (ids or operation names)."""
        ensure_initialized(self._session)
        return tasks.task_states(task_ids, self._policy, self.counters)

    def wait_tasks(
        self,
        task_ids: Sequence[str],
        poll_s: float = 10.0,
        timeout_s: float | None = None,
        report: Callable[[dict], None] | None = None,
    ) -> list[dict]:
        """Poll until every task has ended; their final statuses (``report`` sees each end)."""
        ensure_initialized(self._session)
        return tasks.wait_tasks(task_ids, self._policy, self.counters, poll_s, timeout_s, report)

    def cancel_tasks(self, task_ids: Sequence[str]) -> None:
        """Cancel the tasks (ids or operation names); finished tasks are left as they are."""
        ensure_initialized(self._session)
        tasks.cancel_tasks(task_ids, self._policy, self.counters)


# -- helpers ---------------------------------------------------------------------------
