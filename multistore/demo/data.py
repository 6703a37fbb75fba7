"""Deterministic sample sources for the demo (and for tests that want realistic rasters).

Three sources in three CRSs around Munich: a uint8 land-cover GeoTIFF in UTM 32N
(nodata 255), an int16 elevation Zarr in ETRS89-LAEA (nodata -32768, served from
S3), and a float32 monthly temperature NetCDF in WGS84 (Kelvin, with NaNs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyproj
import rasterio
import xarray as xr
from rasterio.transform import from_origin
from scipy.ndimage import gaussian_filter

LANDCOVER = "landcover_utm32.tif"
ELEVATION = "elevation_laea.zarr"
TEMPERATURE = "temperature_monthly.nc"


def _field(shape: tuple[int, int], seed: int, sigma: float) -> np.ndarray:
    """Smooth noise in 0..1 (same output for the same arguments on every machine)."""
    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.standard_normal(shape), sigma=sigma, mode="wrap")
    field -= field.min()
    return field / field.max()


def landcover_array() -> tuple[np.ndarray, rasterio.Affine, str]:
    shape = (400, 450)
    field = _field(shape, seed=1, sigma=12)
    classes = np.digitize(field, [0.3, 0.42, 0.55, 0.65, 0.8]).astype("uint8") + 1  # 1..6
    rows, cols = np.indices(shape)
    classes[rows + cols < 60] = 255  # a nodata corner
    return classes, from_origin(660000.0, 5365000.0, 200.0, 200.0), "EPSG:32632"


def write_landcover(path: Path) -> Path:
    data, transform, crs = landcover_array()
    profile = dict(
        driver="GTiff",
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype="uint8",
        crs=crs,
        transform=transform,
        nodata=255,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        dst.set_band_description(1, "land_cover")
    return path


def elevation_dataset() -> xr.Dataset:
    shape = (300, 320)
    res = 400.0
    x0, y0 = 4395000.0, 2826000.0  # top-left corner (pixel edges)
    base = _field(shape, seed=2, sigma=20)
    ridges = _field(shape, seed=3, sigma=4)
    elevation = (400 + 1800 * base**2 + 150 * ridges).astype("int16")
    rows, cols = np.indices(shape)
    elevation[(rows - 150) ** 2 + (cols - 170) ** 2 < 12**2] = -32768  # a lake: no data
    x = x0 + (np.arange(shape[1]) + 0.5) * res
    y = y0 - (np.arange(shape[0]) + 0.5) * res
    crs = pyproj.CRS.from_epsg(3035)
    spatial_ref = xr.DataArray(np.int32(0), attrs={**crs.to_cf(), "crs_wkt": crs.to_wkt()})
    da = xr.DataArray(
        elevation,
        dims=("y", "x"),
        coords={"y": y, "x": x},
        attrs={
            "units": "m",
            "long_name": "elevation above sea level",
            "grid_mapping": "spatial_ref",
        },
    )
    da.encoding["_FillValue"] = np.int16(-32768)
    return xr.Dataset({"elevation": da, "spatial_ref": spatial_ref}).set_coords("spatial_ref")


def temperature_dataset() -> xr.Dataset:
    lon = np.round(np.arange(10.5, 13.0, 0.05) + 0.025, 6)
    lat = np.round(np.arange(49.0, 46.9, -0.05) - 0.025, 6)
    time = pd.date_range("2024-01-01", periods=12, freq="MS")
    seasonal = 10 * np.sin((np.arange(12) - 3) / 12 * 2 * np.pi)
    spatial = 4 * _field((lat.size, lon.size), seed=5, sigma=6) - 0.006 * (lat[:, None] - 47) * 100
    values = (281.0 + seasonal[:, None, None] + spatial[None]).astype("float32")
    values[:, 10:13, :] = np.nan  # a stripe of missing data
    da = xr.DataArray(
        values,
        dims=("time", "lat", "lon"),
        coords={"time": time, "lat": lat, "lon": lon},
        attrs={"units": "K", "long_name": "near-surface air temperature"},
    )
    return xr.Dataset({"temperature": da}, attrs={"title": "multistore demo temperature"})


def write_local_sources(folder: Path) -> list[Path]:
    """Write the file-based demo sources into ``folder`` (idempotent)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [write_landcover(folder / LANDCOVER)]
    path = folder / TEMPERATURE
    temperature_dataset().to_netcdf(path, engine="netcdf4")
    written.append(path)
    return written
