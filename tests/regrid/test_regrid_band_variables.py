"""Band variables are warped together (issue 11.2), checked against GDAL band by band.

xcube's GeoTIFF opener makes one variable per band by default
(``band_as_variable: true``); they share the source grid and method, so they
must cost what one multi-band variable costs: one warp task per tile.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from multistore.regrid import regrid_dataset
from multistore.regrid.kernel import warp_group_reading
from tests.regrid.test_regrid_engine import (
    LAEA,
    assert_matches_gdal,
    categorical,
    gdal_reference,
    grow,
    open_geotiff,
    target_around,
)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

TRANSFORM = Affine(30, 0, 4_200_000, 0, -30, 2_900_000)
BOUNDS = (4_200_000, 2_900_000 - 240 * 30, 4_200_000 + 320 * 30, 2_900_000)


def write_tif(path, data, nodata):
    profile = dict(
        driver="GTiff", width=320, height=240, count=data.shape[0], dtype=data.dtype.name,
        crs=LAEA, transform=TRANSFORM, nodata=nodata, tiled=True, blockxsize=64, blockysize=64,
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


@pytest.fixture
def stack(tmp_path):
    data = categorical(np.random.default_rng(7), (4, 240, 320))
    data[:, 100:130, 40:200] = 255
    data[2, 10:40, 10:60] = 255  # one band with its own hole
    return write_tif(tmp_path / "stack.tif", data, 255), data


def warp_tasks(arr) -> set:
    return {k for k in arr.__dask_graph__() if isinstance(k, tuple) and k[0].startswith("warp-")}


def test_band_variables_match_gdal_and_the_band_dim_spelling(stack):
    path, data = stack
    target = target_around(LAEA, BOUNDS, "EPSG:4326", 0.0002, 100, pad=0.004)
    as_vars = regrid_dataset(open_geotiff(path, band_as_variable=True), target)
    as_dim = regrid_dataset(open_geotiff(path, band_as_variable=False), target)
    assert list(as_vars.data_vars) == ["band_1", "band_2", "band_3", "band_4"]
    for b in range(4):
        got = as_vars[f"band_{b + 1}"]
        assert got.dtype == np.uint8 and got.encoding["_FillValue"] == 255
        ref = gdal_reference(data[b], TRANSFORM, LAEA, target, "nearest", 255, 255)
        assert_matches_gdal(got.values, ref, 255, "nearest", 5)
        np.testing.assert_array_equal(got.values, as_dim["data"].values[b])
    # one warp task per tile for all four variables, as for the band dim
    names = list(as_vars.data_vars)
    tasks = set().union(*(warp_tasks(as_vars[n].data) for n in names))
    assert tasks == warp_tasks(as_vars["band_1"].data)
    non_empty = len(tasks)
    assert non_empty == len(warp_tasks(as_dim["data"].data))
    assert non_empty <= len(target.chunks[0]) * len(target.chunks[1])


def test_float_bands_bilinear_and_mixed_methods(tmp_path):
    rng = np.random.default_rng(8)
    yy, xx = np.mgrid[0:240, 0:320]
    data = np.stack(
        [np.sin(xx / (20 + 5 * b)) * np.cos(yy / 30) * 100 + rng.normal(0, 1, xx.shape)
         for b in range(3)]
    ).astype("float32")  # fmt: skip
    data[1, 50:70, 50:90] = -9999
    path = write_tif(tmp_path / "float.tif", data, -9999)
    ds = open_geotiff(path, band_as_variable=True)
    target = target_around(LAEA, BOUNDS, "EPSG:4326", 0.0002, 64)
    params = {"method": {"band_1": "bilinear", "band_2": "bilinear", "band_3": "nearest"}}
    out = regrid_dataset(ds, target, params)
    as_dim = regrid_dataset(
        open_geotiff(path, band_as_variable=False), target, {"method": "bilinear"}
    )
    for b, method in enumerate(["bilinear", "bilinear", "nearest"]):
        got = out[f"band_{b + 1}"].values
        ref = gdal_reference(data[b], TRANSFORM, LAEA, target, method, -9999, -9999)
        # A multi-band GDAL call with per-band masks (UNIFIED_SRC_NODATA=NO) may keep a
        # bilinear pixel that a single-band call drops, next to a band's own hole.
        m_got, m_ref = got == -9999, ref == -9999
        assert not ((m_got != m_ref) & ~(grow(m_ref, 2) & grow(~m_ref, 2))).any()
        valid = ~m_got & ~m_ref
        assert valid.mean() > 0.3
        assert np.abs(got[valid].astype("float64") - ref[valid]).mean() < 2.0
        if method == "bilinear":  # both spellings give the same values
            np.testing.assert_array_equal(got, as_dim["data"].values[b])
    # bands 1 and 2 share tasks; band 3 (another method) has its own
    t1, t2, t3 = (warp_tasks(out[f"band_{b}"].data) for b in (1, 2, 3))
    assert t1 == t2 and not (t1 & t3)


def test_bands_split_from_one_block_read_are_still_read_inside_the_tasks():
    """Like rioxarray's band variables: getitems of one 3-band block read per chunk."""
    import dask.array as da

    from tests.regrid.test_regrid_engine import affine_dataset

    data = categorical(np.random.default_rng(9), (3, 240, 320))
    blocks = da.from_array(data, chunks=(3, 64, 64)).map_blocks(np.copy)  # one read per block
    base = affine_dataset(data[0], TRANSFORM, LAEA.to_wkt(), chunks=64)
    ds = base.drop_vars("v").assign(
        {
            f"band_{b + 1}": (("y", "x"), blocks[b], {"grid_mapping": "spatial_ref"})
            for b in range(3)
        }
    )
    target = target_around(LAEA, BOUNDS, "EPSG:4326", 0.0003, 64)
    out = regrid_dataset(ds, target, {"method": "nearest"})
    graph = out["band_1"].data.__dask_graph__()
    warp = next(name for name in graph.layers if name.startswith("warp-"))
    # the shared block read is needed by exactly the tasks that need each band's chunk:
    # tasks read their own windows (no shared-chunk graph, whose reads run ahead)
    assert all(t[0] is warp_group_reading for t in dict(graph.layers[warp]).values())
    for b in range(3):
        ref = gdal_reference(data[b], TRANSFORM, LAEA, target, "nearest", None, 255)
        assert np.mean(out[f"band_{b + 1}"].values == ref) > 0.99
