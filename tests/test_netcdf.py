"""NetCDF sources are read with an engine that is safe under dask's threads.

The file flavours are written by netCDF4 (the reference library) and the
values read back through the pipeline are compared with netCDF4's own read.
"""

from __future__ import annotations

import h5py
import netCDF4
import numpy as np
import pytest
from xcube.core.store import new_data_store

from multistore.config.model import RetryConfig, SourceConfig
from multistore.cube import open_source
from multistore.gdalenv import GdalSettings
from multistore.netcdf import engine_for_path, engine_for_store

FLAVOURS = {
    "NETCDF4": "h5netcdf",
    "NETCDF4_CLASSIC": "h5netcdf",
    "NETCDF3_CLASSIC": "scipy",
    "NETCDF3_64BIT_OFFSET": "scipy",
    "NETCDF3_64BIT_DATA": None,  # CDF-5: only netCDF-C reads it
}


def write(path, fmt: str) -> np.ndarray:
    data = np.arange(3 * 40 * 50, dtype="float32").reshape(3, 40, 50)
    data[0, 0, 0] = -1
    with netCDF4.Dataset(path, "w", format=fmt) as nc:
        for name, n in (("time", 3), ("lat", 40), ("lon", 50)):
            nc.createDimension(name, n)
        nc.createVariable("lon", "f8", ("lon",))[:] = 10 + 0.1 * np.arange(50)
        nc.createVariable("lat", "f8", ("lat",))[:] = 50 - 0.1 * np.arange(40)
        t = nc.createVariable("time", "f8", ("time",))
        t.units = "days since 2020-01-01"
        t[:] = [0, 31, 60]
        v = nc.createVariable("v", "f4", ("time", "lat", "lon"), fill_value=-1.0)
        v.units = "K"
        v[:] = data
    with netCDF4.Dataset(path) as nc:
        return np.ma.filled(nc["v"][:].astype("float32"), np.nan)


@pytest.mark.parametrize("fmt", list(FLAVOURS))
def test_engine_follows_the_file_signature(tmp_path, fmt):
    write(tmp_path / "s.nc", fmt)
    assert engine_for_path(tmp_path / "s.nc") == FLAVOURS[fmt]
    store = new_data_store("file", root=str(tmp_path))
    assert engine_for_store(store, "s.nc") == FLAVOURS[fmt]


def test_hdf5_after_a_user_block(tmp_path):
    with h5py.File(tmp_path / "u.nc", "w", userblock_size=1024) as f:
        f["v"] = np.zeros(3)
    assert engine_for_path(tmp_path / "u.nc") == "h5netcdf"


def test_not_netcdf_or_missing(tmp_path):
    (tmp_path / "a.nc").write_bytes(b"not a netcdf file")
    store = new_data_store("file", root=str(tmp_path))
    assert engine_for_store(store, "a.nc") is None
    assert engine_for_store(store, "missing.nc") is None
    assert engine_for_path(tmp_path / "missing.nc") is None
    (tmp_path / "b.tif").write_bytes(b"\x89HDF\r\n\x1a\n")
    assert engine_for_store(store, "b.tif") is None  # only NetCDF data ids are sniffed


def opened(root, data_id, **open_params):
    stores = {"src": new_data_store("file", root=str(root))}
    source = SourceConfig("v", "src", data_id, open_params=open_params, location="datasets[0]")
    return open_source(source, stores, RetryConfig(max_retries=0), None, gdal=GdalSettings())


def backend(ds) -> str:
    return type(ds._close.__self__).__name__


@pytest.mark.parametrize("fmt", list(FLAVOURS))
def test_sources_open_with_the_safe_engine(tmp_path, fmt):
    expected = write(tmp_path / "s.nc", fmt)
    ds = opened(tmp_path, "s.nc")
    want = {"h5netcdf": "H5NetCDFStore", "scipy": "ScipyDataStore", None: "NetCDF4DataStore"}
    assert backend(ds) == want[FLAVOURS[fmt]]
    np.testing.assert_array_equal(ds["v"].values, expected)
    assert ds["v"].attrs["units"] == "K"
    assert str(ds["time"].values[1])[:10] == "2020-02-01"


def test_the_users_engine_is_kept(tmp_path):
    expected = write(tmp_path / "s.nc", "NETCDF4")
    ds = opened(tmp_path, "s.nc", engine="netcdf4")
    assert backend(ds) == "NetCDF4DataStore"
    np.testing.assert_array_equal(ds["v"].values, expected)


def test_http_stores_keep_xcubes_byte_range_reader(tmp_path):
    """xcube opens NetCDF over HTTP as ``<url>#mode=bytes`` (netCDF-C), not as a file."""
    write(tmp_path / "s.nc", "NETCDF4")
    store = new_data_store("https", root="127.0.0.1:9/data")

    def no_read(*args, **kwargs):
        raise AssertionError("the file was read")

    store.fs.open = no_read
    assert engine_for_store(store, "s.nc") is None
