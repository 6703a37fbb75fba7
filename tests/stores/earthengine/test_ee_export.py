"""Batch exports to assets: submitted, waited for, read back; reused on rerun; cancelled on failure."""

from __future__ import annotations

import numpy as np
import pytest

from multistore.errors import ConfigError, FetchError
from multistore.grid import TargetGrid
from multistore.stores.earthengine.store import EarthEngineDataStore
from tests.servers.earthengine import store_params

GRID = TargetGrid.from_bbox([10.0015, 45.0015, 10.2515, 45.2015], "EPSG:4326", 0.005, tile_size=24)
ROOT = "projects/test-project/assets/multistore-tmp"


def _open(store, **extra):
    return store.open_data(
        "TEST/FLOAT",
        temporal_resolution="monthly",
        reducer="mean",
        bands=["temp"],
        target_grid=GRID.to_dict(),
        **extra,
    )


def test_export_to_asset_then_read_back(ee_emulator):
    store = EarthEngineDataStore(**store_params(ee_emulator))
    seen: list[tuple[int, int]] = []
    store.export_progress = lambda done, total: seen.append((done, total))
    exported = _open(
        store, export_via="asset", export_asset_root=ROOT, export_poll_s=0.01
    ).compute()
    assert ee_emulator.stats.exports == 2  # one task per monthly step
    assert set(ee_emulator.exported) and all(
        a.startswith(ROOT + "/TEST_FLOAT_") for a in ee_emulator.exported
    )
    assert seen[-1] == (2, 2) and seen[0][0] < 2
    direct = _open(store).compute()
    np.testing.assert_array_equal(exported.temp.values, direct.temp.values)
    assert np.isnan(exported.temp.values).any()  # masked stays NaN through the export

    # a rerun reuses the finished exports
    ee_emulator.reset_stats()
    _open(store, export_via="asset", export_asset_root=ROOT, export_poll_s=0.01)
    assert ee_emulator.stats.exports == 0


def test_failed_export_cancels_the_others(ee_emulator):
    store = EarthEngineDataStore(**store_params(ee_emulator))
    ee_emulator.export_failure = "User memory limit exceeded."
    ee_emulator.export_polls = 2
    with pytest.raises(FetchError, match="ended FAILED: User memory limit exceeded"):
        _open(store, export_via="asset", export_asset_root=ROOT, export_poll_s=0.01)
    # the first task failed; the second, still running, was cancelled
    assert ee_emulator.stats.cancels == 1
    states = sorted(op.state for op in ee_emulator.operations.values())
    assert states == ["CANCELLED", "FAILED"]


def test_interrupt_cancels_running_exports(ee_emulator):
    store = EarthEngineDataStore(**store_params(ee_emulator))
    ee_emulator.export_polls = 1000

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    store.export_progress = interrupt
    with pytest.raises(KeyboardInterrupt):
        _open(store, export_via="asset", export_asset_root=ROOT, export_poll_s=0.01)
    assert ee_emulator.stats.cancels == 2
    assert all(op.state == "CANCELLED" for op in ee_emulator.operations.values())


def test_export_needs_a_root_and_a_supported_destination(ee_emulator):
    store = EarthEngineDataStore(**store_params(ee_emulator))
    with pytest.raises(ConfigError, match="export_asset_root"):
        _open(store, export_via="asset")
    with pytest.raises(ConfigError, match="export_via"):
        _open(store, export_via="ftp", export_asset_root=ROOT)
