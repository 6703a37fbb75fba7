"""Pixel types do not depend on server-side promotion: every band group is cast as the
last step (``select -> unmask -> cast``).

Earth Engine types ``unmask(constant)`` as the union of the band's type and the
constant's, so a float band unmasked with a double constant (a sentinel such as the
float32 minimum, or a fractional fill value) becomes double; the emulator promotes the
same way. Values are checked against the emulator's raw pixels with NumPy.
"""

from __future__ import annotations

import numpy as np
import pytest

from multistore.grid import TargetGrid
from multistore.stores.earthengine.store import EarthEngineDataStore
from tests.servers.earthengine import store_params
from tests.servers.ee_emulator import RequestGrid, _union_type

# 0.01-degree pixels on the TEST/FLOAT native grid, covering its masked box (10.0-10.05, 45.0-45.05)
GRID = TargetGrid.from_bbox([9.96, 44.96, 10.2, 45.22], "EPSG:4326", 0.01, tile_size=12)
JANUARY = ["2024-01-01", "2024-02-01"]


def _raw(emu, image_id: str, band: str) -> np.ma.MaskedArray:
    request = RequestGrid(GRID.crs_wkt, tuple(GRID.transform)[:6], GRID.width, GRID.height)
    return emu.catalog.render(image_id, [band], request)[band]


def test_emulator_promotes_like_earth_engine():
    f32 = np.dtype("float32")
    assert _union_type(f32, float(np.finfo(f32).min)) == np.float64  # beyond a long: double
    assert _union_type(f32, -9999.5) == np.float64
    assert _union_type(f32, 0) == f32
    assert _union_type(np.dtype("uint8"), 255) == np.uint8
    assert _union_type(np.dtype("uint8"), -1) == np.int16


def test_raw_float_bands_keep_float32_in_every_group(ee_emulator):
    store = EarthEngineDataStore(**store_params(ee_emulator))
    # two band groups: temp unmasked with a fractional fill, precip with the float32 minimum
    ds = store.open_data(
        "TEST/FLOAT/20240110",
        bands=["temp", "precip"],
        fill_values={"temp": -9999.5},
        target_grid=GRID.to_dict(),
    ).compute()
    temp, precip = (
        _raw(ee_emulator, "TEST/FLOAT/20240110", "temp"),
        _raw(ee_emulator, "TEST/FLOAT/20240110", "precip"),
    )
    assert temp.mask.any() and not temp.mask.all()  # the grid covers masked pixels
    assert ds.temp.dtype == np.float32 and ds.precip.dtype == np.float32
    np.testing.assert_array_equal(ds.temp.values, temp.filled(np.float32(-9999.5)))
    np.testing.assert_array_equal(ds.precip.values, precip.astype("float32").filled(np.nan))


@pytest.mark.parametrize("reducer", ["mean", "median"])
def test_composites_are_cast_after_unmasking(ee_emulator, reducer):
    store = EarthEngineDataStore(**store_params(ee_emulator))
    ds = store.open_data(
        "TEST/FLOAT",
        time_range=JANUARY,
        temporal_resolution="monthly",
        reducer=reducer,
        bands=["temp"],
        target_grid=GRID.to_dict(),
    ).compute()
    stack = np.ma.stack(
        [_raw(ee_emulator, f"TEST/FLOAT/{d}", "temp") for d in ("20240110", "20240125")]
    ).astype("float64")
    reduced = stack.mean(axis=0) if reducer == "mean" else np.ma.median(stack, axis=0)
    want = np.ma.MaskedArray(np.ma.getdata(reduced).astype("float32"), np.ma.getmaskarray(reduced))
    assert ds.temp.dtype == np.float32
    np.testing.assert_array_equal(ds.temp.isel(time=0).values, want.filled(np.nan))
