"""Band variables of a GeoTIFF reopened as one multi-band read per block (issue 11).

Values are compared with rasterio's own read of the file; names, attrs and
coords with xcube's ``band_as_variable: true`` open.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine
from xcube.core.store import new_data_store

from multistore.config.model import RetryConfig, SourceConfig
from multistore.cube import _with_aligned_chunks
from multistore.sourcechunks import split_bands

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture
def geotiff(tmp_path):
    data = np.random.default_rng(3).integers(0, 200, (3, 1300, 1100)).astype("uint8")
    profile = dict(
        driver="GTiff", width=1100, height=1300, count=3, dtype="uint8", crs="EPSG:3035",
        transform=Affine(30, 0, 4_000_000, 0, -30, 2_900_000), tiled=True, nodata=255,
        blockxsize=256, blockysize=256, compress="deflate", interleave="band",
    )  # fmt: skip
    with rasterio.open(tmp_path / "s.tif", "w", **profile) as dst:
        dst.write(data)
    return tmp_path


def test_band_variables_read_all_bands_at_once(geotiff):
    store = new_data_store("file", root=str(geotiff))
    plain = store.open_data(
        "s.tif"
    ).base_dataset  # xcube's default: band variables, one chunk per band
    source = SourceConfig("v", "src", "s.tif", location="datasets[0]")
    ds = _with_aligned_chunks(plain, source, store, {}, RetryConfig(max_retries=0))
    assert list(ds.data_vars) == ["band_1", "band_2", "band_3"]
    with rasterio.open(geotiff / "s.tif") as r:
        raw = r.read()
        bh, bw = r.block_shapes[0]
    for i, name in enumerate(ds.data_vars):
        var = ds[name]
        assert var.attrs == plain[name].attrs
        assert var.dims == plain[name].dims
        np.testing.assert_array_equal(var.values, raw[i])
        assert all(c % bh == 0 for c in var.chunks[0][:-1])
        assert all(c % bw == 0 for c in var.chunks[1][:-1])
    xr.testing.assert_identical(ds.coords.to_dataset(), plain.coords.to_dataset())
    # one read per block behind all bands: the bands' graphs share their read nodes
    graph = {}
    for n in ds.data_vars:
        graph.update(dict(ds[n].data.__dask_graph__()))
    reads = [k for k in graph if isinstance(k, tuple) and not str(k[0]).startswith("getitem")]
    n_blocks = len(ds["band_1"].chunks[0]) * len(ds["band_1"].chunks[1])
    assert len(reads) == n_blocks


def test_split_refuses_datasets_that_do_not_correspond(geotiff):
    store = new_data_store("file", root=str(geotiff))
    plain = store.open_data("s.tif").base_dataset
    multi = store.open_data("s.tif", tile_size=[512, 512], band_as_variable=False).base_dataset
    assert split_bands(multi, plain) is not None
    assert split_bands(multi, plain.drop_vars("band_3")) is None  # band count differs
    assert split_bands(multi, plain.rename({"band_1": "red"})) is None  # not band variables
    assert split_bands(multi.astype("int16"), plain) is None  # other values
