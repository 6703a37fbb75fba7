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


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_resumed_write_computes_missing_chunks_only_and_in_waves(tmp_path, zarr_format):
    """A resume keeps one lazy array per variable, so it is cut into bounded waves like a
    fresh write; the blocks already stored drop out with their inputs."""
    import threading

    import dask.array as da

    from multistore.scheduler import RowBands, row_band_waves
    from multistore.zarrchunks import array_writes

    computed, lock = set(), threading.Lock()

    def source(block, block_id=None):
        with lock:
            computed.add(tuple(block_id))
        return block + 1

    base = da.zeros((60, 50), dtype="int16", chunks=10)
    ds = xr.Dataset({"v": (("y", "x"), base.map_blocks(source, dtype="int16"))})
    encoding = encoding_for(ds.copy(), zarr_format)
    path = str(tmp_path / "c.zarr")
    metadata_template(ds, encoding).to_zarr(
        path, mode="w", compute=False, zarr_format=zarr_format, encoding=encoding
    )
    stored = {(r, c) for r in range(2) for c in range(5)} | {(4, 3)}
    if zarr_format == 2:
        done = frozenset(f"v/{r}.{c}" for r, c in stored)
        writes = chunk_writes(ds, encoding, fsspec.filesystem("file"), path, done=done)
    else:
        done = frozenset(f"v/c/{r}/{c}" for r, c in stored)
        group = zarr.open_group(path, mode="r+", zarr_format=3)
        writes = array_writes(ds, encoding, group, path, fsspec.filesystem("file"), done=done)

    waves = row_band_waves(writes, max_chunks=10)
    assert isinstance(waves, RowBands) and len(waves) == 3  # two block rows each
    for wave in waves:
        dask.compute(wave, scheduler="threads")
    everything = {(r, c) for r in range(6) for c in range(5)}
    assert computed == everything - stored
    back = zarr.open_array(path, path="v", mode="r")[...]
    for r, c in everything:
        block = back[r * 10 : (r + 1) * 10, c * 10 : (c + 1) * 10]
        # chunks left to the earlier build are not written again (here: absent, so fill)
        assert (block == (0 if (r, c) in stored else 1)).all(), (r, c)
