"""Issue 14.5: a cube write killed with SIGKILL resumes chunk by chunk.

``multistore generate`` runs as a child process, killed at several points of a cube
with 352 chunks; the rerun must compute only chunks not journalled before the kill,
and the final cube must be byte-identical to an uninterrupted build.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from multistore import MultiSourceDataStore
from multistore.demo import data
from multistore.status import Status

SLOW_HOOK = '''
import os
import time
from collections.abc import Callable
from pathlib import Path

CALLS = str(Path(__file__).with_name("calls.log"))


def _pause(block):
    if block.size == 0:  # dask probing the output type, not a block
        return block
    time.sleep(0.02)
    fd = os.open(CALLS, os.O_WRONLY | os.O_APPEND | os.O_CREAT)  # one byte per computed block
    os.write(fd, b".")
    os.close(fd)
    return block


def slow(ds):
    """Every block takes 20 ms longer: a write long enough to be killed part-way."""
    out = ds.copy()
    for name, var in ds.data_vars.items():
        if var.chunks:
            out[name] = var.copy(data=var.data.map_blocks(_pause, dtype=var.dtype))
    return out
'''

WORKERS = 2


def config(project, zarr_format: int = 2) -> dict:
    cfg = project.base_config()
    cfg["grid_mappings"][0]["tile_size"] = 16  # 16 x 11 chunks per variable
    cfg["general"]["dask"] = {"scheduler": "threads", "num_workers": WORKERS}
    cfg["general"]["zarr_format"] = zarr_format
    cfg["datasets"].append(
        {
            "identifier": "landscape",
            "grid_mapping": "gm",
            "custom_processing": {"module_path": "hooks/slow.py", "function_name": "slow"},
            "variables": [
                {"identifier": "land_cover", "store": "local", "data_id": data.LANDCOVER},
                {"identifier": "elevation", "store": "bucket", "data_id": data.ELEVATION},
            ],
        }
    )
    return cfg


def journal_entries(path: Path) -> list[dict]:
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines()[1:]:
        with contextlib.suppress(ValueError):  # a line torn by the kill
            entries.append(json.loads(line))
    return entries


def chunk_files(cube: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(cube)): p.read_bytes()
        for p in cube.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.name != "zarr.json"
    }


def kill_when(
    cmd: list[str], done: Callable[[], int], at_least: float, env: dict, poll_s: float = 0.005
) -> None:
    """Run ``cmd`` and SIGKILL it once ``done()`` (chunks written so far) reaches ``at_least``."""
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while done() < at_least:
            if child.poll() is not None:
                pytest.fail(f"generate ended before the kill: {child.stderr.read().decode()}")
            if time.monotonic() > deadline:
                pytest.fail("the write never reached the kill point")
            time.sleep(poll_s)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
        child.stderr.close()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_killed_write_resumes_only_missing_chunks_and_is_byte_identical(project, zarr_format):
    (project.root / "hooks" / "slow.py").write_text(SLOW_HOOK)
    path = project(config(project, zarr_format))
    journal = project.root / "out" / ".multistore" / "landscape.zarr.chunks.jsonl"
    cube = project.root / "out" / "landscape.zarr"
    # the reference: an uninterrupted build of the same config, then a clean slate
    assert MultiSourceDataStore(path).generate()["landscape"].status is Status.COMPLETED
    expected = chunk_files(cube)
    metadata_files = (
        (".zmetadata", ".zattrs", "land_cover/.zarray")
        if zarr_format == 2
        else ("zarr.json", "land_cover/zarr.json")
    )
    metadata = {m: (cube / m).read_bytes() for m in metadata_files}
    total = len(journal_entries(journal))
    assert total == 2 * 16 * 11  # every chunk journalled (stored or all-fill)
    shutil.rmtree(project.root / "out")
    calls = project.root / "hooks" / "calls.log"
    full_build_calls = calls.stat().st_size
    calls.unlink()

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    cmd = [sys.executable, "-m", "multistore", "generate", str(path)]
    journalled: list[str] = []
    for share in (0.25, 0.6):
        kill_when(cmd, lambda: len(journal_entries(journal)), int(share * total), env)
        entries = journal_entries(journal)
        keys = [e["k"] for e in entries]
        assert len(keys) == len(set(keys)), "a journalled chunk was computed again"
        # the chunks computed before the kill but not journalled: at most the in-flight ones
        # (the lat/lon coordinates are written with the metadata, before any task runs)
        stored = {k for k in chunk_files(cube) if k.startswith(("land_cover/", "elevation/"))}
        unjournalled = stored - {e["k"] for e in entries if not e.get("empty")}
        assert len(unjournalled) <= WORKERS, unjournalled
        assert keys[: len(journalled)] == journalled  # appended to, never restarted
        assert len(keys) > len(journalled)
        journalled = keys

    result = MultiSourceDataStore(path).generate()["landscape"]
    assert result.status is Status.COMPLETED, result.message
    keys = [e["k"] for e in journal_entries(journal)]
    # each chunk computed exactly once over all runs (rerun computed only the remainder)
    assert len(keys) == total and len(set(keys)) == total
    assert keys[: len(journalled)] == journalled
    # pixels computed over the three runs: one full build plus at most the in-flight
    # blocks of each kill (two kills, WORKERS threads each)
    assert calls.stat().st_size <= full_build_calls + 2 * WORKERS, calls.stat().st_size
    assert chunk_files(cube) == expected
    assert {m: (cube / m).read_bytes() for m in metadata} == metadata


def s3_objects(fs, root: str) -> dict[str, bytes]:
    fs.invalidate_cache()
    return {p[len(root) + 1 :]: fs.cat_file(p) for p in fs.find(root)}


def chunk_objects(objects: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in objects.items() if not k.rpartition("/")[2].startswith(".")}


@pytest.mark.timeout(600)
def test_killed_write_to_s3_resumes_from_the_stored_objects(project, s3_bucket, s3_storage_options):
    """S3 cannot append a journal, but a PUT is atomic: stored chunk objects are kept."""
    from multistore.demo.servers import s3_filesystem

    (project.root / "hooks" / "slow.py").write_text(SLOW_HOOK)
    cfg = config(project)
    cfg["data_stores"][0] = {
        "identifier": "storage",
        "store_id": "s3",
        "store_params": {"root": f"{s3_bucket}/out", "storage_options": s3_storage_options},
    }
    path = project(cfg)
    fs = s3_filesystem(s3_storage_options["client_kwargs"]["endpoint_url"])
    cube = f"{s3_bucket}/out/landscape.zarr"
    assert MultiSourceDataStore(path).generate()["landscape"].status is Status.COMPLETED
    expected = s3_objects(fs, cube)
    stored_total = len(chunk_objects(expected))
    fs.rm(f"{s3_bucket}/out", recursive=True)
    calls = project.root / "hooks" / "calls.log"
    full_build_calls = calls.stat().st_size
    assert full_build_calls == 2 * 16 * 11  # one hook call per chunk of each variable
    calls.unlink()

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    cmd = [sys.executable, "-m", "multistore", "generate", str(path)]

    def stored() -> int:
        """Chunk objects the tasks have written so far (lat/lon come with the metadata)."""
        fs.invalidate_cache()
        data = (f"{cube}/land_cover/", f"{cube}/elevation/")
        return sum(
            p.startswith(data) and not p.rpartition("/")[2].startswith(".") for p in fs.find(cube)
        )

    kill_when(cmd, stored, 0.4 * stored_total, env, poll_s=0.05)
    kept = stored()
    assert 0 < kept < stored_total
    before = calls.stat().st_size

    result = MultiSourceDataStore(path).generate()["landscape"]
    assert result.status is Status.COMPLETED, result.message
    rerun_calls = calls.stat().st_size - before
    # the rerun computes only the chunks that had no object yet (all-fill ones included),
    # give or take the few blocks dask recomputes when only some chunks are left (as above)
    assert rerun_calls <= full_build_calls - kept + 2 * WORKERS, (rerun_calls, kept)
    final = s3_objects(fs, cube)
    assert chunk_objects(final) == chunk_objects(expected)
    assert final[".zmetadata"] == expected[".zmetadata"]
