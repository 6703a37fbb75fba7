"""Curvilinear sources (2-D lon/lat of pixel centres) against a KD-tree on those centres."""

from __future__ import annotations

import numpy as np
import pyproj
import pytest
import xarray as xr
from scipy.spatial import cKDTree

from multistore.grid import TargetGrid
from multistore.regrid import regrid_dataset
from multistore.regrid.source import pixel_corners

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

# A Stage IV-like grid: 118 x 87 pixels of 4 km on a Lambert conformal conic projection.
LCC = pyproj.CRS.from_proj4(
    "+proj=lcc +lat_1=33 +lat_2=45 +lat_0=39 +lon_0=-96 +x_0=0 +y_0=0 +ellps=WGS84 +units=m"
)
NX, NY, RES = 118, 87, 4000.0
X0, Y0 = 200_000.0, -100_000.0  # south-west corner of the grid


def unit_vectors(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    lo, la = np.radians(lon), np.radians(lat)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


@pytest.fixture
def stage_iv_like(tmp_path):
    """A CF NetCDF with 2-D lat/lon of pixel centres (rows south to north) and missing pixels."""
    x = X0 + (np.arange(NX) + 0.5) * RES
    y = Y0 + (np.arange(NY) + 0.5) * RES
    xx, yy = np.meshgrid(x, y)
    lon, lat = pyproj.Transformer.from_crs(LCC, "EPSG:4326", always_xy=True).transform(xx, yy)
    rng = np.random.default_rng(7)
    # distinct values per pixel, so any neighbour mix-up shows
    precip = rng.permutation(NX * NY).reshape(NY, NX).astype("float32")
    precip[rng.random((NY, NX)) < 0.05] = np.nan
    ds = xr.Dataset(
        {"precip": (("y", "x"), precip, {"units": "mm", "coordinates": "lat lon"})},
        coords={
            "lat": (("y", "x"), lat, {"standard_name": "latitude", "units": "degrees_north"}),
            "lon": (("y", "x"), lon, {"standard_name": "longitude", "units": "degrees_east"}),
        },
    )
    path = tmp_path / "st4.nc"
    ds.to_netcdf(path, encoding={"precip": {"_FillValue": -9999.0}})
    return path, lon, lat, precip


@pytest.mark.parametrize("tile_size", [32, 512])
def test_nearest_matches_kdtree_on_pixel_centres(stage_iv_like, tile_size):
    path, lon, lat, precip = stage_iv_like
    west, south = np.floor(lon.min() * 20) / 20, np.floor(lat.min() * 20) / 20
    east, north = np.ceil(lon.max() * 20) / 20, np.ceil(lat.max() * 20) / 20
    target = TargetGrid.from_bbox([west, south, east, north], "EPSG:4326", 0.05, tile_size)
    # h5netcdf: netCDF-C is not safe under dask threads (see multistore.netcdf)
    with xr.open_dataset(path, engine="h5netcdf", chunks={"y": 40, "x": 50}) as ds:
        got = regrid_dataset(ds, target, {"method": "nearest"})["precip"].values

    tx, ty = np.meshgrid(target.x_coords, target.y_coords)
    tree = cKDTree(unit_vectors(lon.ravel(), lat.ravel()))
    _, nearest = tree.query(unit_vectors(tx.ravel(), ty.ravel()))
    expected = precip.ravel()[nearest].reshape(tx.shape)
    # target pixels whose centre lies inside the source grid's outer pixel edges
    px, py = pyproj.Transformer.from_crs("EPSG:4326", LCC, always_xy=True).transform(tx, ty)
    inside = (px > X0) & (px < X0 + NX * RES) & (py > Y0) & (py < Y0 + NY * RES)

    valid = np.isfinite(got)
    assert valid.sum() > 0.9 * np.isfinite(expected[inside]).sum()
    agree = (got[valid] == expected[valid]).mean()
    assert agree >= 0.99, f"{agree:.1%} of valid pixels equal the KD-tree nearest centre"
    # the covered area is the source's pixels, not its centres' hull shifted by half a pixel
    assert (valid & ~inside).sum() <= 0.002 * inside.sum()
    assert (~valid & inside & np.isfinite(expected)).sum() <= 0.002 * inside.sum()


def test_pixel_corners_of_a_regular_grid_are_its_pixel_edges():
    lon_c = -10 + (np.arange(6) + 0.5) * 0.5
    lat_c = 40 - (np.arange(4) + 0.5) * 0.5
    lon, lat = np.meshgrid(lon_c, lat_c)
    corners = pixel_corners(lon, lat)
    assert corners.shape == (2, 5, 7)
    edges_lon, edges_lat = np.meshgrid(-10 + np.arange(7) * 0.5, 40 - np.arange(5) * 0.5)
    # great-circle midpoints differ from lon/lat means by far less than a pixel
    np.testing.assert_allclose(corners[0], edges_lon, atol=2e-3)
    np.testing.assert_allclose(corners[1], edges_lat, atol=2e-3)


def test_pixel_corners_across_the_antimeridian_and_missing_centres():
    lon, lat = np.meshgrid(np.array([179.0, -179.0, -177.0, -175.0]), np.array([1.0, -1.0, -3.0]))
    lat = lat.copy()
    lat[1, 2] = np.nan  # corners next to a missing centre use the centres that exist
    corners = pixel_corners(lon, lat)
    assert corners.shape == (2, 4, 5)
    assert np.isfinite(corners).all()
    # between 179 and -179 lies the antimeridian, not 0
    assert abs(abs(corners[0, 1, 1]) - 180.0) < 1e-6
    assert corners[:, 0, 0] == pytest.approx([178.0, 2.0], abs=1e-2)  # extrapolated outwards
