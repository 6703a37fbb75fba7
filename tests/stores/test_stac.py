"""The stac data store against a static catalog (disk, HTTP, S3) and a STAC API (rustac).

Cube values are compared with a reference mosaic made independently with GDAL
warp (rasterio.warp.reproject of each COG onto the target grid, nearest
neighbour, first valid pixel wins in (datetime, id) order within a solar day).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import rasterio
import rasterio.errors
from rasterio.warp import Resampling, reproject
from xcube.core.store import new_data_store

from multistore.errors import NoItemsError, SourceOpenError, StoreError
from multistore.grid import TargetGrid, crs_of
from multistore.stores.stac import StacDataStore
from multistore.stores.stac.index import build_index
from tests.servers.stac import serve_directory
from tests.servers.stac_catalog import (
    SCL_CLOUD_HIGH,
    SCL_CLOUD_MEDIUM,
    TINY_COLLECTION,
)

pytestmark = [
    # odc-stac reads into plain arrays (GDAL warns about their missing geotransform)
    pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:odc.*"),
]

# Covers both UTM zones' footprints (items straddle 12°E) with a margin.
GRID = TargetGrid.from_bbox([11.982, 47.992, 12.018, 48.012], "EPSG:4326", 0.0002, (64, 48))
DAY1 = ["A-32632-0601", "B-32633-0601"]  # same solar day, 30 s apart
DAY2 = ["C-32632-0611", "D-32633-0611"]
DAY3 = ["E-32632-0621"]


def warp(catalog, item_id: str, asset: str, grid: TargetGrid = GRID) -> np.ndarray:
    info = catalog.items[item_id]
    with rasterio.open(info.assets[asset]) as src:
        out = np.zeros(grid.shape, dtype=src.dtypes[0])
        reproject(
            rasterio.band(src, 1),
            out,
            dst_transform=grid.transform,
            dst_crs=grid.crs_wkt,
            dst_nodata=0,
            resampling=Resampling.nearest,
        )
    return out


def reference(catalog, groups: list[list[str]], asset: str, mask_classes=None) -> np.ndarray:
    steps = []
    for group in groups:
        fused = np.zeros(GRID.shape, dtype="uint16")
        for item_id in sorted(group, key=lambda i: (catalog.items[i].datetime, i)):
            data = warp(catalog, item_id, asset)
            if mask_classes is not None:
                scl = warp(catalog, item_id, "SCL")
                data = np.where(np.isin(scl, mask_classes), 0, data)
            fused = np.where(fused == 0, data, fused)
        steps.append(fused)
    return np.stack(steps)


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    assert (expected > 0).sum() > 1000, "reference has too few valid pixels to be a test"
    mismatch = np.count_nonzero(actual != expected)
    # GDAL warp and odc-stac use the same nearest-neighbour kernel; allow rounding at edges only
    assert mismatch <= 0.002 * expected.size, f"{mismatch} pixels differ"


def open_cube(url: str, **params):
    store = StacDataStore(url, storage_options=params.pop("storage_options", None))
    params.setdefault("target_grid", GRID.to_dict())
    return store.open_data(TINY_COLLECTION, **params)


# -- cubes --------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["disk", "http", "s3"])
def test_static_catalog_cube_matches_gdal_reference(where, tiny_catalog, stac_http, request):
    if where == "disk":
        url, options = str(tiny_catalog.catalog_path), None
    elif where == "http":
        url, options = f"{stac_http.url}/catalog.json", None
    else:
        s3 = request.getfixturevalue("stac_s3")
        url, options = s3.url, s3.storage_options
    ds = open_cube(url, storage_options=options, asset_names=["B04", "B08"])
    # solar-day grouping: A and B (30 s apart, two UTM zones) form one time step
    assert ds.sizes["time"] == 3
    assert list(ds.time.dt.strftime("%Y-%m-%d").values) == [
        "2024-06-01",
        "2024-06-11",
        "2024-06-21",
    ]
    assert ds.B04.dtype == np.uint16 and ds.B04.encoding["_FillValue"] == 0
    assert set(ds.data_vars) == {"B04", "B08"}
    assert (ds.lon.values == GRID.x_coords).all() and (ds.lat.values == GRID.y_coords).all()
    assert crs_of(ds).equals(GRID.crs)
    assert ds.B04.chunks[1][0] == 48 and ds.B04.chunks[2][0] == 64  # tiles of the target grid
    assert_same(ds.B04.values, reference(tiny_catalog, [DAY1, DAY2, DAY3], "B04"))
    assert_same(ds.B08.values, reference(tiny_catalog, [DAY1, DAY2, DAY3], "B08"))


def test_stac_api_cube_matches_gdal_reference(stac_api, tiny_catalog):
    store = StacDataStore(stac_api)
    assert store.is_api
    assert store.list_data_ids() == [TINY_COLLECTION]
    ds = store.open_data(TINY_COLLECTION, target_grid=GRID.to_dict(), asset_names=["B04"])
    assert ds.sizes["time"] == 3
    assert_same(ds.B04.values, reference(tiny_catalog, [DAY1, DAY2, DAY3], "B04"))


def test_stac_api_time_and_property_filter(stac_api, tiny_catalog):
    ds = StacDataStore(stac_api).open_data(
        TINY_COLLECTION,
        target_grid=GRID.to_dict(),
        asset_names=["B04"],
        time_range=["2024-06-05", "2024-06-30"],
        query={"eo:cloud_cover": {"lt": 20}},
    )
    assert ds.attrs["stac_item_count"] == 2  # D and E; C is cloudy, day 1 outside the range
    assert_same(ds.B04.values, reference(tiny_catalog, [["D-32633-0611"], DAY3], "B04"))


def test_groupby_time_keeps_each_acquisition(tiny_catalog):
    ds = open_cube(str(tiny_catalog.catalog_path), asset_names=["B04"], groupby="time")
    assert ds.sizes["time"] == 4  # A and B differ by 30 s; C and D share a timestamp
    expected = reference(tiny_catalog, [["A-32632-0601"], ["B-32633-0601"], DAY2, DAY3], "B04")
    assert_same(ds.B04.values, expected)


def test_property_filter_drops_cloudy_item(tiny_catalog):
    ds = open_cube(
        str(tiny_catalog.catalog_path), asset_names=["B04"], filter=["eo:cloud_cover < 20"]
    )
    assert ds.attrs["stac_item_count"] == 4
    expected = reference(tiny_catalog, [DAY1, ["D-32633-0611"], DAY3], "B04")
    assert_same(ds.B04.values, expected)
    # C (cloudy) would have won the overlap on day 2 (earlier id): values must come from D only
    c_only = warp(tiny_catalog, "C-32632-0611", "B04")
    d_only = warp(tiny_catalog, "D-32633-0611", "B04")
    overlap = (c_only > 0) & (d_only > 0)
    assert overlap.sum() > 100
    assert (ds.B04.values[1][overlap] == d_only[overlap]).all()


def test_cql2_filter(tiny_catalog):
    ds = open_cube(
        str(tiny_catalog.catalog_path),
        asset_names=["B04"],
        filter={"op": ">", "args": [{"property": "eo:cloud_cover"}, 50]},
    )
    assert ds.attrs["stac_item_count"] == 1 and ds.sizes["time"] == 1
    assert_same(ds.B04.values, reference(tiny_catalog, [["C-32632-0611"]], "B04"))


def test_mask_applied_per_item_before_fusing(tiny_catalog):
    classes = [SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH]
    ds = open_cube(
        str(tiny_catalog.catalog_path),
        asset_names=["B04"],
        mask={"asset": "SCL", "values": classes},
    )
    assert set(ds.data_vars) == {"B04"} and ds.B04.dtype == np.uint16
    expected = reference(tiny_catalog, [DAY1, DAY2, DAY3], "B04", mask_classes=classes)
    assert_same(ds.B04.values, expected)
    unmasked = reference(tiny_catalog, [DAY1, DAY2, DAY3], "B04")
    assert np.count_nonzero(expected != unmasked) > 200  # the mask really removed pixels


def test_relative_asset_hrefs_are_resolved(tiny_catalog, stac_http):
    doc = json.loads(next(tiny_catalog.root.rglob("A-32632-0601.json")).read_text())
    assert doc["assets"]["B04"]["href"] == "./B04.tif"
    store = StacDataStore(f"{stac_http.url}/catalog.json")
    from multistore.stores.stac.query import ItemQuery

    items = store.find_items(ItemQuery.create(collections=[TINY_COLLECTION]))
    hrefs = [i["assets"]["B04"]["href"] for i in items]
    assert all(h.startswith(stac_http.url + "/tiny-s2/") and h.endswith("/B04.tif") for h in hrefs)


def test_native_grid_without_target_grid(tiny_catalog):
    store = StacDataStore(str(tiny_catalog.catalog_path))
    ds = store.open_data(
        TINY_COLLECTION, asset_names=["B04"], filter=["proj:code = 'EPSG:32632'"], groupby="time"
    )
    assert crs_of(ds).to_epsg() == 32632
    assert set(ds.B04.dims) == {"time", "y", "x"} and ds.sizes["time"] == 3
    info = tiny_catalog.items["A-32632-0601"]
    with rasterio.open(info.assets["B04"]) as src:
        native = src.read(1)
    # items A, C and E share one footprint: the native grid is exactly the COG's
    assert ds.sizes["x"] == 64 and ds.sizes["y"] == 64
    assert float(ds.x[0]) == info.transform.c + 10
    assert (ds.B04.values[0] == native).all()


def test_bbox_with_crs_and_resolution(tiny_catalog):
    store = StacDataStore(str(tiny_catalog.catalog_path))
    ds = store.open_data(
        TINY_COLLECTION,
        asset_names=["B04"],
        bbox=[722760, 5320000, 724040, 5321280],
        crs="EPSG:32632",
        spatial_res=40,
    )
    assert crs_of(ds).to_epsg() == 32632 and ds.sizes["x"] == 32 and ds.sizes["y"] == 32
    assert int(ds.B04.max().values) > 0


def test_index_backed_store_equals_crawl(tiny_catalog, tmp_path):
    index = tmp_path / "items.parquet"
    build_index(str(tiny_catalog.catalog_path), index, concurrency=2)
    crawled = open_cube(str(tiny_catalog.catalog_path), asset_names=["B04"])
    indexed = StacDataStore(str(tiny_catalog.catalog_path), index=str(index)).open_data(
        TINY_COLLECTION, target_grid=GRID.to_dict(), asset_names=["B04"]
    )
    assert (crawled.B04.values == indexed.B04.values).all()


# -- discovery ----------------------------------------------------------------------------


def test_plugin_entry_point_and_description(tiny_catalog):
    store = new_data_store("stac", url=str(tiny_catalog.catalog_path))
    assert isinstance(store, StacDataStore)
    assert store.list_data_ids() == ["tiny-far", "tiny-s2"]
    assert store.has_data(TINY_COLLECTION) and not store.has_data("nope")
    desc = store.describe_data(TINY_COLLECTION)
    assert set(desc.data_vars) == {"B04", "B08", "SCL"}
    assert desc.data_vars["SCL"].dtype == "uint8" and desc.data_vars["B04"].attrs["nodata"] == 0
    assert desc.time_range == ("2024-06-01", "2024-06-21")
    assert desc.bbox[0] < 12.0 < desc.bbox[2]
    schema = store.get_open_data_params_schema(TINY_COLLECTION).to_dict()
    assert "target_grid" in schema["properties"]


def test_static_crawl_prunes_collections_by_extent(tiny_catalog, stac_http):
    stac_http.log.counts.clear()
    store = StacDataStore(f"{stac_http.url}/catalog.json")
    from multistore.stores.stac.query import ItemQuery

    found = store.find_items(ItemQuery.create(bbox=[11.98, 47.99, 12.02, 48.01]))
    assert {i["id"] for i in found} == set(DAY1 + DAY2 + DAY3)
    # tiny-far's extent does not overlap the bbox: its sub-catalogs and items are never fetched
    assert not [p for p in stac_http.log.counts if p.startswith("/tiny-far/2024")]


# -- errors -------------------------------------------------------------------------------


def test_no_items_error_names_query(tiny_catalog):
    with pytest.raises(NoItemsError) as e:
        open_cube(str(tiny_catalog.catalog_path), time_range=["2023-01-01", "2023-02-01"])
    message = str(e.value)
    assert TINY_COLLECTION in message and "2023-01-01" in message and "bbox" in message


def test_missing_asset_lists_available_keys(tiny_catalog):
    with pytest.raises(SourceOpenError, match=r"no asset\(s\) \['B99'\].*'B04', 'B08', 'SCL'"):
        open_cube(str(tiny_catalog.catalog_path), asset_names=["B99"])


def test_missing_asset_skip_mode_drops_items(tiny_catalog):
    store = StacDataStore(str(tiny_catalog.catalog_path), on_missing_asset="skip")
    with pytest.raises(NoItemsError, match="B99"):
        store.open_data(TINY_COLLECTION, target_grid=GRID.to_dict(), asset_names=["B99"])


def test_unreachable_catalog_names_url():
    url = "http://127.0.0.1:9/no/catalog.json"  # discard port: connection refused
    store = StacDataStore(url, retries=0)
    with pytest.raises(StoreError, match="127.0.0.1:9/no/catalog.json"):
        store.list_data_ids()


def test_unreadable_asset_skip_or_fail(tiny_catalog):
    # a server of its own: GDAL caches what it read from other tests' URLs
    server = serve_directory(tiny_catalog.root)
    server.log.fail.add("/tiny-s2/2024-06-21/E-32632-0621/B04.tif")
    try:
        url = f"{server.url}/catalog.json"
        skipping = StacDataStore(url, on_missing_asset="skip", retries=0)
        ds = skipping.open_data(TINY_COLLECTION, target_grid=GRID.to_dict(), asset_names=["B04"])
        values = ds.B04.values
        assert (values[2] == 0).all()  # the unreadable item left its time step empty
        assert_same(values[:2], reference(tiny_catalog, [DAY1, DAY2], "B04"))
        failing = StacDataStore(url, retries=0)
        ds = failing.open_data(TINY_COLLECTION, target_grid=GRID.to_dict(), asset_names=["B04"])
        with pytest.raises(Exception, match="E-32632-0621|B04.tif|500"):
            ds.B04.values  # noqa: B018
    finally:
        server.close()


def test_bad_open_params_are_rejected(tiny_catalog):
    with pytest.raises(Exception, match="groupby|weekly"):
        open_cube(str(tiny_catalog.catalog_path), groupby="weekly")
    with pytest.raises(Exception, match="cannot parse filter"):
        open_cube(str(tiny_catalog.catalog_path), filter=["cloud ~ 3"])


def test_no_warnings_leak_secrets(stac_s3, caplog):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = open_cube(stac_s3.url, storage_options=stac_s3.storage_options, asset_names=["B04"])
    text = caplog.text + json.dumps(ds.attrs, default=str)
    assert stac_s3.storage_options["secret"] not in text


def test_max_retries_is_spelled_as_in_the_other_stores(tmp_path, caplog):
    from multistore.stores.stac.store import StacDataStore

    assert StacDataStore(str(tmp_path), max_retries=5)._retries == 5
    assert StacDataStore(str(tmp_path))._retries == 3
    with caplog.at_level("WARNING"):
        assert StacDataStore(str(tmp_path), retries=1)._retries == 1  # the older name
    assert "now called 'max_retries'" in caplog.text
    with pytest.raises(ValueError, match="not both"):
        StacDataStore(str(tmp_path), max_retries=1, retries=2)
    schema = StacDataStore.get_data_store_params_schema().to_dict()["properties"]
    assert schema["max_retries"]["default"] == 3 and "retries" in schema
