"""The ``earthengine`` store against the emulator, through the real client: exact values."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyproj
import pytest
import xarray as xr
from xcube.core.store import new_data_store

from multistore.errors import ConfigError, FilterError, SourceOpenError, StoreError
from multistore.grid import TargetGrid
from multistore.stores.earthengine.store import EarthEngineDataStore
from tests.servers.earthengine import store_params
from tests.servers.ee_emulator import RequestGrid

S2_JAN = ["TEST/S2LIKE/20240105A", "TEST/S2LIKE/20240105B", "TEST/S2LIKE/20240120"]


def request_grid(grid: TargetGrid) -> RequestGrid:
    return RequestGrid(grid.crs_wkt, tuple(grid.transform)[:6], grid.width, grid.height)


def render(emu, image_id: str, band: str, grid: TargetGrid) -> np.ma.MaskedArray:
    return emu.catalog.render(image_id, [band], request_grid(grid))[band]


@pytest.fixture
def store(ee_emulator) -> EarthEngineDataStore:
    return new_data_store("earthengine", **store_params(ee_emulator))


# The grid straddles image A's cloud box (10.02-10.05, 45.02-45.05) and image B's
# footprint edge (10.08); 7 x 5 tiles of 16 px, partial tiles at the edges.
GRID_4326 = TargetGrid.from_bbox(
    [10.0005, 45.0005, 10.1005, 45.0705], "EPSG:4326", 0.001, tile_size=16
)


def test_plugin_entry_point_and_schemas(ee_emulator):
    store = new_data_store("earthengine", **store_params(ee_emulator))
    assert isinstance(store, EarthEngineDataStore)
    schema = store.get_open_data_params_schema().to_dict()
    assert "target_grid" in schema["properties"]
    with pytest.raises(ConfigError, match="max_concurrency"):
        EarthEngineDataStore(**store_params(ee_emulator, max_concurrency=0))


def test_secrets_never_shown(ee_emulator):
    secret = json.dumps({"type": "service_account", "private_key": "SECRET-KEY-123"})
    store = EarthEngineDataStore(**store_params(ee_emulator, credentials=secret))
    assert "SECRET" not in repr(store) and "SECRET" not in repr(store._session)
    with pytest.raises(StoreError) as e:
        store.open_data("TEST/LANDCOVER")
    assert "SECRET" not in str(e.value)


def test_raw_values_exact_on_target_grid_across_tile_seams(store, ee_emulator):
    ds = store.open_data(
        "TEST/S2LIKE",
        time_range=["2024-01-01", "2024-02-01"],
        bands=["B4", "B8"],
        target_grid=GRID_4326.to_dict(),
    )
    # lazy, one dask block per output chunk and time step
    assert ds.B4.chunks == ((1, 1, 1), GRID_4326.chunks[0], GRID_4326.chunks[1])
    assert ee_emulator.stats.pixel_requests == 0
    # dims/coords exactly as the target grid's, so the regridder sees the same grid
    coords = GRID_4326.coords()
    np.testing.assert_array_equal(ds.lon.values, coords["lon"].values)
    np.testing.assert_array_equal(ds.lat.values, coords["lat"].values)
    assert ds.spatial_ref.attrs["crs_wkt"] == GRID_4326.crs_wkt
    assert TargetGrid.from_dataset(ds).same_grid(GRID_4326)
    assert ds.B4.encoding["_FillValue"] == 65535 and ds.B4.attrs["grid_mapping"] == "spatial_ref"
    assert list(ds.time.values) == list(
        pd.to_datetime(["2024-01-05T10:00:00", "2024-01-05T10:00:10", "2024-01-20T10:00:00"])
    )
    ds = ds.compute()
    assert ee_emulator.stats.pixel_requests == 3 * 5 * 7
    for t, image_id in enumerate(S2_JAN):
        for band in ("B4", "B8"):
            expected = render(ee_emulator, image_id, band, GRID_4326)
            assert expected.mask.any() and not expected.mask.all()
            np.testing.assert_array_equal(ds[band].isel(time=t).values, expected.filled(65535))
    # masked pixels are the fill value, never 0
    assert (ds.B4.values != 0).all()


def test_projected_grid_for_an_image_is_exact(store, ee_emulator):
    utm = pyproj.CRS.from_epsg(32632)
    # around the corner of the image's masked box (lon 10.10, lat 45.10)
    grid = TargetGrid.from_bbox([585905, 4994005, 587405, 4995205], utm, 30, tile_size=(20, 16))
    ds = store.open_data("TEST/LANDCOVER", target_grid=grid.to_dict()).compute()
    assert set(ds.dims) == {"x", "y"}  # one image: no time dimension
    expected = render(ee_emulator, "TEST/LANDCOVER", "Map", grid)
    assert expected.mask.any()
    np.testing.assert_array_equal(ds.Map.values, expected.filled(255))
    assert ds.Map.dtype == np.uint8 and ds.attrs["time_start"].startswith("2021-01-01")


def test_daily_mosaic_newest_on_top(store, ee_emulator):
    ds = store.open_data(
        "TEST/S2LIKE",
        time_range=["2024-01-05", "2024-01-06"],
        bands=["B2"],
        temporal_resolution="daily",
        reducer="mosaic",
        target_grid=GRID_4326.to_dict(),
    ).compute()
    assert ds.time.values.tolist() == [pd.Timestamp("2024-01-05").value]
    a, b = (render(ee_emulator, i, "B2", GRID_4326) for i in S2_JAN[:2])
    expected = np.where(~b.mask, b.data, np.where(~a.mask, a.data, 65535))
    assert (~b.mask & ~a.mask).any()  # the overlap exists
    np.testing.assert_array_equal(ds.B2.isel(time=0).values, expected)


def test_first_reducer_keeps_oldest_valid(store, ee_emulator):
    ds = store.open_data(
        "TEST/S2LIKE",
        time_range=["2024-01-05", "2024-01-06"],
        bands=["B2"],
        temporal_resolution="daily",
        reducer="first",
        target_grid=GRID_4326.to_dict(),
    ).compute()
    a, b = (render(ee_emulator, i, "B2", GRID_4326) for i in S2_JAN[:2])
    expected = np.where(~a.mask, a.data, np.where(~b.mask, b.data, 65535))
    np.testing.assert_array_equal(ds.B2.isel(time=0).values, expected)


def test_monthly_mean_float_collection(store, ee_emulator):
    grid = TargetGrid.from_bbox(
        [10.0015, 45.0015, 10.2515, 45.2015], "EPSG:4326", 0.005, tile_size=24
    )
    ds = store.open_data(
        "TEST/FLOAT",
        temporal_resolution="monthly",
        reducer="mean",
        target_grid=grid.to_dict(),
        rename_map={"temp": "t2m"},
    ).compute()
    assert set(ds.data_vars) == {"t2m", "precip"}
    assert ds.time.values.tolist() == [
        pd.Timestamp("2024-01-01").value,
        pd.Timestamp("2024-02-01").value,
    ]
    jan = np.ma.stack(
        [render(ee_emulator, f"TEST/FLOAT/202401{d}", "temp", grid) for d in ("10", "25")]
    )
    expected_jan = jan.astype("float64").mean(axis=0).astype("float32")
    np.testing.assert_array_equal(ds.t2m.isel(time=0).values, expected_jan.filled(np.nan))
    feb = render(ee_emulator, "TEST/FLOAT/20240215", "precip", grid)
    assert feb.mask.any()
    got = ds.precip.isel(time=1).values
    np.testing.assert_array_equal(got, feb.astype("float32").filled(np.nan))
    assert np.isnan(got).sum() == feb.mask.sum()  # masked -> NaN, never 0
    assert ds.t2m.dtype == np.float32 and np.isnan(ds.t2m.encoding["_FillValue"])


def test_filters_select_images(store, ee_emulator):
    ds = store.open_data(
        "TEST/S2LIKE",
        filters=["CLOUDY_PIXEL_PERCENTAGE < 20", "MGRS_TILE == '32TNR'"],
        bands=["B3"],
        target_grid=GRID_4326.to_dict(),
    )
    assert list(pd.DatetimeIndex(ds.time.values)) == list(
        pd.to_datetime(["2024-01-05T10:00:00", "2024-01-20T10:00:00"])
    )
    with pytest.raises(FilterError, match=r"filters\[0\]"):
        store.open_data(
            "TEST/S2LIKE", filters=["CLOUDY_PIXEL_PERCENTAGE ~ 3"], target_grid=GRID_4326.to_dict()
        )
    with pytest.raises(SourceOpenError, match="no image"):
        store.open_data(
            "TEST/S2LIKE", filters=["CLOUDY_PIXEL_PERCENTAGE < 1"], target_grid=GRID_4326.to_dict()
        )


def test_search_and_describe(store):
    found = store.search(
        "TEST/S2LIKE",
        time_range=["2024-01-01", "2024-02-01"],
        filters=["CLOUDY_PIXEL_PERCENTAGE <= 35"],
    )
    assert [i for i, _ in found] == S2_JAN
    assert found[0][1] == pd.Timestamp("2024-01-05T10:00:00")
    descriptors = list(store.search_data(data_id="TEST/FLOAT"))
    assert [d.data_id for d in descriptors] == [
        "TEST/FLOAT/20240110",
        "TEST/FLOAT/20240125",
        "TEST/FLOAT/20240215",
    ]
    d = store.describe_data(
        "TEST/S2LIKE", temporal_resolution="monthly", reducer="median", bands=["B4"]
    )
    assert d.attrs["image_count"] == 4 and d.dims["time"] == 2
    assert d.data_vars["B4"].dtype == "float32" and d.attrs["native_band_types"]["B4"] == "uint16"
    assert d.spatial_res == 10.0 and d.crs == "EPSG:32632"
    assert d.time_range == ("2024-01-05", "2024-02-10")
    assert store.has_data("TEST/LANDCOVER") and not store.has_data("TEST/NOPE")


def test_native_grid_with_bbox(store, ee_emulator):
    ds = store.open_data(
        "TEST/LANDCOVER", bbox=[10.095, 45.095, 10.125, 45.125], tile_size=128
    ).compute()
    grid = TargetGrid.from_dataset(ds)
    assert grid.resolution == pytest.approx((0.0001, 0.0001))
    assert ds.Map.shape == (300, 300)
    expected = render(ee_emulator, "TEST/LANDCOVER", "Map", grid)
    np.testing.assert_array_equal(ds.Map.values, expected.filled(255))
    # native pixels: each output pixel is exactly one class value
    assert set(np.unique(ds.Map.values)) <= {10, 20, 30, 40, 50, 60, 80, 90, 95, 100, 255}


def test_crs_scale_bbox_and_scale_map(store, ee_emulator):
    ds = store.open_data(
        "TEST/S2LIKE",
        time_range=["2024-01-20", "2024-01-21"],
        bands=["B4"],
        crs="EPSG:32632",
        scale=20,
        bbox=[580000, 4985000, 581000, 4986000],
        tile_size=25,
        scale_map={"B4": [0.0001, -0.1]},
    ).compute()
    assert ds.B4.dtype == np.float32 and ds.B4.shape == (1, 50, 50)
    grid = TargetGrid.from_bbox([580000, 4985000, 581000, 4986000], "EPSG:32632", 20)
    raw = render(ee_emulator, "TEST/S2LIKE/20240120", "B4", grid)
    expected = (raw.astype("float64") * 0.0001 - 0.1).astype("float32")
    np.testing.assert_array_equal(ds.B4.isel(time=0).values, expected.filled(np.nan))
    with pytest.raises(ConfigError, match="together"):
        store.open_data("TEST/S2LIKE", crs="EPSG:32632")


def test_bad_input_is_named(store):
    with pytest.raises(SourceOpenError, match="TEST/NOPE"):
        store.open_data("TEST/NOPE")
    with pytest.raises(SourceOpenError, match=r"no band\(s\) \['B99'\]"):
        store.open_data("TEST/S2LIKE", bands=["B99"], target_grid=GRID_4326.to_dict())
    with pytest.raises(ConfigError, match="reducer"):
        store.open_data("TEST/S2LIKE", reducer="sum")
    with pytest.raises(ConfigError, match="fill_values.Map"):
        store.open_data("TEST/LANDCOVER", fill_values={"Map": 300})


def test_fill_value_override(store, ee_emulator):
    grid = TargetGrid.from_bbox(
        [10.09505, 45.09505, 10.10505, 45.10505], "EPSG:4326", 0.001, tile_size=8
    )
    ds = store.open_data("TEST/LANDCOVER", target_grid=grid.to_dict(), fill_value=0)
    assert ds.Map.encoding["_FillValue"] == 0
    expected = render(ee_emulator, "TEST/LANDCOVER", "Map", grid)
    assert expected.mask.any()
    xr.testing.assert_equal(
        ds.Map.compute().drop_vars("spatial_ref"),
        ds.Map.copy(data=expected.filled(0)).drop_vars("spatial_ref"),
    )
