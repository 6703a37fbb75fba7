"""Metadata calls (listing, getInfo, asset metadata, export start and polling) get the same
classified retries as pixel requests: 429, 5xx and dropped connections are retried, a
permanent 4xx fails at once with the reason."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import yaml

from multistore import MultiSourceDataStore
from multistore.errors import FetchError
from multistore.grid import TargetGrid
from multistore.status import Status
from multistore.stores.earthengine.store import EarthEngineDataStore
from tests.servers.earthengine import store_params
from tests.servers.ee_emulator import DROP, RequestGrid

GRID = TargetGrid.from_bbox([10.0005, 45.0005, 10.0485, 45.0405], "EPSG:4326", 0.002, tile_size=16)
EXPORT_GRID = TargetGrid.from_bbox(
    [10.0015, 45.0015, 10.2515, 45.2015], "EPSG:4326", 0.005, tile_size=24
)
ROOT = "projects/test-project/assets/multistore-tmp"
JANUARY = ["2024-01-01", "2024-02-01"]


def _render(emu, image_id: str, band: str, grid: TargetGrid) -> np.ndarray:
    request = RequestGrid(grid.crs_wkt, tuple(grid.transform)[:6], grid.width, grid.height)
    return emu.catalog.render(image_id, [band], request)[band]


def test_listing_and_describe_survive_429_storms(ee_emulator):
    store = EarthEngineDataStore(**store_params(ee_emulator))
    ee_emulator.inject(429, 503, DROP, (429, 0.02), kind="asset")
    ee_emulator.inject(429, 429, DROP, 500, kind="compute")
    ds = store.open_data(
        "TEST/S2LIKE", time_range=JANUARY, bands=["B4"], target_grid=GRID.to_dict()
    ).compute()
    assert ee_emulator.pending_faults() == 0
    assert ee_emulator.stats.by_kind["asset"] == 5 and ee_emulator.stats.by_kind["compute"] == 5
    assert store.counters.retries == 8
    want = _render(ee_emulator, "TEST/S2LIKE/20240120", "B4", GRID)
    np.testing.assert_array_equal(ds.B4.isel(time=-1).values, want.filled(65535))


def test_image_getinfo_survives_429s(ee_emulator):
    store = EarthEngineDataStore(**store_params(ee_emulator))
    ee_emulator.inject(429, 429, 429, kind="compute")
    ds = store.open_data("TEST/MULTI/int16", bands=["b2"], target_grid=GRID.to_dict()).compute()
    assert ee_emulator.pending_faults("compute") == 0 and store.counters.retries == 3
    want = _render(ee_emulator, "TEST/MULTI/int16", "b2", GRID)
    np.testing.assert_array_equal(ds.b2.values, want.data)


def test_export_start_and_polling_survive_429s(ee_emulator):
    def open_mean(store, **extra):
        return store.open_data(
            "TEST/FLOAT",
            temporal_resolution="monthly",
            reducer="mean",
            bands=["temp"],
            target_grid=EXPORT_GRID.to_dict(),
            **extra,
        )

    store = EarthEngineDataStore(**store_params(ee_emulator))
    direct = open_mean(store).compute()  # the same pixels without exports or faults
    ee_emulator.reset_stats()
    ee_emulator.inject(429, 503, kind="export")
    ee_emulator.inject(429, DROP, 503, 429, kind="operation")
    exported = open_mean(
        store, export_via="asset", export_asset_root=ROOT, export_poll_s=0.01
    ).compute()
    assert ee_emulator.pending_faults() == 0
    assert ee_emulator.stats.exports == 2  # two monthly steps; retried starts made no duplicate
    assert len(ee_emulator.operations) == 2
    np.testing.assert_array_equal(exported.temp.values, direct.temp.values)


def test_retries_are_bounded(ee_emulator):
    store = EarthEngineDataStore(**store_params(ee_emulator, max_retries=2))
    ee_emulator.inject(429, 429, 429, kind="compute")
    with pytest.raises(
        FetchError, match="listing images of TEST/S2LIKE failed after 3 attempts: HTTP 429"
    ) as e:
        store.open_data("TEST/S2LIKE", time_range=JANUARY, target_grid=GRID.to_dict())
    assert not e.value.permanent and ee_emulator.stats.by_kind["compute"] == 3


@pytest.mark.parametrize("status", [400, 403])
def test_permanent_4xx_fails_fast_with_the_reason(ee_emulator, status):
    store = EarthEngineDataStore(**store_params(ee_emulator))
    ee_emulator.inject(status, kind="compute")
    with pytest.raises(
        FetchError, match=f"listing images of TEST/S2LIKE failed: HTTP {status}: "
    ) as e:
        store.open_data("TEST/S2LIKE", time_range=JANUARY, target_grid=GRID.to_dict())
    assert e.value.permanent and e.value.status == status
    assert ee_emulator.stats.by_kind["compute"] == 1 and store.counters.retries == 0


def test_unknown_asset_fails_fast(ee_emulator):
    store = EarthEngineDataStore(**store_params(ee_emulator))
    with pytest.raises(
        FetchError, match="reading asset 'TEST/NOPE' failed: HTTP 404: .*does not exist"
    ) as e:
        store.open_data("TEST/NOPE")
    assert e.value.permanent and ee_emulator.stats.by_kind["asset"] == 1
    assert not store.has_data("TEST/NOPE")


def _write_config(tmp_path, ee_emulator) -> str:
    config = {
        "data_stores": [
            {"identifier": "storage", "store_id": "file", "store_params": {"root": "out"}},
            {"identifier": "gee", "store_id": "earthengine", "store_params": store_params(ee_emulator)},
        ],
        "grid_mappings": [
            {"identifier": "gm", "crs": "EPSG:4326", "bbox": [10.0005, 45.0005, 10.0485, 45.0405],
             "spatial_res": 0.002, "tile_size": 16}
        ],
        "datasets": [
            {"identifier": "s2", "store": "gee", "data_id": "TEST/S2LIKE", "grid_mapping": "gm",
             "open_params": {"time_range": JANUARY, "bands": ["B4"]}}
        ],
        # no pipeline-level retries: only the store's own may rescue the dataset
        "general": {"display": "none", "retries": {"max_retries": 0}},
    }  # fmt: skip
    path = tmp_path / "ee.yml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_a_dataset_completes_through_metadata_429s(tmp_path, ee_emulator):
    path = _write_config(tmp_path, ee_emulator)
    ee_emulator.inject(429, 429, 429, kind="asset")
    ee_emulator.inject(429, 503, 429, kind="compute")
    result = MultiSourceDataStore(path).generate()
    assert result["s2"].status is Status.COMPLETED, result["s2"].message
    assert ee_emulator.pending_faults() == 0
    cube = xr.open_zarr(tmp_path / "out" / "s2.zarr", mask_and_scale=False)
    want = _render(ee_emulator, "TEST/S2LIKE/20240120", "B4", GRID)
    np.testing.assert_array_equal(cube["B4"].isel(time=2).values, want.filled(65535))


def test_faults_target_one_kind_of_request(ee_emulator):
    with pytest.raises(ValueError, match="unknown fault kind"):
        ee_emulator.inject(429, kind="listing")
    ee_emulator.inject(429, kind="operation")
    store = EarthEngineDataStore(**store_params(ee_emulator))
    store.open_data("TEST/MULTI/uint8", bands=["b1"], target_grid=GRID.to_dict()).compute()
    # no export ran: the operation fault is still pending, nothing else was faulted
    assert ee_emulator.pending_faults("operation") == 1 and ee_emulator.pending_faults() == 1
    assert ee_emulator.stats.statuses[429] == 0 and store.counters.retries == 0


def test_a_dataset_fails_fast_on_a_permanent_4xx(tmp_path, ee_emulator):
    path = _write_config(tmp_path, ee_emulator)
    ee_emulator.inject(400, kind="compute")
    result = MultiSourceDataStore(path).generate()
    assert result["s2"].status is Status.FAILED
    assert (
        "listing images of TEST/S2LIKE failed: HTTP 400: Invalid argument." in result["s2"].message
    )
    assert ee_emulator.stats.by_kind["compute"] == 1 and ee_emulator.stats.pixel_requests == 0


def test_client_initialisation_survives_429s(ee_emulator):
    """ee.Initialize lists the API's algorithms: one 429 there must not end the build."""
    store = EarthEngineDataStore(**store_params(ee_emulator))
    ee_emulator.inject(429, 503, (429, 0.02), kind="algorithms")
    ds = store.open_data("TEST/MULTI/int16", bands=["b2"], target_grid=GRID.to_dict()).compute()
    assert ee_emulator.pending_faults("algorithms") == 0
    assert ee_emulator.stats.by_kind["algorithms"] == 4
    want = _render(ee_emulator, "TEST/MULTI/int16", "b2", GRID)
    np.testing.assert_array_equal(ds.b2.values, want.data)


def test_client_initialisation_fails_at_once_on_a_permanent_error(ee_emulator):
    from multistore.errors import StoreError

    store = EarthEngineDataStore(**store_params(ee_emulator))
    ee_emulator.inject(403, kind="algorithms")
    with pytest.raises(StoreError, match="initialising the client .* HTTP 403"):
        store.open_data("TEST/MULTI/int16", bands=["b2"], target_grid=GRID.to_dict())
    assert ee_emulator.stats.by_kind["algorithms"] == 1
