"""A run killed between the cube's last chunk and its quick-look: the rerun draws the PNG."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import numpy as np
from PIL import Image

from multistore.demo import data

# Fault injection: the process dies (SIGKILL) the moment it would draw the quick-look,
# i.e. after the cube's last chunk and its completion marker were written.
KILLED_BEFORE_QUICKLOOK = textwrap.dedent(
    """
    import os, signal, sys
    import multistore.generate

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    multistore.generate.write_quicklook = die
    from multistore import MultiSourceDataStore

    MultiSourceDataStore(sys.argv[1]).generate(display="none")
    """
)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "multistore", *args], capture_output=True, text=True, timeout=300
    )


def test_rerun_draws_the_missing_quicklook_of_a_complete_cube(project):
    config = project.base_config()
    config["general"]["quicklook"] = True
    config["datasets"].append(
        {"identifier": "lc", "store": "local", "data_id": data.LANDCOVER, "grid_mapping": "gm"}
    )
    path = project(config)
    out = project.root / "out"

    killed = subprocess.run(
        [sys.executable, "-c", KILLED_BEFORE_QUICKLOOK, str(path)], capture_output=True, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (out / "lc.zarr").exists() and not (out / "lc.png").exists()
    status = cli("status", str(path))
    assert "complete" in status.stdout, status.stdout + status.stderr

    rerun = cli("generate", str(path), "--log-format", "json")
    assert rerun.returncode == 0, rerun.stderr
    result = json.loads(rerun.stdout.splitlines()[-1])["results"][0]
    assert result["status"] == "skipped"  # the cube is not rebuilt ...
    assert "missing quick-look drawn" in result["message"]
    with Image.open(out / "lc.png") as png:  # ... and its quick-look now exists
        assert png.format == "PNG" and png.size == (round(4.2 * 90), round(3.6 * 90))
        assert len(np.unique(np.asarray(png.convert("RGB")).reshape(-1, 3), axis=0)) > 20
    assert not list(out.glob("*.part"))

    again = cli("generate", str(path), "--log-format", "json")
    result = json.loads(again.stdout.splitlines()[-1])["results"][0]
    assert result["status"] == "skipped" and "quick-look" not in result["message"]
