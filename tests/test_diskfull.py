"""Full disks and read-only storage (issue 12.10): fail at once, clean up, say what is needed."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from fsspec.implementations.local import LocalFileSystem

from multistore import MultiSourceDataStore
from multistore.demo import data
from multistore.errors import WriteError
from multistore.grid import TargetGrid
from multistore.retry import is_transient
from multistore.status import Status

REPO = Path(__file__).resolve().parents[1]


class FillingDisk(LocalFileSystem):
    """A real local filesystem whose disk is full after ``budget`` bytes of chunk writes.

    The write that crosses the budget leaves a truncated file, as a real full disk does.
    """

    cachable = False

    def __init__(self, budget: int, error: int = errno.ENOSPC, **kwargs):
        super().__init__(**kwargs)
        self.budget = budget
        self.error = error
        self.written = 0
        self.refused = 0

    def pipe_file(self, path, value, mode="overwrite", **kwargs):
        room = self.budget - self.written
        if len(value) > room:
            self.refused += 1
            if room > 0 and self.error == errno.ENOSPC:
                super().pipe_file(path, value[:room], mode=mode, **kwargs)
                self.written += room
            raise OSError(self.error, os.strerror(self.error), path)
        self.written += len(value)
        return super().pipe_file(path, value, mode=mode, **kwargs)


def land_cover_config(project) -> dict:
    config = project.base_config()
    config["datasets"].append(
        {
            "identifier": "landscape",
            "grid_mapping": "gm",
            "variables": [
                {"identifier": "land_cover", "store": "local", "data_id": data.LANDCOVER}
            ],
        }
    )
    config["general"]["retries"] = {"max_retries": 3, "backoff_s": 2.0}
    return config


def generate_on(project, fs: LocalFileSystem):
    msds = MultiSourceDataStore(project(land_cover_config(project)))
    msds.stores.storage._fs = fs  # the storage store's filesystem (xcube's FsDataStore)
    return msds.generate()["landscape"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EFBIG])
def test_storage_errors_are_permanent(code):
    error = OSError(code, os.strerror(code))
    assert not is_transient(error)
    wrapped = WriteError("writing x failed")
    wrapped.__cause__ = error
    assert not is_transient(wrapped)
    assert is_transient(OSError("a plain I/O hiccup"))


def test_full_disk_fails_once_removes_the_partial_cube_and_says_what_is_needed(project, caplog):
    fs = FillingDisk(budget=3000)
    with caplog.at_level(logging.WARNING, logger="multistore"):
        result = generate_on(project, fs)
    assert result.status is Status.FAILED
    grid = TargetGrid.from_bbox([11.2, 47.6, 12.2, 48.3], "EPSG:4326", 0.004, 64)
    needed = grid.width * grid.height * np.dtype("uint8").itemsize  # raw uint8 land cover
    assert "no space to write at" in result.message, result.message
    assert (
        f"({needed} bytes) needed" in result.message or f"{needed} bytes needed" in result.message
    )
    assert " free" in result.message and "partial cube was removed" in result.message
    assert fs.refused >= 1
    assert not [r for r in caplog.records if "retry" in r.getMessage()]  # no 2 s backoffs
    out = project.root / "out"
    assert not (out / "landscape.zarr").exists()
    assert not (out / ".multistore" / "landscape.zarr.json").exists()


def test_read_only_storage_is_not_retried(project, caplog):
    fs = FillingDisk(budget=0, error=errno.EROFS)
    with caplog.at_level(logging.WARNING, logger="multistore"):
        result = generate_on(project, fs)
    assert result.status is Status.FAILED
    assert "read-only or not writable" in result.message, result.message
    assert fs.refused >= 1
    assert not [r for r in caplog.records if "retry" in r.getMessage()]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_chmod_read_only_storage(project, caplog):
    path = project(land_cover_config(project))
    out = project.root / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        with caplog.at_level(logging.WARNING, logger="multistore"):
            result = MultiSourceDataStore(path).generate()["landscape"]
    finally:
        out.chmod(0o755)
    assert result.status is Status.FAILED
    assert not [r for r in caplog.records if "retry" in r.getMessage()]


def test_download_hitting_a_file_size_limit_fails_at_once_and_resumes(zenodo, tmp_path):
    """RLIMIT_FSIZE in a child process: writes past the limit fail with EFBIG, like a full disk."""
    rid = "4242"
    body = np.random.default_rng(0).integers(0, 256, 1_000_000, dtype=np.uint8).tobytes()
    zenodo.add_record(rid, {"big.bin": body})
    cache = tmp_path / "cache"
    code = textwrap.dedent(
        f"""
        import resource, signal
        from xcube.core.store import new_data_store
        import multistore.stores.zenodo
        store = new_data_store("zenodo", root="{rid}", base_url="{zenodo.base_url}",
                               cache_store_params={{"root": "{cache}"}}, max_retries=3,
                               backoff_s=1.0, range_split_bytes=None)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
        try:
            store.preload_data("big.bin")
        except Exception as e:
            print(type(e).__name__, e)
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    lines = run.stdout.strip().splitlines()
    assert lines and lines[0].startswith("PreloadError"), run.stdout + run.stderr
    assert os.strerror(errno.EFBIG) in lines[0]
    assert "(700000 bytes) needed" in lines[0]
    assert "partial file (300000 bytes) is kept" in lines[0]
    gets = [r for r in zenodo.requests if r.path == f"/records/{rid}/files/big.bin"]
    assert len([g for g in gets if g.method == "GET"]) == 1  # not retried
    (part,) = (cache / ".multistore" / "staging" / "partial").iterdir()
    assert part.read_bytes() == body[:300_000]
    from xcube.core.store import new_data_store

    store = new_data_store(
        "zenodo", root=rid, base_url=zenodo.base_url, cache_store_params={"root": str(cache)}
    )
    store.preload_data("big.bin")
    gets = [r for r in zenodo.requests if r.path == f"/records/{rid}/files/big.bin"]
    assert [g.range for g in gets if g.method == "GET"][-1] == "bytes=300000-"
    assert (cache / "big.bin").read_bytes() == body


def test_unpacking_onto_a_full_disk_says_so_and_leaves_nothing(tmp_path):
    import zipfile

    archive = tmp_path / "big.zip"
    body = np.random.default_rng(1).integers(0, 256, 1_000_000, dtype=np.uint8).tobytes()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("big.bin", body)
    cache = tmp_path / "cache"
    cache.mkdir()
    code = textwrap.dedent(
        f"""
        import resource, signal
        from multistore.preload.archive import unpack_archive
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
        try:
            unpack_archive({str(archive)!r}, {str(cache / "big")!r})
        except Exception as e:
            print(type(e).__name__, e)
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert run.stdout.startswith("PreloadError big.zip: unpacking failed: no space to write at")
    assert os.strerror(errno.EFBIG) in run.stdout, run.stdout + run.stderr
    assert list(cache.iterdir()) == []  # the staging folder was removed
