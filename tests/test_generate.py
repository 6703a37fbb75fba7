"""End to end through MultiSourceDataStore: values against GDAL, dtypes, skip/stale/force, failures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.warp import Resampling, reproject

from multistore import MultiSourceDataStore
from multistore.demo import data
from multistore.grid import TargetGrid
from multistore.status import Status
from multistore.storage import CubeState


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


def warp_landcover(grid: TargetGrid) -> np.ndarray:
    src, transform, crs = data.landcover_array()
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


def warp_elevation(grid: TargetGrid) -> np.ndarray:
    src = data.elevation_dataset()["elevation"]
    x, y = src.x.values, src.y.values
    res = x[1] - x[0]
    transform = rasterio.Affine(res, 0, x[0] - res / 2, 0, -res, y[0] + res / 2)
    out = np.full(grid.shape, -32768, dtype="int16")
    reproject(
        src.values,
        out,
        src_transform=transform,
        src_crs="EPSG:3035",
        src_nodata=-32768,
        dst_transform=grid.transform,
        dst_crs=grid.crs_wkt,
        dst_nodata=-32768,
        resampling=Resampling.bilinear,
    )
    return out


def test_multi_source_cube_matches_gdal_and_keeps_dtypes(project):
    path = project(landscape(project.base_config()))
    msds = MultiSourceDataStore(path)
    report = msds.generate()
    result = report["landscape"]
    assert result.status is Status.COMPLETED, result.message
    cube = msds.open_cube("landscape")
    raw = xr.open_zarr(project.root / "out" / "landscape.zarr", mask_and_scale=False)
    assert raw["land_cover"].dtype == np.uint8  # stored as the source dtype, not float64
    assert raw["elevation"].dtype == np.int16
    grid = TargetGrid.from_bbox([11.2, 47.6, 12.2, 48.3], "EPSG:4326", 0.004, 64)
    assert cube.sizes["lat"] == grid.height and cube.sizes["lon"] == grid.width
    np.testing.assert_allclose(cube.lon.values, grid.x_coords)
    expected = warp_landcover(grid)
    same = np.mean(raw["land_cover"].values == expected)
    assert same >= 0.99, same
    # chunks follow tile_size, CF grid mapping, provenance and fingerprint attributes
    assert raw["land_cover"].encoding["chunks"] == (64, 64)
    assert "crs_wkt" in cube["spatial_ref"].attrs
    sources = json.loads(cube.attrs["multistore_sources"])
    assert sources == {
        "land_cover": f"local:{data.LANDCOVER}",
        "elevation": f"bucket:{data.ELEVATION}",
    }
    assert cube.attrs["multistore_config_fingerprint"] == msds.plan().cube("landscape").fingerprint
    # nodata of the sources is the cube's fill value, not 0
    assert raw["elevation"].attrs["_FillValue"] == -32768
    elevation = raw["elevation"].values
    expected = warp_elevation(grid)
    assert (expected == -32768).sum() > 20  # the lake is in the target area
    assert np.mean((elevation == -32768) == (expected == -32768)) >= 0.99
    valid = (elevation != -32768) & (expected != -32768)
    value_range = float(expected[valid].max() - expected[valid].min())
    assert np.abs(elevation[valid].astype(float) - expected[valid]).mean() < 0.01 * value_range


def test_rerun_skips_complete_changed_config_rebuilds_force_rebuilds(project):
    config = landscape(project.base_config())
    path = project(config)
    assert MultiSourceDataStore(path).generate()["landscape"].status is Status.COMPLETED
    again = MultiSourceDataStore(path)
    assert [s.state for s in again.status()] == [CubeState.COMPLETE]
    assert again.generate()["landscape"].status is Status.SKIPPED
    assert again.generate(force=True)["landscape"].status is Status.COMPLETED

    config["grid_mappings"][0]["spatial_res"] = 0.005
    path = project(config)
    changed = MultiSourceDataStore(path)
    assert [s.state for s in changed.status()] == [CubeState.STALE]
    assert changed.generate()["landscape"].status is Status.COMPLETED
    assert changed.open_cube("landscape").sizes["lon"] == 200


def test_failing_dataset_fails_alone_with_reason(project):
    config = landscape(project.base_config())
    config["datasets"].append(
        {
            "identifier": "broken",
            "store": "local",
            "data_id": "no_such_file.tif",
            "grid_mapping": "gm",
        }
    )
    config["datasets"].append(
        {
            "identifier": "hooked",
            "store": "local",
            "data_id": data.TEMPERATURE,
            "grid_mapping": "gm",
            "custom_processing": {"module_path": "hooks/hooks.py", "function_name": "explode"},
        }
    )
    report = MultiSourceDataStore(project(config)).generate()
    assert report["landscape"].status is Status.COMPLETED
    assert report["broken"].status is Status.FAILED
    assert "no_such_file.tif" in report["broken"].message
    assert report["hooked"].status is Status.FAILED
    assert "hook exploded on purpose" in report["hooked"].message
    assert "\n" not in report["hooked"].message
    assert report.exit_code == 1
    assert isinstance(report["broken"].error, Exception)


def test_borrowed_grid_hook_and_temporal_resampling(project):
    config = landscape(project.base_config())
    config["datasets"].append(
        {
            "identifier": "climate",
            "store": "local",
            "data_id": data.TEMPERATURE,
            "grid_mapping": "landscape",
            "custom_processing": {
                "module_path": "hooks/hooks.py",
                "function_name": "kelvin_to_celsius",
            },
            "temporal_resample_params": {"frequency": "QS", "method": "mean"},
            "spatial_resample_params": {"method": "nearest"},
        }
    )
    msds = MultiSourceDataStore(project(config))
    assert msds.plan().levels == (("landscape",), ("climate",))
    report = msds.generate()
    assert report.ok, [r.message for r in report.failed]
    climate = msds.open_cube("climate")
    landscape_cube = msds.open_cube("landscape")
    np.testing.assert_allclose(climate.lon.values, landscape_cube.lon.values)
    assert climate.sizes["time"] == 4
    assert climate["temperature"].dtype == np.float32
    # quarterly mean of the source, in Celsius, at a pixel inside the data
    source = data.temperature_dataset()["temperature"]
    lon, lat = float(climate.lon[100]), float(climate.lat[50])
    expected = source.sel(lon=lon, lat=lat, method="nearest")[:3].mean().item() - 273.15
    assert float(climate["temperature"].sel(lon=lon, lat=lat).isel(time=0).values) == pytest.approx(
        expected, abs=1e-3
    )
    assert climate["temperature"].attrs["units"] == "degC"


def test_netcdf_output(project):
    config = project.base_config()
    config["datasets"].append(
        {
            "identifier": "lc_nc",
            "store": "local",
            "data_id": data.LANDCOVER,
            "grid_mapping": "gm",
            "format_id": "netcdf",
            "spatial_resample_params": {"method": "nearest"},
        }
    )
    msds = MultiSourceDataStore(project(config))
    assert msds.generate()["lc_nc"].status is Status.COMPLETED
    with xr.open_dataset(project.root / "out" / "lc_nc.nc", mask_and_scale=False) as nc:
        assert nc["band_1"].dtype == np.uint8
        grid = TargetGrid.from_bbox([11.2, 47.6, 12.2, 48.3], "EPSG:4326", 0.004, 64)
        assert np.mean(nc["band_1"].values == warp_landcover(grid)) >= 0.99


def test_distributed_local_cluster_gives_same_cube(project):
    config = landscape(project.base_config())
    config["general"]["dask"] = {
        "scheduler": "distributed",
        "n_workers": 2,
        "threads_per_worker": 1,
    }
    msds = MultiSourceDataStore(project(config))
    report = msds.generate()
    assert report.ok, [r.message for r in report.failed]
    cube = xr.open_zarr(project.root / "out" / "landscape.zarr", mask_and_scale=False)
    grid = TargetGrid.from_bbox([11.2, 47.6, 12.2, 48.3], "EPSG:4326", 0.004, 64)
    assert np.mean(cube["land_cover"].values == warp_landcover(grid)) >= 0.99


def test_grid_borrowed_from_a_netcdf_cube(project):
    config = project.base_config()
    config["datasets"] += [
        {
            "identifier": "base",
            "store": "local",
            "data_id": data.LANDCOVER,
            "grid_mapping": "gm",
            "format_id": "netcdf",
            "spatial_resample_params": {"method": "nearest"},
        },
        {
            "identifier": "follower",
            "store": "local",
            "data_id": data.TEMPERATURE,
            "grid_mapping": "base",
        },
    ]
    msds = MultiSourceDataStore(project(config))
    report = msds.generate()
    assert report.ok, [r.message for r in report.failed]
    follower = xr.open_zarr(project.root / "out" / "follower.zarr")
    grid = TargetGrid.from_bbox([11.2, 47.6, 12.2, 48.3], "EPSG:4326", 0.004, 64)
    np.testing.assert_allclose(follower.lon.values, grid.x_coords)
    np.testing.assert_allclose(follower.lat.values, grid.y_coords)


def test_a_cube_borrowing_the_grid_of_a_failed_cube_fails_with_that_reason(project):
    config = project.base_config()
    config["datasets"] = [
        {"identifier": "base", "store": "local", "data_id": "missing.tif", "grid_mapping": "gm"},
        {"identifier": "borrower", "store": "local", "data_id": data.LANDCOVER,
         "grid_mapping": "base"},
        {"identifier": "other", "store": "local", "data_id": data.LANDCOVER, "grid_mapping": "gm"},
    ]  # fmt: skip
    results = MultiSourceDataStore(project(config)).generate()
    assert results["base"].status is Status.FAILED
    assert results["borrower"].status is Status.FAILED
    assert results["borrower"].message == "grid source 'base' failed"
    assert results["other"].status is Status.COMPLETED
