"""Planning: which source pixel window each target tile needs.

Done once at graph-build time, vectorised over all tiles, so that each dask
task later reads only its window (plus a margin) and never the whole source.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pyproj

from ..grid import TargetGrid, crs_transformer
from .source import SourceGrid

# Lattice cells per tile edge used to trace tile footprints in the source CRS, fewer on
# grids of very many tiles so the lattice stays within _LATTICE_POINTS points (10^5 tiles
# at 8 x 8 cells would be 6.4 million points, transformed twice).
_SUBDIVISIONS_FEW_TILES = 16
_SUBDIVISIONS_MANY_TILES = 8
_MANY_TILES = 2000
_LATTICE_POINTS = 2**20

# Largest error (source pixels) accepted from interpolating coordinates: GDAL's default.
APPROX_ERROR = 0.125


@dataclass(frozen=True)
class Footprints:
    """Per-tile source pixel extents (float, NaN where a tile sees no source).

    Arrays have shape (tile rows, tile cols). Rows/cols are in the source's
    normal form (north-up, west-to-east); for geographic sources, cols are
    unwrapped around ``center_lon`` so a tile's footprint is contiguous.
    """

    row_min: np.ndarray
    row_max: np.ndarray
    col_min: np.ndarray
    col_max: np.ndarray
    center_lon: np.ndarray | None  # geographic sources: longitude GDAL wraps around
    # Source pixel coordinates (col, row) at each tile's (m+1)x(m+1) lattice of pixel
    # edges, shape (tile rows, tile cols, 2, m+1, m+1); None for curvilinear sources.
    lattice: np.ndarray | None = None
    # Whether bilinear interpolation of the lattice is within ``APPROX_ERROR`` pixels
    # of the exact transform everywhere in the tile (checked at cell centres).
    lattice_ok: np.ndarray | None = None

    # Source pixels (by area) under one target pixel, per tile; NaN where unknown.
    area_ratio: np.ndarray | None = None

    def scale(self, target: TargetGrid) -> np.ndarray:
        """Source pixels per target pixel along the worse axis of each tile's bounding box.

        An upper bound for window margins; rotation between the CRSs inflates it,
        so it must not decide whether the target is coarser (``is_coarser`` does).
        """
        rows, cols = target.chunks
        tile_h = np.asarray(rows, dtype="float64")[:, None]
        tile_w = np.asarray(cols, dtype="float64")[None, :]
        sy = (self.row_max - self.row_min) / tile_h
        sx = (self.col_max - self.col_min) / tile_w
        return np.maximum(sx, sy)

    def is_coarser(self, target: TargetGrid) -> bool:
        """Whether a target pixel covers more than one source pixel (by area).

        Decided from the true pixel-size ratio (the area of each target pixel
        in source pixels, from the traced lattice), not from bounding boxes.
        One decision for the whole cube: the median over tiles, weighted by
        their pixel counts, so a cube never mixes methods tile by tile.
        """
        ratio = self.area_ratio
        if ratio is None:
            ratio = self.scale(target) ** 2
        rows, cols = target.chunks
        weight = np.outer(np.asarray(rows, dtype="float64"), np.asarray(cols, dtype="float64"))
        ok = np.isfinite(ratio)
        if not ok.any():
            return False
        return bool(_weighted_median(ratio[ok], weight[ok]) > 1.0 + 1e-6)


@dataclass(frozen=True)
class SourceWindow:
    """The source pixels one target tile needs: rows [r0, r1), cols [c0, c1).

    ``c0``/``c1`` may lie outside ``[0, width)`` for periodic (global
    geographic) sources; they are read modulo the period.
    """

    r0: int
    r1: int
    c0: int
    c1: int
    center_lon: float | None = None
    whole_globe: bool = False  # the -180..180 globe, for tiles that see every longitude

    @property
    def shape(self) -> tuple[int, int]:
        return self.r1 - self.r0, self.c1 - self.c0


def footprints(grid: SourceGrid, target: TargetGrid) -> Footprints:
    """Trace every target tile's outline and interior in source pixel space."""
    if grid.is_curvilinear:
        return _curvilinear_footprints(grid, target)
    rows, cols = target.chunks
    m = _subdivisions(rows, cols)
    px = _lattice(cols, m)  # target pixel positions along x, (ntx*m + 1,)
    py = _lattice(rows, m)
    t = target.transform
    xx, yy = np.meshgrid(t.c + px * t.a, t.f + py * t.e)
    transformer = crs_transformer(target.crs, grid.crs)
    sx, sy = transformer.transform(xx, yy, errcheck=False)
    sx = np.where(np.isfinite(sx) & np.isfinite(sy), sx, np.nan)
    sy = np.where(np.isfinite(sx), sy, np.nan)
    # Gather each tile's (m+1)x(m+1) points: shape (nty, ntx, m+1, m+1).
    iy = np.arange(len(rows))[:, None] * m + np.arange(m + 1)[None, :]
    ix = np.arange(len(cols))[:, None] * m + np.arange(m + 1)[None, :]
    tx = sx[iy[:, None, :, None], ix[None, :, None, :]]
    ty = sy[iy[:, None, :, None], ix[None, :, None, :]]
    center_lon = None
    if grid.crs.is_geographic:
        center_lon = _tile_center_lon(tx, grid)
        c = center_lon[:, :, None, None]
        tx = c + np.mod(tx - c + 180.0, 360.0) - 180.0
    col = (tx - grid.transform.c) / grid.transform.a
    row = (ty - grid.transform.f) / grid.transform.e
    lattice_ok = _lattice_is_linear(grid, target, transformer, m, col, row, center_lon)
    with np.errstate(invalid="ignore"), _quiet_nan():
        area = _area_ratio(col, row, np.asarray(rows)[:, None], np.asarray(cols)[None, :], m)
        return Footprints(
            row_min=np.nanmin(row, axis=(2, 3)),
            row_max=np.nanmax(row, axis=(2, 3)),
            col_min=np.nanmin(col, axis=(2, 3)),
            col_max=np.nanmax(col, axis=(2, 3)),
            center_lon=center_lon,
            lattice=np.stack([col, row], axis=2),
            lattice_ok=lattice_ok,
            area_ratio=area,
        )


def _area_ratio(
    col: np.ndarray, row: np.ndarray, tile_h: np.ndarray, tile_w: np.ndarray, m: int
) -> np.ndarray:
    """Per tile: source pixels (by area) per target pixel, from the lattice cells.

    Each lattice cell is a quadrilateral in source pixel space; its area (half
    the cross product of its diagonals) over the target pixels it spans is the
    local Jacobian determinant of the target->source transform. Cells that do
    not transform are left out.
    """
    d1c = col[..., 1:, 1:] - col[..., :-1, :-1]
    d1r = row[..., 1:, 1:] - row[..., :-1, :-1]
    d2c = col[..., 1:, :-1] - col[..., :-1, 1:]
    d2r = row[..., 1:, :-1] - row[..., :-1, 1:]
    area = 0.5 * np.abs(d1c * d2r - d1r * d2c)
    ok = np.isfinite(area)
    cells = ok.sum(axis=(2, 3))
    total = np.where(ok, area, 0.0).sum(axis=(2, 3))
    pixels_per_cell = (tile_h / m) * (tile_w / m)
    return np.where(cells > 0, total / np.maximum(cells, 1) / pixels_per_cell, np.nan)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, cum[-1] / 2.0)])


def _lattice_is_linear(
    grid: SourceGrid,
    target: TargetGrid,
    transformer: pyproj.Transformer,
    m: int,
    col: np.ndarray,
    row: np.ndarray,
    center_lon: np.ndarray | None,
) -> np.ndarray:
    """Per tile: is the lattice fine enough to interpolate source coordinates linearly?

    Like GDAL's approximate transformer, but checked once per tile at every
    lattice cell centre against the exact transform.
    """
    rows, cols = target.chunks
    px = _lattice(cols, m)
    py = _lattice(rows, m)
    t = target.transform
    mx, my = (px[:-1] + px[1:]) / 2, (py[:-1] + py[1:]) / 2
    xx, yy = np.meshgrid(t.c + mx * t.a, t.f + my * t.e)
    sx, sy = transformer.transform(xx, yy, errcheck=False)
    nty, ntx = len(rows), len(cols)
    ex = sx.reshape(nty, m, ntx, m).transpose(0, 2, 1, 3)
    ey = sy.reshape(nty, m, ntx, m).transpose(0, 2, 1, 3)
    if center_lon is not None:
        c = center_lon[:, :, None, None]
        ex = c + np.mod(ex - c + 180.0, 360.0) - 180.0
    exact_col = (ex - grid.transform.c) / grid.transform.a
    exact_row = (ey - grid.transform.f) / grid.transform.e

    def centre(a: np.ndarray) -> np.ndarray:
        return (a[..., :-1, :-1] + a[..., 1:, :-1] + a[..., :-1, 1:] + a[..., 1:, 1:]) / 4

    with np.errstate(invalid="ignore"):
        err = np.maximum(np.abs(centre(col) - exact_col), np.abs(centre(row) - exact_row))
        err = np.where(np.isfinite(err), err, np.inf)
    return err.max(axis=(2, 3)) <= APPROX_ERROR


@dataclass(frozen=True)
class Windows:
    """Every tile's source window as arrays of shape (tile rows, tile cols).

    Computed for all tiles at once; ``band`` makes ``SourceWindow`` objects only for
    the tile rows being planned, so a grid of 10^5 tiles never holds 10^5 of them.
    """

    r0: np.ndarray
    r1: np.ndarray
    c0: np.ndarray
    c1: np.ndarray
    center_lon: np.ndarray  # NaN: no longitude to wrap around
    whole_globe: np.ndarray
    valid: np.ndarray  # False: the tile sees no source pixel

    @property
    def shape(self) -> tuple[int, int]:
        return self.valid.shape

    def band(self, i0: int, i1: int) -> list[list[SourceWindow | None]]:
        """The windows of tile rows ``i0:i1`` (plain ints: they are used once per tile)."""
        rows = slice(i0, i1)
        r0, r1 = self.r0[rows].tolist(), self.r1[rows].tolist()
        c0, c1 = self.c0[rows].tolist(), self.c1[rows].tolist()
        centers, whole = self.center_lon[rows].tolist(), self.whole_globe[rows].tolist()
        valid = self.valid[rows].tolist()
        return [
            [
                SourceWindow(
                    r0[i][j],
                    r1[i][j],
                    c0[i][j],
                    c1[i][j],
                    None if math.isnan(centers[i][j]) else centers[i][j],
                    whole[i][j],
                )
                if valid[i][j]
                else None
                for j in range(len(valid[i]))
            ]
            for i in range(len(valid))
        ]

    def bounds(self) -> np.ndarray:
        """(r0, r1, c0, c1, centre) per tile, NaN where there is no window: shape
        (tile rows, tile cols * 5), tokenized as bytes."""
        stacked = np.stack([self.r0, self.r1, self.c0, self.c1, self.center_lon], axis=-1).astype(
            "float64"
        )
        stacked[~self.valid] = np.nan
        return stacked.reshape(self.shape[0], -1)


def windows(
    fp: Footprints, grid: SourceGrid, target: TargetGrid, radius: int, scale_margin: bool
) -> Windows:
    """Source windows per tile with a margin of ``radius`` kernel pixels.

    With ``scale_margin`` (resampling kernels that widen when the target is
    coarser, and aggregating methods) the margin grows with the number of
    source pixels under one target pixel.
    """
    scale = np.nan_to_num(fp.scale(target), nan=1.0)
    factor = np.maximum(scale, 1.0) if scale_margin else np.ones_like(scale)
    # One pixel more than the kernel needs covers footprint curvature between lattice points.
    margin = np.ceil(radius * factor) + (1 if radius > 0 else 0)
    return _tile_windows(fp, grid, margin)


def overlaps(fp: Footprints, grid: SourceGrid) -> bool:
    """Whether any tile's footprint (without margin) meets the source pixels."""
    return bool(_tile_windows(fp, grid, np.zeros(fp.row_min.shape)).valid.any())


def _tile_windows(fp: Footprints, grid: SourceGrid, margins: np.ndarray) -> Windows:
    """Each tile's window with ``margins`` source pixels around its footprint, for all tiles
    at once (a loop over tiles took half a second on grids of 10^5 tiles)."""
    period = grid.period
    ok = (
        np.isfinite(fp.row_min)
        & np.isfinite(fp.row_max)
        & np.isfinite(fp.col_min)
        & np.isfinite(fp.col_max)
    )

    def pixel(a: np.ndarray, rounding) -> np.ndarray:
        return np.where(ok, rounding(np.where(ok, a, 0.0)), 0).astype(np.int64)

    mg = np.where(ok, margins, 0).astype(np.int64)
    r0 = np.maximum(0, pixel(fp.row_min, np.floor) - mg)
    r1 = np.minimum(grid.height, pixel(fp.row_max, np.ceil) + mg)
    c0 = pixel(fp.col_min, np.floor) - mg
    c1 = pixel(fp.col_max, np.ceil) + mg
    if period is None or grid.is_curvilinear:
        c0, c1 = np.maximum(0, c0), np.minimum(grid.width, c1)
    else:
        s0 = np.mod(c0, period)
        touches = (c1 - c0 >= period) | (s0 < grid.width) | (s0 + (c1 - c0) > period)
        c1 = np.where(touches, c1, c0)
    valid = ok & (r1 > r0) & (c1 > c0)
    center = np.full(valid.shape, np.nan) if fp.center_lon is None else fp.center_lon.copy()
    globe = np.zeros(valid.shape, dtype=bool)
    if period is not None:
        # Around a pole a tile sees every longitude: hand GDAL the whole globe as
        # -180..180, whose pole handling then applies, instead of a wrapped window.
        globe = valid & (c1 - c0 >= period // 2)
        west = round((-180.0 - grid.transform.c) / grid.transform.a)
        c0 = np.where(globe, west, c0)
        c1 = np.where(globe, west + period, c1)
        center[globe] = np.nan
    return Windows(r0, r1, c0, c1, center, globe, valid)


def max_pieces(w: Windows, row_bounds: np.ndarray, col_bounds: np.ndarray, grid: SourceGrid) -> int:
    """The most source chunks (pieces, see ``column_runs``) any one tile's window is cut into."""
    if not w.valid.any():
        return 1
    r0, r1 = w.r0[w.valid], w.r1[w.valid]
    c0, c1 = w.c0[w.valid], w.c1[w.valid]
    rows = _chunks_overlapped(row_bounds, r0, r1)
    period = grid.period
    if period is None:
        return int((rows * _chunks_overlapped(col_bounds, c0, c1)).max())
    # one run per period the window spans: the part of that period the source covers
    first = np.floor_divide(c0, period)
    spans = np.floor_divide(c1 - 1, period) - first + 1
    cols = np.zeros_like(rows)
    for k in range(int(spans.max())):
        base = (first + k) * period
        s = np.maximum(c0, base) - base
        e = np.minimum(np.minimum(c1, base + period) - base, grid.width)
        has = (k < spans) & (s < e)
        cols += np.where(has, _chunks_overlapped(col_bounds, s, np.maximum(e, s + 1)), 0)
    return int(max(1, (rows * cols).max()))


def _chunks_overlapped(bounds: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """How many chunks (between ``bounds``) pixels ``start:stop`` fall in, per element."""
    first = np.maximum(np.searchsorted(bounds, start, side="right") - 1, 0)
    last = np.minimum(np.searchsorted(bounds, stop, side="left") - 1, len(bounds) - 2)
    return np.maximum(last - first + 1, 0)


def column_runs(w: SourceWindow, width: int, period: int | None) -> list[tuple[int, int, int]]:
    """Contiguous pieces of a window's columns: (window col, source col, length).

    Columns of a periodic source are taken modulo ``period``; columns that
    fall into the part of the period the source does not cover are absent
    (the caller masks them).
    """
    if period is None:
        return [(0, w.c0, w.c1 - w.c0)]
    runs = []
    c = w.c0
    while c < w.c1:
        s = c % period
        if s < width:
            n = min(width - s, w.c1 - c)
            runs.append((c - w.c0, s, n))
        else:
            n = min(period - s, w.c1 - c)
        c += n
    return runs


# -- internals -----------------------------------------------------------------------


def _subdivisions(rows: tuple[int, ...], cols: tuple[int, ...]) -> int:
    most = (
        _SUBDIVISIONS_FEW_TILES
        if len(rows) * len(cols) <= _MANY_TILES
        else _SUBDIVISIONS_MANY_TILES
    )
    # at least 2, so a lattice point sits at each tile's centre
    return max(2, min(most, math.isqrt(_LATTICE_POINTS // (len(rows) * len(cols)))))


def _lattice(sizes: tuple[int, ...], m: int) -> np.ndarray:
    edges = np.concatenate([[0], np.cumsum(sizes)]).astype("float64")
    steps = np.arange(m) / m
    inner = edges[:-1, None] + np.diff(edges)[:, None] * steps[None, :]
    return np.concatenate([inner.ravel(), edges[-1:]])


def _tile_center_lon(tx: np.ndarray, grid: SourceGrid) -> np.ndarray:
    """Per tile, the longitude to wrap around, shifted by whole turns towards the source."""
    m = tx.shape[2] - 1
    center = tx[:, :, m // 2, m // 2]
    # Fall back to any valid point of the tile when its centre does not transform.
    with _quiet_nan():
        fallback = np.nanmedian(tx, axis=(2, 3))
    # Whole degrees: few distinct source CRSs for GDAL, any nearby centre works.
    center = np.round(np.where(np.isfinite(center), center, fallback))
    west, _, east, _ = grid.bounds()
    source_center = (west + east) / 2.0
    return center + 360.0 * np.round((source_center - center) / 360.0)


def _touches_periodic(c0: int, c1: int, width: int, period: int) -> bool:
    if c1 - c0 >= period:
        return True
    s0 = c0 % period
    return s0 < width or (s0 + (c1 - c0)) > period


def _curvilinear_footprints(grid: SourceGrid, target: TargetGrid) -> Footprints:
    """Which source pixels fall into each tile (source cells spread over every tile they touch)."""
    transformer = crs_transformer(grid.crs, target.crs)
    x, y = transformer.transform(grid.lon, grid.lat, errcheck=False)
    inv = ~target.transform
    col = inv.a * x + inv.b * y + inv.c
    row = inv.d * x + inv.e * y + inv.f
    tw, th = target.tile_size
    nty, ntx = len(target.chunks[0]), len(target.chunks[1])
    # Cells between 4 neighbouring pixel centres, with their extent in tile units.
    corners_c = np.stack([col[:-1, :-1], col[1:, :-1], col[:-1, 1:], col[1:, 1:]])
    corners_r = np.stack([row[:-1, :-1], row[1:, :-1], row[:-1, 1:], row[1:, 1:]])
    with np.errstate(invalid="ignore"):
        c_lo, c_hi = corners_c.min(axis=0), corners_c.max(axis=0)
        r_lo, r_hi = corners_r.min(axis=0), corners_r.max(axis=0)
        ok = np.isfinite(c_lo) & np.isfinite(c_hi) & np.isfinite(r_lo) & np.isfinite(r_hi)
        # A cell spanning half the target is a seam (e.g. the antimeridian), not real extent.
        ok &= (c_hi - c_lo) < target.width / 2 + 2
        ok &= (r_hi - r_lo) < target.height / 2 + 2
        ok &= (c_hi >= 0) & (c_lo < target.width) & (r_hi >= 0) & (r_lo < target.height)
    ii, jj = np.nonzero(ok)
    tx0 = np.clip(np.floor(c_lo[ok] / tw), 0, ntx - 1).astype(int)
    tx1 = np.clip(np.floor(c_hi[ok] / tw), 0, ntx - 1).astype(int)
    ty0 = np.clip(np.floor(r_lo[ok] / th), 0, nty - 1).astype(int)
    ty1 = np.clip(np.floor(r_hi[ok] / th), 0, nty - 1).astype(int)
    shape = (nty, ntx)
    row_min = np.full(shape, np.inf)
    row_max = np.full(shape, -np.inf)
    col_min = np.full(shape, np.inf)
    col_max = np.full(shape, -np.inf)
    span_x = tx1 - tx0 + 1
    span_y = ty1 - ty0 + 1
    # Expand every cell to each tile it touches (almost always exactly one).
    reps = span_x * span_y
    cell = np.repeat(np.arange(ii.size), reps)
    k = np.arange(cell.size) - np.repeat(np.cumsum(reps) - reps, reps)
    t_y = ty0[cell] + k // span_x[cell]
    t_x = tx0[cell] + k % span_x[cell]
    flat = t_y * ntx + t_x
    np.minimum.at(row_min.ravel(), flat, ii[cell].astype("float64"))
    np.maximum.at(row_max.ravel(), flat, ii[cell].astype("float64") + 1)
    np.minimum.at(col_min.ravel(), flat, jj[cell].astype("float64"))
    np.maximum.at(col_max.ravel(), flat, jj[cell].astype("float64") + 1)
    empty = ~np.isfinite(row_min)
    for a in (row_min, row_max, col_min, col_max):
        a[empty] = np.nan
    return Footprints(row_min, row_max, col_min, col_max, center_lon=None)


@contextmanager
def _quiet_nan() -> Iterator[None]:
    """Silence numpy's all-NaN slice warnings (empty tiles are expected)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
