"""Raster and NetCDF to Zarr: dtype, nodata, CRS and values kept; chunked; atomic."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import zarr

from multistore.preload.convert import netcdf_to_zarr, raster_to_zarr, zarr_name
from multistore.preload.process import file_format
from multistore.testing.sample_zenodo import geotiff_bytes


@pytest.fixture
def uint8_tif(tmp_path):
    data = (np.arange(3 * 40 * 48) % 251).astype(np.uint8).reshape(3, 40, 48)
    data[:, 0, 0] = 255
    path = tmp_path / "annual.tif"
    path.write_bytes(
        geotiff_bytes(
            data,
            crs="EPSG:2154",
            origin=(400000, 6500000),
            res=30,
            nodata=255,
            descriptions=["1985", "1986", "1987"],
        )
    )
    return path, data


def test_uint8_raster_stays_uint8_with_nodata_and_crs(uint8_tif, tmp_path):
    src, data = uint8_tif
    dest = raster_to_zarr(src, tmp_path / "annual.zarr", chunk_size=16)
    array = zarr.open_group(dest, mode="r")["band_data"]
    assert array.dtype == np.uint8
    assert array.fill_value == 255
    assert array.chunks == (1, 16, 16)
    assert "scale_factor" not in array.attrs and "add_offset" not in array.attrs
    np.testing.assert_array_equal(array[:], data)

    ds = xr.open_zarr(dest, mask_and_scale=False)
    assert ds.band_data.dims == ("band", "y", "x")
    assert ds.band_data.dtype == np.uint8
    assert ds.band_data.attrs["_FillValue"] == 255
    assert ds.band_data.attrs["band_descriptions"] == ["1985", "1986", "1987"]
    assert ds.rio.crs.to_epsg() == 2154
    assert ds.x.values[0] == 400015.0 and ds.y.values[0] == 6499985.0  # pixel centres
    # Readers that mask get NaN exactly where nodata was.
    masked = xr.open_zarr(dest).band_data.values
    assert np.isnan(masked[:, 0, 0]).all() and not np.isnan(masked[:, 1:, 1:]).any()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annual.tif", "annual.zarr"]


def test_single_band_float_raster_is_2d(tmp_path):
    data = np.linspace(-5, 30, 20 * 24, dtype=np.float32).reshape(20, 24)
    data[-1, -1] = -9999
    src = tmp_path / "h.tif"
    src.write_bytes(geotiff_bytes(data, nodata=-9999.0))
    ds = xr.open_zarr(raster_to_zarr(src, tmp_path / "h.zarr"), mask_and_scale=False)
    assert ds.band_data.dims == ("y", "x")
    assert ds.band_data.dtype == np.float32
    assert ds.band_data.attrs["_FillValue"] == -9999
    np.testing.assert_array_equal(ds.band_data.values, data)
    assert ds.rio.crs.to_epsg() == 3035


def test_conversion_replaces_an_existing_zarr(uint8_tif, tmp_path):
    src, data = uint8_tif
    dest = tmp_path / "annual.zarr"
    dest.mkdir()
    (dest / "stale").write_text("old")
    raster_to_zarr(src, dest)
    assert not (dest / "stale").exists()


def test_netcdf_keeps_its_encoding(tmp_path):
    values = np.array([[1.5, 2.25], [3.0, -1.0]])
    ds = xr.Dataset(
        {"t": (("lat", "lon"), values)}, coords={"lat": [10.0, 11.0], "lon": [1.0, 2.0]}
    )
    src = tmp_path / "t.nc"
    ds.to_netcdf(
        src, encoding={"t": {"dtype": "int16", "scale_factor": 0.25, "_FillValue": -32768}}
    )
    out = netcdf_to_zarr(src, tmp_path / "t.zarr")
    assert zarr.open_group(out, mode="r")["t"].dtype == np.int16
    np.testing.assert_array_equal(xr.open_zarr(out).t.values, values)


@pytest.mark.parametrize(
    ("name", "fmt", "zarr"),
    [
        ("a/b.tif", "geotiff", "a/b.zarr"),
        ("X.TIFF", "geotiff", "X.zarr"),
        ("t.nc", "netcdf", "t.zarr"),
        ("france.zip", "zip", "france.zarr"),
        ("c.tar.gz", "tar", "c.tar.zarr"),
        ("cube.zarr", "zarr", "cube.zarr"),
        ("readme", "unknown", "readme.zarr"),
    ],
)
def test_names(name, fmt, zarr):
    assert file_format(name) == fmt
    assert zarr_name(name) == zarr
