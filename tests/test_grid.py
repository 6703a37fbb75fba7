import numpy as np
import pyproj
import pytest
import xarray as xr

from multistore.grid import TargetGrid, crs_of


def test_from_bbox_covers_the_bbox_and_keeps_the_top_left_corner():
    grid = TargetGrid.from_bbox([-1.25, 43.5, 0.5, 44.8], "EPSG:4326", 0.00025, 1000)
    assert (grid.width, grid.height) == (7000, 5200)
    assert grid.chunks == ((1000,) * 5 + (200,), (1000,) * 7)
    w, s, e, n = grid.bounds
    assert (w, n) == (-1.25, 44.8) and e >= 0.5 and s <= 43.5
    odd = TargetGrid.from_bbox([0, 0, 10.5, 10], "EPSG:3035", [3, 2], [4, 3])
    assert (odd.width, odd.height, odd.tile_size) == (4, 5, (4, 3))
    assert len(list(odd.windows())) == 2


def test_coords_are_pixel_centres_and_cf_metadata_round_trips():
    grid = TargetGrid.from_bbox([500000, 4000000, 501000, 4001000], "EPSG:32633", 100, 4)
    coords = grid.coords()
    assert coords["x"].values[0] == 500050 and coords["y"].values[0] == 4000950
    ds = xr.Dataset(
        {"v": (("y", "x"), np.zeros(grid.shape), {"grid_mapping": "spatial_ref"})}, coords=coords
    )
    assert crs_of(ds) == pyproj.CRS.from_epsg(32633)
    again = TargetGrid.from_dataset(ds.chunk({"x": 4, "y": 4}))
    assert again.same_grid(grid) and again.tile_size == (4, 4)
    assert TargetGrid.from_dict(grid.to_dict()) == grid


def test_geographic_names_and_xcube_grid_mapping():
    grid = TargetGrid.from_bbox([10, 40, 11, 41], "EPSG:4326", 0.1, 5)
    assert (grid.x_name, grid.y_name) == ("lon", "lat")
    gm = grid.to_xcube()
    assert gm.size == (10, 10)
    np.testing.assert_allclose(gm.x_min, 10) and np.testing.assert_allclose(gm.y_min, 40)


def test_rejects_nonsense():
    with pytest.raises(ValueError):
        TargetGrid.from_bbox([0, 0, 1, 1], "EPSG:4326", [0.1, 0.1, 0.1])


def test_crs_transformer_is_reused_per_crs_pair():
    import pyproj

    from multistore.grid import crs_transformer

    laea = pyproj.CRS.from_epsg(3035)
    first = crs_transformer(pyproj.CRS.from_epsg(4326), laea)
    # an equal CRS built another way finds the same transformer
    assert crs_transformer(pyproj.CRS("EPSG:4326"), pyproj.CRS.from_wkt(laea.to_wkt())) is first
    assert crs_transformer(laea, pyproj.CRS.from_epsg(4326)) is not first
    fresh = pyproj.Transformer.from_crs(4326, 3035, always_xy=True)
    assert first.transform(10.0, 52.0) == fresh.transform(10.0, 52.0)
