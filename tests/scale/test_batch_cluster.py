"""A SLURM cluster without SLURM: sbatch/squeue/scancel shims run job scripts here (issue 17.3).

dask-jobqueue writes the job script and calls ``sbatch <script>``; the shim runs the
script in its own session, so the real worker it starts connects to the scheduler and
builds the cube; ``scancel`` ends that session.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from multistore import MultiSourceDataStore
from tests.servers.earthengine import store_params
from tests.servers.ee_emulator import Emulator

pytestmark = pytest.mark.timeout(180)

SBATCH = """#!/bin/bash
# sbatch <script>: run the job script here, detached; answer like SLURM does.
set -e
id=$(( $(ls "$SHIM_STATE" | grep -c '\\.script$' || true) + 1000 ))
cp "${@: -1}" "$SHIM_STATE/$id.script"
setsid bash "$SHIM_STATE/$id.script" > "$SHIM_STATE/$id.log" 2>&1 < /dev/null &
echo $! > "$SHIM_STATE/$id.pid"
echo "Submitted batch job $id"
"""

SCANCEL = """#!/bin/bash
# scancel <id>...: end the job's session (the worker and its nanny).
for id in "$@"; do
  echo "$id" >> "$SHIM_STATE/cancelled"
  kill -- -"$(cat "$SHIM_STATE/$id.pid")" 2>/dev/null || true
done
"""

SQUEUE = """#!/bin/bash
# squeue: the jobs still running.
for f in "$SHIM_STATE"/*.pid; do
  [ -e "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && basename "$f" .pid
done
exit 0
"""


def install_shims(folder: Path) -> None:
    folder.mkdir()
    for name, text in (("sbatch", SBATCH), ("scancel", SCANCEL), ("squeue", SQUEUE)):
        path = folder / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)


def write_config(tmp_path: Path, emu: Emulator) -> str:
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
        "general": {
            "display": "none",
            "dask": {
                "cluster": "slurm",
                "cores": 2,
                "memory": "1GiB",
                "walltime": "00:30:00",
                "queue": "debug",
                "account": "proj42",
                "job_extra_directives": ["--constraint=cpu"],
            },
        },
    }
    path = tmp_path / "slurm.yml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_cube_built_by_slurm_jobs_through_the_shims(tmp_path, ee_offline, monkeypatch):
    state = tmp_path / "jobs"
    state.mkdir()
    install_shims(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SHIM_STATE", str(state))
    with Emulator() as emu:
        report = MultiSourceDataStore(write_config(tmp_path, emu)).generate()
        served = emu.stats.pixel_requests
    assert report.ok, [r.message for r in report.failed]
    assert served == 3 * 3 * 4  # every tile fetched by the job's worker

    script = (state / "1000.script").read_text()
    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    for expected in (
        "#SBATCH -p debug",
        "#SBATCH -A proj42",
        "#SBATCH -t 00:30:00",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --mem=1G",
        "#SBATCH --constraint=cpu",
    ):
        assert expected in directives, (expected, directives)
    assert "--nthreads 2 --memory-limit 1.00GiB" in script  # one worker per job
    assert (state / "cancelled").read_text().split() == ["1000"]  # the job ended with the run
    import xarray as xr

    cube = xr.open_zarr(tmp_path / "out" / "s2.zarr", mask_and_scale=False)
    assert cube["B4"].shape == (3, 70, 100)
