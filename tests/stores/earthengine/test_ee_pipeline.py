"""An Earth Engine source through the whole pipeline: plan, generate, resume after a failure."""

from __future__ import annotations

import numpy as np
import xarray as xr
import yaml

from multistore import MultiSourceDataStore
from multistore.grid import TargetGrid
from multistore.status import Status
from tests.servers.earthengine import store_params
from tests.servers.ee_emulator import RequestGrid

GRID = TargetGrid.from_bbox([10.0005, 45.0005, 10.1005, 45.0705], "EPSG:4326", 0.001, tile_size=16)


def write_config(tmp_path, emu) -> str:
    config = {
        "data_stores": [
            {"identifier": "storage", "store_id": "file", "store_params": {"root": "out"}},
            {
                "identifier": "gee",
                "store_id": "earthengine",
                "store_params": store_params(emu, max_retries=0),
            },
        ],
        "grid_mappings": [
            {
                "identifier": "gm",
                "crs": "EPSG:4326",
                "bbox": [10.0005, 45.0005, 10.1005, 45.0705],
                "spatial_res": 0.001,
                "tile_size": 16,
            }
        ],
        "datasets": [
            {
                "identifier": "s2",
                "store": "gee",
                "data_id": "TEST/S2LIKE",
                "grid_mapping": "gm",
                "open_params": {"time_range": ["2024-01-01", "2024-02-01"], "bands": ["B4"]},
            }
        ],
        "general": {
            "display": "none",
            "retries": {"max_retries": 0},
            "dask": {"scheduler": "threads", "num_workers": 4},
        },
    }
    path = tmp_path / "ee.yml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_plan_generate_and_resume_fetch_only_missing_tiles(tmp_path, ee_emulator):
    path = write_config(tmp_path, ee_emulator)
    msds = MultiSourceDataStore(path)
    [summary] = msds.describe_plan()
    assert summary.error is None and summary.dims == {"time": 3, "lat": 70, "lon": 100}
    assert "105" in summary.requests  # 3 time steps x 5 x 7 tiles, shown by `multistore plan`
    assert ee_emulator.stats.pixel_requests == 0  # planning fetched no pixels

    # a permanent error part-way through: the dataset fails, fetched tiles stay in the scratch cache
    ee_emulator.inject(*([None] * 40), 404)
    first = msds.generate()
    assert first["s2"].status is Status.FAILED
    fetched = ee_emulator.stats.pixel_requests
    assert 40 <= fetched < 105

    ee_emulator.reset_stats()
    second = MultiSourceDataStore(path).generate()
    assert second["s2"].status is Status.COMPLETED, second["s2"].message
    # only the missing tiles, give or take the (at most num_workers) fetches that were in
    # flight when the 404 ended the first run: their threads may still be caching them
    assert ee_emulator.stats.pixel_requests <= 105 - 40 + 4
    assert not (tmp_path / "out" / ".multistore" / "scratch").joinpath("s2.zarr").exists()

    cube = xr.open_zarr(tmp_path / "out" / "s2.zarr", mask_and_scale=False)
    assert cube["B4"].dtype == np.uint16
    grid = RequestGrid(GRID.crs_wkt, tuple(GRID.transform)[:6], GRID.width, GRID.height)
    expected = ee_emulator.catalog.render("TEST/S2LIKE/20240120", ["B4"], grid)["B4"].filled(65535)
    np.testing.assert_array_equal(cube["B4"].isel(time=2).values, expected)


def test_search_and_describe_through_the_cli(tmp_path, ee_emulator):
    from click.testing import CliRunner

    from multistore.cli import main

    path = write_config(tmp_path, ee_emulator)
    runner = CliRunner()
    found = runner.invoke(
        main,
        [
            "search",
            path,
            "gee",
            "-p",
            "data_id=TEST/S2LIKE",
            "-p",
            "time_range=[2024-01-01, 2024-02-01]",
            "-p",
            "filters=[CLOUDY_PIXEL_PERCENTAGE < 20]",
        ],
    )
    assert found.exit_code == 0, found.output
    lines = [line.split("\t") for line in found.output.splitlines()]
    assert [i for i, _ in lines] == ["TEST/S2LIKE/20240105A", "TEST/S2LIKE/20240120"]
    assert lines[0][1].startswith("2024-01-05")
    described = runner.invoke(main, ["describe", path, "gee", "TEST/S2LIKE"])
    assert described.exit_code == 0, described.output
    assert "B4" in described.output
    bad = runner.invoke(main, ["search", path, "gee", "-p", "oops"])
    assert bad.exit_code == 2
