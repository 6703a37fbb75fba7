"""Source grid detection: conventions of the openers multistore meets."""

from __future__ import annotations

import math

import numpy as np
import pyproj
import pytest
import xarray as xr

from multistore.errors import SourceGridError
from multistore.regrid.source import detect_source_grid, source_nodata


def test_cf_netcdf_with_grid_mapping_and_km_coordinates():
    crs = pyproj.CRS.from_proj4("+proj=lcc +lat_1=45 +lat_2=55 +lat_0=50 +lon_0=10 +ellps=WGS84")
    ds = xr.Dataset(
        {"tas": (("time", "yc", "xc"), np.zeros((2, 3, 4)), {"grid_mapping": "lambert"})},
        coords={
            "xc": (
                "xc",
                [0.5, 1.5, 2.5, 3.5],
                {"standard_name": "projection_x_coordinate", "units": "km"},
            ),
            "yc": (
                "yc",
                [2.5, 1.5, 0.5],
                {"standard_name": "projection_y_coordinate", "units": "km"},
            ),
        },
    )
    ds["lambert"] = xr.DataArray(0, attrs=crs.to_cf())
    grid = detect_source_grid(ds)
    assert (grid.x_dim, grid.y_dim) == ("xc", "yc")
    assert grid.crs.equals(crs)
    assert grid.transform.a == 1000.0 and grid.transform.c == 0.0 and grid.transform.f == 3000.0
    assert not grid.flip_y and grid.period is None


def test_xcube_cube_with_crs_variable_south_up_and_0_360():
    ds = xr.Dataset(
        {"v": (("lat", "lon"), np.zeros((180, 360)))},
        coords={"lon": np.arange(360) + 0.5, "lat": np.arange(180) - 89.5},
    )
    ds["crs"] = xr.DataArray(0, attrs=pyproj.CRS.from_epsg(4326).to_cf())
    grid = detect_source_grid(ds)
    assert grid.flip_y and grid.period == 360
    assert grid.bounds() == (0.0, -90.0, 360.0, 90.0)
    norm = grid.normalise(ds["v"].assign_coords(lat=ds.lat))
    assert norm.lat.values[0] == 89.5


def test_curvilinear_grid_from_2d_coordinates():
    lon, lat = np.meshgrid(np.linspace(350, 370, 5), np.linspace(60, 50, 4))
    ds = xr.Dataset(
        {"sst": (("nj", "ni"), np.zeros((4, 5)))},
        coords={"nav_lon": (("nj", "ni"), lon), "nav_lat": (("nj", "ni"), lat)},
    )
    grid = detect_source_grid(ds)
    assert grid.is_curvilinear and (grid.y_dim, grid.x_dim) == ("nj", "ni")
    assert grid.lon.max() < 180  # normalised for GDAL's geolocation transformer
    assert grid.crs.to_epsg() == 4326


def test_irregular_and_missing_coordinates_are_rejected():
    ds = xr.Dataset(
        {"v": (("lat", "lon"), np.zeros((3, 3)))},
        coords={"lon": [0.0, 1.0, 5.0], "lat": [2.0, 1.0, 0.0]},
    )
    with pytest.raises(SourceGridError, match="not regularly spaced"):
        detect_source_grid(ds)
    with pytest.raises(SourceGridError, match="spatial coordinates"):
        detect_source_grid(xr.Dataset({"v": (("a", "b"), np.zeros((2, 2)))}))


def test_nodata_conventions():
    ints = xr.DataArray(np.zeros(3, "int16"), attrs={"_FillValue": -32768})
    assert source_nodata(ints) == -32768
    rio = xr.DataArray(np.zeros(3, "uint8"), attrs={"nodata": 0})
    assert source_nodata(rio) == 0
    missing = xr.DataArray(np.zeros(3, "int32"), attrs={"missing_value": [-1]})
    assert source_nodata(missing) == -1
    decoded = xr.DataArray(np.zeros(3, "float32"))
    decoded.encoding.update(_FillValue=-9999, dtype="int16")
    assert math.isnan(source_nodata(decoded))
    undecoded_float = xr.DataArray(np.zeros(3, "float32"), attrs={"_FillValue": -9999.0})
    assert source_nodata(undecoded_float) == -9999.0
    assert source_nodata(xr.DataArray(np.zeros(3, "uint8"))) is None
