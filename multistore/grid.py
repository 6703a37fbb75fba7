"""The target grid every source of a cube is regridded onto.

``TargetGrid`` is an immutable value: CRS, north-up affine transform (pixel
edges), size and tile size. Pixel coordinates written to cubes are pixel
centres. A grid is built from a ``grid_mappings`` entry (``from_bbox``) or
from an existing cube (``from_dataset``), so a dataset can borrow another
dataset's grid.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

import numpy as np
import pyproj
import xarray as xr
from affine import Affine

from .errors import SourceGridError

# Sizes closer than this (in pixels) to a whole number are not rounded up.
_SIZE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Window:
    """A block of the target grid: ``[row_off:row_off+height, col_off:col_off+width]``."""

    col_off: int
    row_off: int
    width: int
    height: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return (
            slice(self.row_off, self.row_off + self.height),
            slice(self.col_off, self.col_off + self.width),
        )


@dataclass(frozen=True)
class TargetGrid:
    crs_wkt: str
    transform: Affine  # north-up: e < 0, b == d == 0
    width: int
    height: int
    tile_size: tuple[int, int] = (1024, 1024)  # x, y

    def __post_init__(self) -> None:
        t = self.transform
        if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
            raise ValueError(f"target grids must be north-up without rotation, got {t!r}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"target grid size must be positive, got {self.width}x{self.height}")

    # -- construction -------------------------------------------------------------

    @classmethod
    def from_bbox(
        cls,
        bbox: Sequence[float],
        crs: Any,
        spatial_res: float | Sequence[float],
        tile_size: int | Sequence[int] = 1024,
    ) -> TargetGrid:
        """A grid whose top-left corner is (west, north) of ``bbox``.

        East and south are extended to whole pixels when the bbox is not a
        multiple of the resolution (never shrunk, so the bbox is covered).
        """
        west, south, east, north = (float(v) for v in bbox)
        res_x, res_y = pair(spatial_res, float)
        width = _whole_pixels((east - west) / res_x)
        height = _whole_pixels((north - south) / res_y)
        return cls(
            crs_wkt=pyproj.CRS.from_user_input(crs).to_wkt(),
            transform=Affine(res_x, 0.0, west, 0.0, -res_y, north),
            width=width,
            height=height,
            tile_size=pair(tile_size, int),
        )

    @classmethod
    def from_dataset(
        cls, ds: xr.Dataset, tile_size: int | Sequence[int] | None = None
    ) -> TargetGrid:
        """The grid of a cube multistore wrote (regular 1-D x/y coordinates + CRS)."""
        crs = crs_of(ds)
        if crs is None:
            raise SourceGridError("dataset has no CRS (no grid-mapping variable or crs attribute)")
        x_name, y_name = xy_names(ds)
        x = np.asarray(ds[x_name].values, dtype="float64")
        y = np.asarray(ds[y_name].values, dtype="float64")
        if x.size < 2 or y.size < 2:
            raise SourceGridError("a grid needs at least 2 pixels along x and y")
        res_x = (x[-1] - x[0]) / (x.size - 1)
        res_y = (y[0] - y[-1]) / (y.size - 1)
        if not (
            np.allclose(np.diff(x), res_x, rtol=1e-6) and np.allclose(np.diff(y), -res_y, rtol=1e-6)
        ):
            raise SourceGridError(f"coordinates {x_name}/{y_name} are not regular, north-up")
        if tile_size is None:
            chunks = ds.chunks or {}
            tile_size = (
                int(chunks[x_name][0]) if x_name in chunks else 1024,
                int(chunks[y_name][0]) if y_name in chunks else 1024,
            )
        return cls(
            crs_wkt=crs.to_wkt(),
            transform=Affine(res_x, 0.0, x[0] - res_x / 2, 0.0, -res_y, y[0] + res_y / 2),
            width=int(x.size),
            height=int(y.size),
            tile_size=pair(tile_size, int),
        )

    # -- properties -----------------------------------------------------------------

    @cached_property
    def crs(self) -> pyproj.CRS:
        return pyproj.CRS.from_wkt(self.crs_wkt)

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def resolution(self) -> tuple[float, float]:
        return self.transform.a, -self.transform.e

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) of the pixel edges."""
        west, north = self.transform.c, self.transform.f
        return (
            west,
            north + self.height * self.transform.e,
            west + self.width * self.transform.a,
            north,
        )

    @property
    def is_geographic(self) -> bool:
        return self.crs.is_geographic

    @property
    def x_name(self) -> str:
        return "lon" if self.is_geographic else "x"

    @property
    def y_name(self) -> str:
        return "lat" if self.is_geographic else "y"

    @property
    def x_coords(self) -> np.ndarray:
        return self.transform.c + (np.arange(self.width) + 0.5) * self.transform.a

    @property
    def y_coords(self) -> np.ndarray:
        return self.transform.f + (np.arange(self.height) + 0.5) * self.transform.e

    @property
    def chunks(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Dask-style chunks (rows, cols) following ``tile_size``."""
        return _split(self.height, self.tile_size[1]), _split(self.width, self.tile_size[0])

    def windows(self) -> Iterator[Window]:
        """The output tiles, row-major."""
        row_off = 0
        for h in self.chunks[0]:
            col_off = 0
            for w in self.chunks[1]:
                yield Window(col_off, row_off, w, h)
                col_off += w
            row_off += h

    def window_transform(self, window: Window) -> Affine:
        return self.transform @ Affine.translation(window.col_off, window.row_off)

    def window_bounds(self, window: Window) -> tuple[float, float, float, float]:
        t = self.window_transform(window)
        return t.c, t.f + window.height * t.e, t.c + window.width * t.a, t.f

    def same_grid(self, other: TargetGrid, rtol: float = 1e-9) -> bool:
        """Same CRS, size and pixel placement (tile size may differ)."""
        return (
            self.width == other.width
            and self.height == other.height
            and self.crs == other.crs
            and np.allclose(
                tuple(self.transform)[:6], tuple(other.transform)[:6], rtol=rtol, atol=0
            )
        )

    # -- xarray / CF -----------------------------------------------------------------

    def spatial_ref_attrs(self) -> dict[str, Any]:
        """CF grid-mapping attributes, plus GDAL's ``GeoTransform`` for GDAL readers."""
        attrs = self.crs.to_cf()
        attrs["crs_wkt"] = self.crs_wkt
        attrs["spatial_ref"] = self.crs_wkt
        t = self.transform
        attrs["GeoTransform"] = " ".join(str(v) for v in (t.c, t.a, t.b, t.f, t.d, t.e))
        return attrs

    def coords(self) -> dict[str, xr.DataArray]:
        """x/y coordinates (pixel centres, CF attributes) and the ``spatial_ref`` variable."""
        if self.is_geographic:
            x_attrs = {
                "standard_name": "longitude",
                "long_name": "longitude",
                "units": "degrees_east",
            }
            y_attrs = {
                "standard_name": "latitude",
                "long_name": "latitude",
                "units": "degrees_north",
            }
        else:
            units = self.crs.axis_info[0].unit_name if self.crs.axis_info else "metre"
            x_attrs = {"standard_name": "projection_x_coordinate", "long_name": "x", "units": units}
            y_attrs = {"standard_name": "projection_y_coordinate", "long_name": "y", "units": units}
        return {
            self.x_name: xr.DataArray(self.x_coords, dims=self.x_name, attrs=x_attrs),
            self.y_name: xr.DataArray(self.y_coords, dims=self.y_name, attrs=y_attrs),
            "spatial_ref": xr.DataArray(np.int32(0), attrs=self.spatial_ref_attrs()),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, e.g. for stores that read straight onto the grid."""
        return {
            "crs": self.crs_wkt,
            "transform": list(tuple(self.transform)[:6]),
            "width": self.width,
            "height": self.height,
            "tile_size": list(self.tile_size),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TargetGrid:
        return cls(
            crs_wkt=pyproj.CRS.from_user_input(d["crs"]).to_wkt(),
            transform=Affine(*d["transform"][:6]),
            width=int(d["width"]),
            height=int(d["height"]),
            tile_size=pair(d.get("tile_size", 1024), int),
        )

    def to_xcube(self):
        """The equivalent ``xcube.core.gridmapping.GridMapping`` (lower-left ``xy_min``)."""
        from xcube.core.gridmapping import GridMapping

        west, south, _, _ = self.bounds
        return GridMapping.regular(
            size=(self.width, self.height),
            xy_min=(west, south),
            xy_res=self.resolution,
            crs=self.crs,
            tile_size=self.tile_size,
        )

    def describe(self) -> str:
        rx, ry = self.resolution
        name = self.crs.to_string() if self.crs.to_epsg() else self.crs.name
        return f"{self.width}x{self.height} px, {name}, res {rx:g} x {ry:g}, tiles {self.tile_size[0]}x{self.tile_size[1]}"


# -- helpers shared with the regridder ---------------------------------------------

_X_NAMES = ("x", "lon", "longitude", "X", "Lon", "Longitude", "easting")
_Y_NAMES = ("y", "lat", "latitude", "Y", "Lat", "Latitude", "northing")


def xy_names(ds: xr.Dataset | xr.DataArray) -> tuple[str, str]:
    """Names of the 1-D x and y dimension coordinates of ``ds``."""
    x = next((n for n in _X_NAMES if n in ds.dims), None)
    y = next((n for n in _Y_NAMES if n in ds.dims), None)
    if x is None or y is None:
        raise SourceGridError(f"no x/y dimensions found among {list(ds.dims)}")
    return x, y


def crs_of(ds: xr.Dataset | xr.DataArray) -> pyproj.CRS | None:
    """The CRS of ``ds`` from a CF grid-mapping variable, ``crs``/``spatial_ref`` attrs or names."""
    candidates: list[Any] = []
    variables = ds.data_vars.values() if isinstance(ds, xr.Dataset) else [ds]
    for var in variables:
        gm = var.attrs.get("grid_mapping") or var.encoding.get("grid_mapping")
        if isinstance(gm, str) and gm in ds.variables:
            candidates.append(ds[gm].attrs)
    for name in ("spatial_ref", "crs"):
        if name in ds.variables:
            candidates.append(ds[name].attrs)
    for attrs in candidates:
        for key in ("crs_wkt", "spatial_ref"):
            if isinstance(attrs.get(key), str):
                return pyproj.CRS.from_wkt(attrs[key])
        if "grid_mapping_name" in attrs:
            try:
                return pyproj.CRS.from_cf(dict(attrs))
            except pyproj.exceptions.CRSError:
                pass
    attr_crs = ds.attrs.get("crs")
    if isinstance(attr_crs, str):
        return pyproj.CRS.from_user_input(attr_crs)
    try:
        x, y = xy_names(ds)
    except SourceGridError:
        return None
    if x in ("lon", "longitude", "Lon", "Longitude") and y in (
        "lat",
        "latitude",
        "Lat",
        "Latitude",
    ):
        return pyproj.CRS.from_epsg(4326)
    return None


@lru_cache(maxsize=32)
def crs_transformer(src: pyproj.CRS, dst: pyproj.CRS) -> pyproj.Transformer:
    """One ``always_xy`` transformer per CRS pair and process.

    Creating one costs 0.1 s for a pair with a datum change (EPSG:3035 to
    EPSG:4326: PROJ weighs the candidate operations), paid again for every
    variable of a project on the same grid. Transformers are immutable and
    thread-safe (pyproj >= 3.1); GDAL keeps such a cache too.
    """
    return pyproj.Transformer.from_crs(src, dst, always_xy=True)


def _whole_pixels(n: float) -> int:
    nearest = round(n)
    return max(1, int(nearest if abs(n - nearest) < _SIZE_TOLERANCE else math.ceil(n)))


def pair(value: Any, kind: type) -> tuple:
    """``5`` -> ``(5, 5)``; ``[5, 6]`` -> ``(5, 6)``, each converted with ``kind``."""
    if isinstance(value, list | tuple):
        if len(value) != 2:
            raise ValueError(f"expected a number or a pair, got {value!r}")
        return kind(value[0]), kind(value[1])
    return kind(value), kind(value)


def _split(size: int, step: int) -> tuple[int, ...]:
    full, rest = divmod(size, step)
    return (step,) * full + ((rest,) if rest else ())
