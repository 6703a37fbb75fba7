"""Big cubes are computed in bounded waves of tiles, with the same result (issue 17.3)."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from types import FunctionType

import dask
import dask.array as da
import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine

from multistore import MultiSourceDataStore
from multistore.config.model import DaskConfig
from multistore.scheduler import dask_runner, row_band_waves

pytestmark = pytest.mark.timeout(240)


def test_waves_are_bands_of_block_rows_of_every_array_together():
    cube = da.arange(3 * 40 * 24).reshape(3, 40, 24).rechunk((1, 4, 4))  # 3 x 10 x 6 blocks
    plane = da.arange(40 * 24).reshape(40, 24).rechunk(4)  # 10 x 6 blocks
    line = da.arange(7, chunks=3)
    waves = row_band_waves([cube, plane, line], max_chunks=50)  # 24 blocks per block row
    assert len(waves) == 5
    assert [len(w) for w in waves] == [3, 2, 2, 2, 2]  # the 1-D array rides with the first
    for wave in waves:
        assert wave[0].numblocks == (3, 2, 6) and wave[1].numblocks == (2, 6)
    cubes = np.concatenate([w[0].compute() for w in waves], axis=1)
    planes = np.concatenate([w[1].compute() for w in waves], axis=0)
    np.testing.assert_array_equal(cubes, cube.compute())
    np.testing.assert_array_equal(planes, plane.compute())
    np.testing.assert_array_equal(waves[0][2].compute(), np.arange(7))


def test_a_wave_that_needs_no_source_takes_none_of_the_layers_below():
    """Tiles outside the source and chunks a resume skips need nothing below them. dask's
    own cull keeps every lower layer whole then, and materialising those planned the
    whole cube; each wave is culled layer by layer instead."""
    from multistore.zarrchunks import _skip_stored

    source = da.ones((80, 60), chunks=4).map_blocks(lambda b: b * 2)  # 20 x 15 blocks
    stored = {(r, c) for r in range(4) for c in range(15)}
    out = _skip_stored(source.map_blocks(lambda b: b[:1, :1] > 0, chunks=(1, 1)), stored)
    waves = row_band_waves([out], max_chunks=60)
    first, second = waves[0][0], waves[1][0]
    assert first.numblocks == (4, 15) and second.numblocks == (4, 15)

    def optimized(wave: da.Array) -> dict:  # the graph dask computes
        return dict(wave.__dask_optimize__(wave.__dask_graph__(), wave.__dask_keys__()))

    # all of the first wave is stored: its 60 constants and their 60 aliases at most
    assert len(optimized(first)) <= 2 * 60
    assert first.compute().all()
    # the second needs 60 of the 300 source blocks, and no more
    assert all(len(layer) == 60 for layer in second.dask.layers.values())
    assert len(optimized(second)) <= 4 * 60
    assert second.compute().all()


def test_small_collections_and_non_arrays_stay_in_one_wave():
    small = da.zeros((8, 8), chunks=4)
    assert len(row_band_waves([small], max_chunks=4)) == 1
    big = da.zeros((80, 80), chunks=4)
    assert len(row_band_waves([big], max_chunks=40)) == 10
    delayed = big.to_delayed().ravel().tolist()
    assert row_band_waves([big, *delayed], max_chunks=40) == [[big, *delayed]]


def test_the_first_waves_are_smaller_and_double_up_to_the_most():
    plane = da.arange(160 * 16).reshape(160, 16).rechunk(4)  # 40 x 4 blocks
    waves = row_band_waves([plane], max_chunks=32, first_chunks=4)
    assert [int(np.prod(w[0].numblocks)) for w in waves] == [4, 8, 16, 32, 32, 32, 32, 4]
    assert [waves.blocks(i) for i in range(len(waves))] == [4, 8, 16, 32, 32, 32, 32, 4]
    rows = np.concatenate([w[0].compute() for w in waves], axis=0)
    np.testing.assert_array_equal(rows, plane.compute())
    # a first wave smaller than one block row is one block row
    assert [w[0].numblocks[0] for w in row_band_waves([plane], 32, first_chunks=1)][:2] == [1, 2]


def _order_closures() -> int:
    return sum(
        1
        for o in gc.get_objects()
        if isinstance(o, FunctionType) and o.__qualname__.startswith("order.<locals>")
    )


def test_the_garbage_dask_leaves_behind_each_wave_is_collected():
    """dask.order leaves its state as reference cycles on every compute call; Python's
    own full collections come too rarely for a long build of many waves."""
    blocks = da.ones((400, 40), chunks=4).map_blocks(lambda b: b + 1)  # 100 x 10 blocks
    waves = row_band_waves([blocks], max_chunks=100)
    gc.collect()
    gc.disable()
    try:
        for wave in waves:  # what the waves leave without collecting
            dask.compute(*wave, scheduler="synchronous")
        left_uncollected = _order_closures()
        gc.collect()
        with dask_runner(DaskConfig(num_workers=2, wave_chunks=100)) as runner:
            runner.compute_in_waves([blocks])
        left = _order_closures()
    finally:
        gc.enable()
    assert len(waves) == 10 and left_uncollected >= 10
    assert left <= 2 * left_uncollected / len(waves)  # at most the last two waves'


def source(path: Path) -> None:
    """Two bands of 30 m EPSG:3035 pixels (two variables warped in the same tasks)."""
    rng = np.random.default_rng(7)
    data = rng.integers(0, 200, (2, 300, 300)).astype("uint8")
    profile = dict(
        driver="GTiff", width=300, height=300, count=2, dtype="uint8", crs="EPSG:3035",
        transform=Affine(30, 0, 4_000_000, 0, -30, 3_000_000), tiled=True, blockxsize=64,
        blockysize=64, nodata=255,
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def build(tmp_path: Path, name: str, general: dict, capsys) -> tuple[dict[str, bytes], list]:
    root = tmp_path / name
    root.mkdir()
    source(root / "src.tif")
    config = {
        "data_stores": [
            {"identifier": "storage", "store_id": "file", "store_params": {"root": "out"}},
            {"identifier": "src", "store_id": "file", "store_params": {"root": "."}},
        ],
        "grid_mappings": [
            {
                "identifier": "gm",
                "crs": "EPSG:4326",
                "bbox": [5.55, 49.95, 5.65, 50.03],
                "spatial_res": 0.0003,
                "tile_size": 16,
            }
        ],
        "datasets": [
            {"identifier": "cube", "store": "src", "data_id": "src.tif", "grid_mapping": "gm"}
        ],
        "general": general,
    }
    # The same config file name in every build: the cube records it.
    path = root / "cube.yml"
    path.write_text(yaml.safe_dump(config))
    report = MultiSourceDataStore(str(path)).generate(display="json")
    assert report.ok, [r.message for r in report.failed]
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    writing = [
        r["progress"] for r in records if r["event"] == "status" and r["status"] == "writing"
    ]
    cube = root / "out" / "cube.zarr"
    files = {
        str(p.relative_to(cube)): p.read_bytes()
        for p in sorted(cube.rglob("*"))
        if p.is_file() and p.parent.name in ("band_1", "band_2")
    }
    return files, writing


@pytest.mark.parametrize(
    "scheduler",
    [{}, {"scheduler": "distributed", "n_workers": 2, "threads_per_worker": 1}],
    ids=["threads", "distributed"],
)
def test_a_cube_built_in_waves_is_byte_identical_and_its_progress_moves(
    tmp_path, capsys, scheduler
):
    whole, _ = build(tmp_path, "whole", {"dask": {"scheduler": "threads"}}, capsys)
    # 17 x 21 tiles, 2 variables: waves of 1, then 2 block rows (84 chunks) -> 9 waves
    waved, progress = build(tmp_path, "waves", {"dask": {**scheduler, "wave_chunks": 100}}, capsys)
    assert len(whole) > 500  # two variables' chunks (the rest is nodata, not stored)
    assert waved.keys() == whole.keys()
    assert all(waved[k] == whole[k] for k in whole)
    shares = [p for p in progress if p is not None]
    assert shares == sorted(shares) and shares[-1] == 1.0
    assert len({p for p in shares if 0 < p < 1}) >= 8  # the table moves wave by wave
