"""Sources opened without chunk params get chunks aligned to the file's blocks (issue 11.3).

Each case is compared with the file's own block layout and values as read by
the format's library (rasterio, netCDF4, zarr), not through xarray/xcube.
"""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest
import rasterio
import xarray as xr
import zarr
from affine import Affine
from xcube.core.store import new_data_store

from multistore.config.model import RetryConfig, SourceConfig
from multistore.cube import open_source
from multistore.gdalenv import GdalSettings

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def opened(root, data_id, **open_params):
    stores = {"src": new_data_store("file", root=str(root))}
    source = SourceConfig("v", "src", data_id, open_params=open_params, location="datasets[0]")
    return open_source(source, stores, RetryConfig(max_retries=0), None, gdal=GdalSettings())


def assert_aligned(chunks: tuple[int, ...], block: int, size: int) -> None:
    bounds = np.cumsum(chunks)[:-1]
    assert np.all(bounds % block == 0), (chunks, block)
    assert sum(chunks) == size
    assert max(chunks) >= min(512, size)  # not the tiny file blocks one by one


@pytest.fixture
def geotiff(tmp_path):
    data = np.random.default_rng(0).integers(0, 200, (3, 1300, 1100)).astype("uint8")
    profile = dict(
        driver="GTiff", width=1100, height=1300, count=3, dtype="uint8", crs="EPSG:3035",
        transform=Affine(30, 0, 4_000_000, 0, -30, 2_900_000), tiled=True,
        blockxsize=256, blockysize=256, compress="deflate",
    )  # fmt: skip
    with rasterio.open(tmp_path / "s.tif", "w", **profile) as dst:
        dst.write(data)
    return tmp_path, data


@pytest.mark.parametrize("band_as_variable", [True, False])
def test_geotiff_chunks_follow_blocks(geotiff, band_as_variable):
    root, _ = geotiff
    ds = opened(root, "s.tif", band_as_variable=band_as_variable)
    with rasterio.open(root / "s.tif") as r:
        bh, bw = r.block_shapes[0]
        raw = r.read()
    for i, var in enumerate(ds.data_vars.values()):
        chunks = dict(zip(var.dims, var.chunks, strict=True))
        assert_aligned(chunks["x"], bw, 1100)
        assert_aligned(chunks["y"], bh, 1300)
        assert max(chunks["x"]) < 1100 and max(chunks["y"]) < 1300  # not whole bands
        expected = raw if not band_as_variable else raw[i]
        np.testing.assert_array_equal(var.values, expected)


def test_user_tile_size_is_kept(geotiff):
    root, _ = geotiff
    ds = opened(root, "s.tif", band_as_variable=False, tile_size=[1024, 1024])
    assert ds["data"].chunks[-1] == (1024, 76)


def test_netcdf_gets_dask_chunks_on_its_blocks(tmp_path):
    data = np.random.default_rng(1).normal(size=(4, 700, 900)).astype("float32")
    path = tmp_path / "s.nc"
    with netCDF4.Dataset(path, "w") as nc:
        for name, n in (("time", 4), ("y", 700), ("x", 900)):
            nc.createDimension(name, n)
        nc.createVariable("x", "f8", ("x",))[:] = 4_000_000 + 30 * np.arange(900)
        nc.createVariable("y", "f8", ("y",))[:] = 2_900_000 - 30 * np.arange(700)
        v = nc.createVariable("v", "f4", ("time", "y", "x"), chunksizes=(1, 100, 120), zlib=True)
        v[:] = data
    with netCDF4.Dataset(path) as nc:
        _, by, bx = nc["v"].chunking()
    ds = opened(tmp_path, "s.nc")
    var = ds["v"]
    assert var.chunks is not None  # lazily chunked, not loaded whole
    chunks = dict(zip(var.dims, var.chunks, strict=True))
    assert_aligned(chunks["y"], by, 700)
    assert_aligned(chunks["x"], bx, 900)
    assert set(chunks["time"]) == {1}
    np.testing.assert_array_equal(var.values, data)


def test_zarr_chunks_are_whole_multiples_of_its_chunks(tmp_path):
    data = np.random.default_rng(2).integers(0, 1000, (2, 3, 600, 700)).astype("int16")
    ds = xr.Dataset(
        {"v": (("member", "time", "lat", "lon"), data)},
        coords={"lat": 50 - 0.01 * np.arange(600), "lon": 5 + 0.01 * np.arange(700)},
    )
    ds.chunk({"member": 1, "time": 1, "lat": 128, "lon": 128}).to_zarr(tmp_path / "s.zarr")
    raw = zarr.open_group(tmp_path / "s.zarr", mode="r")["v"]
    out = opened(tmp_path, "s.zarr")["v"]
    chunks = dict(zip(out.dims, out.chunks, strict=True))
    for dim, block, size in (("lat", raw.chunks[2], 600), ("lon", raw.chunks[3], 700)):
        assert_aligned(chunks[dim], block, size)
    assert set(chunks["time"]) == {1} and set(chunks["member"]) == {1}
    np.testing.assert_array_equal(out.values, raw[...])
