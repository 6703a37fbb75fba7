"""One writer per cube (issue 12.7): leases on local disks and S3, and a real two-process race."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from xcube.core.store import new_data_store

from multistore import MultiSourceDataStore
from multistore.demo import data
from multistore.grid import TargetGrid
from multistore.locks import CubeLock, CubeLockError, Lease, lock_path, read_lock
from multistore.storage import StorageTarget

REPO = Path(__file__).resolve().parents[1]


def local_target(tmp_path: Path) -> StorageTarget:
    return StorageTarget(new_data_store("file", root=str(tmp_path / "out")), "cube.zarr")


def assert_held_by_us(target: StorageTarget) -> None:
    lease = read_lock(target)
    assert lease is not None and lease.pid == os.getpid()
    with pytest.raises(CubeLockError, match=f"process {os.getpid()} on"):
        CubeLock(target, poll_s=0.01).acquire(wait_s=0)


def test_second_local_lock_waits_and_names_the_holder(tmp_path):
    first, second = CubeLock(local_target(tmp_path)), CubeLock(local_target(tmp_path), poll_s=0.05)
    first.acquire()
    seen: list[Lease | None] = []
    with pytest.raises(CubeLockError, match=rf"process {os.getpid()} on .*gave up"):
        second.acquire(on_wait=lambda holder, path: seen.append(holder), wait_s=0.3)
    assert seen and seen[0] is not None and seen[0].pid == os.getpid()
    assert read_lock(local_target(tmp_path)) is not None
    first.release()
    assert not Path(lock_path(local_target(tmp_path))).exists()
    second.acquire(wait_s=0)
    second.release()
    assert read_lock(local_target(tmp_path)) is None


def test_lease_of_a_killed_process_is_taken_over_at_once(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys, time
        from xcube.core.store import new_data_store
        from multistore.locks import CubeLock
        from multistore.storage import StorageTarget
        lock = CubeLock(StorageTarget(new_data_store("file", root={str(tmp_path / "out")!r}),
                                      "cube.zarr"))
        lock.acquire()
        print("held", flush=True)
        time.sleep(600)
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        waiting = CubeLock(local_target(tmp_path), poll_s=0.05)
        with pytest.raises(CubeLockError, match=f"process {holder.pid} "):
            waiting.acquire(wait_s=0.2)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        lease = json.loads(Path(lock_path(local_target(tmp_path))).read_text())
        assert lease["pid"] == holder.pid  # the lease file survived the kill
        start = time.monotonic()
        waiting.acquire(wait_s=30)
        assert time.monotonic() - start < 20  # not the 120 s expiry: the flock died with it
        assert_held_by_us(local_target(tmp_path))
        waiting.release()
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture
def s3_target(s3_bucket, s3_storage_options):
    def make() -> StorageTarget:
        store = new_data_store(
            "s3",
            root=s3_bucket,
            storage_options={**s3_storage_options, "skip_instance_cache": True},
        )
        return StorageTarget(store, "cube.zarr")

    return make


def test_s3_lease_is_exclusive_renewed_and_released(s3_target):
    # The TTL leaves room for an S3 request retried after a reset connection (a renewal
    # every TTL/3, so two renewals may be late before the lease expires).
    first = CubeLock(s3_target(), ttl_s=4.5)
    second = CubeLock(s3_target(), ttl_s=4.5, poll_s=0.05)
    first.acquire()
    expires = read_lock(s3_target()).expires
    with pytest.raises(CubeLockError, match="being written by process"):
        second.acquire(wait_s=5.5)  # longer than the TTL: renewal keeps the lease live
    assert read_lock(s3_target()).expires > expires
    first.release()
    assert read_lock(s3_target()) is None
    second.acquire(wait_s=0)
    second.release()


def test_s3_stale_leases_are_taken_over(s3_target):
    target = s3_target()
    now = time.time()
    expired = Lease("other:1:x", "elsewhere", 1, now - 300, now - 10)
    target.fs.pipe_file(lock_path(target), expired.to_bytes())
    lock = CubeLock(s3_target(), poll_s=0.05)
    lock.acquire(wait_s=2)
    assert_held_by_us(s3_target())
    lock.release()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    import socket

    mine = Lease("x", socket.gethostname(), int(dead.stdout), now, now + 3600)  # a dead pid here
    target.fs.pipe_file(lock_path(target), mine.to_bytes())
    lock.acquire(wait_s=2)
    assert_held_by_us(s3_target())
    lock.release()
    live = Lease("y", "elsewhere", 1, now, now + 3600)
    target.fs.pipe_file(lock_path(target), live.to_bytes())
    with pytest.raises(CubeLockError, match="process 1 on elsewhere"):
        lock.acquire(wait_s=0.2)


# -- two real `multistore generate` processes on one storage ---------------------------------

RACE_HOOKS = textwrap.dedent(
    """
    import os
    import time
    from pathlib import Path


    def hold(ds):
        # Tell the test this run holds the cube's lock, then wait for its go.
        folder = Path(os.environ["RACE_DIR"])
        (folder / f"started-{os.getpid()}").touch()
        while not (folder / "go").exists():
            time.sleep(0.05)
        return ds
    """
)


def race_config(project, variable: str) -> dict:
    config = project.base_config()
    config["datasets"].append(
        {
            "identifier": "landscape",
            "grid_mapping": "gm",
            "variables": [
                {
                    "identifier": variable,
                    "store": "local",
                    "data_id": data.LANDCOVER,
                    "spatial_resample_params": {"method": "nearest"},
                    "custom_processing": {"module_path": "hooks/race.py", "function_name": "hold"},
                }
            ],
        }
    )
    return config


def gdal_landcover() -> np.ndarray:
    from tests.test_generate import warp_landcover

    return warp_landcover(TargetGrid.from_bbox([11.2, 47.6, 12.2, 48.3], "EPSG:4326", 0.004, 64))


def wait_for(condition, what: str, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_two_generate_processes_on_one_storage(project, tmp_path):
    race = tmp_path / "race"
    race.mkdir()
    (project.root / "hooks" / "race.py").write_text(RACE_HOOKS)
    one = project(race_config(project, "land_cover"), "one.yml")
    two = project(race_config(project, "cover"), "two.yml")
    variable_of = {
        MultiSourceDataStore(path).plan().cube("landscape").fingerprint: var
        for path, var in ((one, "land_cover"), (two, "cover"))
    }
    expected = gdal_landcover()
    out = project.root / "out"
    marker_file = out / ".multistore" / "landscape.zarr.json"
    env = {**os.environ, "RACE_DIR": str(race), "PYTHONPATH": str(REPO)}

    def start(config: Path, name: str) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"{name}.log"
        command = [sys.executable, "-m", "multistore", "generate", str(config)]
        with open(log, "w") as f:
            proc = subprocess.Popen(
                [*command, "--log-format", "log"], stdout=f, stderr=subprocess.STDOUT, env=env
            )
        return proc, log

    checked = 0

    def sample() -> None:
        """If the marker says complete before and after reading, the data must be that build's."""
        nonlocal checked
        try:
            before = marker_file.read_bytes()
        except FileNotFoundError:
            return
        try:
            cube = xr.open_zarr(out / "landscape.zarr", mask_and_scale=False, consolidated=True)
            values = {name: cube[name].values for name in cube.data_vars}
        except (FileNotFoundError, KeyError, ValueError, OSError) as e:
            values = e
        try:
            after = marker_file.read_bytes()
        except FileNotFoundError:
            return
        if before != after:
            return
        variable = variable_of[json.loads(before)["fingerprint"]]
        assert not isinstance(values, Exception), f"complete per marker, unreadable: {values!r}"
        assert list(values) == [variable]
        assert np.mean(values[variable] == expected) >= 0.99
        checked += 1

    a, a_log = start(one, "a")
    b = None
    try:
        wait_for(lambda: (race / f"started-{a.pid}").exists() or a.poll() is not None, "run A")
        assert a.poll() is None, a_log.read_text()
        b, b_log = start(two, "b")
        wait_for(
            lambda: "is being written by" in b_log.read_text() or b.poll() is not None, "B waits"
        )
        assert b.poll() is None, b_log.read_text()
        assert f"process {a.pid} on" in b_log.read_text()
        assert not (race / f"started-{b.pid}").exists()  # B did not start building
        (row,) = MultiSourceDataStore(two).status()
        assert row.writing is not None and row.writing.startswith(f"process {a.pid} on")
        assert str(row.state) == "missing"
        (race / "go").touch()
        while a.poll() is None or b.poll() is None:
            sample()
            time.sleep(0.02)
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    logs = a_log.read_text() + b_log.read_text()
    assert (a.returncode, b.returncode) == (0, 0), logs
    assert "Traceback" not in logs and "FileNotFoundError" not in logs, logs
    sample()  # the final state: B's cube, complete and equal to GDAL's warp
    assert json.loads(marker_file.read_bytes())["variables"] == ["cover"]
    assert checked >= 1
    assert not list((out / ".multistore" / "locks").glob("*.lock"))
