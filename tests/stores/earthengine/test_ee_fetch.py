"""Fetching: planned sizes, classified retries, bounded concurrency and tile-level resume."""

from __future__ import annotations

import itertools
import logging
import pickle

import dask
import numpy as np
import pytest

from multistore.errors import FetchError
from multistore.grid import TargetGrid
from multistore.stores.earthengine.source import ChunkSource
from multistore.stores.earthengine.store import EarthEngineDataStore
from tests.servers.earthengine import store_params
from tests.servers.ee_emulator import Emulator, RequestGrid

# Pixel centres fall inside native pixels of the 0.001-degree TEST/MULTI images.
GRID = TargetGrid.from_bbox(
    [10.0005, 45.0005, 10.0485, 45.0405], "EPSG:4326", 0.002, tile_size=(16, 12)
)
SMALL = TargetGrid.from_bbox(
    [10.00025, 45.00025, 10.01625, 45.01225], "EPSG:4326", 0.001, tile_size=16
)  # 1 chunk


def request_grid(grid: TargetGrid) -> RequestGrid:
    return RequestGrid(grid.crs_wkt, tuple(grid.transform)[:6], grid.width, grid.height)


def expected(
    emu: Emulator, image_id: str, bands: list[str], grid: TargetGrid
) -> dict[str, np.ndarray]:
    return {b: a.data for b, a in emu.catalog.render(image_id, bands, request_grid(grid)).items()}


@pytest.mark.parametrize(
    ("dtype", "n_bands"),
    list(itertools.product(["uint8", "uint16", "float32", "float64"], [1, 5, 12])),
)
def test_planner_never_exceeds_the_limit(ee_offline, dtype, n_bands):
    limit = 6000  # the emulator enforces the same (tiny) limit as the real 48 MB one
    with Emulator(byte_limit=limit) as emu:
        store = EarthEngineDataStore(**store_params(emu, request_byte_limit=limit))
        bands = [f"b{k}" for k in range(1, n_bands + 1)]
        image = f"TEST/MULTI/{dtype}"
        plan = store.plan_requests(image, bands=bands, target_grid=GRID.to_dict())
        ds = store.open_data(image, bands=bands, target_grid=GRID.to_dict()).compute()
        assert emu.stats.size_errors == 0
        assert (
            emu.stats.pixel_requests == plan.n_requests >= len(GRID.chunks[0]) * len(GRID.chunks[1])
        )
        assert plan.max_request_bytes <= 0.9 * limit
        want = expected(emu, image, bands, GRID)
        for b in bands:
            assert ds[b].dtype == np.dtype(dtype)
            np.testing.assert_array_equal(ds[b].values, want[b])


def test_axis_limit_is_planned(ee_emulator):
    store = EarthEngineDataStore(**store_params(ee_emulator))
    grid = TargetGrid.from_bbox(
        [9.5, 45.0, 9.5 + 40000 * 0.00002, 45.00002], "EPSG:4326", 0.00002, (40000, 1)
    )
    plan = store.plan_requests("TEST/LANDCOVER", target_grid=grid.to_dict())
    assert plan.n_requests == 2 and all(w.width <= 32768 for w in plan.tiles)
    store.open_data("TEST/LANDCOVER", target_grid=grid.to_dict()).compute()
    assert ee_emulator.stats.dimension_errors == 0 and ee_emulator.stats.pixel_ok == 2


def test_size_error_falls_back_to_quarters(ee_offline, caplog):
    with Emulator(
        byte_limit=1000
    ) as emu:  # the store believes 48 MB: a planner bug, seen from outside
        store = EarthEngineDataStore(**store_params(emu))
        with caplog.at_level(logging.WARNING, logger="multistore.stores.earthengine"):
            ds = store.open_data(
                "TEST/MULTI/uint16", bands=["b1", "b2"], target_grid=SMALL.to_dict()
            ).compute()
        # 16 x 12 px x 2 x 3 bytes = 1152 > 1000: one size error, then four parts of 288 bytes
        assert emu.stats.size_errors == 1 and emu.stats.pixel_ok == 4
        assert "splitting in four" in caplog.text
        want = expected(emu, "TEST/MULTI/uint16", ["b1", "b2"], SMALL)
        np.testing.assert_array_equal(ds.b2.values, want["b2"])
        assert store.counters.size_splits == 1


def test_429_and_503_storm_is_survived(ee_emulator):
    store = EarthEngineDataStore(**store_params(ee_emulator, max_retries=8))
    ee_emulator.inject(429, 503, 429, 500, (429, 0.05), 503, 429, 502, 429, 503)
    ds = store.open_data("TEST/MULTI/float32", bands=["b3"], target_grid=GRID.to_dict()).compute()
    assert ee_emulator.pending_faults() == 0
    assert ee_emulator.stats.statuses[429] == 5 and ee_emulator.stats.statuses[503] == 3
    n_chunks = len(GRID.chunks[0]) * len(GRID.chunks[1])
    assert ee_emulator.stats.pixel_ok == n_chunks
    assert store.counters.retries == 10 and store.counters.requests == n_chunks + 10
    np.testing.assert_array_equal(
        ds.b3.values, expected(ee_emulator, "TEST/MULTI/float32", ["b3"], GRID)["b3"]
    )


def test_retries_are_bounded(ee_emulator):
    store = EarthEngineDataStore(**store_params(ee_emulator, max_retries=2))
    ee_emulator.inject(503, 503, 503)
    ds = store.open_data("TEST/MULTI/uint8", bands=["b1"], target_grid=SMALL.to_dict())
    with pytest.raises(FetchError, match="after 3 attempts: HTTP 503") as e:
        ds.compute()
    assert not e.value.permanent and ee_emulator.stats.pixel_requests == 3


@pytest.mark.parametrize("status", [400, 403, 404])
def test_permanent_errors_are_not_retried(ee_emulator, status):
    store = EarthEngineDataStore(**store_params(ee_emulator))
    ee_emulator.inject(status)
    ds = store.open_data("TEST/MULTI/uint8", bands=["b1"], target_grid=SMALL.to_dict())
    with pytest.raises(FetchError, match=f"HTTP {status}") as e:
        ds.compute()
    assert e.value.permanent and e.value.status == status
    assert ee_emulator.stats.pixel_requests == 1


def test_slow_reply_times_out_and_is_retried(ee_emulator):
    store = EarthEngineDataStore(**store_params(ee_emulator, deadline_s=0.3))
    ee_emulator.inject(("slow", 1.0))
    ds = store.open_data("TEST/MULTI/uint8", bands=["b1"], target_grid=SMALL.to_dict()).compute()
    assert store.counters.retries == 1 and ee_emulator.stats.pixel_requests == 2
    np.testing.assert_array_equal(
        ds.b1.values, expected(ee_emulator, "TEST/MULTI/uint8", ["b1"], SMALL)["b1"]
    )


def test_concurrency_never_above_the_setting(ee_offline):
    with Emulator(latency_s=0.05, max_concurrency=3) as emu:  # answers 429 above 3 in flight
        store = EarthEngineDataStore(**store_params(emu, max_concurrency=3))
        ds = store.open_data("TEST/MULTI/int16", bands=["b1", "b2"], target_grid=GRID.to_dict())
        with dask.config.set(scheduler="threads", num_workers=12):
            ds = ds.compute()
        assert emu.stats.max_in_flight == 3
        assert emu.stats.statuses[429] == 0 and store.counters.retries == 0


def test_resume_fetches_only_missing_tiles(ee_emulator, tmp_path):
    cache = str(tmp_path / "tiles")
    store = EarthEngineDataStore(**store_params(ee_emulator))
    params = dict(bands=["b1", "b4"], target_grid=GRID.to_dict(), tile_cache=cache)
    n_chunks = len(GRID.chunks[0]) * len(GRID.chunks[1])
    # a crash: the 3rd request fails for good
    ee_emulator.inject(None, None, 404)
    with dask.config.set(scheduler="synchronous"), pytest.raises(FetchError):
        store.open_data("TEST/MULTI/int8", **params).compute()
    assert ee_emulator.stats.pixel_ok == 2
    assert len(list((tmp_path / "tiles").rglob("*.npy"))) == 2
    assert not list((tmp_path / "tiles").rglob("*.tmp"))
    ee_emulator.reset_stats()
    ds = store.open_data("TEST/MULTI/int8", **params).compute()
    assert ee_emulator.stats.pixel_requests == n_chunks - 2 == 2
    want = expected(ee_emulator, "TEST/MULTI/int8", ["b1", "b4"], GRID)
    np.testing.assert_array_equal(ds.b4.values, want["b4"])
    # a third run fetches nothing; a changed query does not reuse the tiles
    ee_emulator.reset_stats()
    store.open_data("TEST/MULTI/int8", **params).compute()
    assert ee_emulator.stats.pixel_requests == 0
    store.open_data("TEST/MULTI/int8", **{**params, "bands": ["b1"]}).compute()
    assert ee_emulator.stats.pixel_requests == n_chunks


def test_tile_cache_on_an_fsspec_url(ee_emulator):
    store = EarthEngineDataStore(**store_params(ee_emulator))
    params = dict(bands=["b2"], target_grid=GRID.to_dict(), tile_cache="memory://ee-tiles-test")
    first = store.open_data("TEST/MULTI/uint16", **params).compute()
    n_chunks = len(GRID.chunks[0]) * len(GRID.chunks[1])
    assert ee_emulator.stats.pixel_requests == n_chunks
    ee_emulator.reset_stats()
    again = store.open_data("TEST/MULTI/uint16", **params).compute()
    assert ee_emulator.stats.pixel_requests == 0
    np.testing.assert_array_equal(again.b2.values, first.b2.values)


def test_chunk_source_pickles_without_client_state(ee_emulator, tmp_path):
    """Dask process workers get a picklable source that initialises the client lazily."""
    store = EarthEngineDataStore(**store_params(ee_emulator))
    ds = store.open_data(
        "TEST/MULTI/uint8", bands=["b1"], target_grid=SMALL.to_dict(), tile_cache=str(tmp_path)
    )
    graph = dict(ds.b1.data.__dask_graph__())
    source = next(
        t[0] for t in graph.values() if isinstance(t, tuple) and isinstance(t[0], ChunkSource)
    )
    clone = pickle.loads(pickle.dumps(source))
    assert clone.counters.requests == 0 and clone.cache is not None
    out = clone(0, 0)
    np.testing.assert_array_equal(
        out["b1"], expected(ee_emulator, "TEST/MULTI/uint8", ["b1"], SMALL)["b1"]
    )
