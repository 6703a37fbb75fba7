"""Benchmark (issue 14): lock resolution, local hashing, resume after a kill.

Usage: python benchmarks/lock_benchmark.py [--files 1000] [--items 10000] [--hash-gb 1]
       [--skip-resume]

Work files go to benchmarks/_work/lock/ (git-ignored). Figures are printed;
docs/performance.md records a run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from multistore import MultiSourceDataStore
from multistore.demo import data
from multistore.lock import HashCache, path_identity

WORK = Path(__file__).parent / "_work" / "lock"


def local_files(n: int) -> None:
    root = WORK / f"files-{n}"
    shutil.rmtree(root, ignore_errors=True)
    (root / "data").mkdir(parents=True)
    payload = os.urandom(64 * 1024)
    for i in range(n):
        (root / "data" / f"f{i:05d}.tif").write_bytes(payload + i.to_bytes(4, "little"))
    config = {
        "data_stores": [
            {"identifier": "storage", "store_id": "file", "store_params": {"root": "out"}},
            {"identifier": "local", "store_id": "file", "store_params": {"root": "data"}},
        ],
        "datasets": [
            {"identifier": f"d{i:05d}", "store": "local", "data_id": f"f{i:05d}.tif"}
            for i in range(n)
        ],
        "general": {"display": "none"},
    }
    path = root / "config.yml"
    path.write_text(yaml.safe_dump(config))
    for label in ("cold (hashing)", "warm (hash cache)"):
        msds = MultiSourceDataStore(path)
        t0 = time.perf_counter()
        msds.lock()
        print(f"lock, {n} local files of 64 KB, {label}: {time.perf_counter() - t0:.2f} s")


def stac_items(n: int) -> None:
    from multistore.stores.stac import StacDataStore
    from multistore.stores.stac.index import build_index

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test servers (tests/)
    from tests.servers.stac_catalog import make_synthetic_catalog

    root = WORK / f"stac-{n}"
    index = root / "index.parquet"
    if not index.exists():
        shutil.rmtree(root, ignore_errors=True)
        catalog = make_synthetic_catalog(root / "catalog", n, seed=1)
        build_index(str(catalog), index)
    store = StacDataStore(str(root / "catalog" / "catalog.json"), index=str(index))
    t0 = time.perf_counter()
    identity = store.source_identity(
        "synthetic", bbox=[-10.0, 35.0, 30.0, 60.0], collections=["synthetic"]
    )
    dt = time.perf_counter() - t0
    items = identity["content"]["items"]
    print(f"STAC identity of {len(items)} items from an index: {dt:.2f} s")


def hashing(gb: float) -> None:
    path = WORK / "big.bin"
    size = int(gb * 1024**3)
    if not path.exists() or path.stat().st_size != size:
        block = os.urandom(16 * 1024**2)
        with open(path, "wb") as f:
            for _ in range(size // len(block)):
                f.write(block)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    path_identity(_LocalFs(), str(path), HashCache(None))
    dt = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"sha256 of a {gb:g} GB local file: {dt:.1f} s ({gb * 1024 / dt:.0f} MB/s), "
        f"peak RSS grew by {(rss1 - rss0) / 1024:.1f} MB"
    )


class _LocalFs:
    protocol = ("file", "local")

    def info(self, path: str) -> dict:
        return {"type": "file", "size": os.path.getsize(path)}


SLOW_HOOK = """
import time


def _pause(block):
    time.sleep(0.04)
    return block


def slow(ds):
    out = ds.copy()
    for name, var in ds.data_vars.items():
        if var.chunks:
            out[name] = var.copy(data=var.data.map_blocks(_pause, dtype=var.dtype))
    return out
"""


def resume() -> None:
    """A 1,000-chunk cube (40 ms of pixel work per block): kill at 50 %, rerun.

    Also times a run that finds the cube complete: the fixed cost of a CLI run
    (imports, config, source identities), the same in both runs."""
    root = WORK / "resume"
    shutil.rmtree(root, ignore_errors=True)
    (root / "hooks").mkdir(parents=True)
    (root / "hooks" / "slow.py").write_text(SLOW_HOOK)
    data.write_local_sources(root / "data")
    config = {
        "data_stores": [
            {"identifier": "storage", "store_id": "file", "store_params": {"root": "out"}},
            {"identifier": "local", "store_id": "file", "store_params": {"root": "data"}},
        ],
        "grid_mappings": [
            {
                "identifier": "gm",
                "crs": "EPSG:4326",
                "bbox": [11.2, 47.6, 12.2, 48.3],
                "spatial_res": 0.0014,
                "tile_size": [20, 18],
            }
        ],
        "datasets": [
            {
                # the dataset-level hook of a `variables:` dataset runs on the target grid:
                # 40 ms per output chunk (a source's own hook runs on its few source chunks)
                "identifier": "lc",
                "grid_mapping": "gm",
                "custom_processing": {"module_path": "hooks/slow.py", "function_name": "slow"},
                "variables": [
                    {"identifier": "land_cover", "store": "local", "data_id": data.LANDCOVER}
                ],
            }
        ],
        "general": {"display": "none", "dask": {"scheduler": "threads", "num_workers": 2}},
    }
    path = root / "config.yml"
    path.write_text(yaml.safe_dump(config))
    journal = root / "out" / ".multistore" / "lc.zarr.chunks.jsonl"
    cmd = [sys.executable, "-m", "multistore", "generate", str(path)]

    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    full = time.perf_counter() - t0
    total = len(journal.read_text().splitlines()) - 1
    shutil.rmtree(root / "out")

    child = subprocess.Popen(cmd)
    while not journal.exists() or len(journal.read_text().splitlines()) - 1 < total // 2:
        time.sleep(0.04)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    rerun = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    fixed = time.perf_counter() - t0
    lines = journal.read_text().splitlines()[1:]
    keys = [json.loads(x)["k"] for x in lines if x.startswith("{")]
    print(
        f"resume: {total} chunks; full build {full:.1f} s; rerun after kill at 50 %: "
        f"{rerun:.1f} s ({100 * rerun / full:.0f} %); chunks stored twice: "
        f"{len(keys) - len(set(keys))}; a run finding the cube complete: {fixed:.1f} s; "
        f"without it: {100 * (rerun - fixed) / (full - fixed):.0f} %"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--items", type=int, default=10000)
    parser.add_argument("--hash-gb", type=float, default=1.0)
    parser.add_argument("--skip-resume", action="store_true")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    local_files(args.files)
    stac_items(args.items)
    hashing(args.hash_gb)
    if not args.skip_resume:
        resume()


if __name__ == "__main__":
    main()
