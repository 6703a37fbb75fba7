"""The per-tile warp task: assemble a source window from its chunks and warp it.

Nearest on tiles whose coordinates interpolate linearly is a gather by index
(one coordinate computation for all planes); everything else is GDAL's warper
(``rasterio.warp.reproject``). These functions run inside dask tasks on plain
numpy blocks and frozen specs, so they work on every scheduler; GDAL and NumPy
release the GIL, so thread workers run in parallel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject

from .reader import WindowReader


@dataclass(frozen=True, eq=False)
class Piece:
    """One source chunk's contribution to a window."""

    row_chunk: int
    col_chunk: int
    src: tuple[slice, slice]  # inside the chunk
    dst: tuple[slice, slice]  # inside the window


@dataclass(frozen=True, eq=False)
class TileTask:
    """Geometry of one output tile, shared by every plane of a variable."""

    window_shape: tuple[int, int]
    pieces: tuple[Piece, ...]
    gaps: bool  # some window columns are not covered by the source (masked)
    src_crs_wkt: str
    # Transforms as their six coefficients (a, b, c, d, e, f), an Affine or a plain tuple:
    # the plan makes two per tile, and on grids of 10^5 tiles building Affine objects there
    # took a sixth of the plan. Tasks build the Affine when they warp.
    src_transform: Sequence[float] | None  # affine sources
    geoloc: np.ndarray | None  # curvilinear sources: (2, h, w) lon/lat of the window
    dst_crs_wkt: str
    dst_transform: Sequence[float]
    dst_shape: tuple[int, int]
    # Nearest only: source pixel coords (col, row) relative to the window at the tile's
    # lattice of pixel edges, shape (2, m+1, m+1), when interpolating them is exact enough.
    lattice: np.ndarray | None = None


@dataclass(frozen=True)
class VarSpec:
    """How one variable is warped and stored."""

    resampling: Resampling
    src_dtype: np.dtype
    work_dtype: np.dtype  # dtype handed to GDAL
    out_dtype: np.dtype
    src_nodata: float | int | None  # in the source's in-memory values
    work_nodata: float | int | None  # in work dtype, handed to GDAL as src_nodata
    work_fill: float | int  # GDAL's dst_nodata
    out_fill: float | int  # value written where there is no data
    window_method: str | None = None  # count/last/prod/std/var: binned, not GDAL


@dataclass(frozen=True, eq=False)
class PlaneGroup:
    """Planes warped together in one GDAL call (GDAL computes coordinates once for all).

    ``planes[k]`` is (index of plane k inside its source blocks, position in
    the task's inputs of the block for each piece of the tile).
    """

    planes: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]


def fill_block(shape: tuple[int, ...], spec: VarSpec) -> np.ndarray:
    return np.full(shape, spec.out_fill, dtype=spec.out_dtype)


def take_plane(group: np.ndarray, k: int, n_extra: int) -> np.ndarray:
    """Plane ``k`` of a warped group as a block with size-1 non-spatial dims."""
    return group[k].reshape((1,) * n_extra + group.shape[1:])


def warp_group(tile: TileTask, spec: VarSpec, group: PlaneGroup, *blocks: np.ndarray) -> np.ndarray:
    """Warp the planes of ``group`` for one tile; returns (planes, height, width)."""
    window = _assemble(tile, spec, group, blocks)
    if spec.window_method is not None:
        return _to_out_dtype(window_aggregate(window, tile, spec), spec)
    if tile.lattice is not None and spec.resampling == Resampling.nearest:
        dst = _gather_nearest(window, tile, spec)
        _nodata_to_fill(dst, spec)
        return _to_out_dtype(dst, spec)
    # Filled here, not by GDAL: rasterio drops a dst_nodata of 0 for INIT_DEST.
    dst = np.full((len(group.planes), *tile.dst_shape), spec.work_fill, dtype=spec.work_dtype)
    kwargs = {}
    if tile.geoloc is not None:
        kwargs["src_geoloc_array"] = tile.geoloc
    else:
        kwargs["src_transform"] = _affine(tile.src_transform)
    reproject(
        window,
        dst,
        src_crs=_crs(tile.src_crs_wkt),
        src_nodata=spec.work_nodata,
        dst_crs=_crs(tile.dst_crs_wkt),
        dst_transform=_affine(tile.dst_transform),
        dst_nodata=spec.work_fill,
        resampling=spec.resampling,
        num_threads=1,
        init_dest_nodata=False,
        # each plane keeps its own nodata mask (GDAL may otherwise unify them across bands)
        UNIFIED_SRC_NODATA="NO",
        **kwargs,
    )
    if _differs(spec.work_nodata, spec.work_fill):
        dst[_equal(dst, spec.work_nodata)] = spec.work_fill
    return _to_out_dtype(dst, spec)


def warp_group_reading(
    tile: TileTask, spec: VarSpec, group: PlaneGroup, reader: WindowReader
) -> np.ndarray:
    """``warp_group`` on source chunks this task reads itself (see ``reader.py``)."""
    return warp_group(tile, spec, group, *reader.read())


def _assemble(tile: TileTask, spec: VarSpec, group: PlaneGroup, blocks: tuple[np.ndarray, ...]):
    window = np.empty((len(group.planes), *tile.window_shape), dtype=spec.work_dtype)
    covered = np.zeros(tile.window_shape, dtype=bool) if tile.gaps else None
    for k, (local, inputs) in enumerate(group.planes):
        for pos, piece in zip(inputs, tile.pieces, strict=True):
            window[(k, *piece.dst)] = blocks[pos][local + piece.src]
    if covered is not None:
        for piece in tile.pieces:
            covered[piece.dst] = True
    _normalise_nodata(window, spec)
    if covered is not None and not covered.all():
        if spec.work_nodata is not None:
            window[:, ~covered] = spec.work_nodata
        else:
            mask = np.broadcast_to(~covered, window.shape)
            return np.ma.masked_array(window, mask=mask)
    return window


def _normalise_nodata(window: np.ndarray, spec: VarSpec) -> None:
    """Mark nodata in the work dtype the way it is handed to GDAL (one value per band)."""
    if spec.src_nodata is None or spec.work_nodata is None:
        return
    src_nan = isinstance(spec.src_nodata, float) and math.isnan(spec.src_nodata)
    work_nan = isinstance(spec.work_nodata, float) and math.isnan(spec.work_nodata)
    if work_nan and not src_nan:
        # Integer nodata of a source widened to float becomes NaN.
        window[_equal(window, spec.src_nodata)] = np.nan
    elif not work_nan and np.issubdtype(spec.work_dtype, np.floating):
        # GDAL takes one nodata value: NaN pixels of a float source with another nodata.
        window[np.isnan(window)] = spec.work_nodata


def needs_conversion(spec: VarSpec) -> bool:
    """Whether stored values differ from source values without any resampling."""
    if spec.out_dtype != spec.src_dtype:
        return True
    return _differs(spec.src_nodata, spec.out_fill) or (
        spec.src_nodata is not None
        and isinstance(spec.src_nodata, float)
        and math.isnan(spec.src_nodata)
        and not (isinstance(spec.out_fill, float) and math.isnan(spec.out_fill))
    )


def convert_block(block: np.ndarray, spec: VarSpec) -> np.ndarray:
    """Dtype and nodata -> fill conversion of a block that needs no resampling."""
    work = np.array(block, dtype=spec.work_dtype)
    _normalise_nodata(work, spec)
    _nodata_to_fill(work, spec)
    return _to_out_dtype(work, spec)


# Output rows gathered per step: index arrays stay in the CPU cache and few pages are touched.
_GATHER_ROWS = 16


def _gather_nearest(window: np.ndarray, tile: TileTask, spec: VarSpec) -> np.ndarray:
    """Nearest neighbour by index: one coordinate computation serves every plane.

    Source coordinates of the target pixel centres are interpolated bilinearly
    from the tile's lattice (checked at plan time to be within GDAL's default
    approximation error), then each target pixel takes the source pixel its
    centre falls in, as GDAL's nearest kernel does. The tile is done a few rows
    at a time, so temporaries stay small (fresh pages cost more than the
    arithmetic); NumPy releases the GIL in each step.
    """
    h, w = tile.dst_shape
    wh, ww = tile.window_shape
    data = window.data if isinstance(window, np.ma.MaskedArray) else window
    g = data.shape[0]
    planes = np.ascontiguousarray(data, dtype=spec.work_dtype).reshape(g, wh * ww)
    masked = window.mask[0].ravel() if isinstance(window, np.ma.MaskedArray) else None
    out = np.empty((g, h, w), dtype=spec.work_dtype)
    m = tile.lattice.shape[1] - 1
    kx, fx = _cell(w, m)
    # the lattice interpolated along x once: (m+1, w) source col and row per lattice row
    cols, rows = (lat[:, kx] * (1 - fx) + lat[:, kx + 1] * fx for lat in tile.lattice)
    ky, fy = _cell(h, m)
    strip = np.empty((g, _GATHER_ROWS * w), dtype=spec.work_dtype)
    for r0 in range(0, h, _GATHER_ROWS):
        r1 = min(h, r0 + _GATHER_ROWS)
        k, f = ky[r0:r1], fy[r0:r1, None]
        col = cols[k] * (1 - f) + cols[k + 1] * f
        row = rows[k] * (1 - f) + rows[k + 1] * f
        outside = ~((col >= 0) & (col < ww) & (row >= 0) & (row < wh))  # NaN is outside
        # truncation is floor for the coordinates inside; "clip" keeps the others in range
        index = (row.astype(np.intp) * ww + col.astype(np.intp)).ravel()
        part = strip[:, : index.size]
        np.take(planes, index, axis=1, out=part, mode="clip")
        if masked is not None:
            outside |= np.take(masked, index, mode="clip").reshape(outside.shape)
        block = out[:, r0:r1]
        block[...] = part.reshape(g, r1 - r0, w)
        if outside.any():
            block[:, outside] = spec.work_fill
    return out


def window_aggregate(window: np.ndarray, tile: TileTask, spec: VarSpec) -> np.ndarray:
    """count, last, prod, std, var of the valid source pixels whose centre falls in each
    target pixel (GDAL has no such kernels). Works in float64; NaN marks 'no data'.

    ``last`` is the last valid pixel in source row-major order; ``std``/``var`` use
    ddof=0 (NumPy's default); ``count`` is 0 where nothing valid falls.
    """
    data = np.ma.getdata(window).astype(np.float64, copy=False)
    g, wh, ww = data.shape
    h, w = tile.dst_shape
    if tile.geoloc is not None:
        xs, ys = tile.geoloc[0].ravel(), tile.geoloc[1].ravel()
    else:
        cols, rows = np.meshgrid(np.arange(ww) + 0.5, np.arange(wh) + 0.5)
        xs, ys = _affine(tile.src_transform) * (cols.ravel(), rows.ravel())
    if tile.src_crs_wkt != tile.dst_crs_wkt:
        from rasterio.warp import transform

        xs, ys = (np.asarray(a) for a in transform(
            _crs(tile.src_crs_wkt), _crs(tile.dst_crs_wkt), xs, ys
        ))  # fmt: skip
    tc, tr = ~_affine(tile.dst_transform) * (np.asarray(xs), np.asarray(ys))
    with np.errstate(invalid="ignore"):
        inside = (tc >= 0) & (tc < w) & (tr >= 0) & (tr < h)
    if isinstance(window, np.ma.MaskedArray) and window.mask is not np.ma.nomask:
        inside &= ~np.broadcast_to(window.mask, window.shape)[0].ravel()
    target = tr[inside].astype(np.intp) * w + tc[inside].astype(np.intp)
    out = np.full((g, h * w), np.nan)
    for k in range(g):
        values = data[k].ravel()[inside]
        ok = ~np.isnan(values)
        if spec.work_nodata is not None and not np.isnan(spec.work_nodata):
            ok &= values != spec.work_nodata
        t, v = target[ok], values[ok]
        n = np.bincount(t, minlength=h * w)
        has = n > 0
        if spec.window_method == "count":
            out[k] = n
            continue
        if spec.window_method in ("std", "var"):
            mean = np.bincount(t, weights=v, minlength=h * w) / np.maximum(n, 1)
            dev = v - mean[t]
            res = np.bincount(t, weights=dev * dev, minlength=h * w) / np.maximum(n, 1)
            if spec.window_method == "std":
                res = np.sqrt(res)
        elif spec.window_method == "prod":
            res = np.ones(h * w)
            np.multiply.at(res, t, v)
        else:  # last
            pos = np.full(h * w, -1, dtype=np.intp)
            np.maximum.at(pos, t, np.arange(t.size))
            res = v[np.maximum(pos, 0)] if v.size else np.zeros(h * w)
        res[~has] = np.nan
        out[k] = res
    return out.reshape(g, h, w)


def _cell(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    pos = (np.arange(n) + 0.5) * (m / n)
    k = np.minimum(np.floor(pos).astype(np.int64), m - 1)
    return k, pos - k


def _nodata_to_fill(dst: np.ndarray, spec: VarSpec) -> None:
    """Gathered source nodata pixels become the fill value (GDAL skips them instead)."""
    nodata, fill = spec.work_nodata, spec.work_fill
    if nodata is None:
        return
    if isinstance(nodata, float) and math.isnan(nodata):
        if not (isinstance(fill, float) and math.isnan(fill)):
            dst[np.isnan(dst)] = fill
    elif nodata != fill:
        dst[_equal(dst, nodata)] = fill


def _differs(nodata: float | int | None, fill: float | int) -> bool:
    if nodata is None:
        return False
    if isinstance(nodata, float) and math.isnan(nodata):
        return False
    return nodata != fill


def _equal(a: np.ndarray, value: float | int) -> np.ndarray:
    return a == np.asarray(value).astype(a.dtype)


def _to_out_dtype(dst: np.ndarray, spec: VarSpec) -> np.ndarray:
    if dst.dtype == spec.out_dtype:
        return dst
    if spec.out_dtype == np.bool_:
        return dst.astype(bool)
    if np.issubdtype(spec.out_dtype, np.integer):
        if np.issubdtype(dst.dtype, np.floating):
            missing = ~np.isfinite(dst)
            if isinstance(spec.work_fill, float) and not math.isnan(spec.work_fill):
                missing |= dst == spec.work_fill
            info = np.iinfo(spec.out_dtype)
            out = np.clip(np.rint(np.where(missing, 0, dst)), info.min, info.max)
        else:
            missing = dst == spec.work_fill
            out = dst
        out = out.astype(spec.out_dtype)
        out[missing] = spec.out_fill
        return out
    out = dst.astype(spec.out_dtype)
    if not np.issubdtype(dst.dtype, np.floating):
        out[dst == spec.work_fill] = spec.out_fill
    return out


def _affine(coefficients: Sequence[float]) -> Affine:
    return Affine(*coefficients[:6])


@lru_cache(maxsize=64)
def _crs(wkt: str) -> CRS:
    return CRS.from_wkt(wkt)
