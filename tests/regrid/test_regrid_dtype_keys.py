"""``interp_methods``, ``agg_methods`` and ``fill_values`` keyed by dtype name, as in
xcube-multistore: the variable's own key wins, then its dtype's, then the default.
Checked against GDAL's warp (``rasterio.warp.reproject``) of the raw GeoTIFF pixels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
from affine import Affine
from rasterio.crs import CRS

from multistore.grid import TargetGrid
from multistore.regrid import regrid_dataset, resolve_methods
from multistore.temporal import resample_in_time
from tests.regrid.test_regrid_engine import assert_matches_gdal, gdal_reference, open_geotiff

LAEA = CRS.from_epsg(3035)
TRANSFORM = Affine(30, 0, 4_200_000, 0, -30, 2_900_000)
SHAPE = (160, 200)


def _write(path, data, dtype, nodata):
    profile = dict(
        driver="GTiff", width=SHAPE[1], height=SHAPE[0], count=data.shape[0], dtype=dtype,
        crs=LAEA, transform=TRANSFORM, nodata=nodata, tiled=True, blockxsize=64, blockysize=64,
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


@pytest.fixture
def mixed_geotiffs(tmp_path):
    """A uint8 class band (nodata 255) and two float32 bands (smooth fields), same grid."""
    rng = np.random.default_rng(7)
    classes = np.kron(rng.integers(0, 6, (20, 25)), np.ones((8, 8), dtype=int)).astype("uint8")
    classes[60:80, 30:120] = 255
    y, x = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    temp = (10 + 5 * np.sin(x / 17.0) * np.cos(y / 23.0) + 0.01 * x).astype("float32")
    _write(tmp_path / "classes.tif", classes[np.newaxis], "uint8", 255)
    _write(tmp_path / "temp.tif", np.stack([temp, temp * 2]), "float32", None)
    return tmp_path, classes, temp


def _open_mixed(folder) -> xr.Dataset:
    cls = open_geotiff(folder / "classes.tif", band_as_variable=True)
    flt = open_geotiff(folder / "temp.tif", band_as_variable=True)
    ds = xr.merge(
        [
            cls.rename({"band_1": "cls"}),
            flt.rename({"band_1": "temp", "band_2": "temp2"}),
        ],
        combine_attrs="drop_conflicts",
    )
    assert ds["cls"].dtype == np.uint8 and ds["temp"].dtype == np.float32
    return ds


def _target(res: float) -> TargetGrid:
    # about 1.5 km beyond the source on the west and north: those pixels get the fill values;
    # the 7 m offset keeps target pixel centres off source pixel edges (no nearest ties)
    return TargetGrid.from_bbox(
        [4_198_507, 2_895_207, 4_204_507, 2_901_507], "EPSG:3035", res, tile_size=64
    )


def test_dtype_keys_choose_methods_and_fills_variable_names_win(mixed_geotiffs):
    folder, classes, temp = mixed_geotiffs
    ds = _open_mixed(folder)
    target = _target(20.0)  # finer than the 30 m source: interp_methods apply
    params = {
        "interp_methods": {"float32": "nearest", "temp2": "bilinear", "uint8": "bilinear"},
        "fill_values": {"uint8": 200, "float32": -999.0, "temp2": -1.0},
    }
    out = regrid_dataset(ds, target, params).compute()

    ref_cls = gdal_reference(classes, TRANSFORM, LAEA, target, "bilinear", 255, 200)
    ref_temp = gdal_reference(temp, TRANSFORM, LAEA, target, "nearest", None, -999.0)
    ref_temp2 = gdal_reference(temp * 2, TRANSFORM, LAEA, target, "bilinear", None, -1.0)
    assert (ref_cls == 200).any() and (ref_temp == -999.0).any()  # the fills are exercised

    assert out["cls"].dtype == np.uint8 and out["cls"].encoding["_FillValue"] == 200
    assert out["temp"].encoding["_FillValue"] == -999.0
    assert out["temp2"].encoding["_FillValue"] == -1.0
    assert_matches_gdal(out["cls"].values, ref_cls, 200, "bilinear", 5)
    assert_matches_gdal(out["temp"].values, ref_temp, -999.0, "nearest", np.ptp(temp))
    assert_matches_gdal(out["temp2"].values, ref_temp2, -1.0, "bilinear", np.ptp(temp * 2))
    # nearest by dtype key: every value is one of the source's, never an interpolation
    valid = out["temp"].values != -999.0
    assert np.isin(out["temp"].values[valid], temp).all()


def test_agg_methods_by_dtype_on_a_coarser_grid(mixed_geotiffs):
    folder, classes, temp = mixed_geotiffs
    ds = _open_mixed(folder)
    target = _target(90.0)  # coarser: agg_methods apply
    params = {"agg_methods": {"uint8": "max", "float32": "min", "temp2": "mean"}}
    out = regrid_dataset(ds, target, params).compute()
    for name, data, method, nodata in (
        ("cls", classes, "max", 255),
        ("temp", temp, "min", np.nan),
        ("temp2", temp * 2, "average", np.nan),
    ):
        fill = 255 if name == "cls" else np.nan
        ref = gdal_reference(
            data, TRANSFORM, LAEA, target, method, None if name != "cls" else nodata, fill
        )
        assert_matches_gdal(out[name].values, ref, fill, "nearest", np.ptp(data))


def test_resolution_order():
    dtypes = {"a": "float32", "b": "uint8", "c": "float64"}
    spec = {"interp_methods": {"a": "triangular", "float32": "nearest", "uint8": "bilinear"}}
    got = resolve_methods(dtypes, spec, coarser=False)
    # a: its own name; b: its dtype ("b" is numpy's int8 code, never read as a dtype key);
    # c: no key -> the default for floats
    assert got == {"a": "bilinear", "b": "bilinear", "c": "bilinear"}
    got = resolve_methods(dtypes, {"interp_methods": {"float32": "nearest"}}, coarser=False)
    assert got == {"a": "nearest", "b": "nearest", "c": "bilinear"}
    got = resolve_methods({"b": "int8"}, {"interp_methods": {"b": "bilinear"}}, coarser=False)
    assert got == {"b": "bilinear"}


def test_temporal_methods_by_dtype():
    time = pd.date_range("2024-01-01", periods=4, freq="12h")
    values = np.array([1.0, 3.0, 5.0, 9.0])
    ds = xr.Dataset(
        {
            "f": ("time", values.astype("float32")),
            "g": ("time", values.astype("float32")),
            "n": ("time", values.astype("int16")),
        },
        coords={"time": time},
    )
    out = resample_in_time(
        ds, {"frequency": "1D", "agg_methods": {"float32": "max", "g": "min", "int16": "sum"}}
    )
    np.testing.assert_array_equal(out["f"].values, [3.0, 9.0])  # by dtype
    np.testing.assert_array_equal(out["g"].values, [1.0, 5.0])  # by name
    np.testing.assert_array_equal(out["n"].values, [4, 14])
