"""Project-shaped benchmark (issue 11): three datasets of a forest project onto one grid.

All sources are served locally, as the real ones are served remotely:

  forest   a Zenodo zip (local Zenodo emulator) of 4 uint8 EPSG:3035 GeoTIFFs, 30 m,
           39 yearly bands each; opened with ``band_as_variable: false`` and a
           band -> time hook, preloaded (downloaded and unpacked) by the config
  maps     a Zenodo record of 3 float32 EPSG:3035 GeoTIFFs (30 m) at its root
  climate  an S3 Zarr (local moto server), float32 members x time x lat x lon, 0.001 deg

all onto one 2000 x 1600 EPSG:4326 grid (0.00025 deg, tiles of 1000), every
dataset written the plain way (no tile_size, no resampling method). The
``multistore generate`` child is timed: wall, peak RSS, CPU utilisation
(user + system CPU of the child over wall x cores). The first round is cold
(the zip is downloaded and unpacked); the median of the others is reported.

    python benchmarks/project_benchmark.py [--repeat 3] [--parallel 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from installed import compile_package

WORK = Path(__file__).resolve().parent / "_work" / "project"
INPUTS = WORK / "inputs"
RES = 0.00025
WIDTH, HEIGHT = 2000, 1600
WEST, NORTH = -0.9, 44.35
YEARS = 39
FOREST_FILES = ("disturbance", "agent", "severity", "forest_mask")
MAP_FILES = ("canopy_height", "biomass", "forest_age")
MEMBERS, STEPS = 3, 6
FOREST_RECORD, MAPS_RECORD = "11111111", "22222222"
HOOK = '''
import pandas as pd


def band_to_time(ds):
    """One band per year (1985 = band 1): ``band`` becomes ``time``."""
    years = ds["band"].values.astype(int) + 1984
    ds = ds.rename({"band": "time"})
    return ds.assign_coords(time=pd.to_datetime([f"{y}-01-01" for y in years]))
'''


def bbox() -> list[float]:
    return [WEST, NORTH - HEIGHT * RES, WEST + WIDTH * RES, NORTH]


def laea_profile(count: int, dtype: str, nodata: float):
    import pyproj
    from affine import Affine

    w, s, e, n = bbox()
    t = pyproj.Transformer.from_crs(4326, 3035, always_xy=True)
    x0, y0, x1, y1 = t.transform_bounds(w - 0.01, s - 0.01, e + 0.01, n + 0.01)
    width, height = int((x1 - x0) // 30) + 1, int((y1 - y0) // 30) + 1
    return dict(
        driver="GTiff", width=width, height=height, count=count, dtype=dtype, crs="EPSG:3035",
        transform=Affine(30, 0, round(x0), 0, -30, round(y1)), nodata=nodata, tiled=True,
        blockxsize=512, blockysize=512, compress="deflate", interleave="band",
        num_threads="all_cpus",
    )  # fmt: skip


def make_inputs() -> dict[str, Path]:
    """Deterministic inputs, cached: the zip, the 3 float maps and the Zarr (as a folder)."""
    import numpy as np
    import rasterio
    import xarray as xr

    done = INPUTS / "done"
    files = {
        "zip": INPUTS / "forest.zip",
        **{m: INPUTS / f"{m}.tif" for m in MAP_FILES},
        "zarr": INPUTS / "climate.zarr",
    }
    if done.exists():
        return files
    shutil.rmtree(INPUTS, ignore_errors=True)
    INPUTS.mkdir(parents=True)
    with zipfile.ZipFile(files["zip"], "w", compression=zipfile.ZIP_STORED) as zf:
        for k, name in enumerate(FOREST_FILES):
            profile = laea_profile(YEARS, "uint8", 255)
            h, w = profile["height"], profile["width"]
            yy, xx = np.mgrid[0:h, 0:w]
            tif = INPUTS / f"{name}.tif"
            with rasterio.open(tif, "w", **profile) as dst:
                for year in range(YEARS):
                    band = ((xx // 7 + 3 * (yy // 5) + 11 * year + k) % 29 == 0).astype("uint8")
                    band[(xx // 64 + yy // 64) % 5 == 0] = 255  # off-forest patches
                    dst.write(band, year + 1)
            zf.write(tif, f"{name}.tif")
            tif.unlink()
    rng = np.random.default_rng(0)
    for k, name in enumerate(MAP_FILES):
        profile = laea_profile(1, "float32", -9999.0)
        h, w = profile["height"], profile["width"]
        yy, xx = np.mgrid[0:h, 0:w].astype("float32")
        data = (10 + 5 * np.sin(xx / (50 + 10 * k)) * np.cos(yy / 70)).astype("float32")
        data += rng.normal(0, 0.5, data.shape).astype("float32")
        data[: h // 10, : w // 10] = -9999.0
        with rasterio.open(files[name], "w", **profile) as dst:
            dst.write(data, 1)
    w, s, e, n = bbox()
    lat = np.arange(n + 0.01, s - 0.01, -0.001)
    lon = np.arange(w - 0.01, e + 0.01, 0.001)
    values = rng.normal(285, 3, (MEMBERS, STEPS, lat.size, lon.size)).astype("float32")
    ds = xr.Dataset(
        {"tas": (("member", "time", "lat", "lon"), values, {"units": "K"})},
        coords={
            "member": np.arange(MEMBERS),
            "time": np.array([f"2030-{m + 1:02d}-01" for m in range(STEPS)], "datetime64[ns]"),
            "lat": lat,
            "lon": lon,
        },
    )
    chunks = {"member": 1, "time": 1, "lat": 200, "lon": 200}
    ds.chunk(chunks).to_zarr(files["zarr"], zarr_format=2, consolidated=True)
    done.touch()
    return files


def write_config(out: Path, zenodo_url: str, s3_endpoint: str, parallel: int) -> Path:
    import yaml

    from multistore.demo.servers import DEMO_KEY, DEMO_SECRET

    (WORK / "hooks.py").write_text(HOOK)
    s3_options = {"key": DEMO_KEY, "secret": DEMO_SECRET,
                  "client_kwargs": {"endpoint_url": s3_endpoint}}  # fmt: skip
    config = {
        "data_stores": [
            {"identifier": "storage", "store_id": "file", "store_params": {"root": str(out)}},
            {
                "identifier": "atlas",
                "store_id": "zenodo",
                "store_params": {
                    "root": FOREST_RECORD,
                    "base_url": zenodo_url,
                    "cache_store_params": {"root": str(WORK / "cache" / "atlas")},
                },
            },
            {
                "identifier": "maps",
                "store_id": "zenodo",
                "store_params": {
                    "root": MAPS_RECORD,
                    "base_url": zenodo_url,
                    "cache_store_params": {"root": str(WORK / "cache" / "maps")},
                },
            },
            {
                "identifier": "climate",
                "store_id": "s3",
                "store_params": {"root": "project", "storage_options": s3_options},
            },
        ],  # fmt: skip
        "preload_datasets": [
            {
                "store": "atlas",
                "data_ids": ["forest.zip"],
                "preload_params": {"convert_rasters": False},
            },
        ],  # fmt: skip
        "grid_mappings": [
            {
                "identifier": "grid",
                "crs": "EPSG:4326",
                "bbox": bbox(),
                "spatial_res": RES,
                "tile_size": 1000,
            },
        ],  # fmt: skip
        "datasets": [
            {
                "identifier": "forest",
                "grid_mapping": "grid",
                "variables": [
                    {
                        "identifier": name,
                        "store": "atlas",
                        "data_id": f"forest/{name}.tif",
                        "open_params": {"band_as_variable": False},
                        "custom_processing": {
                            "module_path": "hooks.py",
                            "function_name": "band_to_time",
                        },
                    }
                    for name in FOREST_FILES
                ],  # fmt: skip
            },
            {
                "identifier": "maps",
                "grid_mapping": "grid",
                "variables": [
                    {"identifier": name, "store": "maps", "data_id": f"{name}.tif"}
                    for name in MAP_FILES
                ],
            },
            {
                "identifier": "climate",
                "store": "climate",
                "data_id": "climate.zarr",
                "grid_mapping": "grid",
            },
        ],  # fmt: skip
        "general": {"display": "log", "max_parallel_datasets": parallel},
    }
    path = WORK / "config.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_build(config: Path, out: Path, baseline: str | None = None) -> dict:
    """One ``multistore generate`` child: wall, peak RSS, CPU utilisation.

    ``baseline``: a checkout's root put first on PYTHONPATH (the code before a change).
    """
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    own = Path(sys.executable).with_name("multistore")
    cli = str(own) if own.exists() else shutil.which("multistore") or "multistore"
    env = {**os.environ, "GDAL_CACHEMAX": os.environ.get("GDAL_CACHEMAX", "128")}
    if baseline:
        env["PYTHONPATH"] = str(Path(baseline).resolve())
    t0 = time.perf_counter()
    with open(WORK / "last.log", "w") as log:
        proc = subprocess.Popen(
            [cli, "generate", str(config), "--force", "--log-format", "log"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=WORK,
        )  # fmt: skip
        # wait4 gives this child's own rusage (peak RSS, CPU), not all children's
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"multistore generate failed:\n{(WORK / 'last.log').read_text()[-3000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024),
        "cpu_s": round(cpu, 2),
        "cpu_util": round(cpu / wall / os.cpu_count(), 2),
        "output_mib": round(size / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="warm rounds after the cold one")
    parser.add_argument(
        "--parallel", type=int, default=3, help="general.max_parallel_datasets of the config"
    )
    parser.add_argument(
        "--baseline", help="also time each warm round on this checkout's code (interleaved)"
    )
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    compile_package(root, *([args.baseline] if args.baseline else []))
    sys.path.insert(0, str(root))
    from multistore.demo.servers import local_s3, s3_filesystem
    from multistore.testing.zenodo_emulator import ZenodoEmulator

    t0 = time.perf_counter()
    files = make_inputs()
    print(f"inputs ready in {time.perf_counter() - t0:.1f} s", flush=True)
    with ZenodoEmulator() as zenodo, local_s3() as endpoint:
        zenodo.add_record(FOREST_RECORD, {"forest.zip": files["zip"]})
        zenodo.add_record(MAPS_RECORD, {f"{m}.tif": files[m] for m in MAP_FILES})
        fs = s3_filesystem(endpoint)
        fs.mkdir("project")
        fs.put(str(files["zarr"]), "project/climate.zarr", recursive=True)
        config = write_config(WORK / "out", zenodo.base_url, endpoint, args.parallel)
        shutil.rmtree(WORK / "cache", ignore_errors=True)
        runs = []
        for i in range(args.repeat + 1):
            r = run_build(config, WORK / "out")
            r["round"] = "cold" if i == 0 else "warm"
            r["load"] = os.getloadavg()[0]
            runs.append(r)
            print(json.dumps(r), flush=True)
            if args.baseline and i > 0:
                b = run_build(config, WORK / "out", args.baseline)
                b.update(round="baseline", load=os.getloadavg()[0])
                runs.append(b)
                print(json.dumps(b), flush=True)
    warm = [r for r in runs if r["round"] == "warm"] or runs
    summary = {
        "cold_wall_s": runs[0]["wall_s"],
        "warm_wall_s_median": statistics.median(r["wall_s"] for r in warm),
        "warm_walls": [r["wall_s"] for r in warm],
        "peak_rss_mib_max": max(r["peak_rss_mib"] for r in runs if r["round"] != "baseline"),
        "cpu_s_median": statistics.median(r["cpu_s"] for r in warm),
        "cpu_util_median": statistics.median(r["cpu_util"] for r in warm),
        "output_mib": runs[-1]["output_mib"],
        "max_parallel_datasets": args.parallel,
    }
    base = [r for r in runs if r["round"] == "baseline"]
    if base:
        summary["baseline_wall_s_median"] = statistics.median(r["wall_s"] for r in base)
        summary["baseline_peak_rss_mib_max"] = max(r["peak_rss_mib"] for r in base)
        summary["baseline_cpu_s_median"] = statistics.median(r["cpu_s"] for r in base)
        summary["baseline_cpu_util_median"] = statistics.median(r["cpu_util"] for r in base)
    print(json.dumps(summary))
    print(f"rusage self (servers): {resource.getrusage(resource.RUSAGE_SELF).ru_utime:.1f} s user")


if __name__ == "__main__":
    main()
