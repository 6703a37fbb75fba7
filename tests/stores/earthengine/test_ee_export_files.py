"""Batch exports to Cloud Storage (read back from a local GCS) and Drive (a clear failure)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import yaml

import multistore.api
from multistore import MultiSourceDataStore
from multistore.errors import ConfigError, SourceOpenError
from multistore.grid import TargetGrid
from multistore.status import DatasetResult, Status, StatusBoard
from multistore.stores.earthengine.params import open_params_schema
from multistore.stores.earthengine.store import EarthEngineDataStore
from tests.servers.earthengine import store_params
from tests.servers.ee_emulator import RequestGrid

BBOX = [10.0005, 45.0005, 10.1005, 45.0705]
GRID = TargetGrid.from_bbox(BBOX, "EPSG:4326", 0.001, tile_size=16)
SMALL = TargetGrid.from_bbox([10.0015, 45.0015, 10.2515, 45.2015], "EPSG:4326", 0.005, tile_size=24)


def _gcs(emu, **extra):
    return {
        "export_via": "gcs",
        "export_bucket": "exports",
        "export_prefix": "runs/a",
        "export_poll_s": 0.01,
        "export_storage_options": {"endpoint_url": emu.url, "token": "anon"},
        **extra,
    }


def _config(tmp_path, emu, export: dict | None = None) -> str:
    config = {
        "data_stores": [
            {"identifier": "storage", "store_id": "file", "store_params": {"root": "out"}},
            {"identifier": "gee", "store_id": "earthengine", "store_params": store_params(emu)},
        ],
        "grid_mappings": [
            {"identifier": "gm", "crs": "EPSG:4326", "bbox": BBOX, "spatial_res": 0.001}
        ],
        "datasets": [
            {
                "identifier": "s2",
                "store": "gee",
                "data_id": "TEST/S2LIKE",
                "grid_mapping": "gm",
                "open_params": {
                    "time_range": ["2024-01-01", "2024-02-01"],
                    "bands": ["B4"],
                    # files of 32 x 32 px: a chunk spans several exported files
                    **(export or _gcs(emu, export_file_dimensions=32)),
                },
            }
        ],
        "general": {"display": "none", "dask": {"scheduler": "threads", "num_workers": 2}},
    }
    path = tmp_path / "ee.yml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


class RecordingBoard(StatusBoard):
    """The pipeline's real board, remembering every update (what a display would show)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[DatasetResult] = []
        self.subscribe(self.seen.append)


def test_gcs_export_through_the_pipeline(tmp_path, ee_emulator, monkeypatch):
    boards: list[RecordingBoard] = []
    monkeypatch.setattr(
        multistore.api,
        "StatusBoard",
        lambda *a, **k: boards.append(RecordingBoard(*a, **k)) or boards[-1],
    )
    report = MultiSourceDataStore(_config(tmp_path, ee_emulator)).generate()
    assert report["s2"].status is Status.COMPLETED, report["s2"].message
    assert ee_emulator.stats.exports == 3  # one task per image
    assert ee_emulator.stats.pixel_requests == 0  # everything came from the exported files
    # 100 x 70 px in files of 32 x 32, deleted once the cube was complete (keep_exports: false)
    assert ee_emulator.stats.deletes == 3 * 4 * 3 and ee_emulator.gcs["exports"] == {}

    cube = xr.open_zarr(tmp_path / "out" / "s2.zarr", mask_and_scale=False)
    grid = RequestGrid(GRID.crs_wkt, tuple(GRID.transform)[:6], GRID.width, GRID.height)
    for t, image in enumerate(["20240105A", "20240105B", "20240120"]):
        image = f"TEST/S2LIKE/{image}"
        expected = ee_emulator.catalog.render(image, ["B4"], grid)["B4"].filled(65535)
        np.testing.assert_array_equal(cube["B4"].isel(time=t).values, expected)
    assert (cube["B4"].values == 65535).any()  # masked pixels are the fill value, not 0

    # export progress reached the status table while the tasks ran
    progress = [r for r in boards[0].seen if r.message and "earthengine export" in r.message]
    assert progress and progress[-1].progress == 1.0
    assert progress[-1].message == "earthengine export TEST/S2LIKE: 3/3"
    assert any(r.progress is not None and r.progress < 1.0 for r in progress)


def test_gcs_export_is_reused_and_matches_direct_download(ee_emulator):
    store = EarthEngineDataStore(**store_params(ee_emulator))
    params = dict(
        temporal_resolution="monthly", reducer="mean", bands=["temp"], target_grid=SMALL.to_dict()
    )
    exported = store.open_data("TEST/FLOAT", **params, **_gcs(ee_emulator)).compute()
    direct = store.open_data("TEST/FLOAT", **params).compute()
    np.testing.assert_array_equal(exported.temp.values, direct.temp.values)
    assert np.isnan(exported.temp.values).any()
    assert ee_emulator.stats.exports == 2
    ee_emulator.reset_stats()
    store.open_data("TEST/FLOAT", **params, **_gcs(ee_emulator))
    assert ee_emulator.stats.exports == 0  # the files of the finished exports are reused


def test_interrupt_cancels_running_gcs_exports(ee_emulator):
    store = EarthEngineDataStore(**store_params(ee_emulator))
    ee_emulator.export_polls = 1000

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    store.export_progress = interrupt
    with pytest.raises(KeyboardInterrupt):
        store.open_data(
            "TEST/FLOAT",
            temporal_resolution="monthly",
            target_grid=SMALL.to_dict(),
            **_gcs(ee_emulator),
        )
    assert ee_emulator.stats.cancels == 2
    assert all(op.state == "CANCELLED" for op in ee_emulator.operations.values())
    assert "exports" not in ee_emulator.gcs


def test_drive_export_fails_naming_where_the_files_are(ee_emulator):
    store = EarthEngineDataStore(**store_params(ee_emulator))
    with pytest.raises(SourceOpenError) as info:
        store.open_data(
            "TEST/FLOAT",
            temporal_resolution="monthly",
            target_grid=SMALL.to_dict(),
            export_via="drive",
            export_prefix="my-folder",
            export_poll_s=0.01,
        )
    message = str(info.value)
    assert "Google Drive, folder 'my-folder'" in message and "TEST_FLOAT_" in message
    assert ee_emulator.stats.exports == 2
    assert len(ee_emulator.drive) == 2
    for path in ee_emulator.drive:  # each file the emulator wrote is named in the message
        folder, name = path.split("/")
        assert folder == "my-folder" and name.removesuffix(".tif") + "*.tif" in message


def test_drive_export_fails_the_dataset_in_the_pipeline(tmp_path, ee_emulator):
    export = {"export_via": "drive", "export_prefix": "ee-out", "export_poll_s": 0.01}
    report = MultiSourceDataStore(_config(tmp_path, ee_emulator, export)).generate()
    assert report["s2"].status is Status.FAILED
    assert "Google Drive, folder 'ee-out'" in report["s2"].message
    assert "TEST_S2LIKE_" in report["s2"].message
    assert ee_emulator.stats.exports == 3  # exported once, not retried
    assert not (tmp_path / "out" / "s2.zarr").exists()


def test_schema_accepts_file_exports_and_checks_their_params(ee_emulator):
    import jsonschema

    validator = jsonschema.Draft7Validator(open_params_schema().to_dict())
    for via in ("asset", "gcs", "drive"):
        assert validator.is_valid({"export_via": via})
    assert not validator.is_valid({"export_via": "ftp"})
    store = EarthEngineDataStore(**store_params(ee_emulator))
    with pytest.raises(ConfigError, match="export_bucket"):
        store.open_data("TEST/FLOAT", target_grid=SMALL.to_dict(), export_via="gcs")
    assert ee_emulator.stats.exports == 0


def test_gcs_export_keeps_per_band_fill_values(ee_emulator):
    # two band groups (different sentinels) in one GeoTIFF, read back in request order
    store = EarthEngineDataStore(**store_params(ee_emulator))
    params = dict(
        time_range=["2024-01-15", "2024-01-25"],
        bands=["B8", "B4"],
        fill_values={"B4": 1},
        target_grid=GRID.to_dict(),
    )
    exported = store.open_data("TEST/S2LIKE", **params, **_gcs(ee_emulator)).compute()
    direct = store.open_data("TEST/S2LIKE", **params).compute()
    for band, fill in (("B4", 1), ("B8", 65535)):
        np.testing.assert_array_equal(exported[band].values, direct[band].values)
        assert (exported[band].values == fill).any()
        assert exported[band].encoding["_FillValue"] == fill
