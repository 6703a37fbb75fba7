"""The direct chunk writer produces exactly what xarray's own Zarr path produces."""

from __future__ import annotations

import os

import dask
import fsspec
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from multistore.writer import encoding_for
from multistore.zarrchunks import chunk_writes, metadata_template


def sample() -> xr.Dataset:
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 5, (3, 50, 70)).astype("uint8")
    u8[:, :16, :] = 255  # a whole row of chunks of nodata: not stored
    u8[0, 20:40, 60:] = 255
    f32 = rng.normal(size=(3, 50, 70)).astype("float32")
    f32[:, 30:, :35] = np.nan
    packed = (rng.normal(size=(50, 70)) * 100).round().astype("float32") * 0.5
    packed[:5, :5] = np.nan
    ds = xr.Dataset(
        {
            "u8": (("time", "y", "x"), u8),
            "f32": (("time", "y", "x"), f32),
            "packed": (("y", "x"), packed),
        },
        coords={
            "time": pd.date_range("2024", periods=3, freq="D"),
            "y": np.arange(50.0),
            "x": np.arange(70.0),
        },
    )
    ds["u8"].encoding["_FillValue"] = np.uint8(255)
    ds.coords["spatial_ref"] = xr.DataArray(np.int32(0), attrs={"crs_wkt": "..."})
    ds["packed"].encoding.update(
        {"dtype": "int16", "scale_factor": 0.5, "_FillValue": np.int16(-32768)}
    )
    ds = ds.chunk({"time": 1, "y": 16, "x": 32})  # edge chunks of 2 x 6 px
    ds.coords["spatial_ref"] = ds.spatial_ref.chunk()  # a 0-d dask variable: chunk key "0"
    return ds


def write(ds: xr.Dataset, path: str, fast: bool) -> None:
    encoding = encoding_for(ds.copy(), 2)
    delayed = (metadata_template(ds) if fast else ds).to_zarr(
        path, mode="w", compute=False, consolidated=not fast, zarr_format=2, encoding=encoding
    )
    if fast:
        dask.compute(chunk_writes(ds, encoding, fsspec.filesystem("file"), path))
        zarr.consolidate_metadata(path, zarr_format=2)
    else:
        dask.compute(delayed)


@pytest.mark.parametrize("decode", [True, False])
def test_same_cube_as_xarray(tmp_path, decode):
    ds = sample()
    write(ds, str(tmp_path / "ref.zarr"), fast=False)
    write(ds, str(tmp_path / "fast.zarr"), fast=True)
    ref = xr.open_zarr(tmp_path / "ref.zarr", mask_and_scale=decode).load()
    fast = xr.open_zarr(tmp_path / "fast.zarr", mask_and_scale=decode).load()
    xr.testing.assert_identical(ref, fast)
    for name in ("u8", "f32", "packed"):
        assert sorted(os.listdir(tmp_path / "ref.zarr" / name)) == sorted(
            os.listdir(tmp_path / "fast.zarr" / name)
        )
    assert len(os.listdir(tmp_path / "fast.zarr" / "u8")) == 2 + 3 * 3 * 3  # empty chunks skipped


def test_misaligned_chunks_are_refused(tmp_path):
    ds = sample()
    encoding = encoding_for(ds.copy(), 2)
    ds.to_zarr(tmp_path / "x.zarr", mode="w", compute=False, zarr_format=2, encoding=encoding)
    with pytest.raises(ValueError, match="do not match zarr chunks"):
        chunk_writes(
            ds.chunk({"y": 10}), encoding, fsspec.filesystem("file"), str(tmp_path / "x.zarr")
        )
