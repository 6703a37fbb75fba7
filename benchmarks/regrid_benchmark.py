"""Regridding benchmark (issue 3): multistore vs GDAL warp vs xcube_resampling.

A synthetic uint8 categorical stack (EPSG:3035, 30 m, 16 bands of 6000x6000,
tiled deflate GeoTIFF) is regridded with nearest onto an EPSG:4326 grid of
about 7600x5600 px and written as Zarr with 1000x1000 tiles, three ways:

  (a0) ``multistore generate CONFIG`` on the plain config users write: no
       open params, no resampling method (the headline way)
  (a) ``multistore generate CONFIG`` tuned: band dim, 512 px source chunks,
      nearest (the full product path, a subprocess)
  (b) GDAL warp band by band into memory, then one Zarr write (the baseline)
  (c) ``xcube_resampling.resample_in_space`` + xcube's Zarr writer

Each way runs in its own process; wall time, peak RSS, output bytes and dtype
are printed. (limit) decodes every source block once and compresses and
writes as many output chunks with the same codec, on all cores, without any
warp: the floor for any regridder. ``--scale`` repeats (a0) and (a) at 4x the
pixel count (2x per axis), and (limit) too when it is among ``--ways``;
``--ways de`` times the regridding alone (no write: a sum of the result) for
this engine (d) and xcube_resampling (e). ``--small`` is a quick smoke run; ``--repeat N`` interleaves N rounds and
reports median wall times (the CPUs may be shared). Inputs are cached in
benchmarks/_work/.

    python benchmarks/regrid_benchmark.py [--small] [--scale] [--ways 0abcl] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from installed import compile_package

WORK = Path(__file__).resolve().parent / "_work"
TILE = 1000
NODATA = 255
GDAL_CACHEMAX_MB = "128"
# How (a) and (c) open the GeoTIFF: one variable with a band dim, read in 512 px blocks
# (xcube's default chunks are whole bands, which no streaming reader can split).
OPEN_PARAMS = {"band_as_variable": False, "tile_size": [512, 512]}


@dataclass(frozen=True)
class Case:
    """One problem size: source stack and target grid."""

    name: str
    bands: int
    size: int  # source pixels per side
    target_width: int
    target_height: int

    @property
    def tif(self) -> Path:
        return WORK / f"source_{self.name}.tif"


FULL = Case("full", 16, 6000, 7600, 5600)
SCALED = Case("scaled", 16, 12000, 15200, 11200)  # 4x the pixels of FULL
SMALL = Case("small", 4, 1500, 1900, 1400)

RES_SOURCE = 30.0
RES_TARGET = 0.00025  # degrees (about 20 x 28 m at 44 N)
CENTER_LON, CENTER_LAT = -0.4, 44.15  # the forest case study area in SW France


# -- input data ----------------------------------------------------------------------------


def source_transform(case: Case):
    import pyproj
    from affine import Affine

    x, y = pyproj.Transformer.from_crs(4326, 3035, always_xy=True).transform(CENTER_LON, CENTER_LAT)
    half = case.size * RES_SOURCE / 2
    return Affine(RES_SOURCE, 0, round(x - half), 0, -RES_SOURCE, round(y + half))


def target_grid(case: Case):
    from multistore.grid import TargetGrid

    west = CENTER_LON - case.target_width * RES_TARGET / 2
    north = CENTER_LAT + case.target_height * RES_TARGET / 2
    bbox = [
        west,
        north - case.target_height * RES_TARGET,
        west + case.target_width * RES_TARGET,
        north,
    ]
    return TargetGrid.from_bbox(bbox, "EPSG:4326", RES_TARGET, tile_size=TILE)


def make_source(case: Case) -> Path:
    """Deterministic class patches + 3% salt noise + a nodata hole, tiled deflate GeoTIFF."""
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    if case.tif.exists():
        return case.tif
    WORK.mkdir(parents=True, exist_ok=True)
    tmp = case.tif.with_suffix(".tmp.tif")
    profile = dict(
        driver="GTiff", width=case.size, height=case.size, count=case.bands, dtype="uint8",
        crs="EPSG:3035", transform=source_transform(case), nodata=NODATA, tiled=True,
        blockxsize=512, blockysize=512, compress="deflate", interleave="band",
        num_threads="all_cpus", bigtiff="if_safer",
    )  # fmt: skip
    strip = 1536  # rows per write; a multiple of the block size
    with rasterio.open(tmp, "w", **profile) as dst:
        for band in range(1, case.bands + 1):
            rng = np.random.default_rng(band)
            patch = 40  # 1.2 km class patches
            n = -(-case.size // patch)
            coarse = rng.integers(0, 8, (n, n), dtype=np.uint8)
            for r0 in range(0, case.size, strip):
                h = min(strip, case.size - r0)
                rows = np.arange(r0, r0 + h) // patch
                block = coarse[rows][:, np.arange(case.size) // patch]
                salt = rng.random(block.shape) < 0.03
                block[salt] = rng.integers(0, 8, int(salt.sum()), dtype=np.uint8)
                hole = slice(
                    max(r0, case.size // 3) - r0, max(r0, min(r0 + h, case.size // 3 + 200)) - r0
                )
                block[hole, case.size // 2 : case.size // 2 + 300] = NODATA
                dst.write(block, band, window=Window(0, r0, case.size, h))
    tmp.rename(case.tif)
    return case.tif


def write_config(case: Case, out_dir: Path, plain: bool = False) -> Path:
    """The benchmark config; ``plain``: as users write it (no open params, no method)."""
    import yaml

    grid = target_grid(case)
    config = {
        "data_stores": [
            {"identifier": "storage", "store_id": "file", "store_params": {"root": str(out_dir)}},
            {"identifier": "src", "store_id": "file", "store_params": {"root": str(WORK)}},
        ],
        "grid_mappings": [
            {
                "identifier": "target",
                "crs": "EPSG:4326",
                "bbox": list(grid.bounds),
                "spatial_res": RES_TARGET,
                "tile_size": TILE,
            }
        ],
        "datasets": [
            {
                "identifier": "classes",
                "store": "src",
                "data_id": case.tif.name,
                "grid_mapping": "target",
            }
            if plain
            else {
                "identifier": "classes",
                "store": "src",
                "data_id": case.tif.name,
                "grid_mapping": "target",
                "open_params": OPEN_PARAMS,
                "spatial_resample_params": {"method": "nearest"},
            }
        ],  # fmt: skip
        "general": {"display": "log"},
    }
    path = out_dir.parent / f"config_{case.name}{'_plain' if plain else ''}.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# -- the three ways (each runs in a child process) --------------------------------------


def way_p(case: Case, out: Path) -> dict:
    """(a0) with the package found in ``--baseline DIR`` first on PYTHONPATH (code before a change)."""
    os.environ["PYTHONPATH"] = os.environ["REGRID_BENCH_BASELINE"]
    return way_a(case, out, plain=True)


def way_q(case: Case, out: Path) -> dict:
    """(a) with the package found in ``--baseline DIR`` first on PYTHONPATH."""
    os.environ["PYTHONPATH"] = os.environ["REGRID_BENCH_BASELINE"]
    return way_a(case, out)


def way_a0(case: Case, out: Path) -> dict:
    """The product path on the plain config: no open params, no resampling method."""
    return way_a(case, out, plain=True)


def way_a(case: Case, out: Path, plain: bool = False) -> dict:
    """The product path: the CLI in a subprocess (its peak RSS is this child's RUSAGE_CHILDREN)."""
    out.mkdir(parents=True, exist_ok=True)
    config = write_config(case, out, plain=plain)
    # the console script next to this interpreter (a version manager's shim adds ~0.1 s)
    own = Path(sys.executable).with_name("multistore")
    cli = str(own) if own.exists() else shutil.which("multistore") or "multistore"
    proc = subprocess.run([cli, "generate", str(config), "--force", "--log-format", "log"],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(
            f"multistore generate failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return {"peak_rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
            "zarr": str(out / "classes.zarr")}  # fmt: skip


def way_b(case: Case, out: Path) -> dict:
    """GDAL warp band by band into one in-memory stack, then one Zarr write."""
    import numcodecs
    import numpy as np
    import rasterio
    import xarray as xr
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    grid = target_grid(case)
    with rasterio.open(case.tif) as src:
        stack = np.empty((src.count, grid.height, grid.width), dtype=src.dtypes[0])
        for b in range(src.count):
            reproject(
                rasterio.band(src, b + 1),
                stack[b],
                dst_transform=grid.transform,
                dst_crs="EPSG:4326",
                dst_nodata=NODATA,
                resampling=Resampling.nearest,
                num_threads=os.cpu_count(),
                warp_mem_limit=256,
            )
    ds = xr.Dataset(
        {"classes": (("band", "lat", "lon"), stack)},
        coords={**grid.coords(), "band": np.arange(1, case.bands + 1)},
    )
    blosc = numcodecs.Blosc(
        cname="zstd", clevel=1, shuffle=numcodecs.Blosc.SHUFFLE, blocksize=128 * 1024
    )
    encoding = {
        "classes": {"chunks": (1, TILE, TILE), "compressors": (blosc,), "_FillValue": NODATA}
    }
    target = out / "classes.zarr"
    ds.to_zarr(target, mode="w", zarr_format=2, encoding=encoding, consolidated=True)
    return {"peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "zarr": str(target)}


def way_c(case: Case, out: Path) -> dict:
    """xcube-multistore's path: xcube's opener, xcube_resampling, xcube's writer."""
    from xcube.core.store import new_data_store
    from xcube_resampling import resample_in_space

    ds = resample_in_space(
        _open_source(case), target_gm=_xcube_target(case), interp_methods="nearest"
    )
    ds = ds.chunk({d: 1 for d in ds.dims if d not in ("lat", "lon")})
    store = new_data_store("file", root=str(out))
    store.write_data(ds, "classes.zarr", replace=True)
    return {"peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "zarr": str(out / "classes.zarr")}  # fmt: skip


def way_limit(case: Case, out: Path) -> dict:
    """What no regridder can beat: decode every source block once, compress and write as
    many output chunks as (a) writes, with the same codec, on all cores, without any warp."""
    from concurrent.futures import ThreadPoolExecutor

    import numcodecs
    import numpy as np
    import rasterio

    grid = target_grid(case)
    blosc = numcodecs.Blosc(
        cname="zstd", clevel=1, shuffle=numcodecs.Blosc.SHUFFLE, blocksize=128 * 1024
    )
    target = out / "limit"
    target.mkdir(parents=True, exist_ok=True)
    rows = range(0, grid.height, TILE)
    cols = range(0, grid.width, TILE)

    def band(b: int) -> int:
        with rasterio.open(case.tif) as src:
            plane = np.empty((src.height, src.width), dtype=src.dtypes[0])
            for _, window in src.block_windows(b + 1):
                plane[window.toslices()] = src.read(b + 1, window=window)
        written = 0
        for i, r0 in enumerate(rows):
            for j, c0 in enumerate(cols):
                # an output-sized chunk of decoded source pixels (wrapping around the source)
                h, w = min(TILE, grid.height - r0), min(TILE, grid.width - c0)
                rs, cs = r0 % (case.size - TILE + 1), c0 % (case.size - TILE + 1)
                chunk = np.full((TILE, TILE), NODATA, dtype=plane.dtype)
                chunk[:h, :w] = plane[rs : rs + h, cs : cs + w]
                data = blosc.encode(np.ascontiguousarray(chunk))
                (target / f"{b}.{i}.{j}").write_bytes(data)
                written += len(data)
        return written

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        total = sum(pool.map(band, range(case.bands)))
    return {
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "bytes": total,
        "dtype": "uint8",
    }


def way_d(case: Case, out: Path) -> dict:
    """Regridding only, no write: ``regrid_dataset`` on xcube's opener, summed with dask."""
    from multistore.regrid import regrid_dataset

    source = _open_source(case)
    return _sum_only(regrid_dataset(source, target_grid(case), {"method": "nearest"}))


def way_e(case: Case, out: Path) -> dict:
    """Regridding only, no write: ``xcube_resampling.resample_in_space``, summed with dask."""
    from xcube_resampling import resample_in_space

    source = _open_source(case)
    return _sum_only(
        resample_in_space(source, target_gm=_xcube_target(case), interp_methods="nearest")
    )


def _open_source(case: Case):
    from xcube.core.store import new_data_store

    store = new_data_store("file", root=str(WORK))
    return store.open_data(case.tif.name, opener_id="dataset:geotiff:file", **OPEN_PARAMS)


def _xcube_target(case: Case):
    """The target grid as xcube_resampling's GridMapping (xy_min = first pixel centre)."""
    from xcube_resampling.gridmapping import GridMapping

    grid = target_grid(case)
    west, _, _, north = grid.bounds
    return GridMapping.regular(
        size=(grid.width, grid.height),
        xy_min=(west + RES_TARGET / 2, north - (grid.height - 0.5) * RES_TARGET),
        xy_res=RES_TARGET,
        crs="EPSG:4326",
        tile_size=TILE,
    )


def _sum_only(ds) -> dict:
    import dask

    var = next(iter(ds.data_vars.values()))
    t0 = time.perf_counter()
    with dask.config.set(scheduler="threads"):
        total = int(var.data.sum(dtype="int64").compute())
    return {
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "compute_s": round(time.perf_counter() - t0, 2),
        "checksum": total,
        "dtype": str(var.dtype),
        "bytes": 0,
    }


# one character per way, for --ways
WAYS = {
    "p": way_p,
    "0": way_a0,
    "a": way_a,
    "b": way_b,
    "c": way_c,
    "d": way_d,
    "e": way_e,
    "l": way_limit,
}
LABELS = {
    "p": "(a0) plain config, --baseline code",
    "q": "(a) tuned, --baseline code",
    "0": "(a0) plain config",
    "a": "(a) multistore generate, tuned",
    "l": "(limit) decode + compress, no warp",
    "b": "(b) GDAL warp + zarr",
    "c": "(c) xcube_resampling + xcube writer",
    "d": "(d) multistore.regrid only, no write",
    "e": "(e) xcube_resampling only, no write",
}


# -- driver -------------------------------------------------------------------------------------


def run_child(way: str, case: Case) -> dict:
    """Run one way in a fresh process so that peak RSS is its own."""
    out = WORK / f"out_{case.name}_{way}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", way, "--case", case.name],
        capture_output=True,
        text=True,
        env=child_env(),
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"way": way, "case": case.name, "error": proc.stderr[-2000:] or proc.stdout[-2000:]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(way=way, case=case.name, wall_s=round(wall, 1))
    if "zarr" in result:
        result.update(inspect_zarr(Path(result["zarr"])))
    return result


def child_env() -> dict[str, str]:
    """The same GDAL block cache bound for every way (GDAL's default is 5% of RAM).

    Sources are read in chunks, each exactly once or a few times; a cache
    larger than that only adds resident memory.
    """
    return {**os.environ, "GDAL_CACHEMAX": os.environ.get("GDAL_CACHEMAX", GDAL_CACHEMAX_MB)}


def inspect_zarr(path: Path) -> dict:
    import xarray as xr

    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    ds = xr.open_zarr(path, mask_and_scale=False)
    var = next(iter(ds.data_vars.values()))
    return {
        "bytes": size,
        "dtype": str(var.dtype),
        "shape": list(var.shape),
        "chunks": list(var.data.chunksize),
    }


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem_gb:.0f} GiB RAM, Python {platform.python_version()}"
    )


def summarise(runs: list[dict]) -> list[dict]:
    """One row per (way, case): median wall time over repeats, highest peak RSS."""
    rows: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        rows.setdefault((r["way"], r["case"]), []).append(r)
    out = []
    for group in rows.values():
        ok = [r for r in group if "error" not in r]
        if not ok:
            out.append(group[-1])
            continue
        row = dict(ok[-1])
        row["wall_s"] = float(statistics.median(r["wall_s"] for r in ok))
        row["wall_all_s"] = [r["wall_s"] for r in ok]
        if "compute_s" in row:
            row["compute_s"] = float(statistics.median(r["compute_s"] for r in ok))
        row["peak_rss_kb"] = max(r["peak_rss_kb"] for r in ok)
        out.append(row)
    return out


def report(runs: list[dict]) -> None:
    results = summarise(runs)
    print(f"\nmachine: {machine()}; GDAL_CACHEMAX={child_env()['GDAL_CACHEMAX']} MB")
    header = (
        f"{'way':40} {'case':7} {'wall s':>8} {'peak RSS MiB':>13} {'output MiB':>11} {'dtype':>6}"
        "  all walls"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        label = LABELS[r["way"]]
        if "error" in r:
            print(f"{label:40} {r['case']:7} FAILED: {r['error'].strip().splitlines()[-1]}")
            continue
        extra = f"  compute {r['compute_s']} s" if "compute_s" in r else ""
        print(
            f"{label:40} {r['case']:7} {r['wall_s']:8.1f} {r['peak_rss_kb'] / 1024:13.0f} "
            f"{r['bytes'] / 2**20:11.1f} {r['dtype']:>6}  {r['wall_all_s']}{extra}"
        )
    by = {(r["way"], r["case"]): r for r in results if "error" not in r}
    base = next((c for c in ("full", "small") if any(k[1] == c for k in by)), None)
    if base and ("b", base) in by:
        a, b = by["a", base], by["b", base]
        print(f"\n(a)/(b) wall: {a['wall_s'] / b['wall_s']:.2f} (target <= 1)")
        print(f"(a)/(b) bytes: {a['bytes'] / b['bytes']:.3f} (target <= 1.05)")
    if base and ("c", base) in by:
        print(
            f"(c)/(a) wall: {by['c', base]['wall_s'] / by['a', base]['wall_s']:.2f} (target >= 2)"
        )
    if base and ("0", base) in by:
        a0 = by["0", base]["wall_s"]
        for way, label, goal in (
            ("a", "(a0)/(a) wall", "target <= 1.15"),
            ("b", "(a0)/(b) wall", "target <= 0.6"),
            ("l", "(a0)/(limit) wall", "aim <= 1.5"),
        ):
            if (way, base) in by:
                print(f"{label}: {a0 / by[way, base]['wall_s']:.2f} ({goal})")
        if ("q", base) in by and ("a", base) in by:
            print(f"(a) before/after: {by['q', base]['wall_s'] / by['a', base]['wall_s']:.2f}")
        if ("p", base) in by:
            print(f"(a0) before/after: {by['p', base]['wall_s'] / a0:.2f} (baseline / this code)")
        if ("c", base) in by:
            print(f"(c)/(a0) wall: {by['c', base]['wall_s'] / a0:.2f} (target >= 2)")
        if ("0", "scaled") in by:
            print(f"(a0) at 4x pixels: peak RSS {by['0', 'scaled']['peak_rss_kb'] / 1024:.0f} MiB")
            if ("l", "scaled") in by:
                ratio = by["0", "scaled"]["wall_s"] / by["l", "scaled"]["wall_s"]
                print(f"(a0)/(limit) wall at 4x pixels: {ratio:.2f} (aim <= 1.5)")
    if base and ("d", base) in by and ("e", base) in by:
        d, e = by["d", base], by["e", base]
        print(f"(e)/(d) regrid compute: {e['compute_s'] / d['compute_s']:.2f}")
    print(json.dumps(results))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--small", action="store_true", help="quick smoke run (4 bands of 1500x1500)"
    )
    parser.add_argument(
        "--scale", action="store_true", help="also run (a0), (a) and (limit) at 4x the pixel count"
    )
    parser.add_argument(
        "--ways", default="0abcl", help="which ways to run, e.g. '0al' (0 = a0, l = limit)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of all ways (median wall time is reported)"
    )
    parser.add_argument(
        "--baseline",
        help="a checkout's root (holding multistore/) for way 'p': (a0) on that code",
    )
    parser.add_argument("--child", choices=sorted(WAYS), help=argparse.SUPPRESS)
    parser.add_argument("--case", default="full", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cases = {c.name: c for c in (FULL, SCALED, SMALL)}
    if args.baseline:
        os.environ["REGRID_BENCH_BASELINE"] = str(Path(args.baseline).resolve())
    if args.child:
        case = cases[args.case]
        result = WAYS[args.child](case, WORK / f"out_{case.name}_{args.child}")
        print(json.dumps(result))
        return
    case = SMALL if args.small else FULL
    compile_package(Path(__file__).resolve().parents[1], *filter(None, [args.baseline]))
    t0 = time.perf_counter()
    make_source(case)
    print(f"source {case.tif} ready in {time.perf_counter() - t0:.1f} s", flush=True)
    if args.scale and not args.small:
        t0 = time.perf_counter()
        make_source(SCALED)
        print(f"source {SCALED.tif} ready in {time.perf_counter() - t0:.1f} s", flush=True)
    runs = []
    # Rounds interleave the ways, so load from other jobs on shared CPUs hits all of them.
    for _ in range(args.repeat):
        for way in args.ways:
            runs.append(run_child(way, case))
            print(json.dumps(runs[-1]), flush=True)
        if args.scale and not args.small:
            for way in [w for w in "0al" if w in args.ways] or ["a"]:
                runs.append(run_child(way, SCALED))
                print(json.dumps(runs[-1]), flush=True)
    report(runs)


if __name__ == "__main__":
    main()
