"""Assets without the raster extension keep their dtype and nodata (issue 10.2).

The catalog is the tiny catalog written without ``raster:bands``, served over
local HTTP; dtypes and nodata are checked against rasterio reading the raw
COGs, header reads are counted in the server's request log.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from multistore.errors import SourceOpenError
from multistore.stores.stac import StacDataStore
from tests.servers.stac import serve_directory
from tests.servers.stac_catalog import FAR_COLLECTION, TINY_COLLECTION, make_tiny_catalog
from tests.stores.test_stac import DAY1, DAY2, DAY3, GRID, assert_same, reference

pytestmark = [
    pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:odc.*"),
]


@pytest.fixture(scope="module")
def plain_catalog(tmp_path_factory):
    return make_tiny_catalog(tmp_path_factory.mktemp("plain-stac"), raster_extension=False)


@pytest.fixture()
def plain_http(plain_catalog):
    server = serve_directory(plain_catalog.root)
    yield server
    server.close()


def tif_gets(log, collection: str, asset: str, method: str = "GET") -> int:
    """Requests for COGs of ``asset`` in ``collection`` (the JSON documents excluded)."""
    counts = log.heads if method == "HEAD" else log.counts
    return sum(
        n
        for path, n in counts.items()
        if path.startswith(f"/{collection}/") and path.endswith(f"/{asset}.tif")
    )


def raw_header(catalog, asset: str) -> tuple[str, float | None]:
    with rasterio.open(next(iter(catalog.items.values())).assets[asset]) as src:
        return src.dtypes[0], src.nodata


def test_catalog_has_no_raster_extension(plain_catalog):
    doc = json.loads(next(plain_catalog.root.rglob("A-32632-0601.json")).read_text())
    assert all("raster:bands" not in a for a in doc["assets"].values())
    assert not any("raster" in ext for ext in doc["stac_extensions"])


def test_dtype_and_nodata_come_from_one_header_per_asset_key(plain_catalog, plain_http):
    store = StacDataStore(f"{plain_http.url}/catalog.json")
    ds = store.open_data(TINY_COLLECTION, target_grid=GRID.to_dict(), asset_names=["SCL", "B04"])
    # lazily opened: the only COG requests so far are the header reads
    assert tif_gets(plain_http.log, TINY_COLLECTION, "SCL") == 1
    assert tif_gets(plain_http.log, TINY_COLLECTION, "B04") == 1
    assert tif_gets(plain_http.log, TINY_COLLECTION, "B08") == 0
    # GDAL 3.6 asks for the size first (HEAD), then reads the header in one range GET
    assert tif_gets(plain_http.log, TINY_COLLECTION, "SCL", "HEAD") <= 1
    for name in ("SCL", "B04"):
        dtype, nodata = raw_header(plain_catalog, name)
        assert nodata is not None, "the test COGs must carry a nodata value"
        assert ds[name].dtype == np.dtype(dtype)
        assert ds[name].attrs["nodata"] == nodata
        assert ds[name].encoding["_FillValue"] == nodata
    assert ds.SCL.dtype == np.uint8
    assert_same(ds.B04.values, reference(plain_catalog, [DAY1, DAY2, DAY3], "B04"))
    assert_same(ds.SCL.values, reference(plain_catalog, [DAY1, DAY2, DAY3], "SCL"))

    # the same store remembers the headers: a second open reads none
    scl_gets = tif_gets(plain_http.log, TINY_COLLECTION, "SCL")
    again = store.open_data(TINY_COLLECTION, target_grid=GRID.to_dict(), asset_names=["SCL"])
    assert again.SCL.dtype == np.uint8
    assert tif_gets(plain_http.log, TINY_COLLECTION, "SCL") == scl_gets

    # another collection: its own header read, once
    far = store.open_data(FAR_COLLECTION, asset_names=["SCL"])
    assert far.SCL.dtype == np.uint8
    assert far.SCL.attrs["nodata"] == raw_header(plain_catalog, "SCL")[1]
    assert tif_gets(plain_http.log, FAR_COLLECTION, "SCL") == 1


def test_all_raster_assets_without_asset_names(plain_catalog, plain_http):
    store = StacDataStore(f"{plain_http.url}/catalog.json")
    ds = store.open_data(TINY_COLLECTION, target_grid=GRID.to_dict())
    assert {name: ds[name].dtype.name for name in ds.data_vars} == {
        name: raw_header(plain_catalog, name)[0] for name in ("B04", "B08", "SCL")
    }
    assert all(tif_gets(plain_http.log, TINY_COLLECTION, a) == 1 for a in ("B04", "B08", "SCL"))


def test_declared_raster_bands_read_no_header(tiny_catalog):
    server = serve_directory(tiny_catalog.root)
    try:
        ds = StacDataStore(f"{server.url}/catalog.json").open_data(
            TINY_COLLECTION, target_grid=GRID.to_dict(), asset_names=["SCL"]
        )
        assert ds.SCL.dtype == np.uint8
        assert tif_gets(server.log, TINY_COLLECTION, "SCL") == 0
    finally:
        server.close()


def test_unreadable_header_tries_other_items_then_fails(plain_catalog, plain_http):
    scl_paths = sorted(
        "/" + str(info.assets["SCL"].relative_to(plain_catalog.root))
        for info in plain_catalog.items.values()
        if info.collection == TINY_COLLECTION
    )
    first = "/tiny-s2/2024-06-01/A-32632-0601/SCL.tif"
    assert first in scl_paths
    plain_http.log.fail.add(first)  # the first item's COG answers 500
    store = StacDataStore(f"{plain_http.url}/catalog.json", retries=0)
    ds = store.open_data(TINY_COLLECTION, target_grid=GRID.to_dict(), asset_names=["SCL"])
    assert ds.SCL.dtype == np.uint8  # from the next item's header

    # every B08 COG fails (B08: GDAL has cached no header of it in this process)
    plain_http.log.fail.update(p.replace("/SCL.tif", "/B08.tif") for p in scl_paths)
    with pytest.raises(SourceOpenError, match="asset 'B08' of collection 'tiny-s2' declares no"):
        store.open_data(TINY_COLLECTION, target_grid=GRID.to_dict(), asset_names=["B08"])
