"""xcube-multistore's agg_methods GDAL has no kernel for (count, std, var, last, prod),
checked against NumPy block statistics of the raw GeoTIFF pixels on an aligned 4x coarser grid."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from multistore.grid import TargetGrid
from multistore.regrid import regrid_dataset
from tests.regrid.test_regrid_engine import open_geotiff

LAEA = CRS.from_epsg(3035)
TRANSFORM = Affine(30, 0, 4_200_000, 0, -30, 2_900_000)
SHAPE = (160, 200)
F = 4  # target pixel = 4x4 source pixels


def _write(path, data, dtype, nodata):
    profile = dict(
        driver="GTiff", width=SHAPE[1], height=SHAPE[0], count=1, dtype=dtype,
        crs=LAEA, transform=TRANSFORM, nodata=nodata, tiled=True, blockxsize=64, blockysize=64,
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data[np.newaxis])


@pytest.fixture
def sources(tmp_path):
    rng = np.random.default_rng(3)
    classes = rng.integers(0, 6, SHAPE).astype("uint8")
    classes[40:60, 40:90] = 255  # nodata, whole target pixels and partial ones
    classes[61, 10:30] = 255
    values = rng.uniform(0.5, 1.5, SHAPE).astype("float32")
    values[100:104, 100:108] = np.nan
    values[10, 11] = np.nan
    _write(tmp_path / "classes.tif", classes, "uint8", 255)
    _write(tmp_path / "values.tif", values, "float32", None)
    return tmp_path, classes, values


def _target() -> TargetGrid:
    west, north = TRANSFORM.c, TRANSFORM.f
    bbox = [west, north - SHAPE[0] * 30, west + SHAPE[1] * 30, north]
    return TargetGrid.from_bbox(bbox, "EPSG:3035", 30 * F, 16)


def _blocks(a: np.ndarray) -> np.ndarray:
    """(rows, cols, F*F) source pixels of each target pixel, row-major inside the block."""
    h, w = a.shape[0] // F, a.shape[1] // F
    return a.reshape(h, F, w, F).transpose(0, 2, 1, 3).reshape(h, w, F * F)


def _last_valid(b: np.ndarray, valid: np.ndarray, fill):
    idx = F * F - 1 - np.argmax(valid[..., ::-1], axis=-1)
    out = np.take_along_axis(b, idx[..., None], axis=-1)[..., 0]
    return np.where(valid.any(-1), out, fill)


@pytest.mark.parametrize("method", ["count", "std", "var", "last", "prod"])
def test_window_methods_match_numpy(sources, method):
    folder, classes, values = sources
    ds = open_geotiff(folder / "values.tif", band_as_variable=True).rename(band_1="v")
    cls = open_geotiff(folder / "classes.tif", band_as_variable=True).rename(band_1="c")
    ds = ds.assign(c=cls["c"])
    out = regrid_dataset(ds, _target(), {"agg_methods": method}).compute()

    bv, bc = _blocks(values.astype("float64")), _blocks(classes)
    valid_c = bc != 255
    with np.errstate(invalid="ignore", divide="ignore"), np.testing.suppress_warnings() as sup:
        sup.filter(RuntimeWarning)
        ref_v = {
            "count": np.sum(~np.isnan(bv), -1),
            "std": np.nanstd(bv, -1),
            "var": np.nanvar(bv, -1),
            "prod": np.where(np.isnan(bv).all(-1), np.nan, np.nanprod(bv, -1)),
            "last": _last_valid(bv, ~np.isnan(bv), np.nan),
        }[method]
        cf = np.where(valid_c, bc, np.nan)
        ref_c = {
            "count": valid_c.sum(-1),
            "std": np.nanstd(cf, -1),
            "var": np.nanvar(cf, -1),
            "prod": np.where(valid_c.any(-1), np.nanprod(cf, -1), np.nan),
            "last": _last_valid(bc, valid_c, 255),
        }[method]
    got_v, got_c = out["v"].values, out["c"].values
    assert got_v.shape == ref_v.shape == (SHAPE[0] // F, SHAPE[1] // F)
    if method == "count":
        assert got_v.dtype == got_c.dtype == np.int32
        np.testing.assert_array_equal(got_v, ref_v)
        np.testing.assert_array_equal(got_c, ref_c)
        return
    if method == "last":
        assert got_c.dtype == np.uint8 and got_v.dtype == np.float32
        np.testing.assert_array_equal(got_c, ref_c)
        np.testing.assert_array_equal(got_v, ref_v.astype("float32"))
        return
    tol = 1e-5
    np.testing.assert_allclose(got_v, ref_v, rtol=tol, equal_nan=True)
    np.testing.assert_allclose(got_c, ref_c, rtol=tol, equal_nan=True)
    assert np.isnan(got_c[10:15, 10:22]).any()  # all-nodata target pixels stay empty


def test_interp_method_spline_orders():
    from multistore.regrid import resolve_methods

    assert resolve_methods({"a": "float32"}, {"interp_methods": 0}, False) == {"a": "nearest"}
    assert resolve_methods({"a": "uint8"}, {"interp_methods": {"uint8": 1}}, False) == {
        "a": "bilinear"
    }
