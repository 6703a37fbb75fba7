"""Progress of tiles computed in worker processes reaches the status table (issue 17.5)."""

from __future__ import annotations

import json

import pytest
import yaml

from multistore import MultiSourceDataStore
from tests.servers.earthengine import store_params
from tests.servers.ee_emulator import Emulator

pytestmark = pytest.mark.timeout(180)


def test_writing_progress_from_worker_processes_reaches_the_json_status(
    tmp_path, ee_offline, capsys
):
    config = {
        "data_stores": [
            {"identifier": "storage", "store_id": "file", "store_params": {"root": "out"}},
            {"identifier": "gee", "store_id": "earthengine", "store_params": {}},
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
        "general": {"dask": {"scheduler": "distributed", "n_workers": 2, "threads_per_worker": 1}},
    }
    # 105 tiles of 30 ms each on 2 single-threaded workers: about 1.6 s of writing
    with Emulator(latency_s=0.03) as emu:
        config["data_stores"][1]["store_params"] = store_params(emu)
        path = tmp_path / "cube.yml"
        path.write_text(yaml.safe_dump(config))
        report = MultiSourceDataStore(str(path)).generate(display="json")
    assert report.ok, [r.message for r in report.failed]
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    writing = [
        r["progress"]
        for r in records
        if r["event"] == "status" and r["dataset"] == "s2" and r["status"] == "writing"
    ]
    partial = [p for p in writing if p is not None and 0 < p < 1]
    assert len(partial) >= 3, writing  # the share moved while workers computed
    assert partial == sorted(partial)
    assert writing[-1] == 1.0
