"""``multistore serve --demo`` as a user starts it: a process, the demo configs queued."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import xarray as xr

from .conftest import TOKEN, free_port

REPO = Path(__file__).resolve().parents[2]


def test_serve_demo_builds_the_demo_configs(tmp_path):
    shutil.copytree(
        REPO / "configs",
        tmp_path / "configs",
        ignore=shutil.ignore_patterns("demo_data", "demo_output"),
    )
    port = free_port()
    env = {**os.environ, "MULTISTORE_TOKEN": TOKEN, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen(
        [sys.executable, "-m", "multistore", "serve", "--demo", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        deadline = time.monotonic() + 300  # 12 s idle, 28 s on a loaded 2-core box
        jobs: list[dict] = []
        while time.monotonic() < deadline:
            assert server.poll() is None, server.stdout.read()
            try:
                jobs = httpx.get(f"{url}/api/jobs", headers=headers).json()["jobs"]
            except httpx.TransportError:
                jobs = []
            if len(jobs) == 2 and all(j["status"] in ("completed", "failed") for j in jobs):
                break
            time.sleep(0.5)
        assert sorted((j["name"], j["status"]) for j in jobs) == [
            ("demo-zenodo.yml", "completed"),
            ("demo.yml", "completed"),
        ]
        cubes = httpx.get(f"{url}/api/cubes", headers=headers).json()["cubes"]
        landscape = next(c for c in cubes if c["identifier"] == "landscape")
        remote = xr.open_zarr(f"{url}{landscape['cube']}", storage_options={"headers": headers})
        local = xr.open_zarr(tmp_path / "configs" / "demo_output" / "landscape.zarr")
        for name in local.data_vars:
            np.testing.assert_array_equal(remote[name].values, local[name].values)
    finally:
        server.terminate()
        server.wait(30)
