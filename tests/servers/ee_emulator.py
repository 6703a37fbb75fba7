"""An offline Earth Engine emulator that the real ``earthengine-api`` client talks to.

A ``ThreadingHTTPServer`` on 127.0.0.1 speaking the Cloud API REST calls the
client makes: the discovery document and algorithm list (both loaded from the
fixtures shipped inside the installed ``ee`` package, never copied into this
repository), ``value:compute`` (getInfo), ``image:computePixels`` and
``assets/...:getPixels`` (NPY structured arrays), asset metadata, and batch
exports (``image:export`` plus the operations endpoints: get, list, cancel;
an export to an asset becomes readable once its operation has succeeded, an
export to Cloud Storage is written as GeoTIFF(s) into a small local GCS served
by the same server: the JSON API object list, metadata and ``alt=media``
downloads with ``Range``, what ``gcsfs`` calls with ``endpoint_url`` set).

Pixel values are a deterministic function of each image's native pixel index,
band and image, sampled nearest-neighbour at the request's pixel centres, so
a client's mosaics, composites and tile seams can be checked exactly with
``Catalog.render``. Each image has a footprint and masked boxes (clouds);
masked pixels come back as 0, as from the real API.

It reproduces the real limits and failures: the request-size and grid-size
errors, 429 above a concurrency cap, injected 429/503/400/404 replies,
``Retry-After``, slow replies and dropped connections, per kind of request
(pixels, getInfo, asset metadata, export start and polling: ``FAULT_KINDS``);
and it counts what happened (``stats``).
"""

from __future__ import annotations

import io
import json
import math
import threading
import time
import urllib.parse
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd
import pyproj

from multistore.testing.http import QuietHTTPServer

DEFAULT_BYTE_LIMIT = 50331648
DEFAULT_MAX_DIMENSION = 32768
TOO_MANY_REQUESTS = (
    "Too Many Requests: Request was rejected because the request rate or concurrency "
    "limit was exceeded."
)

Bbox = tuple[float, float, float, float]

# What ``Emulator.inject`` can target: pixel requests (computePixels and getPixels),
# getInfo (``value:compute``: listing, describing), asset metadata, export start,
# polling one export operation, listing operations, cancelling.
FAULT_KINDS = (
    "pixels", "compute", "asset", "export", "operation", "operations", "cancel", "delete",
    "algorithms",
)  # fmt: skip
DROP = "drop"  # a fault: close the connection without an answer


# -- the synthetic catalog ---------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticImage:
    """One image asset: bands, date, native grid, footprint and masked boxes (lon/lat)."""

    id: str
    bands: tuple[tuple[str, str], ...]  # (name, numpy dtype)
    time_start: str  # ISO 8601, UTC
    crs: str
    transform: tuple[float, float, float, float, float, float]  # native, north-up
    dimensions: tuple[int, int]  # native width, height
    footprint: Bbox  # lon/lat: valid inside
    mask_boxes: tuple[Bbox, ...] = ()  # lon/lat: masked inside (clouds)
    seed: int = 0
    classes: tuple[int, ...] = ()  # categorical values, for land-cover-like bands
    properties: Mapping[str, Any] = field(default_factory=dict)

    @property
    def time_ms(self) -> int:
        return int(pd.Timestamp(self.time_start).tz_convert("UTC").value // 1_000_000)

    def band_dtype(self, name: str) -> np.dtype:
        return np.dtype(dict(self.bands)[name])


@dataclass(frozen=True)
class RequestGrid:
    """A pixel grid of a request: CRS, affine of pixel edges, size."""

    crs: str  # EPSG code or WKT
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        a, b, c, d, e, f = self.transform
        cols, rows = np.meshgrid(np.arange(self.width) + 0.5, np.arange(self.height) + 0.5)
        return c + cols * a + rows * b, f + cols * d + rows * e


class Catalog:
    """Synthetic images and collections, and the pixel function shared with tests."""

    def __init__(self, images: Iterable[SyntheticImage], collections: Mapping[str, Sequence[str]]):
        self.images: dict[str, SyntheticImage] = {img.id: img for img in images}
        self.collections: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in collections.items()}
        self._transformers: dict[tuple[str, str], pyproj.Transformer] = {}
        self._lock = threading.Lock()

    def _transformer(self, src: str, dst: str) -> pyproj.Transformer:
        with self._lock:
            key = (src, dst)
            if key not in self._transformers:
                self._transformers[key] = pyproj.Transformer.from_crs(
                    pyproj.CRS.from_user_input(src), pyproj.CRS.from_user_input(dst), always_xy=True
                )
            return self._transformers[key]

    def points(self, grid: RequestGrid, crs: str) -> tuple[np.ndarray, np.ndarray]:
        """The grid's pixel centres in ``crs``."""
        x, y = grid.centres()
        if pyproj.CRS.from_user_input(grid.crs) == pyproj.CRS.from_user_input(crs):
            return x, y
        return self._transformer(grid.crs, crs).transform(x, y)

    def footprint(self, image_id: str, grid: RequestGrid) -> np.ndarray:
        img = self.images[image_id]
        lon, lat = self.points(grid, "EPSG:4326")
        return _inside(img.footprint, lon, lat)

    def render(
        self, image_id: str, bands: Sequence[str], grid: RequestGrid
    ) -> dict[str, np.ma.MaskedArray]:
        """Nearest-neighbour samples of ``bands`` at the grid's pixel centres, masked where invalid."""
        img = self.images[image_id]
        lon, lat = self.points(grid, "EPSG:4326")
        valid = _inside(img.footprint, lon, lat)
        for box in img.mask_boxes:
            valid &= ~_inside(box, lon, lat)
        x, y = self.points(grid, img.crs)
        a, _, c, _, e, f = img.transform
        i = np.floor((x - c) / a).astype("int64")
        j = np.floor((y - f) / e).astype("int64")
        names = [name for name, _ in img.bands]
        out = {}
        for band in bands:
            k = names.index(band)
            values = _pixel_values(img, k, i, j)
            out[band] = np.ma.MaskedArray(values, mask=~valid)
        return out


def _inside(box: Bbox, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    w, s, e, n = box
    return (lon >= w) & (lon < e) & (lat >= s) & (lat < n)


def _pixel_values(img: SyntheticImage, band_index: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    dtype = np.dtype(img.bands[band_index][1])
    base = i * 7 + j * 13 + band_index * 101 + img.seed * 37
    if dtype.kind == "f":
        return (i * 0.25 + j * 0.5 + band_index * 10 + img.seed).astype(dtype)
    if img.classes:
        return np.asarray(img.classes, dtype=dtype)[np.mod(base, len(img.classes))]
    if dtype.kind == "u":
        top = min(np.iinfo(dtype).max - 5, 60000)
        return np.mod(base, top).astype(dtype)
    half = min(np.iinfo(dtype).max - 5, 15000)
    return (np.mod(base, 2 * half) - half).astype(dtype)


def default_catalog() -> Catalog:
    """A Sentinel-2-like uint16 collection, a land cover image, a float32 collection, and
    12-band images of several dtypes, all around lon 10, lat 45."""
    s2_bands = tuple((b, "uint16") for b in ("B2", "B3", "B4", "B8"))
    utm = (10.0, 0.0, 560000.0, 0.0, -10.0, 5000000.0)
    s2 = [
        SyntheticImage(
            "TEST/S2LIKE/20240105A",
            s2_bands,
            "2024-01-05T10:00:00Z",
            "EPSG:32632",
            utm,
            (4000, 4000),
            (9.9, 44.9, 10.1, 45.3),
            ((10.02, 45.02, 10.05, 45.05),),
            1,
            properties={"CLOUDY_PIXEL_PERCENTAGE": 10.0, "MGRS_TILE": "32TNR"},
        ),
        SyntheticImage(
            "TEST/S2LIKE/20240105B",
            s2_bands,
            "2024-01-05T10:00:10Z",
            "EPSG:32632",
            utm,
            (4000, 4000),
            (10.08, 44.9, 10.3, 45.3),
            ((10.09, 45.0, 10.095, 45.2),),
            2,
            properties={"CLOUDY_PIXEL_PERCENTAGE": 35.0, "MGRS_TILE": "32TNS"},
        ),
        SyntheticImage(
            "TEST/S2LIKE/20240120",
            s2_bands,
            "2024-01-20T10:00:00Z",
            "EPSG:32632",
            utm,
            (4000, 4000),
            (9.9, 44.9, 10.3, 45.3),
            ((10.0, 45.06, 10.03, 45.09),),
            3,
            properties={"CLOUDY_PIXEL_PERCENTAGE": 5.0, "MGRS_TILE": "32TNR"},
        ),
        SyntheticImage(
            "TEST/S2LIKE/20240210",
            s2_bands,
            "2024-02-10T10:00:00Z",
            "EPSG:32632",
            utm,
            (4000, 4000),
            (9.9, 44.9, 10.3, 45.3),
            (),
            4,
            properties={"CLOUDY_PIXEL_PERCENTAGE": 50.0, "MGRS_TILE": "32TNR"},
        ),
    ]
    landcover = SyntheticImage(
        "TEST/LANDCOVER",
        (("Map", "uint8"),),
        "2021-01-01T00:00:00Z",
        "EPSG:4326",
        (0.0001, 0.0, 9.5, 0.0, -0.0001, 45.5),
        (10000, 10000),
        (9.5, 44.5, 10.5, 45.5),
        ((10.10, 45.10, 10.12, 45.12),),
        5,
        classes=(10, 20, 30, 40, 50, 60, 80, 90, 95, 100),
    )
    float_bands = (("temp", "float32"), ("precip", "float32"))
    geo = (0.01, 0.0, 9.0, 0.0, -0.01, 46.0)
    floats = [
        SyntheticImage(
            f"TEST/FLOAT/{d.replace('-', '')}",
            float_bands,
            f"{d}T00:00:00Z",
            "EPSG:4326",
            geo,
            (200, 200),
            (9.0, 44.0, 11.0, 46.0),
            boxes,
            seed,
        )
        for d, boxes, seed in (
            ("2024-01-10", ((10.0, 45.0, 10.05, 45.05),), 6),
            ("2024-01-25", (), 7),
            ("2024-02-15", ((10.1, 45.1, 10.2, 45.2),), 8),
        )
    ]
    multi = [
        SyntheticImage(
            f"TEST/MULTI/{dt}",
            tuple((f"b{k}", dt) for k in range(1, 13)),
            "2023-06-01T00:00:00Z",
            "EPSG:4326",
            (0.001, 0.0, 9.0, 0.0, -0.001, 46.0),
            (2000, 2000),
            (9.0, 44.0, 11.0, 46.0),
            (),
            9 + n,
        )
        for n, dt in enumerate(("uint8", "int8", "uint16", "int16", "float32", "float64"))
    ]
    return Catalog(
        [*s2, landcover, *floats, *multi],
        {"TEST/S2LIKE": [i.id for i in s2], "TEST/FLOAT": [i.id for i in floats]},
    )


# -- expression evaluation ---------------------------------------------------------------


class EvalError(Exception):
    """An expression the emulator rejects (answered with HTTP 400 like the real API)."""


class _Image:
    properties: Mapping[str, Any]  # set by every subclass

    def bands(self) -> list[tuple[str, np.dtype]]:
        raise NotImplementedError

    def render(
        self, cat: Catalog, grid: RequestGrid, names: Sequence[str]
    ) -> dict[str, np.ma.MaskedArray]:
        raise NotImplementedError

    def footprint(self, cat: Catalog, grid: RequestGrid) -> np.ndarray:
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        return {
            "type": "Image",
            "bands": [
                {
                    "id": n,
                    "data_type": _pixel_type(dt),
                    "crs": "EPSG:4326",
                    "crs_transform": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
                }
                for n, dt in self.bands()
            ],
            "properties": dict(self.properties),
        }


class _Asset(_Image):
    def __init__(self, img: SyntheticImage):
        self.img = img
        self.properties = {
            **img.properties,
            "system:time_start": img.time_ms,
            "system:index": img.id.rsplit("/", 1)[-1],
        }

    def bands(self):
        return [(n, np.dtype(dt)) for n, dt in self.img.bands]

    def render(self, cat, grid, names):
        return cat.render(self.img.id, names, grid)

    def footprint(self, cat, grid):
        return cat.footprint(self.img.id, grid)

    def info(self):
        return {
            "type": "Image",
            "id": self.img.id,
            "version": 1,
            "bands": [
                {
                    "id": n,
                    "data_type": _pixel_type(np.dtype(dt)),
                    "dimensions": list(self.img.dimensions),
                    "crs": self.img.crs,
                    "crs_transform": list(self.img.transform),
                }
                for n, dt in self.img.bands
            ],
            "properties": dict(self.properties),
        }


class _Select(_Image):
    def __init__(self, src: _Image, selectors: Sequence[Any], new_names: Sequence[str] | None):
        self.src, self.properties = src, src.properties
        names = [n for n, _ in src.bands()]
        picked: list[str] = []
        for sel in selectors:
            if isinstance(sel, int):
                picked.append(names[sel])
            elif sel in names:
                picked.append(sel)
            else:
                raise EvalError(f"Image.select: Pattern '{sel}' did not match any bands.")
        self.picked = picked
        self.names = list(new_names) if new_names else picked

    def bands(self):
        types = dict(self.src.bands())
        return [(new, types[old]) for new, old in zip(self.names, self.picked, strict=True)]

    def render(self, cat, grid, names):
        mapping = dict(zip(self.names, self.picked, strict=True))
        src = self.src.render(cat, grid, [mapping[n] for n in names])
        return {n: src[mapping[n]] for n in names}

    def footprint(self, cat, grid):
        return self.src.footprint(cat, grid)


class _Cast(_Image):
    def __init__(self, src: _Image, types: Mapping[str, np.dtype]):
        self.src, self.types, self.properties = src, types, src.properties

    def bands(self):
        return [(n, self.types.get(n, dt)) for n, dt in self.src.bands()]

    def render(self, cat, grid, names):
        out = self.src.render(cat, grid, names)
        return {n: _cast(out[n], self.types[n]) if n in self.types else out[n] for n in names}

    def footprint(self, cat, grid):
        return self.src.footprint(cat, grid)


class _Unmask(_Image):
    def __init__(self, src: _Image, value: float, same_footprint: bool):
        self.src, self.value, self.same_footprint = src, value, same_footprint
        self.properties = src.properties

    def bands(self):
        return [(n, _union_type(dt, self.value)) for n, dt in self.src.bands()]

    def render(self, cat, grid, names):
        types = dict(self.bands())
        out = self.src.render(cat, grid, names)
        where = self.src.footprint(cat, grid) if self.same_footprint else None
        result = {}
        for n in names:
            arr = out[n].astype(types[n])
            fill = np.ma.getmaskarray(arr) if where is None else np.ma.getmaskarray(arr) & where
            data = np.where(fill, np.asarray(self.value).astype(types[n]), arr.filled(0))
            result[n] = np.ma.MaskedArray(data, mask=np.ma.getmaskarray(arr) & ~fill)
        return result

    def footprint(self, cat, grid):
        fp = self.src.footprint(cat, grid)
        return fp if self.same_footprint else np.ones_like(fp)


class _Composite(_Image):
    """mosaic (last valid on top) or a per-pixel reducer over a collection's images."""

    def __init__(self, images: Sequence[_Image], kind: str, suffix: bool = False):
        if not images:
            self.names: list[tuple[str, np.dtype]] = []
        else:
            self.names = images[0].bands()
        self.images, self.kind, self.suffix = list(images), kind, suffix
        self.properties = {}

    def _out_name(self, n: str) -> str:
        return f"{n}_{self.kind}" if self.suffix else n

    def bands(self):
        out = []
        for n, dt in self.names:
            if self.kind in ("mean", "median"):
                dt = np.dtype("float64")
            out.append((self._out_name(n), dt))
        return out

    def render(self, cat, grid, names):
        back = {self._out_name(n): n for n, _ in self.names}
        types = dict(self.bands())
        src_names = [back[n] for n in names]
        layers = [img.render(cat, grid, src_names) for img in self.images]
        out = {}
        for n, src in zip(names, src_names, strict=True):
            shape = (grid.height, grid.width)
            if not layers:
                out[n] = np.ma.masked_all(shape, dtype=types[n])
                continue
            stack = np.ma.stack([layer[src] for layer in layers])
            if self.kind == "mosaic":
                data = np.zeros(shape, dtype=types[n])
                valid = np.zeros(shape, dtype=bool)
                for layer in layers:
                    m = ~np.ma.getmaskarray(layer[src])
                    data[m] = layer[src].data[m]
                    valid |= m
                out[n] = np.ma.MaskedArray(data, mask=~valid)
            elif self.kind == "mean":
                out[n] = stack.astype("float64").mean(axis=0)
            elif self.kind == "median":
                out[n] = np.ma.median(stack.astype("float64"), axis=0)
            elif self.kind == "min":
                out[n] = stack.min(axis=0)
            elif self.kind == "max":
                out[n] = stack.max(axis=0)
            else:
                raise EvalError(f"reducer '{self.kind}' is not supported by the emulator")
            out[n] = np.ma.MaskedArray(
                np.ma.getdata(out[n]).astype(types[n]), mask=np.ma.getmaskarray(out[n])
            )
        return out

    def footprint(self, cat, grid):
        fp = np.zeros((grid.height, grid.width), dtype=bool)
        for img in self.images:
            fp |= img.footprint(cat, grid)
        return fp


class _AddBands(_Image):
    """``Image.addBands`` / ``ee.Image.cat``: the bands of ``dst`` then those of ``src``."""

    def __init__(self, dst: _Image, src: _Image):
        self.dst, self.src, self.properties = dst, src, dst.properties
        self.dst_names = {n for n, _ in dst.bands()}

    def bands(self):
        return [
            *self.dst.bands(),
            *[(n, dt) for n, dt in self.src.bands() if n not in self.dst_names],
        ]

    def render(self, cat, grid, names):
        out = self.dst.render(cat, grid, [n for n in names if n in self.dst_names])
        out.update(self.src.render(cat, grid, [n for n in names if n not in self.dst_names]))
        return out

    def footprint(self, cat, grid):
        return self.dst.footprint(cat, grid) | self.src.footprint(cat, grid)


class _Reprojected(_Image):
    """``Image.reproject`` / ``clipToBoundsAndScale``: values pass through (they are
    sampled at the request's pixel centres anyway); the export grid is recorded."""

    def __init__(self, src: _Image, grid: RequestGrid | None):
        self.src, self.grid, self.properties = src, grid, src.properties

    def bands(self):
        return self.src.bands()

    def render(self, cat, grid, names):
        return self.src.render(cat, grid, names)

    def footprint(self, cat, grid):
        return self.src.footprint(cat, grid)


class _Exported(_Image):
    """An image asset written by an export task, on the export's grid."""

    def __init__(self, name: str, src: _Image, grid: RequestGrid | None):
        self.name, self.src, self.grid = name, src, grid
        self.properties = dict(src.properties)

    def bands(self):
        return self.src.bands()

    def render(self, cat, grid, names):
        return self.src.render(cat, grid, names)

    def footprint(self, cat, grid):
        return self.src.footprint(cat, grid)

    def info(self):
        info = self.src.info()
        info["id"] = self.name
        if self.grid is not None:
            for band in info["bands"]:
                band.update(
                    crs=self.grid.crs,
                    crs_transform=list(self.grid.transform),
                    dimensions=[self.grid.width, self.grid.height],
                )
        return info


class _Constant(_Image):
    """``Image.constant``: only its value is used (as ``unmask``'s fill value)."""

    def __init__(self, value: float):
        self.value = value
        self.properties = {}

    def bands(self):
        return [("constant", np.asarray(self.value).dtype)]

    def render(self, cat, grid, names):
        return {n: np.ma.MaskedArray(np.full((grid.height, grid.width), self.value)) for n in names}

    def footprint(self, cat, grid):
        return np.ones((grid.height, grid.width), dtype=bool)


class _Resampled(_Image):
    """``Image.resample``: the emulator samples every image at the request's pixel centres
    of its native grid, so on a native-aligned request all modes agree; the mode is kept
    (``mode``) so tests can see what the client asked for."""

    def __init__(self, src: _Image, mode: str):
        if mode not in ("bilinear", "bicubic"):
            raise EvalError(f"Image.resample: unknown mode '{mode}'.")
        self.src, self.mode, self.properties = src, mode, src.properties

    def bands(self):
        return self.src.bands()

    def render(self, cat, grid, names):
        return self.src.render(cat, grid, names)

    def footprint(self, cat, grid):
        return self.src.footprint(cat, grid)


def _paired(image: _Image, names: Sequence[str], other: _Image) -> dict[str, str]:
    """Earth Engine pairs bands of two images by position; a one-band image pairs with all."""
    mine = [n for n, _ in image.bands()]
    theirs = [n for n, _ in other.bands()]
    if len(theirs) == 1:
        return {n: theirs[0] for n in names}
    if len(theirs) != len(mine):
        raise EvalError(
            f"Images must contain the same number of bands or only 1 band. Got {len(mine)} and {len(theirs)}."
        )
    pos = dict(zip(mine, theirs, strict=True))
    return {n: pos[n] for n in names}


class _UpdateMask(_Image):
    """``Image.updateMask``: pixels whose mask value is 0 (or masked) become masked."""

    def __init__(self, src: _Image, mask: _Image):
        self.src, self.mask, self.properties = src, mask, src.properties

    def bands(self):
        return self.src.bands()

    def render(self, cat, grid, names):
        out = self.src.render(cat, grid, names)
        pairs = _paired(self.src, names, self.mask)
        masks = self.mask.render(cat, grid, sorted(set(pairs.values())))
        result = {}
        for n in names:
            m = masks[pairs[n]]
            drop = np.ma.getmaskarray(m) | (np.ma.getdata(m) == 0)
            result[n] = np.ma.MaskedArray(out[n].data, mask=np.ma.getmaskarray(out[n]) | drop)
        return result

    def footprint(self, cat, grid):
        return self.src.footprint(cat, grid)


_BINARY = {
    "Image.add": np.add,
    "Image.subtract": np.subtract,
    "Image.multiply": np.multiply,
    "Image.divide": np.divide,
    "Image.bitwiseAnd": np.bitwise_and,
    "Image.eq": np.equal,
    "Image.neq": np.not_equal,
    "Image.lt": np.less,
    "Image.lte": np.less_equal,
    "Image.gt": np.greater,
    "Image.gte": np.greater_equal,
    "Image.and": lambda a, b: (a != 0) & (b != 0),
    "Image.or": lambda a, b: (a != 0) | (b != 0),
}
_BOOLEAN = {"Image.eq", "Image.neq", "Image.lt", "Image.lte", "Image.gt", "Image.gte",
            "Image.and", "Image.or"}  # fmt: skip


class _Binary(_Image):
    """A per-pixel operation of two images (bands paired by position), named after the first.
    Comparisons and logic give uint8; arithmetic follows NumPy's types (Earth Engine widens
    integer types further; the store only does arithmetic on floats)."""

    def __init__(self, op: str, a: _Image, b: _Image):
        self.op, self.a, self.b, self.properties = op, a, b, a.properties

    def bands(self):
        b_types = dict(self.b.bands())
        pairs = _paired(self.a, [n for n, _ in self.a.bands()], self.b)
        out = []
        for n, dt in self.a.bands():
            if self.op in _BOOLEAN:
                out.append((n, np.dtype("uint8")))
            else:
                one = np.ones((1,), dtype=dt)
                other = np.ones((1,), dtype=b_types[pairs[n]])
                out.append((n, _BINARY[self.op](one, other).dtype))
        return out

    def render(self, cat, grid, names):
        types = dict(self.bands())
        pairs = _paired(self.a, names, self.b)
        left = self.a.render(cat, grid, names)
        right = self.b.render(cat, grid, sorted(set(pairs.values())))
        out = {}
        for n in names:
            x, y = left[n], right[pairs[n]]
            with np.errstate(divide="ignore", invalid="ignore"):
                data = _BINARY[self.op](np.ma.getdata(x), np.ma.getdata(y))
            mask = np.ma.getmaskarray(x) | np.ma.getmaskarray(y)
            if data.dtype.kind == "f":
                mask |= ~np.isfinite(data)
            out[n] = np.ma.MaskedArray(np.asarray(data).astype(types[n]), mask=mask)
        return out

    def footprint(self, cat, grid):
        return self.a.footprint(cat, grid)


class _Remap(_Image):
    """``Image.remap`` of one band: listed values mapped, others to ``default`` (or masked)."""

    def __init__(self, src: _Image, src_values: Sequence[float], dst_values: Sequence[float],
                 default: float | None):  # fmt: skip
        if len(src.bands()) != 1:
            raise EvalError("Image.remap: the input must have one band (or give bandName).")
        self.src, self.properties = src, src.properties
        self.table = dict(zip(src_values, dst_values, strict=True))
        self.default = default

    def bands(self):
        values = [*self.table.values(), *([] if self.default is None else [self.default])]
        kind = "f" if any(not float(v).is_integer() for v in values) else "i"
        return [(self.src.bands()[0][0], np.dtype("float64" if kind == "f" else "int64"))]

    def render(self, cat, grid, names):
        ((name, dt),) = self.bands()
        src = self.src.render(cat, grid, [name])[name]
        data = np.ma.getdata(src)
        out = np.full(data.shape, 0 if self.default is None else self.default, dtype=dt)
        hit = np.zeros(data.shape, dtype=bool)
        for k, v in self.table.items():
            where = data == k
            out[where], hit = v, hit | where
        mask = np.ma.getmaskarray(src) | (~hit if self.default is None else False)
        return {n: np.ma.MaskedArray(out, mask=mask) for n in names}

    def footprint(self, cat, grid):
        return self.src.footprint(cat, grid)


class _Expression(_Image):
    """An ``Image.expression`` applied to its images: Python arithmetic syntax over band
    variables, ``b('name')``/``b(0)`` of the default image, numbers, ``float()``/``int()``;
    comparisons and logic give uint8. One output band named after the first band used."""

    def __init__(self, text: str, default: str, images: Mapping[str, _Image]):
        import ast

        try:
            self.tree = ast.parse(text, mode="eval")
        except SyntaxError as e:
            raise EvalError(f"Image.parseExpression: {e.msg}") from None
        self.default, self.images = default, dict(images)
        self.properties = self.images[default].properties if default in self.images else {}
        self.first: str | None = None

    def _band(self, img: _Image, sel: Any) -> str:
        names = [n for n, _ in img.bands()]
        if isinstance(sel, int):
            return names[sel]
        if sel not in names:
            raise EvalError(f"Image.expression: band '{sel}' not found.")
        return sel

    def _eval(self, node: Any, fetch: Callable[[_Image, str], Any]) -> Any:  # noqa: C901
        import ast

        ops = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply,
               ast.Div: np.true_divide, ast.Pow: np.power, ast.Mod: np.mod}  # fmt: skip
        cmp = {ast.Gt: np.greater, ast.GtE: np.greater_equal, ast.Lt: np.less,
               ast.LtE: np.less_equal, ast.Eq: np.equal, ast.NotEq: np.not_equal}  # fmt: skip
        if isinstance(node, ast.Expression):
            return self._eval(node.body, fetch)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.Name):
            img = self.images.get(node.id)
            if img is None:
                raise EvalError(f"Image.expression: unknown variable '{node.id}'.")
            band = self._band(img, 0)
            self.first = self.first or band
            return fetch(img, band)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            fname, args = node.func.id, node.args
            if fname == "b" and len(args) == 1 and isinstance(args[0], ast.Constant):
                band = self._band(self.images[self.default], args[0].value)
                self.first = self.first or band
                return fetch(self.images[self.default], band)
            if fname in ("float", "int") and len(args) == 1:
                v = self._eval(args[0], fetch)
                dt = "float32" if fname == "float" else "int32"
                return v.astype(dt) if isinstance(v, np.ma.MaskedArray) else np.dtype(dt).type(v)
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            with np.errstate(divide="ignore", invalid="ignore"):
                return ops[type(node.op)](
                    self._eval(node.left, fetch), self._eval(node.right, fetch)
                )
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -self._eval(node.operand, fetch)
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in cmp:
            res = cmp[type(node.ops[0])](
                self._eval(node.left, fetch), self._eval(node.comparators[0], fetch)
            )
            return res.astype("uint8")
        raise EvalError(f"Image.expression: unsupported syntax {type(node).__name__} (emulator)")

    def _result(self, fetch: Callable[[_Image, str], Any]) -> np.ma.MaskedArray:
        out = self._eval(self.tree, fetch)
        if not isinstance(out, np.ma.MaskedArray):
            raise EvalError("Image.expression: the expression uses no band (emulator)")
        if out.dtype.kind == "f":
            out = np.ma.masked_invalid(out)
        return out

    def bands(self):
        def probe(img, band):
            return np.ma.MaskedArray(np.ones((1, 1), dtype=dict(img.bands())[band]))

        out = self._result(probe)
        return [(self.first or "constant", out.dtype)]

    def render(self, cat, grid, names):
        rendered: dict[tuple[int, str], np.ma.MaskedArray] = {}

        def fetch(img, band):
            key = (id(img), band)
            if key not in rendered:
                rendered[key] = img.render(cat, grid, [band])[band]
            return rendered[key]

        out = self._result(fetch)
        return {
            n: np.ma.MaskedArray(np.ma.getdata(out), mask=np.ma.getmaskarray(out)) for n in names
        }

    def footprint(self, cat, grid):
        img = self.images.get(self.default) or next(iter(self.images.values()))
        return img.footprint(cat, grid)


@dataclass
class _ParsedExpression:
    """``Image.parseExpression``: a function of the named images."""

    text: str
    default: str
    names: list[str]

    def __call__(self, args: Mapping[str, Any]) -> _Expression:
        return _Expression(self.text, self.default, {n: args[n] for n in self.names if n in args})


@dataclass
class _Function:
    """A ``functionDefinitionValue``: its body is evaluated with the arguments bound."""

    evaluator: _Evaluator
    names: list[str]
    body: str | Mapping[str, Any]

    def __call__(self, args: Mapping[str, Any]) -> Any:
        return self.evaluator.apply(self, args)


@dataclass
class _Collection:
    images: list[_Image]

    def info(self) -> dict[str, Any]:
        return {
            "type": "ImageCollection",
            "bands": [],
            "features": [img.info() for img in self.images],
        }


@dataclass
class _Filter:
    test: Any  # Callable[[dict], bool]


_PRECISION = {"f": "float", "i": "int", "u": "int"}


def _pixel_type(dt: np.dtype) -> dict[str, Any]:
    dt = np.dtype(dt)
    if dt.kind == "f":
        return {"type": "PixelType", "precision": "double" if dt.itemsize == 8 else "float"}
    info = np.iinfo(dt)
    return {"type": "PixelType", "precision": "int", "min": int(info.min), "max": int(info.max)}


_INT_TYPES = tuple(
    np.dtype(t) for t in ("uint8", "int8", "uint16", "int16", "uint32", "int32", "int64")
)


def _constant_type(value: float) -> tuple[str, float, float]:
    """Earth Engine's pixel type of a number constant: an int range ``[v, v]`` for a whole
    number that fits a long, else double (JSON carries no float/double distinction)."""
    v = float(value)
    if v.is_integer() and -(2.0**63) <= v < 2.0**63:
        return "int", v, v
    return "double", v, v


def _union_type(dt: np.dtype, value: float) -> np.dtype:
    """The band type after ``unmask(value)``: Earth Engine's union of the band's pixel type
    and the constant's, so a float band unmasked with a double constant becomes double."""
    dt = np.dtype(dt)
    kind, lo, hi = _constant_type(value)
    if kind == "double" or dt == np.float64:
        return np.dtype("float64")
    if dt.kind == "f":  # float with an int constant stays float
        return dt
    info = np.iinfo(dt)
    lo, hi = min(lo, info.min), max(hi, info.max)
    for t in _INT_TYPES:
        if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max:
            return t
    return np.dtype("float64")


def _cast(arr: np.ma.MaskedArray, dt: np.dtype) -> np.ma.MaskedArray:
    data = np.ma.getdata(arr)
    if np.dtype(dt).kind in "iu" and data.dtype.kind == "f":
        info = np.iinfo(dt)
        data = np.clip(np.round(data), info.min, info.max)
    return np.ma.MaskedArray(data.astype(dt), mask=np.ma.getmaskarray(arr))


_EE_TYPES = {
    "uint8": "uint8",
    "int8": "int8",
    "uint16": "uint16",
    "int16": "int16",
    "uint32": "uint32",
    "int32": "int32",
    "int64": "int64",
    "float": "float32",
    "double": "float64",
    "float32": "float32",
    "float64": "float64",
    "byte": "uint8",
    "short": "int16",
    "int": "int32",
    "long": "int64",
}
_TO_FUNCS = {f"Image.to{k.capitalize()}": v for k, v in _EE_TYPES.items()}

_COMPARE = {
    "Filter.equals": lambda a, b: a == b,
    "Filter.notEquals": lambda a, b: a != b,
    "Filter.neq": lambda a, b: a != b,
    "Filter.lessThan": lambda a, b: a < b,
    "Filter.lessThanOrEquals": lambda a, b: a <= b,
    "Filter.lte": lambda a, b: a <= b,
    "Filter.greaterThan": lambda a, b: a > b,
    "Filter.greaterThanOrEquals": lambda a, b: a >= b,
    "Filter.gte": lambda a, b: a >= b,
    "Filter.inList": lambda a, b: a in b,
    "Filter.stringStartsWith": lambda a, b: isinstance(a, str) and a.startswith(b),
}


def _to_ms(value: Any) -> int:
    if isinstance(value, int | float):
        return int(value)
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value // 1_000_000)


class _Evaluator:
    """Walks a serialized expression graph (``{"result": ..., "values": {...}}``)."""

    def __init__(
        self,
        catalog: Catalog,
        expression: Mapping[str, Any],
        exported: Mapping[str, _Image] | None = None,
    ):
        self.catalog = catalog
        self.exported = exported or {}
        self.values = expression.get("values", {})
        self.cache: dict[tuple[str, int], Any] = {}
        # bound arguments of the function call being evaluated; values are cached per call
        self.scope: dict[str, Any] = {}
        self.scope_id = 0
        self.calls = 0
        self.result = self.ref(expression["result"])

    def ref(self, key: str) -> Any:
        ck = (key, self.scope_id)
        if ck not in self.cache:
            self.cache[ck] = self.node(self.values[key])
        return self.cache[ck]

    def apply(self, fn: _Function, args: Mapping[str, Any]) -> Any:
        saved = (self.scope, self.scope_id)
        self.calls += 1
        self.scope, self.scope_id = dict(args), self.calls
        try:
            body = fn.body  # a key of the values table, or an inline node
            return self.ref(body) if isinstance(body, str) else self.node(body)
        finally:
            self.scope, self.scope_id = saved

    def node(self, node: Mapping[str, Any]) -> Any:
        if "argumentReference" in node:
            name = node["argumentReference"]
            if name not in self.scope:
                raise EvalError(f"unbound argument {name!r}")
            return self.scope[name]
        if "functionDefinitionValue" in node:
            fdef = node["functionDefinitionValue"]
            return _Function(self, list(fdef.get("argumentNames", [])), fdef["body"])
        if "constantValue" in node:
            return node["constantValue"]
        if "integerValue" in node:
            return int(node["integerValue"])
        if "valueReference" in node:
            return self.ref(node["valueReference"])
        if "arrayValue" in node:
            return [self.node(v) for v in node["arrayValue"].get("values", [])]
        if "dictionaryValue" in node:
            return {k: self.node(v) for k, v in node["dictionaryValue"].get("values", {}).items()}
        if "functionInvocationValue" in node:
            inv = node["functionInvocationValue"]
            if "functionReference" in inv:  # a function value (e.g. a parsed expression)
                fn = self.ref(inv["functionReference"])
                if not callable(fn):
                    raise EvalError("functionReference does not name a function")
                return fn({k: self.node(v) for k, v in inv.get("arguments", {}).items()})
            if inv.get("functionName") == "Collection.map":  # the body is applied per image
                args = {k: self.node(v) for k, v in inv.get("arguments", {}).items()}
                fn = args["baseAlgorithm"]
                images = []
                for img in args["collection"].images:
                    images.append(fn({fn.names[0]: img}))
                return _Collection(images)
            args = {k: self.node(v) for k, v in inv.get("arguments", {}).items()}
            return self.call(inv["functionName"], args)
        raise EvalError(f"unsupported expression node {sorted(node)}")

    def call(self, name: str, a: dict[str, Any]) -> Any:  # noqa: C901 - a dispatch table
        cat = self.catalog
        if name == "Image.load" and a["id"] in self.exported:
            return self.exported[a["id"]]
        if name == "Image.load":
            img = cat.images.get(a["id"])
            if img is None:
                raise EvalError(
                    f"Image.load: Image asset '{a['id']}' not found (does not exist or caller does not have access)."
                )
            return _Asset(img)
        if name == "ImageCollection.load":
            ids = cat.collections.get(a["id"])
            if ids is None:
                raise EvalError(
                    f"ImageCollection.load: ImageCollection asset '{a['id']}' not found "
                    "(does not exist or caller does not have access)."
                )
            return _Collection([_Asset(cat.images[i]) for i in ids])
        if name == "Date":
            return _to_ms(a["value"])
        if name == "DateRange":
            return (_to_ms(a["start"]), _to_ms(a["end"]) if a.get("end") is not None else None)
        if name == "Filter.dateRangeContains":
            start, end = a["leftValue"]
            field_name = a["rightField"]
            return _Filter(
                lambda p: (
                    field_name in p
                    and start <= p[field_name] < (end if end is not None else math.inf)
                )
            )
        if name in _COMPARE:
            op = _COMPARE[name]
            if "leftField" in a:
                fld, value = a["leftField"], a["rightValue"]
                return _Filter(lambda p: fld in p and p[fld] is not None and op(p[fld], value))
            fld, value = a["rightField"], a["leftValue"]
            return _Filter(lambda p: fld in p and p[fld] is not None and op(value, p[fld]))
        if name == "Filter.and":
            fs = a["filters"]
            return _Filter(lambda p: all(f.test(p) for f in fs))
        if name == "Filter.or":
            fs = a["filters"]
            return _Filter(lambda p: any(f.test(p) for f in fs))
        if name == "Filter.not":
            inner = a["filter"]
            return _Filter(lambda p: not inner.test(p))
        if name == "Collection.filter":
            flt = a["filter"]
            return _Collection([img for img in a["collection"].images if flt.test(img.properties)])
        if name == "Collection.limit":
            images = list(a["collection"].images)
            if a.get("key"):
                key = a["key"]
                images.sort(
                    key=lambda img: img.properties.get(key), reverse=not a.get("ascending", True)
                )
            if a.get("limit") is not None:
                images = images[: int(a["limit"])]
            return _Collection(images)
        if name == "Collection.first":
            images = a["collection"].images
            if not images:
                raise EvalError("Collection.first: Empty collection.")
            return images[0]
        if name == "ImageCollection.mosaic":
            return _Composite(a["collection"].images, "mosaic")
        if name.startswith("reduce."):
            return _Composite(a["collection"].images, name.split(".", 1)[1])
        if name.startswith("Reducer."):
            return name.split(".", 1)[1]
        if name == "ImageCollection.reduce":
            return _Composite(a["collection"].images, a["reducer"], suffix=True)
        if name == "Image.select":
            return _Select(a["input"], a["bandSelectors"], a.get("newNames"))
        if name == "Image.rename":
            src = a["input"]
            return _Select(src, [n for n, _ in src.bands()], a["names"])
        if name in _TO_FUNCS:
            src = a["value"]
            return _Cast(src, {n: np.dtype(_TO_FUNCS[name]) for n, _ in src.bands()})
        if name == "Image.cast":
            src = a["image"]
            names = [n for n, _ in src.bands()]
            types = {}
            for band, t in a["bandTypes"].items():
                if band not in names:
                    raise EvalError(f"Image.cast: band '{band}' not found")
                key = t if isinstance(t, str) else t.get("precision", "")
                if key not in _EE_TYPES:
                    raise EvalError(f"Image.cast: unknown type {t!r}")
                types[band] = np.dtype(_EE_TYPES[key])
            return _Cast(src, types)
        if name == "Projection":
            return a["crs"]
        if name == "Image.reproject":
            grid = (
                RequestGrid(a["crs"], tuple(a["crsTransform"]), 0, 0)
                if a.get("crsTransform")
                else None
            )
            return _Reprojected(a["image"], grid)
        if name == "Image.projection":
            src = a["image"]
            return src.grid if isinstance(src, _Reprojected) else None
        if name == "GeometryConstructors.Rectangle":
            return {"rectangle": a["coordinates"], "projection": a.get("crs")}
        if name == "Image.clipToBoundsAndScale":
            geom = a.get("geometry") or {}
            proj = geom.get("projection")
            x0, y0, x1, y1 = geom.get("rectangle") or (0, 0, 0, 0)
            if not isinstance(proj, RequestGrid) or (x0, y0) != (0, 0):
                raise EvalError(
                    "Image.clipToBoundsAndScale: only pixel rectangles of a reprojection"
                )
            return _Reprojected(a["input"], RequestGrid(proj.crs, proj.transform, int(x1), int(y1)))
        if name == "Image.addBands":
            return _AddBands(a["dstImg"], a["srcImg"])
        if name == "Image.constant":
            return _Constant(a["value"])
        if name == "Image.updateMask":
            return _UpdateMask(a["image"], a["mask"])
        if name in _BINARY:
            return _Binary(name, a["image1"], a["image2"])
        if name == "Image.remap":
            src = a["image"]
            if a.get("bandName"):
                src = _Select(src, [a["bandName"]], None)
            return _Remap(src, a["from"], a["to"], a.get("defaultValue"))
        if name == "Image.resample":
            return _Resampled(a["image"], a.get("mode") or "bilinear")
        if name == "Image.parseExpression":
            return _ParsedExpression(a["expression"], a.get("argName") or "DEFAULT_EXPRESSION_IMAGE",
                                     list(a.get("vars") or []))  # fmt: skip
        if name == "Image.unmask":
            value = a.get("value", 0)
            value = value.value if isinstance(value, _Constant) else value
            return _Unmask(
                a["input"], 0 if value is None else value, bool(a.get("sameFootprint", True))
            )
        raise EvalError(f"Unknown function: {name} (not supported by the emulator)")


def _jsonable(value: Any) -> Any:
    if isinstance(value, _Image | _Collection):
        return value.info()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, _Filter):
        raise EvalError("Filter values cannot be computed")
    return value


# -- the server --------------------------------------------------------------------------


@dataclass
class ExportOperation:
    """A batch export task; it advances one state per status poll."""

    name: str  # projects/<p>/operations/<id>
    description: str
    destination: dict[str, Any]
    image: _Image
    created: str
    state: str = "PENDING"  # PENDING RUNNING SUCCEEDED FAILED CANCELLED
    polls: int = 0
    error: str | None = None  # why a finished export failed (e.g. incompatible band types)

    def to_json(self, fail_message: str | None) -> dict[str, Any]:
        done = self.state in ("SUCCEEDED", "FAILED", "CANCELLED")
        progress = {"PENDING": 0.0, "RUNNING": 0.5}.get(self.state, 1.0)
        op: dict[str, Any] = {
            "name": self.name,
            "metadata": {
                "@type": "type.googleapis.com/google.earthengine.v1.OperationMetadata",
                "state": self.state,
                "description": self.description,
                "type": "EXPORT_IMAGE",
                "createTime": self.created,
                "updateTime": self.created,
                "progress": progress,
            },
            "done": done,
        }
        if self.state == "SUCCEEDED":
            op["response"] = {"@type": "type.googleapis.com/google.protobuf.Empty"}
        elif self.state == "FAILED":
            op["error"] = {"code": 13, "message": fail_message or "Export failed."}
        elif self.state == "CANCELLED":
            op["error"] = {"code": 1, "message": "Cancelled."}
        return op


@dataclass
class EmulatorStats:
    """What the emulator saw; read under ``Emulator.lock``."""

    requests: int = 0
    by_kind: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    pixel_requests: int = 0
    pixel_ok: int = 0
    size_errors: int = 0
    dimension_errors: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    bytes_served: int = 0
    grids: list[RequestGrid] = field(default_factory=list)  # pixel requests answered 200
    exports: int = 0
    cancels: int = 0
    deletes: int = 0  # exported assets and Cloud Storage objects deleted


class Emulator:
    """A running emulator; use as a context manager or call ``start()``/``stop()``."""

    def __init__(
        self,
        catalog: Catalog | None = None,
        *,
        latency_s: float = 0.0,
        max_concurrency: int | None = None,
        byte_limit: int = DEFAULT_BYTE_LIMIT,
        max_dimension: int = DEFAULT_MAX_DIMENSION,
    ):
        self.catalog = catalog or default_catalog()
        self.latency_s = latency_s
        self.max_concurrency = max_concurrency
        self.byte_limit = byte_limit
        self.max_dimension = max_dimension
        self.stats = EmulatorStats()
        self.lock = threading.Lock()
        self._faults: dict[str, deque[Any]] = {k: deque() for k in FAULT_KINDS}
        # batch exports: polls an operation takes to finish, and an optional failure
        self.export_polls = 2
        self.export_failure: str | None = None
        self.operations: dict[str, ExportOperation] = {}
        self.exported: dict[str, _Image] = {}
        # the local Cloud Storage: bucket -> object name -> bytes; Drive: file names written
        self.gcs: dict[str, dict[str, bytes]] = {}
        self.drive: list[str] = []
        self._discovery = _load_fixture("cloud_api_discovery_document.json").replace(
            "v1alpha", "v1"
        )
        self._algorithms = _load_fixture("algorithms.json")
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Emulator:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.emulator = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="ee-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "emulator not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- test controls --------------------------------------------------------------------

    def inject(
        self,
        *faults: int | tuple[int, float] | tuple[str, float] | str | None,
        kind: str = "pixels",
    ) -> None:
        """Answer the next requests of ``kind`` (one of ``FAULT_KINDS``) with these faults,
        in order: a status code (429/503/400/404...), ``(429, retry_after_s)``,
        ``("slow", seconds)``, ``DROP`` (close the connection unanswered), or ``None``
        (answer normally)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {FAULT_KINDS}")
        with self.lock:
            self._faults[kind].extend(faults)

    def pending_faults(self, kind: str | None = None) -> int:
        """Faults not yet answered, of ``kind`` or of all kinds."""
        with self.lock:
            if kind is not None:
                return len(self._faults[kind])
            return sum(len(q) for q in self._faults.values())

    def reset_stats(self) -> None:
        with self.lock:
            self.stats = EmulatorStats()

    # -- request handling (called from handler threads) -----------------------------------

    def _next_fault(self, kind: str) -> Any:
        with self.lock:
            queue = self._faults[kind]
            return queue.popleft() if queue else None

    def fault_reply(self, kind: str) -> tuple[int, bytes, dict[str, str]] | None:
        """The injected reply for the next request of ``kind``, or ``None`` to answer it
        normally (after sleeping, for a ``("slow", s)`` fault)."""
        fault = self._next_fault(kind)
        if fault == DROP:
            return 0, b"", {}
        if isinstance(fault, tuple) and fault[0] == "slow":
            time.sleep(fault[1])
        elif isinstance(fault, tuple):
            status, body, headers = _error(fault[0], _FAULT_MESSAGES.get(fault[0], "injected"))
            return status, body, {**headers, "Retry-After": str(fault[1])}
        elif fault is not None:
            return _error(fault, _FAULT_MESSAGES.get(fault, "injected"))
        return None

    def pixels(
        self, body: Mapping[str, Any], asset_id: str | None
    ) -> tuple[int, bytes, dict[str, str]]:
        with self.lock:
            self.stats.pixel_requests += 1
            self.stats.in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
            over = self.max_concurrency is not None and self.stats.in_flight > self.max_concurrency
        try:
            if over:
                return _error(429, TOO_MANY_REQUESTS)
            reply = self.fault_reply("pixels")
            if reply is not None:
                return reply
            if self.latency_s:
                time.sleep(self.latency_s)
            return self._render_pixels(body, asset_id)
        finally:
            with self.lock:
                self.stats.in_flight -= 1

    def _render_pixels(
        self, body: Mapping[str, Any], asset_id: str | None
    ) -> tuple[int, bytes, dict[str, str]]:
        try:
            if asset_id is not None:
                img = self.catalog.images.get(asset_id)
                if img is None:
                    return _error(404, f"Image asset '{asset_id}' not found.")
                image: _Image = _Asset(img)
            else:
                image = _Evaluator(self.catalog, body["expression"], self.exported).result
            if not isinstance(image, _Image):
                return _error(400, "Expression does not evaluate to an image.")
            grid = _request_grid(body.get("grid") or {})
            if grid.width > self.max_dimension or grid.height > self.max_dimension:
                with self.lock:
                    self.stats.dimension_errors += 1
                return _error(
                    400,
                    f"Pixel grid dimensions ({grid.width}x{grid.height}) must be less than or equal to "
                    f"{self.max_dimension}.",
                )
            types = dict(image.bands())
            names = list(body.get("bandIds") or types)
            missing = [n for n in names if n not in types]
            if missing:
                return _error(400, f"Band(s) {missing} not found.")
            size = grid.width * grid.height * sum(types[n].itemsize + 1 for n in names)
            if size > self.byte_limit:
                with self.lock:
                    self.stats.size_errors += 1
                return _error(
                    400,
                    f"Total request size ({size} bytes) must be less than or equal to {self.byte_limit} bytes.",
                )
            if body.get("fileFormat") != "NPY":
                return _error(
                    400, f"fileFormat {body.get('fileFormat')!r} not supported by the emulator"
                )
            layers = image.render(self.catalog, grid, names)
            arr = np.zeros((grid.height, grid.width), dtype=[(n, types[n]) for n in names])
            for n in names:
                arr[n] = layers[n].filled(0)
            buf = io.BytesIO()
            np.save(buf, arr, allow_pickle=False)
            data = buf.getvalue()
        except EvalError as e:
            return _error(400, str(e))
        with self.lock:
            self.stats.pixel_ok += 1
            self.stats.bytes_served += len(data)
            self.stats.grids.append(grid)
        return 200, data, {"Content-Type": "application/octet-stream"}

    def compute(self, body: Mapping[str, Any]) -> tuple[int, bytes, dict[str, str]]:
        try:
            result = _jsonable(_Evaluator(self.catalog, body["expression"], self.exported).result)
        except EvalError as e:
            return _error(400, str(e))
        return _json(200, {"result": result})

    # -- batch exports ---------------------------------------------------------------------

    def export(self, project: str, body: Mapping[str, Any]) -> tuple[int, bytes, dict[str, str]]:
        try:
            image = _Evaluator(self.catalog, body["expression"], self.exported).result
        except EvalError as e:
            return _error(400, str(e))
        if not isinstance(image, _Image):
            return _error(400, "Export expression does not evaluate to an image.")
        destination = body.get("assetExportOptions") or body.get("fileExportOptions") or {}
        with self.lock:
            self.stats.exports += 1
            name = f"projects/{project}/operations/EMU{len(self.operations) + 1:08d}"
            op = ExportOperation(
                name,
                body.get("description", ""),
                dict(destination),
                image,
                pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            self.operations[name] = op
            return _json(200, op.to_json(op.error or self.export_failure))

    def operation(self, name: str) -> tuple[int, bytes, dict[str, str]]:
        with self.lock:
            op = self.operations.get(name)
            if op is None:
                return _error(404, f"Operation {name} not found.")
            op.polls += 1
            if op.state == "PENDING":
                op.state = "RUNNING"
            elif op.state == "RUNNING" and op.polls >= self.export_polls:
                op.state = "FAILED" if self.export_failure else "SUCCEEDED"
                asset = (op.destination.get("earthEngineDestination") or {}).get("name")
                grid = op.image.grid if isinstance(op.image, _Reprojected) else None
                if op.state == "SUCCEEDED" and asset:
                    self.exported[asset] = _Exported(asset, op.image, grid)
                elif op.state == "SUCCEEDED":
                    self._write_files(op, grid)
            return _json(200, op.to_json(op.error or self.export_failure))

    def _write_files(self, op: ExportOperation, grid: RequestGrid | None) -> None:
        """Write a finished file export: GeoTIFF(s) into the local GCS, names into ``drive``."""
        gcs = op.destination.get("cloudStorageDestination")
        drive = op.destination.get("driveDestination")
        prefix = (gcs or drive or {}).get("filenamePrefix", "export")
        try:
            files = _geotiffs(self.catalog, op.image, grid, op.destination)
        except EvalError as e:
            op.state, op.error = "FAILED", str(e)
            return
        for suffix, data in files.items():
            if gcs is not None:
                self.gcs.setdefault(gcs["bucket"], {})[prefix + suffix] = data
            else:
                folder = (drive or {}).get("folder", "")
                self.drive.append(f"{folder}/{prefix}{suffix}")

    # -- the local Cloud Storage (JSON API) --------------------------------------------------

    def gcs_list(self, bucket: str, query: Mapping[str, str]) -> tuple[int, bytes, dict[str, str]]:
        with self.lock:
            objects = self.gcs.get(bucket)
            if objects is None:
                return _error(404, f"The specified bucket does not exist: {bucket}")
            names = sorted(n for n in objects if n.startswith(query.get("prefix", "")))
            metas = {n: _gcs_meta(bucket, n, objects[n]) for n in names}
        delimiter = query.get("delimiter")
        items, prefixes = [], set()
        for name in names:
            rest = name[len(query.get("prefix", "")) :]
            if delimiter and delimiter in rest:
                prefixes.add(name[: len(name) - len(rest) + rest.index(delimiter) + 1])
            else:
                items.append(metas[name])
        payload: dict[str, Any] = {"kind": "storage#objects", "items": items}
        if prefixes:
            payload["prefixes"] = sorted(prefixes)
        return _json(200, payload)

    def gcs_object(
        self, bucket: str, name: str, media: bool, range_header: str | None
    ) -> tuple[int, bytes, dict[str, str]]:
        with self.lock:
            data = self.gcs.get(bucket, {}).get(name)
        if data is None:
            return _error(404, f"No such object: {bucket}/{name}")
        if not media:
            return _json(200, _gcs_meta(bucket, name, data))
        if range_header and range_header.startswith("bytes="):
            first, _, last = range_header[len("bytes=") :].partition("-")
            start = int(first) if first else max(0, len(data) - int(last))
            end = min(len(data) - 1, int(last)) if first and last else len(data) - 1
            if start >= len(data):
                return 416, b"", {"Content-Range": f"bytes */{len(data)}"}
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"bytes {start}-{end}/{len(data)}",
            }
            return 206, data[start : end + 1], headers
        return 200, data, {"Content-Type": "application/octet-stream"}

    def cancel(self, name: str) -> tuple[int, bytes, dict[str, str]]:
        with self.lock:
            op = self.operations.get(name)
            if op is None:
                return _error(404, f"Operation {name} not found.")
            self.stats.cancels += 1
            if op.state in ("PENDING", "RUNNING"):
                op.state = "CANCELLED"
            return _json(200, {})

    def delete_asset(self, asset_id: str, project: str) -> tuple[int, bytes, dict[str, str]]:
        """Delete an exported asset (catalog assets are read-only: 403)."""
        full = f"projects/{project}/assets/{asset_id}"
        with self.lock:
            for key in (full, asset_id):
                if key in self.exported:
                    del self.exported[key]
                    self.stats.deletes += 1
                    return _json(200, {})
        if asset_id in self.catalog.images or asset_id in self.catalog.collections:
            return _error(403, f"Permission denied on asset '{asset_id}'.")
        return _error(404, f"Asset '{full}' does not exist or caller does not have access.")

    def gcs_delete(self, bucket: str, name: str) -> tuple[int, bytes, dict[str, str]]:
        with self.lock:
            objects = self.gcs.get(bucket, {})
            if name not in objects:
                return _error(404, f"No such object: {bucket}/{name}")
            del objects[name]
            self.stats.deletes += 1
        return 204, b"", {}

    def list_operations(self, project: str) -> tuple[int, bytes, dict[str, str]]:
        prefix = f"projects/{project}/operations/"
        with self.lock:
            ops = [
                op.to_json(op.error or self.export_failure)
                for n, op in self.operations.items()
                if n.startswith(prefix)
            ]
        return _json(200, {"operations": ops})

    def asset(
        self, asset_id: str, project: str = "earthengine-public"
    ) -> tuple[int, bytes, dict[str, str]]:
        full = f"projects/{project}/assets/{asset_id}"
        with self.lock:
            exported = self.exported.get(full) or self.exported.get(asset_id)
        if exported is not None:
            return _json(200, {"type": "IMAGE", "name": full, "id": full})
        name = f"projects/earthengine-public/assets/{asset_id}"
        if asset_id in self.catalog.collections:
            return _json(200, {"type": "IMAGE_COLLECTION", "name": name, "id": asset_id})
        img = self.catalog.images.get(asset_id)
        if img is None:
            return _error(404, f"Asset '{name}' does not exist or caller does not have access.")
        return _json(
            200,
            {
                "type": "IMAGE",
                "name": name,
                "id": asset_id,
                "startTime": pd.Timestamp(img.time_start).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "properties": dict(img.properties),
            },
        )


_FAULT_MESSAGES = {
    400: "Invalid argument.",
    403: "Permission denied.",
    404: "Not found.",
    429: TOO_MANY_REQUESTS,
    500: "An internal error has occurred.",
    503: "The service is currently unavailable.",
}


def _gcs_meta(bucket: str, name: str, data: bytes) -> dict[str, Any]:
    return {
        "kind": "storage#object",
        "id": f"{bucket}/{name}/1",
        "name": name,
        "bucket": bucket,
        "generation": "1",
        "size": str(len(data)),
        "contentType": "image/tiff",
        "updated": "2024-01-01T00:00:00.000Z",
        "timeCreated": "2024-01-01T00:00:00.000Z",
    }


def _geotiffs(
    cat: Catalog, image: _Image, grid: RequestGrid | None, destination: Mapping[str, Any]
) -> dict[str, bytes]:
    """The GeoTIFF file(s) of an image export: ``{name suffix: bytes}``, split into tiles of
    ``geoTiffOptions.tileDimensions`` named ``-<row offset>-<col offset>`` like Earth Engine."""
    import rasterio
    from rasterio.io import MemoryFile

    if grid is None:
        raise EvalError("Export requires a crs, crsTransform and dimensions (emulator).")
    if destination.get("fileFormat") != "GEO_TIFF":
        raise EvalError(f"fileFormat {destination.get('fileFormat')!r} not supported (emulator)")
    types = dict(image.bands())
    if len({dt.str for dt in types.values()}) > 1:
        found = " and ".join(sorted({dt.name for dt in types.values()}))
        raise EvalError(
            f"Exported bands must have compatible data types; found inconsistent types: {found}."
        )
    names = list(types)
    layers = image.render(cat, grid, names)
    dims = (destination.get("geoTiffOptions") or {}).get("tileDimensions") or {}
    tw, th = int(dims.get("width", grid.width)), int(dims.get("height", grid.height))
    sharded = tw < grid.width or th < grid.height
    a, b, c, d, e, f = grid.transform
    files = {}
    for row in range(0, grid.height, th):
        for col in range(0, grid.width, tw):
            h, w = min(th, grid.height - row), min(tw, grid.width - col)
            profile = dict(
                driver="GTiff",
                width=w,
                height=h,
                count=len(names),
                dtype=types[names[0]].name,
                crs=rasterio.crs.CRS.from_user_input(grid.crs),
                transform=rasterio.Affine(a, b, c + col * a + row * b, d, e, f + col * d + row * e),
            )
            with MemoryFile() as mem:
                with mem.open(**profile) as dst:
                    for k, n in enumerate(names, start=1):
                        dst.write(layers[n].filled(0)[row : row + h, col : col + w], k)
                        dst.set_band_description(k, n)
                suffix = f"-{row:010d}-{col:010d}.tif" if sharded else ".tif"
                files[suffix] = mem.read()
    return files


def _load_fixture(name: str) -> str:
    return resources.files("ee").joinpath("tests", name).read_text()


def _request_grid(grid: Mapping[str, Any]) -> RequestGrid:
    dims = grid.get("dimensions") or {}
    aff = grid.get("affineTransform") or {}
    crs = grid.get("crsCode") or grid.get("crsWkt") or "EPSG:4326"
    transform = tuple(
        float(aff.get(k, 0.0))
        for k in ("scaleX", "shearX", "translateX", "shearY", "scaleY", "translateY")
    )
    if not aff:  # EE's default: 1-degree pixels from (0, 0)
        transform = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    return RequestGrid(crs, transform, int(dims.get("width", 256)), int(dims.get("height", 256)))


def _json(status: int, payload: Any) -> tuple[int, bytes, dict[str, str]]:
    return status, json.dumps(payload).encode(), {"Content-Type": "application/json; charset=UTF-8"}


def _error(status: int, message: str) -> tuple[int, bytes, dict[str, str]]:
    return _json(
        status,
        {
            "error": {
                "code": status,
                "message": message,
                "status": HTTPStatus(status).phrase.upper().replace(" ", "_"),
            }
        },
    )


class _Server(QuietHTTPServer):
    request_queue_size = 256
    emulator: Emulator


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence access logs
        pass

    def _send(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        emu = self.server.emulator
        if status == 0:  # an injected DROP: the client sees the connection close unanswered
            self.close_connection = True
            return
        with emu.lock:
            emu.stats.statuses[status] += 1
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _count(self, kind: str) -> None:
        emu = self.server.emulator
        with emu.lock:
            emu.stats.requests += 1
            emu.stats.by_kind[kind] += 1

    def _serve(self, kind: str, answer: Callable[[], tuple[int, bytes, dict[str, str]]]) -> None:
        """Count a request of ``kind`` (one of ``FAULT_KINDS``), then answer it with the next
        injected fault of that kind, if any, else with ``answer()``."""
        self._count(kind)
        reply = self.server.emulator.fault_reply(kind)
        return self._send(*(reply if reply is not None else answer()))

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        emu = self.server.emulator
        split = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(split.path)
        query = dict(urllib.parse.parse_qsl(split.query))
        for head, media in (("/storage/v1/b/", False), ("/download/storage/v1/b/", True)):
            if path.startswith(head):
                bucket, _, rest = path[len(head) :].partition("/")
                if rest == "o" and not media:
                    self._count("gcs_list")
                    return self._send(*emu.gcs_list(bucket, query))
                if rest.startswith("o/"):
                    self._count("gcs_media" if media else "gcs_object")
                    media = media or query.get("alt") == "media"
                    return self._send(
                        *emu.gcs_object(bucket, rest[2:], media, self.headers.get("Range"))
                    )
        if path == "/$discovery/rest":
            self._count("discovery")
            return self._send(200, emu._discovery.encode(), {"Content-Type": "application/json"})
        parts = path.strip("/").split("/")
        if (
            len(parts) == 4
            and parts[0] == "v1"
            and parts[1] == "projects"
            and parts[3] == "algorithms"
        ):
            ok = (200, emu._algorithms.encode(), {"Content-Type": "application/json"})
            return self._serve("algorithms", lambda: ok)
        if len(parts) > 4 and parts[:2] == ["v1", "projects"] and parts[3] == "assets":
            return self._serve("asset", lambda: emu.asset("/".join(parts[4:]), parts[2]))
        if len(parts) == 5 and parts[:2] == ["v1", "projects"] and parts[3] == "operations":
            return self._serve("operation", lambda: emu.operation("/".join(parts[1:])))
        if len(parts) == 4 and parts[:2] == ["v1", "projects"] and parts[3] == "operations":
            return self._serve("operations", lambda: emu.list_operations(parts[2]))
        self._count("unknown")
        return self._send(*_error(404, f"Unknown path {path}"))

    def do_DELETE(self) -> None:  # noqa: N802 - http.server API
        emu = self.server.emulator
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        head = "/storage/v1/b/"
        if path.startswith(head):
            bucket, _, rest = path[len(head) :].partition("/")
            if rest.startswith("o/"):
                self._count("gcs_delete")
                return self._send(*emu.gcs_delete(bucket, rest[2:]))
        parts = path.strip("/").split("/")
        if len(parts) > 4 and parts[:2] == ["v1", "projects"] and parts[3] == "assets":
            return self._serve("delete", lambda: emu.delete_asset("/".join(parts[4:]), parts[2]))
        self._count("unknown")
        return self._send(*_error(404, f"Unknown path {path}"))

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        emu = self.server.emulator
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._count("invalid")
            return self._send(*_error(400, "Invalid JSON payload received."))
        parts = path.strip("/").split("/")
        if path.endswith("/value:compute"):
            return self._serve("compute", lambda: emu.compute(body))
        if path.endswith("/image:export") and len(parts) == 4:
            return self._serve("export", lambda: emu.export(parts[2], body))
        if path.endswith(":cancel") and len(parts) == 5 and parts[3] == "operations":
            name = "/".join(parts[1:])[: -len(":cancel")]
            return self._serve("cancel", lambda: emu.cancel(name))
        if path.endswith("/image:computePixels"):
            self._count("computePixels")
            return self._send(*emu.pixels(body, None))
        if path.endswith(":getPixels") and len(parts) > 4 and parts[3] == "assets":
            self._count("getPixels")
            asset = "/".join(parts[4:])[: -len(":getPixels")]
            return self._send(*emu.pixels(body, asset))
        self._count("unknown")
        return self._send(*_error(404, f"Unknown path {path}"))
