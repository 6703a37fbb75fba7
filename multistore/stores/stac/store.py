"""The ``stac`` data store: STAC APIs, static catalogs and item indexes → mosaicked cubes.

A data id is a collection id, or (xcube-stac's form) the path of an item or collection
JSON relative to the store ``url`` (``collections/s2/items/x.json``). Items are found by an API search (paged by
pystac-client), a query of an item index (``index``) or a pruned parallel
crawl of a static catalog (``crawl``); the same client-side query
(``query``) is applied to all three, so a filter means the same thing
everywhere. Pixels are read by odc-stac, straight onto the pipeline's target
grid when it passes one (each output tile then reads only the COG windows it
needs), keeping asset dtypes and nodata.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Container, Iterator, Mapping, Sequence
from functools import cached_property
from typing import Any

import odc.stac
import pyproj
import pystac
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.geom import box as geo_box
from pystac_client.conformance import ConformanceClasses
from xcube.core.store import DataStore, DataTypeLike
from xcube.core.store.descriptor import DatasetDescriptor, VariableDescriptor
from xcube.util.jsonschema import (
    JsonObjectSchema,
)

from ...config.redact import unsigned_url
from ...config.resolve import is_url
from ...errors import FilterError, NoItemsError, SourceOpenError, StoreError
from ...filters import parse_filter
from ...grid import TargetGrid
from ..contract import DatasetsOnly
from .bands import AssetHeaders
from .crawl import absolutize_item, crawl
from .index import query_index
from .io import (
    GdalAccess,
    JsonReader,
    ScopedRioDriver,
    abspath,
    conforms,
    gdal_access,
    is_json_path,
    unsigned_href,
)
from .mosaic import finish_dataset, mask_and_fuse
from .params import open_params_schema, resolve_max_retries, store_params_schema, validate
from .query import ItemQuery, bbox_to_lonlat, make_filter

LOG = logging.getLogger(__name__)


class StacDataStore(DatasetsOnly, DataStore):
    """STAC catalogs and APIs mosaicked into cubes (odc-stac)."""

    def __init__(
        self,
        url: str,
        storage_options: Mapping[str, Any] | None = None,
        index: str | None = None,
        max_concurrency: int = 16,
        on_missing_asset: str = "fail",
        max_retries: int | None = None,
        retries: int | None = None,
    ):
        self._url = url if is_url(url) else abspath(url)
        self._storage_options = dict(storage_options or {})
        self._index = index
        self._concurrency = int(max_concurrency)
        self._on_missing_asset = on_missing_asset
        self._retries = resolve_max_retries(max_retries, retries)
        self._reader = JsonReader(
            self._storage_options, retries=self._retries, pool_size=self._concurrency
        )
        # headers of assets without raster:bands, read once per (collection, asset key)
        self._asset_headers = AssetHeaders(self._rio_env, concurrency=self._concurrency)

    def _rio_env(self) -> dict[str, Any]:
        """The GDAL settings (and AWS session kwargs) of this store's asset reads."""
        return ScopedRioDriver(self._gdal_access()).capture_env()

    def _gdal_access(self) -> GdalAccess:
        return gdal_access(self._storage_options, max_retry=self._retries)

    # -- schemas ---------------------------------------------------------------------

    @classmethod
    def get_data_store_params_schema(cls) -> JsonObjectSchema:
        return store_params_schema()

    def check_data_id(self, data_id: str) -> None:
        self._require_collection(data_id)

    def get_data_opener_ids(
        self, data_id: str = None, data_type: DataTypeLike = None
    ) -> tuple[str, ...]:
        return ("dataset:stac:multistore",)

    @classmethod
    def get_search_params_schema(cls, data_type: DataTypeLike = None) -> JsonObjectSchema:
        return JsonObjectSchema(additional_properties=False)

    def search_data(
        self, data_type: DataTypeLike = None, **search_params
    ) -> Iterator[DatasetDescriptor]:
        if search_params:
            raise StoreError(
                f"stac store: search_data takes no parameters, got {sorted(search_params)}"
            )
        for cid in self.get_data_ids():
            yield self.describe_data(cid)

    def get_open_data_params_schema(
        self, data_id: str = None, opener_id: str = None
    ) -> JsonObjectSchema:
        return open_params_schema()

    @classmethod
    def open_params_problems(
        cls, params: Mapping[str, Any]
    ) -> list[tuple[tuple[str | int, ...], str]]:
        """Problems of open params that the schema cannot see (the filter grammar), each
        located relative to ``open_params``; config validation reports them."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if params.get("query") is not None:
            try:
                make_filter(query=params["query"])
            except FilterError as e:
                problems.append((("query",), str(e)))
        value = params.get("filter")
        entries = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for i, entry in entries:
            if entry is None:
                continue
            try:
                parse_filter(entry)
            except FilterError as e:
                problems.append((("filter",) if i is None else ("filter", i), str(e)))
        return problems

    # -- discovery -------------------------------------------------------------------

    @cached_property
    def _root(self) -> dict[str, Any]:
        try:
            return self._reader.read(self._url)
        except StoreError as e:
            raise StoreError(f"STAC catalog {self._url} is unreachable: {e}") from None

    @cached_property
    def is_api(self) -> bool:
        """True for a STAC API with item search (else a static catalog)."""
        classes = self._root.get("conformsTo") or []
        has_search = any(link.get("rel") == "search" for link in self._root.get("links") or [])
        return has_search and conforms(classes, ConformanceClasses.ITEM_SEARCH)

    @cached_property
    def _client(self):
        from pystac_client import Client
        from pystac_client.stac_api_io import StacApiIO

        headers = self._storage_options.get("headers")
        io = StacApiIO(
            headers=dict(headers) if isinstance(headers, Mapping) else None,
            max_retries=self._retries,
        )
        try:
            return Client.open(self._url, stac_io=io)
        except Exception as e:  # pystac-client raises many kinds (APIError, requests, pystac)
            raise StoreError(f"cannot open STAC API {self._url}: {e}") from None

    @cached_property
    def _collections(self) -> dict[str, dict[str, Any]]:
        """Collection id → collection document (API: /collections; static: a crawl above items)."""
        if self.is_api:
            try:
                return {c.id: c.to_dict() for c in self._client.get_collections()}
            except Exception as e:
                raise StoreError(f"cannot list collections of STAC API {self._url}: {e}") from None
        if self._root.get("type") == "Collection":
            return {self._root["id"]: self._root}
        found: dict[str, dict[str, Any]] = {}

        def descend(node: Mapping[str, Any]) -> bool:
            if node.get("type") == "Collection":
                found[node["id"]] = dict(node)
                return False
            return True

        crawl(
            self._reader,
            self._url,
            concurrency=self._concurrency,
            descend=descend,
            keep_item=lambda i: False,
        )
        return found

    def get_data_ids(
        self, data_type: DataTypeLike = None, include_attrs: Container[str] | bool = False
    ) -> Iterator[str] | Iterator[tuple[str, dict[str, Any]]]:
        for cid, doc in sorted(self._collections.items()):
            if include_attrs is False:
                yield cid
            else:
                attrs = {"title": doc.get("title") or cid, "description": doc.get("description")}
                if include_attrs is not True:
                    attrs = {k: v for k, v in attrs.items() if k in include_attrs}
                yield cid, attrs

    def has_data(self, data_id: str, data_type: DataTypeLike = None) -> bool:
        if is_json_path(data_id):
            try:
                self._json_doc(data_id)
            except StoreError:
                return False
            return True
        return data_id in self._collections

    def json_href(self, data_id: str) -> str:
        """Where an item/collection JSON data id lives: relative to the url's folder when
        the url names a JSON document, else to the url itself (xcube-stac's convention)."""
        base = self._url if not self._url.endswith(".json") else self._url.rsplit("/", 1)[0]
        return f"{base.rstrip('/')}/{data_id.lstrip('/')}"

    def _json_doc(self, data_id: str) -> dict[str, Any]:
        href = self.json_href(data_id)
        try:
            doc = self._reader.read(href)
        except StoreError as e:
            raise StoreError(f"STAC data id {data_id!r}: cannot read {href}: {e}") from None
        if doc.get("type") not in ("Feature", "Collection"):
            raise StoreError(
                f"STAC data id {data_id!r}: {href} is neither an item nor a collection "
                f"(type {doc.get('type')!r})"
            )
        return doc

    def _require_collection(self, data_id: str) -> dict[str, Any]:
        if is_json_path(data_id):
            return self._json_doc(data_id)
        doc = self._collections.get(data_id)
        if doc is None:
            raise StoreError(
                f"collection {data_id!r} not found in {self._url} (available: {sorted(self._collections)})"
            )
        return doc

    def describe_data(self, data_id: str, data_type: DataTypeLike = None) -> DatasetDescriptor:
        doc = self._require_collection(data_id)
        extent = doc.get("extent") or {}
        bbox = ((extent.get("spatial") or {}).get("bbox") or [None])[0]
        interval = ((extent.get("temporal") or {}).get("interval") or [[None, None]])[0]
        data_vars = {}
        for key, asset in (doc.get("item_assets") or {}).items():
            bands = asset.get("raster:bands") or asset.get("bands") or [{}]
            info = bands[0] if bands else {}
            attrs = {k: v for k, v in (("nodata", info.get("nodata")), ("roles", asset.get("roles")),
                                         ("title", asset.get("title")), ("type", asset.get("type")))
                     if v is not None}  # fmt: skip
            eo = asset.get("eo:bands") or []
            if eo:
                attrs["eo:bands"] = eo
            dtype = info.get("data_type") or "float64"
            data_vars[key] = VariableDescriptor(key, dtype, ("time", "y", "x"), attrs=attrs)
        return DatasetDescriptor(
            data_id,
            crs="EPSG:4326" if bbox else None,
            bbox=tuple(bbox[:4]) if bbox and len(bbox) == 4 else None,
            time_range=tuple(v[:10] if v else None for v in interval[:2]),
            data_vars=data_vars or None,
            attrs={"title": doc.get("title") or data_id, "description": doc.get("description")},
            open_params_schema=open_params_schema(),
        )

    # -- items -----------------------------------------------------------------------

    def find_items(self, query: ItemQuery, max_items: int | None = None) -> list[dict[str, Any]]:
        """Items matching ``query`` (index, API or crawl), sorted by (datetime, id)."""
        if self._index:
            items = query_index(self._index, query)
        elif self.is_api:
            items = self._search_api(query, max_items)
        else:
            items, _ = crawl(
                self._reader,
                self._url,
                concurrency=self._concurrency,
                descend=query.may_contain,
                keep_item=query.matches,
            )
        items.sort(key=lambda d: ((d.get("properties") or {}).get("datetime") or "", d["id"]))
        return items[:max_items] if max_items is not None else items

    def _search_api(self, query: ItemQuery, max_items: int | None) -> list[dict[str, Any]]:
        client = self._client
        kwargs: dict[str, Any] = {
            "collections": sorted(query.collections) if query.collections else None,
            "bbox": list(query.bbox) if query.bbox else None,
            "datetime": query.time_range_str,
        }
        pushed = query.filter.is_empty
        if not query.filter.is_empty and client.conforms_to(ConformanceClasses.FILTER):
            kwargs.update(filter=query.filter.to_cql2(), filter_lang="cql2-json")
            pushed = True
        elif query.filter.to_query() is not None and client.conforms_to(ConformanceClasses.QUERY):
            kwargs["query"] = query.filter.to_query()
            pushed = True
        if pushed and max_items is not None:
            kwargs["max_items"] = max_items
        try:
            found = list(client.search(**kwargs).items_as_dicts())
        except Exception as e:
            raise StoreError(
                f"STAC API search at {self._url} failed ({query.describe()}): {e}"
            ) from None
        # the API already filtered; this re-check also covers APIs that ignore a parameter
        return [d for d in found if query.matches(d)]

    # -- opening -----------------------------------------------------------------------

    def open_data(self, data_id: str, opener_id: str = None, **open_params) -> xr.Dataset:
        open_params.pop("data_type", None)
        validate(open_params)
        grid = (
            TargetGrid.from_dict(open_params["target_grid"])
            if open_params.get("target_grid")
            else None
        )
        bbox_crs = pyproj.CRS.from_user_input(open_params.get("crs") or "EPSG:4326")
        bbox = open_params.get("bbox")
        items, needed, collections = self._selected_items(data_id, open_params, grid)
        asset_names = open_params.get("asset_names")
        mask = open_params.get("mask")
        pystac_items = [pystac.Item.from_dict(d, preserve_dict=False) for d in items]
        self._asset_headers.complete(pystac_items, needed)
        LOG.info("stac: loading %d item(s) of %s from %s", len(items), collections, self._url)
        ds = self._load(pystac_items, needed, grid, open_params, bbox, bbox_crs)
        return finish_dataset(ds, grid, asset_names, mask, items, collections)

    def _selected_items(
        self, data_id: str, open_params: Mapping[str, Any], grid: TargetGrid | None
    ) -> tuple[list[dict[str, Any]], list[str] | None, list[str]]:
        """The items ``open_data`` loads, the assets it needs of them, and their collections."""
        collections = list(open_params.get("collections") or [data_id])
        bbox_crs = pyproj.CRS.from_user_input(open_params.get("crs") or "EPSG:4326")
        bbox = open_params.get("bbox")
        query_bbox = None
        if bbox is not None:
            query_bbox = bbox_to_lonlat(bbox, bbox_crs)
        elif grid is not None:
            query_bbox = bbox_to_lonlat(grid.bounds, grid.crs)
        query = ItemQuery.create(
            bbox=query_bbox,
            time_range=open_params.get("time_range"),
            collections=collections,
            query=open_params.get("query"),
            filter=open_params.get("filter"),
            where="open_params",
        )
        if is_json_path(data_id) and not open_params.get("collections"):
            items, collections = self._json_items(data_id, query, open_params.get("max_items"))
        else:
            items = self.find_items(query, open_params.get("max_items"))
        if not items:
            raise NoItemsError(f"no STAC items in {self._url} for {query.describe()}")
        mask = open_params.get("mask")
        asset_names = open_params.get("asset_names")
        needed = list(asset_names) if asset_names else None
        if mask and needed is not None and mask["asset"] not in needed:
            needed.append(mask["asset"])
        return self._with_assets(items, needed, query), needed, collections

    def source_identity(self, data_id: str, **open_params: Any) -> dict[str, Any]:
        """The items ``open_data`` would load, with ``updated``/``datetime`` and asset hrefs
        (for lockfiles; no pixels read)."""
        open_params.pop("data_type", None)
        validate(open_params)
        target = open_params.get("target_grid")
        grid = TargetGrid.from_dict(target) if target else None
        items, needed, _ = self._selected_items(data_id, open_params, grid)
        described = []
        for item in items:
            props = item.get("properties") or {}
            assets = item.get("assets") or {}
            names = needed if needed is not None else sorted(assets)
            described.append(
                {
                    "id": item["id"],
                    "collection": item.get("collection"),
                    "datetime": props.get("datetime"),
                    "updated": props.get("updated"),
                    "assets": {n: unsigned_href((assets.get(n) or {}).get("href")) for n in names},
                }
            )
        return {"content": {"catalog": unsigned_url(self._url), "items": described}}

    def _json_items(
        self, data_id: str, query: ItemQuery, max_items: int | None
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """The item a JSON data id names, or the items of the collection it names (crawled
        from that document; filters apply as for collection ids)."""
        doc = self._json_doc(data_id)
        href = self.json_href(data_id)
        query = dataclasses.replace(query, collections=None)  # the document says which
        if doc["type"] == "Feature":
            item = absolutize_item(dict(doc), href, doc.get("collection"))
            return [item], [doc.get("collection") or data_id]
        items, _ = crawl(
            self._reader,
            href,
            concurrency=self._concurrency,
            descend=query.may_contain,
            keep_item=query.matches,
        )
        items.sort(key=lambda d: ((d.get("properties") or {}).get("datetime") or "", d["id"]))
        return (items[:max_items] if max_items is not None else items), [doc["id"]]

    def _with_assets(
        self, items: list[dict[str, Any]], needed: Sequence[str] | None, query: ItemQuery
    ) -> list[dict[str, Any]]:
        if needed is None:
            return items
        kept = []
        for item in items:
            missing = [a for a in needed if a not in (item.get("assets") or {})]
            if not missing:
                kept.append(item)
                continue
            available = sorted(item.get("assets") or {})
            message = f"STAC item {item['id']} has no asset(s) {missing} (available: {available})"
            if self._on_missing_asset == "fail":
                raise SourceOpenError(message)
            LOG.warning("%s: item skipped (on_missing_asset=skip)", message)
        if not kept:
            raise NoItemsError(f"no STAC items with assets {list(needed)} for {query.describe()}")
        return kept

    def _load(
        self,
        items: list[pystac.Item],
        bands: Sequence[str] | None,
        grid: TargetGrid | None,
        params: Mapping[str, Any],
        bbox: Sequence[float] | None,
        bbox_crs: pyproj.CRS,
    ) -> xr.Dataset:
        access = self._gdal_access()
        groupby = params.get("groupby", "solar_day")
        kwargs: dict[str, Any] = dict(
            bands=list(bands) if bands else None,
            groupby="id" if params.get("mask") else groupby,
            preserve_original_order=bool(params.get("mask")),
            resampling=params.get("resampling", "nearest"),
            driver=ScopedRioDriver(access),
            fail_on_error=self._on_missing_asset == "fail",
        )
        if grid is not None:
            kwargs["geobox"] = GeoBox((grid.height, grid.width), grid.transform, grid.crs_wkt)
            kwargs["chunks"] = {"time": 1, "x": grid.tile_size[0], "y": grid.tile_size[1]}
        else:
            kwargs["chunks"] = {"time": 1, "x": 1024, "y": 1024}
            if params.get("spatial_res") is not None:
                kwargs["crs"] = bbox_crs.to_wkt()
                kwargs["resolution"] = params["spatial_res"]
            if bbox is not None:
                kwargs["geopolygon"] = geo_box(*bbox, crs=bbox_crs.to_wkt())
        if params.get("chunks"):
            kwargs["chunks"] = {**kwargs["chunks"], **params["chunks"]}
        try:
            ds = odc.stac.load(items, **kwargs)
        except ValueError as e:
            hint = ""
            if grid is None and params.get("spatial_res") is None:
                hint = " (items in several CRSs or without projection info need crs + spatial_res or a grid_mapping)"
            raise SourceOpenError(f"cannot load STAC items from {self._url}: {e}{hint}") from None
        if params.get("mask"):
            ds = mask_and_fuse(ds, items, params["mask"], groupby)
        return ds


# -- helpers -----------------------------------------------------------------------------
