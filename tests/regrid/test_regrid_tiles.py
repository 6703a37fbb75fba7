"""The warp graph is planned band by band, only for the tiles dask asks for."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from multistore.grid import TargetGrid
from multistore.regrid import plan, regrid_dataset, tiles
from multistore.scheduler import row_band_waves
from tests.regrid.test_regrid_engine import (
    LAEA,
    affine_dataset,
    assert_matches_gdal,
    categorical,
    gdal_reference,
    target_around,
)

TRANSFORM = Affine(30, 0, 4_200_000, 0, -30, 2_900_000)


@pytest.fixture
def planned_bands(monkeypatch):
    """The bands of tile rows planned so far, in order."""
    calls: list[int] = []
    original = tiles.TileGraph._plan_band

    def counting(self, b):
        calls.append(b)
        return original(self, b)

    monkeypatch.setattr(tiles.TileGraph, "_plan_band", counting)
    return calls


@pytest.fixture
def many_tiles(monkeypatch):
    """A 2-band source onto 8 px tiles (about 7,000 tiles), with bands of 256 tiles."""
    monkeypatch.setattr(tiles, "_BAND_TILES", 256)
    data = categorical(np.random.default_rng(3), (2, 320, 400))
    ds = affine_dataset(data, TRANSFORM, LAEA.to_wkt(), extra=("band", [1, 2]), chunks=64)
    bounds = (TRANSFORM.c, TRANSFORM.f - 320 * 30, TRANSFORM.c + 400 * 30, TRANSFORM.f)
    target = target_around(LAEA, bounds, "EPSG:4326", 0.0002, 8, pad=0.002)
    return data, target, regrid_dataset(ds, target, {"method": "nearest"})["v"].data


def test_nothing_is_planned_until_dask_asks(planned_bands, many_tiles):
    *_, arr = many_tiles
    assert arr.numblocks[-2] * arr.numblocks[-1] > 5000
    assert planned_bands == []


def test_a_wave_plans_only_its_own_bands_and_matches_gdal(planned_bands, many_tiles):
    data, target, arr = many_tiles
    ntx = arr.numblocks[-1]
    rows_per_band = max(1, 256 // ntx)
    n_bands = -(-arr.numblocks[-2] // rows_per_band)
    waves = row_band_waves([arr], 2 * ntx * rows_per_band * 2)  # two bands' tile rows per wave
    assert len(waves) >= 4
    first = waves[0][0].compute()
    assert set(planned_bands) == {0, 1}
    ref = gdal_reference(data, TRANSFORM, LAEA, target, "nearest", None, 255)
    rows = first.shape[-2]
    assert_matches_gdal(first, ref[:, :rows], 255, "nearest", 5)
    # the rest, wave by wave: every band is planned once, and the same values come out
    rest = [wave[0].compute() for wave in waves[1:]]
    assert sorted(planned_bands) == list(range(n_bands))
    assert_matches_gdal(np.concatenate([first, *rest], axis=-2), ref, 255, "nearest", 5)


def test_planned_bands_kept_stay_within_the_budget(planned_bands, many_tiles, monkeypatch):
    monkeypatch.setattr(tiles, "_KEPT_TILES", 600)
    *_, arr = many_tiles
    for wave in row_band_waves([arr], 2 * arr.numblocks[-1] * 2):
        wave[0].compute()
    graph = arr.__dask_graph__()
    warp = next(name for name in graph.layers if name.startswith("warp-"))
    tile_graph = graph.layers[warp].mapping._g
    kept = len(tile_graph._bands) * tile_graph._rows_per_band * arr.numblocks[-1]
    assert 0 < kept <= 600 + tile_graph._rows_per_band * arr.numblocks[-1]


def test_keys_and_membership_agree_with_the_tasks(many_tiles):
    *_, arr = many_tiles
    graph = arr.__dask_graph__()
    warp = next(name for name in graph.layers if name.startswith("warp-"))
    layer = graph.layers[warp].mapping
    keys = list(layer)
    assert len(keys) == len(layer) == len(set(keys))
    assert all(k in layer for k in keys[:: max(1, len(keys) // 500)])
    assert (warp, 0, 10**6, 0) not in layer and ("other", 0, 0, 0) not in layer
    with pytest.raises(KeyError):
        layer[(warp, 0, -1, 0)]
    out = graph.layers[arr.name].mapping
    assert len(list(out)) == len(out) == arr.npartitions
    assert all(k in out for k in arr.__dask_keys__()[0][0])


@pytest.mark.parametrize("where", ["laea", "global"])
def test_most_pieces_counted_for_all_tiles_match_the_planned_tasks(where):
    """The vectorised count (memory budget of plane groups) equals what tiles are cut into,
    also for a periodic source whose windows wrap around the antimeridian."""
    if where == "laea":
        data = categorical(np.random.default_rng(4), (300, 360))
        ds = affine_dataset(data, TRANSFORM, LAEA.to_wkt(), chunks=48)
        bounds = (TRANSFORM.c, TRANSFORM.f - 300 * 30, TRANSFORM.c + 360 * 30, TRANSFORM.f)
        target = target_around(LAEA, bounds, "EPSG:4326", 0.0004, 24, pad=0.001)
    else:
        import xarray as xr

        lon = np.arange(720) * 0.5 + 0.25
        lat = 90 - (np.arange(360) + 0.5) * 0.5
        field = np.add.outer(lat, lon).astype("float32")
        ds = xr.Dataset({"v": (("lat", "lon"), field)}, coords={"lon": lon, "lat": lat}).chunk(40)
        target = TargetGrid.from_bbox([150, -30, 210, 30], "EPSG:4326", 0.25, tile_size=32)
    arr = regrid_dataset(ds, target, {"method": "bilinear"})["v"].data
    graph = arr.__dask_graph__()
    warp = next(name for name in graph.layers if name.startswith("warp-"))
    tile_graph = graph.layers[warp].mapping._g
    planned = max(len(task[1].pieces) for task in dict(graph.layers[warp]).values())
    src = tile_graph._srcs[0]  # in normal form (north-up, west to east)
    counted = plan.max_pieces(
        tile_graph._windows,
        np.cumsum((0,) + src.chunks[-2]),
        np.cumsum((0,) + src.chunks[-1]),
        tile_graph._grid,
    )
    assert counted == planned > 1
