"""Huge grids (issue 17.3): graph building, memory and time to first chunk vs. tile count.

A synthetic uint8 EPSG:3035 GeoTIFF (30 m) is regridded onto EPSG:4326 tiles of
32 x 32 px, so 10^3, 10^4 and 10^5 tiles cost little pixel work each and the
graph dominates. Each size is built side by side in one run

  one graph   general.dask.wave_chunks huge: the whole cube in one compute call
  waves       the default: bands of tile rows of up to 4096 chunks
  resume      the default, resuming a build killed (SIGKILL) 2 s after its first
              chunk (for 10^4 tiles and more): every code resumes from a copy of
              the same interrupted cube; "first s" is then the first chunk added

under the threads scheduler and (``--distributed``) a LocalCluster of 2 worker
processes. Per build, from the ``--log-format json`` events and by polling the
``multistore generate`` child every 20 ms:

  plan s        regrid graph planned: "regridding" -> "writing" events
  first s       process start -> first chunk file of the cube on disk
  wall s        the whole child
  client MiB    peak RSS of the generate process (client, and the scheduler: threads
                run there, a LocalCluster's scheduler too)
  workers MiB   peak RSS of the largest worker process (distributed)
  gap s         longest pause between two status events while writing

    python benchmarks/scale_benchmark.py [--tiles 1000 10000 100000] [--distributed]
        [--only threads|distributed] [--builds "one graph" waves] [--timeout 900]
        [--baseline DIR [DIR ...]]

A build still running after ``--timeout`` seconds is killed and reported as stalled, with
the chunks it had stored and its peak memory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
from installed import compile_package

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / "_work" / "scale"
TILE = 32
RES = 0.00025
WEST, NORTH = 5.6, 49.95  # inside the source below
ONE_GRAPH = 10**9


def make_source(path: Path, tiles: int) -> None:
    """Covers the target with a margin: 30 m pixels, about 1.4x the target's pixel count."""
    import numpy as np
    import rasterio
    from affine import Affine

    if path.exists():
        return
    side = math.isqrt(tiles) * TILE
    n = int(side * 1.2) + 64
    profile = dict(
        driver="GTiff", width=n, height=n, count=1, dtype="uint8", crs="EPSG:3035",
        transform=Affine(30, 0, 3_990_000, 0, -30, 3_010_000), tiled=True, blockxsize=256,
        blockysize=256, compress="deflate",
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        for r0 in range(0, n, 1024):
            h = min(1024, n - r0)
            rows = (np.arange(h * n).reshape(h, n) % 251).astype("uint8")
            dst.write(rows, 1, window=((r0, r0 + h), (0, n)))


def write_config(folder: Path, tiles: int, dask: dict) -> Path:
    import yaml

    side = math.isqrt(tiles) * TILE * RES
    config = {
        "data_stores": [
            {"identifier": "storage", "store_id": "file", "store_params": {"root": "out"}},
            {"identifier": "src", "store_id": "file", "store_params": {"root": str(WORK)}},
        ],
        "grid_mappings": [
            {
                "identifier": "gm",
                "crs": "EPSG:4326",
                "bbox": [WEST, NORTH - side, WEST + side, NORTH],
                "spatial_res": RES,
                "tile_size": TILE,
            }
        ],
        "datasets": [
            {
                "identifier": "cube",
                "store": "src",
                "data_id": f"src{tiles}.tif",
                "grid_mapping": "gm",
            }
        ],
        "general": {"dask": dask},
    }
    path = folder / "cube.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def interrupted(config: Path, after_s: float = 2.0) -> Path:
    """A copy of the output of a build killed ``after_s`` seconds after its first chunk."""
    out = config.parent / "out"
    shutil.rmtree(out, ignore_errors=True)
    chunks = out / "cube.zarr" / "band_1"
    child = subprocess.Popen(
        [sys.executable, "-m", "multistore", "generate", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=config.parent,
    )  # fmt: skip
    while not _first_chunk(chunks, 0):
        if child.poll() is not None:
            raise SystemExit(f"{config}: the build ended before it could be interrupted")
        time.sleep(0.02)
    time.sleep(after_s)
    if child.poll() is not None:
        raise SystemExit(f"{config}: the build ended before it could be interrupted")
    child.kill()
    child.wait()
    snapshot = config.parent / "interrupted"
    shutil.rmtree(snapshot, ignore_errors=True)
    shutil.copytree(out, snapshot)
    return snapshot


def _stored(chunks: Path) -> int:
    return sum(1 for p in chunks.iterdir() if p.name[0].isdigit()) if chunks.is_dir() else 0


def run(
    config: Path, timeout_s: float, code: Path = ROOT, resume_from: Path | None = None
) -> dict[str, float]:
    """One build of the package in ``code`` (a checkout's root, e.g. a worktree of an older commit),
    from scratch or resuming the interrupted output copied from ``resume_from``.

    The child runs in the config's folder: ``python -m`` puts its working directory first on
    sys.path, ahead of PYTHONPATH, so run from a checkout it would import that checkout's code.
    """
    out = config.parent / "out"
    shutil.rmtree(out, ignore_errors=True)
    if resume_from is not None:
        shutil.copytree(resume_from, out)
    chunks = out / "cube.zarr" / "band_1"
    before = _stored(chunks)
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "multistore", "generate", str(config), "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONPATH": str(code)}, cwd=config.parent,
    )  # fmt: skip
    proc = psutil.Process(child.pid)
    client = workers = 0
    first = math.nan
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(child.stdout), daemon=True)
    reader.start()
    while child.poll() is None:
        if time.perf_counter() - start > timeout_s:  # e.g. workers paused at their memory limit
            for kid in proc.children(recursive=True):
                kid.kill()
            child.kill()
            child.wait()
            reader.join()
            return {"stalled": _stored(chunks) - before, "wall": timeout_s, "client": client / 2**20,
                    "workers": workers / 2**20, "first": first}  # fmt: skip
        try:
            client = max(client, proc.memory_info().rss)
            for kid in proc.children(recursive=True):
                workers = max(workers, kid.memory_info().rss)
        except psutil.Error:
            pass
        if math.isnan(first) and _first_chunk(chunks, before):
            first = time.perf_counter() - start
        time.sleep(0.02)
    wall = time.perf_counter() - start
    reader.join()
    if child.returncode:
        raise SystemExit(f"generate failed on {config}")
    events = [json.loads(line) for line in lines if line.startswith("{")]
    times = {e["status"]: e["time"] for e in reversed(events) if e.get("event") == "status"}
    writing = [e["time"] for e in events if e.get("status") == "writing"]
    gaps = [b - a for a, b in zip(writing, writing[1:], strict=False)]
    return {
        "plan": times["writing"] - times["regridding"],
        "first": first,
        "wall": wall,
        "client": client / 2**20,
        "workers": workers / 2**20,
        "gap": max(gaps, default=math.nan),
    }


def _first_chunk(chunks: Path, before: int) -> bool:
    if not chunks.is_dir():
        return False
    if before == 0:
        return any(p.name[0].isdigit() for p in chunks.iterdir())
    return _stored(chunks) > before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--distributed", action="store_true")
    parser.add_argument("--only", choices=["threads", "distributed"], help="one scheduler only")
    parser.add_argument(
        "--builds", nargs="+", default=["one graph", "waves"], help="and/or: resume"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per build")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        nargs="+",
        default=[],
        type=Path,
        help="also run each build with the package in each DIR (e.g. git worktrees of older "
        "commits), right after the current code's",
    )
    args = parser.parse_args()
    compile_package(ROOT, *args.baseline)
    WORK.mkdir(parents=True, exist_ok=True)
    schedulers = {"threads": {"scheduler": "threads"}}
    if args.distributed:
        schedulers["distributed"] = {
            "scheduler": "distributed", "n_workers": 2, "threads_per_worker": 1,
        }  # fmt: skip
    print(
        f"{'tiles':>7} {'scheduler':<11} {'build':<9} {'plan s':>7} {'first s':>8} "
        f"{'wall s':>7} {'client MiB':>10} {'workers MiB':>11} {'gap s':>6}"
    )
    for tiles in args.tiles:
        make_source(WORK / f"src{tiles}.tif", tiles)
        for sched, dask in schedulers.items():
            if args.only and sched != args.only:
                continue
            for build, waves in (("one graph", ONE_GRAPH), ("waves", None), ("resume", None)):
                if build not in args.builds:
                    continue
                folder = WORK / f"{tiles}-{sched}-{build.replace(' ', '')}"
                folder.mkdir(exist_ok=True)
                settings = dask if waves is None else {**dask, "wave_chunks": waves}
                config = write_config(folder, tiles, settings)
                snapshot = interrupted(config) if build == "resume" else None
                n = math.isqrt(tiles) ** 2
                for code in (ROOT, *args.baseline):
                    r = run(config, args.timeout, code.resolve(), snapshot)
                    label = build if code == ROOT else f"{build} ({code.name})"
                    _print_row(n, sched, label, r)


def _print_row(n: int, sched: str, build: str, r: dict[str, float]) -> None:
    if "stalled" in r:
        print(
            f"{n:>7} {sched:<11} {build:<9} stalled: {r['stalled']} chunks stored "
            f"after {r['wall']:.0f} s, killed; client {r['client']:.0f} MiB, "
            f"workers {r['workers']:.0f} MiB",
            flush=True,
        )
        return
    print(
        f"{n:>7} {sched:<11} {build:<9} {r['plan']:>7.1f} {r['first']:>8.1f} "
        f"{r['wall']:>7.1f} {r['client']:>10.0f} {r['workers']:>11.0f} "
        f"{r['gap']:>6.1f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
