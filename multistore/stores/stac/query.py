"""Item queries (bbox, time, collections, property filters) evaluated client-side.

Static catalogs and item indexes cannot search themselves, so the same query
a STAC API would answer is evaluated here. Filters are parsed into CQL2-JSON
(``multistore.filters``); the conditions of their top-level AND that are plain
comparisons (``eo:cloud_cover < 20``) are also kept as data so the index can
push them down to its columns.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from functools import cached_property
from typing import Any

import pyproj
import shapely
import shapely.geometry
from rasterio.warp import transform_bounds

from ...errors import FilterError
from ...filters import (
    Comparison,
    as_comparison,
    comparison_to_cql2,
    conjuncts,
    matches,
    parse_filters,
)

# STAC API "query" extension operator names
_QUERY_OPS = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">=", "eq": "=", "neq": "!="}


@dataclass(frozen=True)
class PropertyFilter:
    """All ``comparisons`` AND all ``others`` (checked CQL2-JSON conditions)."""

    comparisons: tuple[Comparison, ...] = ()
    others: tuple[Mapping[str, Any], ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.comparisons and not self.others

    @cached_property
    def _expr(self) -> dict[str, Any] | None:
        return self.to_cql2()

    def matches(self, item: Mapping[str, Any]) -> bool:
        return self._expr is None or matches(self._expr, item)

    def to_cql2(self) -> dict[str, Any] | None:
        """One CQL2-JSON expression for STAC APIs with the filter extension."""
        args = [comparison_to_cql2(c) for c in self.comparisons]
        args += [dict(o) for o in self.others]
        if not args:
            return None
        return args[0] if len(args) == 1 else {"op": "and", "args": args}

    def to_query(self) -> dict[str, Any] | None:
        """The STAC API ``query`` extension form, if the filter is only comparisons."""
        if self.others or not self.comparisons:
            return None
        names = {v: k for k, v in _QUERY_OPS.items()}
        query: dict[str, dict[str, Any]] = {}
        for c in self.comparisons:
            query.setdefault(c.prop, {})[names[c.op]] = c.value
        return query


def make_filter(
    query: Mapping[str, Any] | None = None, filter: Any = None, *, where: str | None = None
) -> PropertyFilter:
    """Normalise the ``query`` and ``filter`` open params into one ``PropertyFilter``.

    ``query``: the STAC API query-extension form ``{"eo:cloud_cover": {"lt": 20}}``.
    ``filter``: a ``prop op value`` or CQL2 text string, a list of them (ANDed), or
    CQL2-JSON. ``where`` (e.g. ``open_params``) locates errors: ``open_params.filter[1]: ...``.
    """
    prefix = f"{where}." if where else ""
    comparisons: list[Comparison] = []
    others: list[Mapping[str, Any]] = []
    if query is not None and not isinstance(query, Mapping):
        raise FilterError(
            f"{prefix}query must be an object like {{'eo:cloud_cover': {{'lt': 20}}}}"
        )
    for prop, conditions in (query or {}).items():
        if not isinstance(conditions, Mapping):
            raise FilterError(
                f"{prefix}query for {prop!r} must be an object like {{'lt': 20}}, got {conditions!r}"
            )
        for name, value in conditions.items():
            if name not in _QUERY_OPS:
                raise FilterError(
                    f"{prefix}query operator {name!r} for {prop!r} is not supported "
                    f"(use one of {', '.join(_QUERY_OPS)})"
                )
            comparisons.append(Comparison(prop, _QUERY_OPS[name], value))
    if filter is not None:
        for expr in parse_filters(filter, f"{prefix}filter" if where else None):
            for condition in conjuncts(expr):
                c = as_comparison(condition)
                if c is None:
                    others.append(condition)
                else:
                    comparisons.append(c)
    return PropertyFilter(tuple(comparisons), tuple(others))


# -- time -------------------------------------------------------------------------------


def parse_time_range(value: Any) -> tuple[datetime | None, datetime | None]:
    """``"a/b"``, ``[a, b]`` or a single date → inclusive UTC bounds (open ends as None).

    A date without a time as the end means the whole day, as in STAC API searches.
    """
    if value is None:
        return None, None
    if isinstance(value, str):
        parts = value.split("/") if "/" in value else [value, value]
    elif isinstance(value, Sequence) and len(value) == 2:
        parts = list(value)
    else:
        raise FilterError(f"time range must be 'start/end' or [start, end], got {value!r}")
    if len(parts) != 2:
        raise FilterError(f"time range must be 'start/end', got {value!r}")
    start = _parse_bound(parts[0], end=False)
    end = _parse_bound(parts[1], end=True)
    if start is not None and end is not None and start > end:
        raise FilterError(f"time range {value!r} ends before it starts")
    return start, end


def _parse_bound(value: Any, *, end: bool) -> datetime | None:
    if value is None or (isinstance(value, str) and value.strip() in ("", "..")):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise FilterError(f"cannot parse time {text!r}: {e}") from None
    if end and len(text) == 10:  # a bare date: include the whole day
        parsed = datetime.combine(parsed.date(), time.max)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_datetime(text: str | None) -> datetime | None:
    if not text:
        return None
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def time_range_to_str(start: datetime | None, end: datetime | None) -> str | None:
    """The STAC API ``datetime`` search parameter."""
    if start is None and end is None:
        return None

    def fmt(d: datetime | None) -> str:
        return ".." if d is None else d.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    return f"{fmt(start)}/{fmt(end)}"


# -- the whole query --------------------------------------------------------------------


@dataclass(frozen=True)
class ItemQuery:
    """What items to select; evaluated on item dicts (GeoJSON) client-side."""

    bbox: tuple[float, float, float, float] | None = None  # lon/lat
    start: datetime | None = None
    end: datetime | None = None
    collections: frozenset[str] | None = None
    filter: PropertyFilter = field(default_factory=PropertyFilter)

    @classmethod
    def create(
        cls,
        *,
        bbox: Sequence[float] | None = None,
        time_range: Any = None,
        collections: Iterable[str] | None = None,
        query: Mapping[str, Any] | None = None,
        filter: Any = None,
        where: str | None = None,
    ) -> ItemQuery:
        if bbox is not None:
            if len(bbox) != 4:
                raise FilterError(f"bbox must be [west, south, east, north], got {list(bbox)!r}")
            bbox = tuple(float(v) for v in bbox)
            if bbox[0] > bbox[2] or bbox[1] > bbox[3]:
                raise FilterError(f"bbox {list(bbox)} has west > east or south > north")
        start, end = parse_time_range(time_range)
        return cls(
            bbox=bbox,
            start=start,
            end=end,
            collections=frozenset(collections) if collections is not None else None,
            filter=make_filter(query, filter, where=where),
        )

    @property
    def time_range_str(self) -> str | None:
        return time_range_to_str(self.start, self.end)

    def describe(self) -> str:
        parts = []
        if self.collections is not None:
            parts.append(f"collections {sorted(self.collections)}")
        if self.bbox is not None:
            parts.append(f"bbox {list(self.bbox)}")
        if self.start or self.end:
            parts.append(f"time {self.time_range_str}")
        if not self.filter.is_empty:
            parts.append(f"filter {json.dumps(self.filter.to_cql2())}")
        return ", ".join(parts) or "no constraints"

    # -- pruning of catalogs/collections ------------------------------------------------

    def may_contain(self, node: Mapping[str, Any]) -> bool:
        """False if a collection's id or extent rules out every item below it."""
        if node.get("type") != "Collection":
            return True
        if self.collections is not None and node.get("id") not in self.collections:
            return False
        extent = node.get("extent") or {}
        boxes = (extent.get("spatial") or {}).get("bbox") or []
        if self.bbox is not None and boxes and len(boxes[0]) >= 4:
            b = boxes[0]
            west, south, east, north = (b[0], b[1], b[3], b[4]) if len(b) == 6 else b[:4]
            if not _boxes_overlap((west, south, east, north), self.bbox):
                return False
        intervals = (extent.get("temporal") or {}).get("interval") or []
        if intervals and (self.start or self.end):
            lo, hi = (parse_datetime(v) for v in intervals[0])
            if self.end is not None and lo is not None and lo > self.end:
                return False
            if self.start is not None and hi is not None and hi < self.start:
                return False
        return True

    # -- items --------------------------------------------------------------------------

    def matches(self, item: Mapping[str, Any], *, spatial: bool = True) -> bool:
        """``spatial=False`` skips the bbox test (for callers that tested geometries already)."""
        if self.collections is not None and item.get("collection") not in self.collections:
            return False
        if spatial and self.bbox is not None and not self._intersects(item):
            return False
        if (self.start or self.end) and not self._in_time(item.get("properties") or {}):
            return False
        return self.filter.matches(item)

    def _intersects(self, item: Mapping[str, Any]) -> bool:
        bbox = item.get("bbox")
        if bbox is not None and len(bbox) >= 4:
            b = (bbox[0], bbox[1], bbox[3], bbox[4]) if len(bbox) == 6 else tuple(bbox[:4])
            if not _boxes_overlap(b, self.bbox):
                return False
        geometry = item.get("geometry")
        if geometry is None:
            return bbox is not None
        return intersects_bbox(shapely.geometry.shape(geometry), self.bbox)

    def _in_time(self, props: Mapping[str, Any]) -> bool:
        lo = parse_datetime(props.get("start_datetime")) or parse_datetime(props.get("datetime"))
        hi = parse_datetime(props.get("end_datetime")) or parse_datetime(props.get("datetime"))
        if lo is None and hi is None:
            return False
        if self.end is not None and lo is not None and lo > self.end:
            return False
        return not (self.start is not None and hi is not None and hi < self.start)


def intersects_bbox(geometry: shapely.Geometry, bbox: Sequence[float]) -> bool:
    return bool(shapely.intersects(geometry, shapely.box(*bbox)))


def _boxes_overlap(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] <= b[2] and a[2] >= b[0] and a[1] <= b[3] and a[3] >= b[1]


_WGS84 = pyproj.CRS.from_epsg(4326)


def bbox_to_lonlat(bbox: Sequence[float], crs: pyproj.CRS) -> tuple[float, float, float, float]:
    if len(bbox) != 4:
        raise FilterError(f"bbox must be [west, south, east, north], got {list(bbox)!r}")
    if crs.equals(_WGS84, ignore_axis_order=True):
        return tuple(float(v) for v in bbox)
    return tuple(transform_bounds(crs, _WGS84, *bbox, densify_pts=21))
