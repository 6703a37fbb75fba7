"""Issue 16: band patterns, server-side processing, catalog browsing, detached exports."""

from __future__ import annotations

import numpy as np
import pytest
from xcube.core.store import new_data_store

from multistore.errors import ConfigError, SourceOpenError
from multistore.grid import TargetGrid
from multistore.stores.earthengine.store import EarthEngineDataStore
from multistore.testing.ee_emulator import RequestGrid
from tests.servers.earthengine import store_params

SMALL = TargetGrid.from_bbox([10.0005, 45.0005, 10.0105, 45.0085], "EPSG:4326", 0.001, tile_size=8)


def request_grid(grid: TargetGrid) -> RequestGrid:
    return RequestGrid(grid.crs_wkt, tuple(grid.transform)[:6], grid.width, grid.height)


@pytest.fixture
def store(ee_emulator) -> EarthEngineDataStore:
    return new_data_store("earthengine", **store_params(ee_emulator))


# -- 1. band selection by pattern ----------------------------------------------------------


def test_band_patterns_fullmatch_in_native_order(store, ee_emulator):
    ds = store.open_data(
        "TEST/MULTI/uint16",
        bands={"include": ["b1.*", "b[2-3]"], "exclude": ["b11"]},
        rename_map={"b10": "ten"},
        scale_map={"b2": 0.5},
        target_grid=SMALL.to_dict(),
    )
    # fullmatch: "b1.*" takes b1, b10, b11, b12 but not b2; native order kept
    assert list(ds.data_vars) == ["b1", "b2", "b3", "ten", "b12"]
    ds = ds.compute()
    raw = ee_emulator.catalog.render("TEST/MULTI/uint16", ["b2", "b10"], request_grid(SMALL))
    np.testing.assert_array_equal(ds["b2"].values, raw["b2"].data.astype("float64") * 0.5)
    np.testing.assert_array_equal(ds["ten"].values, raw["b10"].data)


def test_band_patterns_errors(store):
    with pytest.raises(SourceOpenError, match="no band of TEST/MULTI/uint16 matches"):
        store.open_data(
            "TEST/MULTI/uint16", bands={"include": ["B.*"]}, target_grid=SMALL.to_dict()
        )
    with pytest.raises(ConfigError, match=r"open_params.bands.exclude\[0\]"):
        store.open_data("TEST/MULTI/uint16", bands={"exclude": ["b("]}, target_grid=SMALL.to_dict())
    with pytest.raises(ConfigError, match="open_params"):
        store.open_data("TEST/MULTI/uint16", bands={"pick": ["b1"]}, target_grid=SMALL.to_dict())
    with pytest.raises(SourceOpenError, match=r"no band\(s\) \['b13'\]"):
        store.open_data("TEST/MULTI/uint16", bands=["b13"], target_grid=SMALL.to_dict())
