"""The writer: a generation killed mid-write is rebuilt, never skipped; Zarr v2 and v3 agree."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

from multistore import MultiSourceDataStore
from multistore.demo import data
from multistore.status import Status
from multistore.storage import CubeState

SLOW_HOOK = """
import time


def _nap(block):
    time.sleep(0.15)
    return block


def slow(ds):
    return ds.map(lambda v: v.map_blocks(_nap) if v.chunks else v)
"""


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_interrupted_generation_is_rebuilt_not_skipped(project, how):
    (project.root / "hooks" / "slow.py").write_text(SLOW_HOOK)
    config = project.base_config()
    config["grid_mappings"][0]["tile_size"] = 32
    config["general"]["dask"] = {"scheduler": "threads", "num_workers": 2}
    config["datasets"].append(
        {
            "identifier": "slow_cube",
            "grid_mapping": "gm",
            "variables": [
                {"identifier": "land_cover", "store": "local", "data_id": data.LANDCOVER}
            ],
            "custom_processing": {"module_path": "hooks/slow.py", "function_name": "slow"},
        }
    )
    path = project(config)
    proc = subprocess.Popen(
        [sys.executable, "-m", "multistore", "generate", str(path), "--log-format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    killed = False
    for line in proc.stdout:
        event = json.loads(line)
        if event.get("status") == "writing" and (event.get("progress") or 0) >= 0.2:
            proc.send_signal(getattr(signal, how))
            killed = True
            break
        assert time.monotonic() < deadline, "generation never reached the write phase"
    returncode = proc.wait(timeout=30)
    assert killed, "the run finished before it could be interrupted"
    if how == "SIGINT":  # Ctrl-C: a prompt exit with the conventional code, no traceback
        assert returncode == 130
        assert "Traceback" not in proc.stderr.read()

    msds = MultiSourceDataStore(path)
    assert (project.root / "out" / "slow_cube.zarr").exists()  # partial bytes are there...
    assert [s.state for s in msds.status()] == [CubeState.INCOMPLETE]  # ...but not counted as done

    report = msds.generate()
    assert report["slow_cube"].status is Status.COMPLETED, report["slow_cube"].message
    cube = xr.open_zarr(project.root / "out" / "slow_cube.zarr", mask_and_scale=False)
    assert cube["land_cover"].dtype == np.uint8
    assert int((cube["land_cover"].values != 255).sum()) > 1000
    assert [s.state for s in MultiSourceDataStore(path).status()] == [CubeState.COMPLETE]


def test_zarr_v3_cubes_hold_the_same_values_as_v2(project):
    """Zarr v3 goes through zarr-python, v2 through our chunk writer: same cubes either way."""
    cubes = {}
    for zarr_format in (2, 3):
        config = project.base_config()
        config["data_stores"][0]["store_params"]["root"] = f"out{zarr_format}"
        config["general"]["zarr_format"] = zarr_format
        for name, data_id in (("classes", data.LANDCOVER), ("temperature", data.TEMPERATURE)):
            config["datasets"].append(
                {"identifier": name, "store": "local", "data_id": data_id, "grid_mapping": "gm"}
            )
        report = MultiSourceDataStore(project(config, f"v{zarr_format}.yml")).generate()
        assert report.ok, [(r.identifier, r.message) for r in report.results]
        for name in ("classes", "temperature"):
            path = project.root / f"out{zarr_format}" / f"{name}.zarr"
            assert (path / ("zarr.json" if zarr_format == 3 else ".zmetadata")).exists()
            cubes[zarr_format, name] = xr.open_zarr(path, mask_and_scale=False).load()
    for name in ("classes", "temperature"):
        for f in (2, 3):  # the config's name and fingerprint differ by design
            del cubes[f, name].attrs["multistore_config"]
            del cubes[f, name].attrs["multistore_config_fingerprint"]
        xr.testing.assert_identical(cubes[2, name], cubes[3, name])
    assert cubes[3, "classes"]["band_1"].dtype == np.uint8
