"""Every demo cube is georeferenced for common readers: rioxarray, odc-geo and GDAL 3.6.

The expected grid comes from the config itself (pyproj + affine), not from the product.
The landscape cube's hook builds its forest mask with ``xr.where``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyproj
import pytest
import xarray as xr
import yaml
from affine import Affine

REPO = Path(__file__).resolve().parents[1]
CUBES = {  # cube -> its config
    "landscape": "demo.yml",
    "climate": "demo.yml",
    "forest_disturbance": "demo-zenodo.yml",
    "canopy_height": "demo-zenodo.yml",
}


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory) -> Path:
    from multistore import MultiSourceDataStore
    from multistore.demo.run import demo_environment

    root = tmp_path_factory.mktemp("demo")
    for name in set(CUBES.values()):
        shutil.copy(REPO / "configs" / name, root / name)
    shutil.copytree(REPO / "configs" / "hooks", root / "hooks")
    for name in sorted(set(CUBES.values())):
        with demo_environment(root):
            report = MultiSourceDataStore(root / name).generate(display="none")
        assert report.ok, [(r.identifier, r.message) for r in report.failed]
    return root / "demo_output"


def expected_grid(config_name: str, cube: str) -> tuple[pyproj.CRS, Affine, tuple[int, int]]:
    """CRS, affine and (height, width) of ``cube`` read from the YAML config."""
    config = yaml.safe_load((REPO / "configs" / config_name).read_text())
    datasets = {d["identifier"]: d for d in config["datasets"]}
    name = datasets[cube]["grid_mapping"]
    while name in datasets:  # a grid borrowed from another cube
        name = datasets[name]["grid_mapping"]
    gm = next(g for g in config["grid_mappings"] if g["identifier"] == name)
    west, south, east, north = gm["bbox"]
    res = gm["spatial_res"]
    shape = (round((north - south) / res), round((east - west) / res))
    return pyproj.CRS.from_user_input(gm["crs"]), Affine(res, 0, west, 0, -res, north), shape


def assert_affine(got, expected: Affine, what: str) -> None:
    np.testing.assert_allclose(
        tuple(got)[:6], tuple(expected)[:6], rtol=0, atol=1e-9 * max(1, abs(expected.c)),
        err_msg=what,
    )  # fmt: skip


@pytest.mark.parametrize("cube", sorted(CUBES))
def test_rioxarray_and_odc_geo_read_the_grid(demo_output: Path, cube: str):
    import odc.geo.xr  # noqa: F401  (registers .odc)
    import rioxarray  # noqa: F401  (registers .rio)

    crs, transform, shape = expected_grid(CUBES[cube], cube)
    ds = xr.open_zarr(demo_output / f"{cube}.zarr")
    names = [n for n in ds.data_vars if ds[n].ndim >= 2]
    assert names
    if cube == "landscape":
        assert "forest" in names  # made by the hook with xr.where
    for name in names:
        da = ds[name]
        assert pyproj.CRS.from_user_input(da.rio.crs.to_wkt()) == crs, name
        assert_affine(da.rio.transform(), transform, f"rioxarray {cube}.{name}")
        assert (da.rio.height, da.rio.width) == shape
        geobox = da.odc.geobox
        assert geobox is not None, name
        assert pyproj.CRS.from_user_input(geobox.crs.to_wkt()) == crs, name
        assert_affine(geobox.affine, transform, f"odc-geo {cube}.{name}")
        assert tuple(geobox.shape) == shape
    for axis in ("lat", "lon"):
        assert ds[axis].attrs.get("standard_name") == {"lat": "latitude", "lon": "longitude"}[axis]


@pytest.mark.parametrize("cube", sorted(CUBES))
def test_gdal_36_reads_crs_and_geotransform(demo_output: Path, cube: str):
    from osgeo import gdal

    gdal.UseExceptions()
    crs, transform, shape = expected_grid(CUBES[cube], cube)
    ds = xr.open_zarr(demo_output / f"{cube}.zarr")
    for name in (n for n in ds.data_vars if ds[n].ndim >= 2):
        extra = ":0" * (ds[name].ndim - 2)  # GDAL's classic view wants a plane of extra dims
        info = gdal.Info(f'ZARR:"{demo_output / cube}.zarr":/{name}{extra}', format="json")
        assert "coordinateSystem" in info, f"GDAL sees no CRS for {cube}.{name}"
        assert pyproj.CRS.from_wkt(info["coordinateSystem"]["wkt"]) == crs, name
        gt = info["geoTransform"]  # GDAL order: c, a, b, f, d, e
        assert_affine(Affine.from_gdal(*gt), transform, f"GDAL {cube}.{name}")
        assert tuple(info["size"]) == (shape[1], shape[0])
