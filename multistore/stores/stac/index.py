"""A fast item index for large static STAC catalogs (one stac-geoparquet file).

Crawling a static catalog costs one request per item, every time; the index
pays that once. ``build_index`` crawls in parallel and is resumable: each
finished catalog node is written to ``<out>.parts/`` (items as ndjson, then a
small marker naming its children), and a rerun skips marked nodes. The final
file is sorted along a Z-order curve of item centres and written in small row
groups, so ``search_index`` prunes row groups by their bbox/datetime
statistics, evaluates the rest with pyarrow and tests exact geometries and
CQL2 on the few hits only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pystac
import shapely
import stac_geoparquet.arrow as sga

from ...config.resolve import is_url
from ...errors import FilterError, StoreError
from .crawl import FinishedNode, crawl
from .io import JsonReader
from .query import Comparison, ItemQuery

LOG = logging.getLogger(__name__)

DEFAULT_ROW_GROUP_SIZE = 2048


@dataclass(frozen=True)
class IndexStats:
    path: Path
    items: int
    nodes_fetched: int
    nodes_resumed: int
    seconds: float


def parts_dir(out_path: str | os.PathLike) -> Path:
    out = Path(out_path)
    return out.with_name(out.name + ".parts")


def build_index(
    url: str,
    out_path: str | os.PathLike,
    *,
    concurrency: int = 16,
    resume: bool = True,
    storage_options: Mapping[str, Any] | None = None,
    retries: int = 3,
    row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
) -> IndexStats:
    """Crawl the static catalog at ``url`` into a stac-geoparquet file at ``out_path``."""
    t0 = time.perf_counter()
    out = Path(out_path)
    parts = parts_dir(out)
    if not resume and parts.exists():
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    known = _finished_nodes(parts)
    root = url if is_url(url) else os.path.abspath(url)
    reader = JsonReader(storage_options, retries=retries, pool_size=concurrency)

    def on_node(node: FinishedNode) -> None:
        key = hashlib.sha1(node.href.encode()).hexdigest()[:24]
        if node.items:
            _atomic_write(
                parts / f"{key}.ndjson", "".join(json.dumps(i) + "\n" for i in node.items)
            )
        marker = {"href": node.href, "children": list(node.children), "items": len(node.items)}
        _atomic_write(parts / f"{key}.json", json.dumps(marker))

    try:
        _, stats = crawl(
            reader, root, concurrency=concurrency, known=known, on_node=on_node, fail_fast=False
        )
    finally:
        reader.close()
    ndjson = sorted(str(p) for p in parts.glob("*.ndjson") if p.with_suffix(".json").exists())
    if not ndjson:
        raise StoreError(f"no items found in STAC catalog {url}")
    table = sga.parse_stac_ndjson_to_arrow(ndjson).read_all()
    table = table.take(_zorder(table))
    tmp = out.with_name(out.name + ".tmp")
    # to_parquet writes one row group per batch
    sga.to_parquet(table.to_reader(max_chunksize=row_group_size), tmp)
    os.replace(tmp, out)
    shutil.rmtree(parts)
    return IndexStats(
        out, table.num_rows, stats.nodes_fetched, stats.nodes_skipped, time.perf_counter() - t0
    )


def _finished_nodes(parts: Path) -> dict[str, list[str]]:
    known = {}
    for marker in parts.glob("*.json"):
        try:
            doc = json.loads(marker.read_text())
        except ValueError:
            continue  # a marker torn by a crash: the node is crawled again
        known[doc["href"]] = doc["children"]
    return known


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _zorder(table: pa.Table) -> np.ndarray:
    """Row order along a Z-order (Morton) curve of bbox centres: nearby items share row groups."""
    bbox = table.column("bbox").combine_chunks()
    cx = (pc.add(bbox.field("xmin"), bbox.field("xmax")).to_numpy(zero_copy_only=False)) / 2
    cy = (pc.add(bbox.field("ymin"), bbox.field("ymax")).to_numpy(zero_copy_only=False)) / 2
    qx = np.clip((cx + 180.0) / 360.0 * 65535, 0, 65535).astype(np.uint64)
    qy = np.clip((cy + 90.0) / 180.0 * 65535, 0, 65535).astype(np.uint64)
    return np.argsort(_spread_bits(qx) | (_spread_bits(qy) << np.uint64(1)), kind="stable")


def _spread_bits(v: np.ndarray) -> np.ndarray:
    v = v & np.uint64(0xFFFF)
    v = (v | (v << np.uint64(8))) & np.uint64(0x00FF00FF)
    v = (v | (v << np.uint64(4))) & np.uint64(0x0F0F0F0F)
    v = (v | (v << np.uint64(2))) & np.uint64(0x33333333)
    return (v | (v << np.uint64(1))) & np.uint64(0x55555555)


# -- search ------------------------------------------------------------------------------


def search_index(
    path: str | os.PathLike,
    *,
    bbox: Sequence[float] | None = None,
    datetime: Any = None,
    collections: Iterable[str] | None = None,
    filters: Any = None,
    limit: int | None = None,
) -> list[pystac.Item]:
    """Items of the index matching bbox (lon/lat), datetime ("a/b" or [a, b]), collections
    and property filters (``["clc_412 > 0.8"]``, a query-extension dict or CQL2-JSON)."""
    query = ItemQuery.create(
        bbox=bbox,
        time_range=datetime,
        collections=collections,
        query=filters if isinstance(filters, Mapping) and "op" not in filters else None,
        filter=None if isinstance(filters, Mapping) and "op" not in filters else filters,
    )
    return [
        pystac.Item.from_dict(d, preserve_dict=False) for d in query_index(path, query, limit=limit)
    ]


def asset_hrefs(
    items: Iterable[pystac.Item | Mapping[str, Any]], asset_names: Sequence[str] | None = None
) -> list[str]:
    """Absolute asset hrefs of ``items`` (all assets, or only ``asset_names``), in item order."""
    hrefs = []
    for item in items:
        assets = (
            item.to_dict()["assets"] if isinstance(item, pystac.Item) else item.get("assets") or {}
        )
        for key, asset in assets.items():
            if asset_names is None or key in asset_names:
                hrefs.append(asset["href"])
    return hrefs


def query_index(
    path: str | os.PathLike, query: ItemQuery, *, limit: int | None = None
) -> list[dict[str, Any]]:
    """Item dicts of the index matching ``query``, ordered by (datetime, id)."""
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise StoreError(f"cannot open STAC index {path}: {e}") from None
    names = set(pf.schema_arrow.names)
    for c in query.filter.comparisons:
        if c.prop not in names:
            props = sorted(names - _CORE_COLUMNS)
            raise FilterError(f"filter {c}: the index has no property {c.prop!r} (it has {props})")
    groups = _candidate_row_groups(pf, query)
    if not groups:
        return []
    columns = [
        n
        for n in ("bbox", "datetime", "start_datetime", "end_datetime", "collection")
        if n in names
    ]
    columns += [c.prop for c in query.filter.comparisons if c.prop not in columns]
    slim = pf.read_row_groups(groups, columns=columns)
    mask = _mask(slim, query)
    hits = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
    if hits.size == 0:
        return []
    sizes = np.array([pf.metadata.row_group(g).num_rows for g in groups])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    owner = np.searchsorted(starts, hits, side="right") - 1
    tables = []
    for k in np.unique(owner):
        offsets = hits[owner == k] - starts[k]
        tables.append(pf.read_row_group(groups[k]).take(pa.array(offsets)))
    table = pa.concat_tables(tables)
    if query.bbox is not None:  # exact footprints, vectorised, before the costly row → dict step
        geoms = shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False))
        table = table.filter(pa.array(shapely.intersects(geoms, shapely.box(*query.bbox))))
    items = [d for d in sga.stac_table_to_items(table) if query.matches(d, spatial=False)]
    items.sort(key=lambda d: ((d.get("properties") or {}).get("datetime") or "", d.get("id") or ""))
    return items[:limit] if limit is not None else items


_CORE_COLUMNS = {
    "type", "stac_version", "stac_extensions", "id", "collection", "bbox", "geometry",
    "assets", "links", "datetime", "start_datetime", "end_datetime",
}  # fmt: skip


def _candidate_row_groups(pf: pq.ParquetFile, query: ItemQuery) -> list[int]:
    md = pf.metadata
    if md.num_row_groups == 0:
        return []
    paths = {md.row_group(0).column(j).path_in_schema: j for j in range(md.num_columns)}
    keep = []
    for g in range(md.num_row_groups):
        rg = md.row_group(g)

        def stats(name: str, rg=rg) -> tuple[Any, Any] | None:
            j = paths.get(name)
            s = rg.column(j).statistics if j is not None else None
            return (s.min, s.max) if s is not None and s.has_min_max else None

        if query.bbox is not None:
            w, s, e, n = query.bbox
            xmin, xmax, ymin, ymax = (stats(f"bbox.{k}") for k in ("xmin", "xmax", "ymin", "ymax"))
            if (
                xmin
                and xmin[0] > e
                or xmax
                and xmax[1] < w
                or ymin
                and ymin[0] > n
                or ymax
                and ymax[1] < s
            ):
                continue
        dt = stats("datetime")
        if dt and "start_datetime" not in paths and not _may_overlap_time(dt, query):
            continue
        keep.append(g)
    return keep


def _may_overlap_time(minmax: tuple[Any, Any], query: ItemQuery) -> bool:
    lo, hi = minmax
    try:
        if query.end is not None and lo > query.end:
            return False
        return not (query.start is not None and hi < query.start)
    except TypeError:  # statistics without a time zone: do not prune
        return True


def _mask(table: pa.Table, query: ItemQuery) -> pa.ChunkedArray | pa.Array:
    mask = pa.scalar(True)
    if query.bbox is not None:
        w, s, e, n = query.bbox
        bbox = table.column("bbox")
        mask = pc.and_(mask, pc.less_equal(pc.struct_field(bbox, "xmin"), e))
        mask = pc.and_(mask, pc.greater_equal(pc.struct_field(bbox, "xmax"), w))
        mask = pc.and_(mask, pc.less_equal(pc.struct_field(bbox, "ymin"), n))
        mask = pc.and_(mask, pc.greater_equal(pc.struct_field(bbox, "ymax"), s))
    if query.start is not None or query.end is not None:
        mask = pc.and_(mask, _time_mask(table, query))
    if query.collections is not None and "collection" in table.column_names:
        mask = pc.and_(
            mask, pc.is_in(table.column("collection"), pa.array(sorted(query.collections)))
        )
    for c in query.filter.comparisons:
        mask = pc.and_(mask, _comparison_mask(table.column(c.prop), c))
    mask = pc.fill_null(mask, False)
    if isinstance(mask, pa.Scalar):
        return pa.array(np.full(table.num_rows, mask.as_py()))
    return mask


def _time_mask(table: pa.Table, query: ItemQuery) -> pa.ChunkedArray:
    names = table.column_names
    dt = table.column("datetime") if "datetime" in names else None
    lo = table.column("start_datetime") if "start_datetime" in names else dt
    hi = table.column("end_datetime") if "end_datetime" in names else dt
    if dt is not None and lo is not dt:
        lo = pc.coalesce(lo, dt)
        hi = pc.coalesce(hi, dt)
    mask = pa.scalar(True)
    if query.end is not None:
        mask = pc.and_(mask, pc.less_equal(lo, pa.scalar(query.end, lo.type)))
    if query.start is not None:
        mask = pc.and_(mask, pc.greater_equal(hi, pa.scalar(query.start, hi.type)))
    return mask


_PC_OPS = {
    "<": pc.less,
    "<=": pc.less_equal,
    ">": pc.greater,
    ">=": pc.greater_equal,
    "=": pc.equal,
    "!=": pc.not_equal,
}


def _comparison_mask(column: pa.ChunkedArray, c: Comparison) -> pa.ChunkedArray:
    try:
        value = pa.scalar(c.value)
        if value.type != column.type:
            value = value.cast(column.type)
        return _PC_OPS[c.op](column, value)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        raise FilterError(
            f"filter {c}: cannot compare property {c.prop!r} of type {column.type}: {e}"
        ) from None
