"""Issue 14: lockfile, locked builds, staleness from sources, bit-identical rebuilds.

Sources are real files on disk and objects in a moto S3 server; identities are
checked against hashlib and s3fs directly, values against GDAL.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import rasterio
import xarray as xr
from click.testing import CliRunner
from rasterio.warp import Resampling, reproject

from multistore import MultiSourceDataStore
from multistore.cli.main import main
from multistore.demo import data
from multistore.demo.servers import DEMO_SECRET
from multistore.grid import TargetGrid
from multistore.status import Status
from multistore.storage import CubeState

GRID = ([11.2, 47.6, 12.2, 48.3], "EPSG:4326", 0.004, 64)


def landscape(config: dict) -> dict:
    config["datasets"].append(
        {
            "identifier": "landscape",
            "grid_mapping": "gm",
            "variables": [
                {
                    "identifier": "land_cover",
                    "store": "local",
                    "data_id": data.LANDCOVER,
                    "spatial_resample_params": {"method": "nearest"},
                },
                {
                    "identifier": "elevation",
                    "store": "bucket",
                    "data_id": data.ELEVATION,
                    "spatial_resample_params": {"method": "bilinear"},
                },
            ],
        }
    )
    return config


def overwrite_landcover(path: Path, shift: int) -> np.ndarray:
    """Same georeferencing, size and dtype; every valid pixel's class changed."""
    with rasterio.open(path) as src:
        profile = src.profile
        values = src.read(1)
    new = np.where(values == 255, 255, (values + shift - 1) % 6 + 1).astype("uint8")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(new, 1)
    return new


def warp(src: np.ndarray, grid: TargetGrid) -> np.ndarray:
    _, transform, crs = data.landcover_array()
    out = np.full(grid.shape, 255, dtype="uint8")
    reproject(
        src,
        out,
        src_transform=transform,
        src_crs=crs,
        src_nodata=255,
        dst_transform=grid.transform,
        dst_crs=grid.crs_wkt,
        dst_nodata=255,
        resampling=Resampling.nearest,
    )
    return out


def cube_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_lock_names_every_source_identity_without_secrets(project, s3_bucket, s3_storage_options):
    path = project(landscape(project.base_config()))
    result = CliRunner().invoke(main, ["lock", str(path)])
    assert result.exit_code == 0, result.output
    lock_file = path.with_name("config.lock.json")
    text = lock_file.read_text()
    assert DEMO_SECRET not in text
    lock = json.loads(text)
    assert list(lock) == sorted(lock)  # stable key order
    sources = lock["datasets"]["landscape"]["sources"]
    local = sources[f"local:{data.LANDCOVER}"]["content"]
    tif = project.root / "data" / data.LANDCOVER
    assert local == {
        "sha256": hashlib.sha256(tif.read_bytes()).hexdigest(),
        "size": tif.stat().st_size,
    }
    remote = sources[f"bucket:{data.ELEVATION}"]["content"]
    import s3fs

    fs = s3fs.S3FileSystem(**s3_storage_options)
    members = fs.find(f"{s3_bucket}/{data.ELEVATION}")
    assert remote["files"] == len(members)
    assert remote["size"] == sum(fs.info(m)["size"] for m in members)
    for key in ("multistore", "gdal", "xcube", "numpy", "dask", "zarr"):
        assert lock["versions"][key] not in ("", "not installed"), key
    from importlib import metadata

    assert lock["versions"]["xcube"] == metadata.version("xcube-core")
    # the same sources resolve to the same lock, byte for byte
    assert CliRunner().invoke(main, ["lock", str(path)]).exit_code == 0
    assert lock_file.read_text() == text


def test_locked_build_refuses_changed_sources_and_check_reports_drift(project):
    path = project(landscape(project.base_config()))
    runner = CliRunner()
    assert runner.invoke(main, ["generate", str(path)]).exit_code == 0  # writes the lock
    lock_file = path.with_name("config.lock.json")
    assert lock_file.is_file()
    check = runner.invoke(main, ["lock", "--check", str(path)])
    assert check.exit_code == 0, check.output
    assert "sources match" in check.output
    assert runner.invoke(main, ["generate", "--locked", str(path)]).exit_code == 0

    overwrite_landcover(project.root / "data" / data.LANDCOVER, shift=1)
    locked = runner.invoke(main, ["generate", "--locked", str(path)])
    assert locked.exit_code == 2, locked.output
    assert f"landscape: source local:{data.LANDCOVER} changed: sha256" in locked.output
    check = runner.invoke(main, ["lock", "--check", str(path)])
    assert check.exit_code == 1
    assert f"source local:{data.LANDCOVER} changed" in check.output
    assert "bucket:" not in check.output  # the unchanged source is not named
    # the cube was not touched by the refused build
    assert MultiSourceDataStore(path).status()[0].reason.startswith("source changed")


def test_locked_build_without_lockfile_exits_2(project):
    path = project(landscape(project.base_config()))
    result = CliRunner().invoke(main, ["generate", "--locked", str(path)])
    assert result.exit_code == 2
    assert "no lockfile config.lock.json" in result.output


def test_changed_source_pixels_make_the_cube_stale_and_generate_rebuilds(project):
    path = project(landscape(project.base_config()))
    msds = MultiSourceDataStore(path)
    assert msds.generate()["landscape"].status is Status.COMPLETED
    attrs = xr.open_zarr(project.root / "out" / "landscape.zarr").attrs
    assert len(attrs["multistore_sources_digest"]) == 16
    assert MultiSourceDataStore(path).status()[0].state is CubeState.COMPLETE

    new = overwrite_landcover(project.root / "data" / data.LANDCOVER, shift=2)
    rows = MultiSourceDataStore(path).status()
    assert rows[0].state is CubeState.STALE
    assert rows[0].reason == f"source changed: local:{data.LANDCOVER}"
    status = CliRunner().invoke(main, ["status", str(path)])
    assert f"stale (source changed: local:{data.LANDCOVER})" in status.output

    again = MultiSourceDataStore(path)
    assert again.generate()["landscape"].status is Status.COMPLETED  # rebuilt, not skipped
    raw = xr.open_zarr(project.root / "out" / "landscape.zarr", mask_and_scale=False)
    expected = warp(new, TargetGrid.from_bbox(*GRID))
    assert np.mean(raw["land_cover"].values == expected) >= 0.99
    assert MultiSourceDataStore(path).status()[0].state is CubeState.COMPLETE
    assert MultiSourceDataStore(path).generate()["landscape"].status is Status.SKIPPED


def test_two_clean_builds_are_byte_identical(project):
    path = project(landscape(project.base_config()))
    cube = project.root / "out" / "landscape.zarr"
    assert MultiSourceDataStore(path).generate()["landscape"].status is Status.COMPLETED
    first = cube_bytes(cube)
    shutil.rmtree(project.root / "out")
    assert MultiSourceDataStore(path).generate()["landscape"].status is Status.COMPLETED
    second = cube_bytes(cube)
    assert sorted(first) == sorted(second)
    differing = [name for name in first if first[name] != second[name]]
    assert differing == []
    assert any(name.startswith("land_cover/") and name[-1].isdigit() for name in first)


def test_two_clean_builds_on_s3_storage_are_byte_identical(project, s3_bucket, s3_storage_options):
    import s3fs

    config = landscape(project.base_config())
    config["data_stores"][0] = {
        "identifier": "storage",
        "store_id": "s3",
        "store_params": {"root": f"{s3_bucket}/cubes", "storage_options": s3_storage_options},
    }
    path = project(config)
    fs = s3fs.S3FileSystem(**s3_storage_options)
    cube = f"{s3_bucket}/cubes/landscape.zarr"
    builds = []
    for _ in range(2):
        if fs.exists(f"{s3_bucket}/cubes"):
            fs.rm(f"{s3_bucket}/cubes", recursive=True)
        fs.invalidate_cache()
        assert MultiSourceDataStore(path).generate()["landscape"].status is Status.COMPLETED
        fs.invalidate_cache()
        builds.append({k[len(cube) :]: fs.cat_file(k) for k in fs.find(cube)})
    first, second = builds
    assert sorted(first) == sorted(second) and len(first) > 10
    assert [name for name in first if first[name] != second[name]] == []
