"""Queries: what to fetch, as plain picklable values, and the ``ee`` expressions built from them.

A ``Recipe`` holds strings and numbers only (collection id, dates, filters,
reducer, bands, types, sentinels), so it travels to dask workers; each worker
builds the ``ee.Image`` for a time step itself (no network call).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ...errors import ProcessingError, SourceOpenError
from ...filters import Comparison
from ...retry import RetryPolicy
from .fetch import FetchCounters, call_with_retries

REDUCERS = ("mosaic", "median", "mean", "min", "max", "first")
TEMPORAL_RESOLUTIONS = ("raw", "daily", "monthly", "yearly")
_PERIOD = {"daily": "D", "monthly": "M", "yearly": "Y"}

# ee.Filter methods of the comparison operators
_EE_FILTERS = {"<": "lt", "<=": "lte", ">": "gt", ">=": "gte", "=": "eq", "!=": "neq"}

# Earth Engine names of the pixel types we cast to.
EE_TYPE = {
    "uint8": "uint8",
    "int8": "int8",
    "uint16": "uint16",
    "int16": "int16",
    "uint32": "uint32",
    "int32": "int32",
    "int64": "int64",
    "float32": "float",
    "float64": "double",
}


def ee_filter(c: Comparison) -> Any:
    """The ``ee.Filter`` of a ``prop op value`` comparison."""
    import ee

    return getattr(ee.Filter, _EE_FILTERS[c.op])(c.prop, c.value)


@dataclass(frozen=True)
class Query:
    """Which images: a collection (or one image) id, a time range and property filters."""

    data_id: str
    is_collection: bool
    time_range: tuple[str, str] | None = None  # [start, end) ISO dates
    filters: tuple[Comparison, ...] = ()

    def collection(self, start_ms: int | None = None, end_ms: int | None = None) -> Any:
        import ee

        col = ee.ImageCollection(self.data_id)
        if self.time_range is not None:
            col = col.filterDate(self.time_range[0], self.time_range[1])
        if start_ms is not None:
            col = col.filterDate(ee.Date(start_ms), ee.Date(end_ms))
        for f in self.filters:
            col = col.filter(ee_filter(f))
        return col


@dataclass(frozen=True)
class ImageInfo:
    """One image of a query: id, start time, bands and their types, native grid."""

    id: str
    time_ms: int | None
    band_types: tuple[tuple[str, str], ...]  # (band, numpy dtype)
    crs: str | None
    transform: tuple[float, ...] | None
    dimensions: tuple[int, int] | None
    properties: dict[str, Any]
    version: int | None = None  # system:version: changes when the asset is re-ingested

    @property
    def time(self) -> pd.Timestamp | None:
        return None if self.time_ms is None else pd.Timestamp(self.time_ms, unit="ms")


def list_images(query: Query, policy: RetryPolicy, counters: FetchCounters) -> list[ImageInfo]:
    """The images of ``query`` (one getInfo call, with classified retries), oldest first."""
    import ee

    if query.is_collection:
        info = call_with_retries(
            lambda: query.collection().sort("system:time_start").getInfo(),
            policy,
            counters,
            f"listing images of {query.data_id}",
        )
        features = info.get("features", [])
    else:
        features = [
            call_with_retries(
                lambda: ee.Image(query.data_id).getInfo(),
                policy,
                counters,
                f"describing image {query.data_id}",
            )
        ]
    return [image_info(f) for f in features]


def image_info(feature: dict[str, Any]) -> ImageInfo:
    props = feature.get("properties") or {}
    bands = feature.get("bands") or []
    first = bands[0] if bands else {}
    dims = first.get("dimensions")
    return ImageInfo(
        id=feature.get("id", ""),
        time_ms=props.get("system:time_start"),
        band_types=tuple((b["id"], numpy_dtype(b.get("data_type") or {})) for b in bands),
        crs=first.get("crs"),
        transform=tuple(first["crs_transform"]) if first.get("crs_transform") else None,
        dimensions=(int(dims[0]), int(dims[1])) if dims else None,
        properties=props,
        version=feature.get("version", props.get("system:version")),
    )


def numpy_dtype(data_type: dict[str, Any]) -> str:
    """The smallest numpy type holding an Earth Engine ``PixelType``."""
    precision = data_type.get("precision")
    if precision == "double":
        return "float64"
    if precision == "float":
        return "float32"
    lo, hi = data_type.get("min"), data_type.get("max")
    if lo is None or hi is None:
        return "int64"
    for dt in ("uint8", "int8", "uint16", "int16", "uint32", "int32"):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return dt
    return "int64"


@dataclass(frozen=True)
class Step:
    """One time step of the output: a single image (raw) or a period to composite."""

    time_ms: int | None
    image_id: str | None = None  # raw steps
    start_ms: int | None = None  # composite steps: [start, end)
    end_ms: int | None = None
    n_images: int = 1


def time_steps(images: Sequence[ImageInfo], resolution: str) -> list[Step]:
    """Raw: one step per image. Otherwise one step per UTC day/month/year that has images,
    stamped with the period start."""
    if resolution == "raw":
        return [Step(i.time_ms, image_id=i.id) for i in images]
    groups: dict[pd.Period, int] = {}
    for img in images:
        if img.time_ms is None:
            raise SourceOpenError(
                f"earthengine: image {img.id} has no system:time_start to group by"
            )
        period = pd.Timestamp(img.time_ms, unit="ms").to_period(_PERIOD[resolution])
        groups[period] = groups.get(period, 0) + 1
    steps = []
    for period in sorted(groups):
        start = _ms(period.start_time)
        end = _ms((period + 1).start_time)
        steps.append(Step(start, start_ms=start, end_ms=end, n_images=groups[period]))
    return steps


def _ms(ts: pd.Timestamp) -> int:
    return int(ts.value // 1_000_000)


@dataclass(frozen=True)
class BandGroup:
    """Bands unmasked with one sentinel, then cast to one type."""

    bands: tuple[str, ...]
    ee_type: str
    sentinel: float | int


RESAMPLING = ("nearest", "bilinear", "bicubic")


@dataclass(frozen=True)
class MaskRule:
    """Mask a pixel of every band where ``band`` has one of ``values`` or any of ``bits`` set."""

    band: str
    values: tuple[float, ...] = ()
    bits: tuple[int, ...] = ()

    def keep(self, raw: Any) -> Any:
        """The ``ee.Image`` that is 1 where pixels are kept, 0 where masked."""
        qa = raw.select([self.band])
        keep = None
        if self.values:
            keep = qa.remap(list(self.values), [0] * len(self.values), 1)
        if self.bits:
            flags = qa.bitwiseAnd(sum(1 << b for b in self.bits)).eq(0)
            keep = flags if keep is None else keep.And(flags)
        return keep


@dataclass(frozen=True)
class Processing:
    """Per-image server-side processing, before compositing: resampling, masks,
    band math, then the user's ``image_hook`` (``hook_digest`` fingerprints its file)."""

    masks: tuple[MaskRule, ...] = ()
    expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # name, text, band vars
    resampling: str | None = None
    hook_path: str | None = None
    hook_function: str | None = None
    hook_digest: str | None = None

    def apply(self, raw: Any) -> Any:
        """``raw`` processed. Masks are computed from the unresampled image so that QA
        bit flags are never interpolated."""
        img = raw
        if self.resampling and self.resampling != "nearest":
            img = img.resample(self.resampling)
        for rule in self.masks:
            img = img.updateMask(rule.keep(raw))
        for name, text, variables in self.expressions:
            # bands enter as float: (B8 - B4) / (B8 + B4) must not be an integer division
            values = {v: img.select([v]).toFloat() for v in variables}
            img = img.addBands(img.expression(text, values).rename([name]))
        if self.hook_path is not None:
            img = self._hook()(img)
        return img

    def _hook(self) -> Any:
        from pathlib import Path

        from ...config.model import CustomProcessing
        from ...hooks import load_hook

        fn = load_hook(CustomProcessing(Path(self.hook_path or ""), self.hook_function or ""))

        def run(img: Any) -> Any:
            import ee

            try:
                out = fn(img)
            except Exception as e:
                raise ProcessingError(
                    f"earthengine image_hook {Path(self.hook_path or '').name}:"
                    f"{self.hook_function} raised {type(e).__name__}: {e}"
                ) from e
            if not isinstance(out, ee.Image):
                raise ProcessingError(
                    f"earthengine image_hook {self.hook_function} returned "
                    f"{type(out).__name__}, expected an ee.Image"
                )
            return out

        return run


@dataclass(frozen=True)
class Recipe:
    """Everything that defines the pixels of a time step (picklable)."""

    query: Query
    reducer: str
    bands: tuple[str, ...]
    groups: tuple[BandGroup, ...]
    processing: Processing | None = None

    def image(self, step: Step) -> Any:
        """The ``ee.Image`` for ``step``: composited, then per band group selected, masked
        pixels set to the sentinel, and cast as the last step.

        The cast comes last because Earth Engine types ``unmask(v)`` as the union of the
        band's type and the constant's: a float band unmasked with a double constant (the
        float32 minimum, a fractional fill value) would arrive as double. Every sentinel is
        a value of the group's type, so the cast keeps it exact.
        """
        import ee

        proc = self.processing
        if step.image_id is not None:
            img = ee.Image(step.image_id)
            img = proc.apply(img) if proc else img
        elif not self.query.is_collection:
            img = ee.Image(self.query.data_id)
            img = proc.apply(img) if proc else img
        else:
            col = self.query.collection(step.start_ms, step.end_ms)
            if proc is not None:
                col = col.map(proc.apply)
            if self.reducer == "mosaic":  # newest on top
                img = col.sort("system:time_start").mosaic()
            elif self.reducer == "first":  # oldest valid observation on top
                img = col.sort("system:time_start", False).mosaic()
            else:
                img = getattr(col, self.reducer)()
        parts = [
            img.select(list(g.bands))
            .unmask(g.sentinel, False)
            .cast({b: g.ee_type for b in g.bands})
            for g in self.groups
        ]
        out = parts[0]
        for part in parts[1:]:
            out = out.addBands(part)
        return out

    def describe(self, step: Step) -> dict[str, Any]:
        """A JSON-able identity of the step's pixels (for tile cache keys)."""
        return {
            "query": [
                self.query.data_id,
                self.query.time_range,
                [vars(f) for f in self.query.filters],
            ],
            "reducer": self.reducer,
            "groups": [[list(g.bands), g.ee_type, g.sentinel] for g in self.groups],
            "step": [step.image_id, step.start_ms, step.end_ms],
            **({"processing": repr(self.processing)} if self.processing else {}),
        }
