"""Understand a source's grid: which dims are x/y, its CRS, affine or curvilinear.

Sources come from many openers (rioxarray via xcube's GeoTIFF opener, CF
NetCDF, xcube cubes, Zarr). Everything downstream works on one normal form:
a north-up, west-to-east pixel grid (flips are applied lazily) or, for
curvilinear sources, 2-D longitude/latitude arrays used as GDAL geolocation
arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pyproj
import xarray as xr
from affine import Affine

from ..errors import SourceGridError
from ..grid import TargetGrid, crs_of, xy_names

# Irregularity tolerated in 1-D coordinates, as a fraction of one pixel
# (float32 coordinates in NetCDF files are only this precise).
_REGULAR_TOLERANCE = 0.01

_X_STANDARD_NAMES = frozenset({"projection_x_coordinate", "longitude", "grid_longitude"})
_Y_STANDARD_NAMES = frozenset({"projection_y_coordinate", "latitude", "grid_latitude"})
_LON_NAMES = ("lon", "longitude", "Lon", "Longitude", "LON", "LONGITUDE", "nav_lon", "xlong")
_LAT_NAMES = ("lat", "latitude", "Lat", "Latitude", "LAT", "LATITUDE", "nav_lat", "xlat")
_KM_UNITS = frozenset({"km", "kilometre", "kilometer", "kilometres", "kilometers"})


@dataclass(frozen=True, eq=False)
class SourceGrid:
    """The pixel grid of a source in normal form (see module docstring)."""

    crs: pyproj.CRS
    x_dim: str
    y_dim: str
    width: int
    height: int
    transform: Affine | None = None  # affine sources: north-up, after flips
    flip_x: bool = False
    flip_y: bool = False
    lon: np.ndarray | None = None  # curvilinear sources: (height, width), in ``crs``
    lat: np.ndarray | None = None

    @property
    def is_curvilinear(self) -> bool:
        return self.transform is None

    @property
    def period(self) -> int | None:
        """Pixels per 360 degrees for geographic grids whose pixels tile the globe exactly.

        Such grids are treated as periodic in x so that 0..360 sources serve
        -180..180 targets and targets across the antimeridian.
        """
        if self.transform is None or not self.crs.is_geographic:
            return None
        n = 360.0 / self.transform.a
        whole = round(n)
        return whole if abs(n - whole) < 1e-6 * n else None

    @property
    def resolution(self) -> tuple[float, float]:
        if self.transform is None:
            raise SourceGridError("a curvilinear grid has no single resolution")
        return self.transform.a, -self.transform.e

    def bounds(self) -> tuple[float, float, float, float]:
        if self.transform is None:
            return (
                float(np.nanmin(self.lon)),
                float(np.nanmin(self.lat)),
                float(np.nanmax(self.lon)),
                float(np.nanmax(self.lat)),
            )
        t = self.transform
        return t.c, t.f + self.height * t.e, t.c + self.width * t.a, t.f

    def normalise(self, da: xr.DataArray) -> xr.DataArray:
        """``da`` with dims ``(..., y, x)`` in north-up, west-to-east order (lazy)."""
        other = [d for d in da.dims if d not in (self.y_dim, self.x_dim)]
        da = da.transpose(*other, self.y_dim, self.x_dim)
        flips = {}
        if self.flip_y:
            flips[self.y_dim] = slice(None, None, -1)
        if self.flip_x:
            flips[self.x_dim] = slice(None, None, -1)
        return da.isel(flips) if flips else da

    @cached_property
    def corner_geoloc(self) -> np.ndarray:
        """Longitude/latitude of the pixel corners of a curvilinear grid, (2, height+1, width+1).

        2-D coordinates locate pixel centres, but GDAL's geolocation transformer
        puts geolocation value (i, j) at the top-left corner of pixel (i, j)
        (its default ``GEOREFERENCING_CONVENTION=TOP_LEFT_CORNER``), and
        rasterio's ``src_geoloc_array`` gives no way to change that. Handing
        GDAL the corners avoids a half-pixel shift.
        """
        if self.lon is None or self.lat is None:
            raise SourceGridError("an affine grid has no geolocation arrays")
        return pixel_corners(self.lon, self.lat)

    def as_target_grid(self, tile_size: tuple[int, int]) -> TargetGrid | None:
        """This grid as a ``TargetGrid`` (None when it cannot be one: curvilinear, flipped)."""
        if self.transform is None or self.flip_x or self.flip_y:
            return None
        return TargetGrid(self.crs.to_wkt(), self.transform, self.width, self.height, tile_size)


def detect_source_grid(ds: xr.Dataset) -> SourceGrid:
    """Find the spatial dims, CRS and pixel geometry of ``ds``.

    Raises ``SourceGridError`` naming what is missing when the source has no
    understandable CRS or coordinates.
    """
    dims = _regular_dims(ds)
    if dims is None:
        return _curvilinear_grid(ds)
    x_dim, y_dim = dims
    crs = crs_of(ds)
    if crs is None:
        raise SourceGridError(
            f"source has x/y dims {x_dim!r}/{y_dim!r} but no CRS: expected a CF grid-mapping "
            "variable (e.g. 'spatial_ref' or 'crs' with crs_wkt), a 'crs' attribute or lon/lat dims"
        )
    x = _coord_values(ds, x_dim, crs)
    y = _coord_values(ds, y_dim, crs)
    res_x, flip_x = _regular_step(x, x_dim)
    res_y, ascending_y = _regular_step(y, y_dim)
    west = min(x[0], x[-1]) - res_x / 2
    north = max(y[0], y[-1]) + res_y / 2
    return SourceGrid(
        crs=crs,
        x_dim=x_dim,
        y_dim=y_dim,
        width=x.size,
        height=y.size,
        transform=Affine(res_x, 0.0, west, 0.0, -res_y, north),
        flip_x=flip_x,
        flip_y=not ascending_y,
    )


# Corner rows computed per step: temporaries stay near 40 arrays of this many rows.
_CORNER_ROWS = 256


def pixel_corners(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Corners between 2-D pixel-centre coordinates: (2, h+1, w+1) longitude/latitude.

    Each inner corner is the mean of its four neighbouring centres, outer ones
    are extrapolated linearly (one row/column beyond each edge), all on the unit
    sphere so longitudes are never averaged across the antimeridian. Corners
    next to missing centres use the centres that exist. Done a few rows at a
    time, so memory stays near the output's size for large swaths.
    """
    if lon.ndim != 2 or lon.shape != lat.shape or min(lon.shape) < 2:
        raise SourceGridError(
            f"2-D coordinates need the same shape and at least 2x2 values, got {lon.shape}"
        )
    h, w = lon.shape
    out = np.empty((2, h + 1, w + 1))
    for r0 in range(0, h + 1, _CORNER_ROWS):
        r1 = min(h + 1, r0 + _CORNER_ROWS)
        # corner rows r0..r1-1 lie between centre rows r0-1..r1-1 (-1 and h: extrapolated)
        v = _extended_rows(lon, lat, r0 - 1, r1 - 1)
        total = np.zeros((3, r1 - r0, w + 1))
        count = np.zeros((r1 - r0, w + 1))
        for dr in (0, 1):
            for dc in (0, 1):
                part = v[:, dr : dr + r1 - r0, dc : dc + w + 1]
                finite = np.isfinite(part).all(axis=0)
                total += np.where(finite, part, 0.0)
                count += finite
        with np.errstate(invalid="ignore", divide="ignore"):
            c = total / count
            c /= np.linalg.norm(c, axis=0)
        out[0, r0:r1] = np.degrees(np.arctan2(c[1], c[0]))
        out[1, r0:r1] = np.degrees(np.arcsin(np.clip(c[2], -1.0, 1.0)))
    return out


def _extended_rows(lon: np.ndarray, lat: np.ndarray, first: int, last: int) -> np.ndarray:
    """Unit vectors of centre rows first..last, (3, n, w+2): rows -1 and h and columns -1
    and w extrapolated linearly from the two nearest."""
    h = lon.shape[0]

    def unit(rows: slice) -> np.ndarray:
        lo, la = np.radians(lon[rows]), np.radians(lat[rows])
        return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)])

    lo_row, hi_row = max(first, 0), min(last, h - 1)
    parts = []
    if first < 0:
        two = unit(slice(0, 2))
        parts.append(2 * two[:, :1] - two[:, 1:2])
    parts.append(unit(slice(lo_row, hi_row + 1)))
    if last > h - 1:
        two = unit(slice(h - 2, h))
        parts.append(2 * two[:, 1:2] - two[:, :1])
    v = np.concatenate(parts, axis=1)
    return np.concatenate(
        [2 * v[:, :, :1] - v[:, :, 1:2], v, 2 * v[:, :, -1:] - v[:, :, -2:-1]], axis=2
    )


def spatial_variables(ds: xr.Dataset, grid: SourceGrid) -> tuple[list[str], list[str], list[str]]:
    """Data variables split into (on both x and y, on neither, on only one of them)."""
    both, neither, partial = [], [], []
    for name, var in ds.data_vars.items():
        has = (grid.x_dim in var.dims, grid.y_dim in var.dims)
        (both if all(has) else partial if any(has) else neither).append(str(name))
    return both, neither, partial


def kind_dtype(da: xr.DataArray) -> np.dtype:
    """The dtype that says what the values are: the stored integer type of a variable that
    xarray decoded to float only to mask its fill value (NetCDF and Zarr sources opened
    with the defaults), else the in-memory dtype. Classes stay classes (nearest/mode)."""
    stored = da.encoding.get("dtype")
    scaled = {"scale_factor", "add_offset"} & (da.encoding.keys() | da.attrs.keys())
    if (
        stored is not None
        and np.issubdtype(da.dtype, np.floating)
        and (np.issubdtype(np.dtype(stored), np.integer) or np.dtype(stored) == np.bool_)
        and not scaled
    ):
        return np.dtype(stored)
    return np.dtype(da.dtype)


def source_nodata(da: xr.DataArray) -> float | int | None:
    """The nodata value as it appears in ``da``'s in-memory values.

    Undecoded sources carry it in attrs (``_FillValue``, ``missing_value``,
    rioxarray's ``nodata``). When xarray decoded the variable, masked pixels
    are already NaN and ``encoding['_FillValue']`` is the on-disk value, so
    NaN is the in-memory nodata.
    """
    for key in ("_FillValue", "missing_value", "nodata"):
        value = da.attrs.get(key)
        if value is not None:
            value = np.asarray(value).ravel()[0].item()
            return value
    if np.issubdtype(da.dtype, np.floating):
        return math.nan
    fill = da.encoding.get("_FillValue")
    if fill is not None and np.dtype(da.encoding.get("dtype", da.dtype)) == da.dtype:
        return np.asarray(fill).ravel()[0].item()
    return None


# -- internals -----------------------------------------------------------------------


def _regular_dims(ds: xr.Dataset) -> tuple[str, str] | None:
    try:
        x_dim, y_dim = xy_names(ds)
    except SourceGridError:
        x_dim = y_dim = None
    if x_dim is not None and _has_1d_coord(ds, x_dim) and _has_1d_coord(ds, y_dim):
        return x_dim, y_dim
    # CF attributes on 1-D dimension coordinates (e.g. rlon/rlat, xc/yc).
    x_dim = _dim_by_attrs(ds, _X_STANDARD_NAMES, "X")
    y_dim = _dim_by_attrs(ds, _Y_STANDARD_NAMES, "Y")
    if x_dim is not None and y_dim is not None:
        return x_dim, y_dim
    return None


def _has_1d_coord(ds: xr.Dataset, dim: str) -> bool:
    return dim in ds.coords and ds[dim].ndim == 1 and ds[dim].dims == (dim,)


def _dim_by_attrs(ds: xr.Dataset, standard_names: frozenset[str], axis: str) -> str | None:
    for name in ds.dims:
        if name in ds.coords and ds[name].ndim == 1:
            attrs = ds[name].attrs
            if attrs.get("standard_name") in standard_names or attrs.get("axis") == axis:
                return str(name)
    return None


def _coord_values(ds: xr.Dataset, dim: str, crs: pyproj.CRS) -> np.ndarray:
    values = np.asarray(ds[dim].values, dtype="float64")
    units = ds[dim].attrs.get("units")
    crs_unit = crs.axis_info[0].unit_name if crs.axis_info else None
    if isinstance(units, str) and units.strip().lower() in _KM_UNITS and crs_unit == "metre":
        values = values * 1000.0
    if values.size < 2:
        raise SourceGridError(f"coordinate {dim!r} has {values.size} value(s); need at least 2")
    if not np.all(np.isfinite(values)):
        raise SourceGridError(f"coordinate {dim!r} contains NaN or infinite values")
    return values


def _regular_step(values: np.ndarray, dim: str) -> tuple[float, bool]:
    """(positive pixel size, whether the values descend)."""
    step = (values[-1] - values[0]) / (values.size - 1)
    if step == 0 or np.max(np.abs(np.diff(values) - step)) > _REGULAR_TOLERANCE * abs(step):
        raise SourceGridError(f"coordinate {dim!r} is not regularly spaced; cannot derive a grid")
    return abs(float(step)), bool(step < 0)


def _curvilinear_grid(ds: xr.Dataset) -> SourceGrid:
    lon = _find_2d(ds, _LON_NAMES, "longitude")
    lat = _find_2d(ds, _LAT_NAMES, "latitude")
    if lon is None or lat is None:
        raise SourceGridError(
            f"cannot find the source's spatial coordinates among dims {list(ds.dims)}: expected "
            "1-D x/y (or lon/lat) dimension coordinates, or 2-D longitude/latitude arrays"
        )
    if lon.dims != lat.dims or lon.ndim != 2:
        raise SourceGridError(
            f"2-D coordinates {lon.name!r}{lon.dims} and {lat.name!r}{lat.dims} do not share dims"
        )
    crs = crs_of(ds)
    geo_crs = crs.geodetic_crs if crs is not None and crs.geodetic_crs is not None else None
    geo_crs = geo_crs or pyproj.CRS.from_epsg(4326)
    lon_values = np.asarray(lon.values, dtype="float64")
    lat_values = np.asarray(lat.values, dtype="float64")
    finite = np.isfinite(lon_values) & np.isfinite(lat_values)
    if not finite.any():
        raise SourceGridError(f"2-D coordinates {lon.name!r}/{lat.name!r} hold no finite values")
    if np.nanmax(lon_values) > 180.0:
        # GDAL's geolocation transformer expects longitudes in -180..180.
        lon_values = (lon_values + 180.0) % 360.0 - 180.0
    y_dim, x_dim = (str(d) for d in lon.dims)
    return SourceGrid(
        crs=geo_crs,
        x_dim=x_dim,
        y_dim=y_dim,
        width=int(lon.shape[1]),
        height=int(lon.shape[0]),
        lon=lon_values,
        lat=lat_values,
    )


def _find_2d(ds: xr.Dataset, names: tuple[str, ...], standard_name: str) -> Any:
    for name in names:
        if name in ds.variables and ds[name].ndim == 2:
            return ds[name]
    for name, var in ds.variables.items():
        if var.ndim == 2 and var.attrs.get("standard_name") == standard_name:
            return ds[name]
    return None
