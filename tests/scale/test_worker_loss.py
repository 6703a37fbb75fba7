"""A worker process killed mid-run: the run completes and the cube is byte-identical (issue 17.2)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml
from distributed import LocalCluster

from multistore import MultiSourceDataStore
from tests.servers.earthengine import store_params
from tests.servers.ee_emulator import Emulator

pytestmark = pytest.mark.timeout(180)


def write_config(tmp_path: Path, emu: Emulator, root: str, address: str) -> str:
    config = {
        "data_stores": [
            {"identifier": "storage", "store_id": "file", "store_params": {"root": "out"}},
            {"identifier": "gee", "store_id": "earthengine", "store_params": store_params(emu)},
        ],
        "grid_mappings": [
            {
                "identifier": "gm",
                "crs": "EPSG:4326",
                "bbox": [10.0005, 45.0005, 10.1005, 45.0705],
                "spatial_res": 0.001,
                "tile_size": 32,
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
        "general": {"display": "none", "dask": {"address": address}},
    }
    # The same file name for both runs: the cube records it (multistore_config).
    (tmp_path / root).mkdir()
    path = tmp_path / root / "cube.yml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def files(root: Path) -> dict[str, bytes]:
    """Every file of a cube (chunks and metadata), by relative path."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def kill_a_busy_worker(cluster: LocalCluster, emu: Emulator, killed: list[int]) -> None:
    """SIGKILL the process of a worker that is running tiles, once some tiles are fetched."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if emu.stats.pixel_requests >= 6:
            busy = [ws for ws in list(cluster.scheduler.workers.values()) if ws.processing]
            if busy:
                os.kill(busy[0].pid, signal.SIGKILL)
                killed.append(busy[0].pid)
                return
        time.sleep(0.005)


def test_run_survives_a_killed_worker_with_an_identical_cube(tmp_path, ee_offline):
    with (
        # slow enough tiles that the killer thread finds a busy worker even on a loaded box
        Emulator(latency_s=0.3) as emu,
        LocalCluster(
            n_workers=2,
            threads_per_worker=2,
            processes=True,
            memory_limit="1GiB",
            dashboard_address=None,
        ) as cluster,
    ):
        address = cluster.scheduler_address
        calm = MultiSourceDataStore(write_config(tmp_path, emu, "calm", address)).generate()
        assert calm.ok, [r.message for r in calm.failed]

        killed: list[int] = []
        killer = threading.Thread(target=kill_a_busy_worker, args=(cluster, emu, killed))
        emu.reset_stats()
        killer.start()
        disturbed = MultiSourceDataStore(write_config(tmp_path, emu, "disturbed", address))
        report = disturbed.generate()
        killer.join()
    assert killed, "no worker was killed while tiles were running"
    assert report.ok, [r.message for r in report.failed]
    calm_files = files(tmp_path / "calm" / "out" / "s2.zarr")
    assert len(calm_files) > 36  # 3 time steps x 12 tiles, plus metadata
    assert files(tmp_path / "disturbed" / "out" / "s2.zarr") == calm_files
