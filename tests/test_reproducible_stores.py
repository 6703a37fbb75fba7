"""Issue 14 for the Zenodo, STAC and Earth Engine stores, each against its local server:
the lock names what identifies the content, and two clean builds are byte-identical."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from click.testing import CliRunner
from rasterio.warp import transform_bounds

from multistore import MultiSourceDataStore
from multistore.cli.main import main
from multistore.status import Status
from multistore.testing.sample_zenodo import geotiff_bytes
from tests.servers.earthengine import store_params as ee_store_params
from tests.servers.stac_catalog import TINY_COLLECTION

pytestmark = [
    pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
]

RID = "4242"
BBOX = [11.982, 47.992, 12.018, 48.012]
HEIGHT = np.linspace(0, 40, 32 * 32, dtype=np.float32).reshape(32, 32)


def write(tmp_path: Path, stores: list[dict], dataset: dict, **grid: object) -> Path:
    config: dict = {
        "data_stores": [
            {"identifier": "storage", "store_id": "file", "store_params": {"root": "out"}},
            *stores,
        ],
        "datasets": [dataset],
        "general": {"display": "none", "retries": {"max_retries": 0}},
    }
    if grid:
        config["grid_mappings"] = [{"identifier": "gm", **grid}]
        dataset["grid_mapping"] = "gm"
    path = tmp_path / "project.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def build_twice(path: Path, ident: str) -> None:
    """Two clean builds: every file of the cube has the same bytes."""
    out = path.parent / "out"
    builds = []
    for _ in range(2):
        shutil.rmtree(out, ignore_errors=True)
        result = MultiSourceDataStore(path).generate()[ident]
        assert result.status is Status.COMPLETED, result.message
        cube = out / f"{ident}.zarr"
        builds.append(
            {str(p.relative_to(cube)): p.read_bytes() for p in cube.rglob("*") if p.is_file()}
        )
    first, second = builds
    assert sorted(first) == sorted(second)
    assert [n for n in first if first[n] != second[n]] == []


def lock_of(path: Path) -> dict:
    return json.loads(path.with_name(f"{path.stem}.lock.json").read_text())


def test_zenodo_record_version_and_md5_are_locked_and_rebuilds_identical(zenodo, tmp_path):
    content = geotiff_bytes(HEIGHT, nodata=-9999.0)
    zenodo.add_record(RID, {"height.tif": content})
    store = {
        "identifier": "zen",
        "store_id": "zenodo",
        "store_params": {"root": RID, "base_url": zenodo.base_url, "max_retries": 0},
    }
    path = write(
        tmp_path, [store], {"identifier": "height", "store": "zen", "data_id": "height.tif"}
    )
    build_twice(path, "height")
    [source] = lock_of(path)["datasets"]["height"]["sources"].values()
    assert source["content"]["record_id"] == RID
    assert source["content"]["key"] == "height.tif"
    assert source["content"]["md5"] == hashlib.md5(content).hexdigest()

    # a new upload under the same record: the check names the changed md5
    zenodo.add_record(RID, {"height.tif": geotiff_bytes(HEIGHT + 1, nodata=-9999.0)})
    check = CliRunner().invoke(main, ["lock", "--check", str(path)])
    assert check.exit_code == 1, check.output
    assert "height: source zen:height.tif changed: md5" in check.output


def test_stac_items_are_locked_and_rebuilds_identical(stac_http, tiny_catalog, tmp_path):
    store = {
        "identifier": "cat",
        "store_id": "stac",
        "store_params": {"url": f"{stac_http.url}/catalog.json"},
    }
    dataset = {
        "identifier": "s2",
        "store": "cat",
        "data_id": TINY_COLLECTION,
        "open_params": {"asset_names": ["B04"]},
    }
    path = write(
        tmp_path,
        [store],
        dataset,
        crs="EPSG:4326",
        bbox=BBOX,
        spatial_res=0.0002,
        tile_size=[64, 48],
    )
    build_twice(path, "s2")
    [source] = lock_of(path)["datasets"]["s2"]["sources"].values()
    items = source["content"]["items"]
    assert sorted(i["id"] for i in items) == overlapping(tiny_catalog, BBOX)
    for item in items:
        expected = tiny_catalog.items[item["id"]]
        assert (
            Path(item["assets"]["B04"].removeprefix(stac_http.url + "/")).name
            == Path(expected.assets["B04"]).name
        )
        assert item["datetime"]


def test_earthengine_image_versions_are_locked_and_rebuilds_identical(ee_emulator, tmp_path):
    store = {
        "identifier": "gee",
        "store_id": "earthengine",
        "store_params": ee_store_params(ee_emulator, max_retries=0),
    }
    dataset = {
        "identifier": "s2",
        "store": "gee",
        "data_id": "TEST/S2LIKE",
        "open_params": {"time_range": ["2024-01-01", "2024-02-01"], "bands": ["B4"]},
    }
    path = write(
        tmp_path,
        [store],
        dataset,
        crs="EPSG:4326",
        bbox=[10.0005, 45.0005, 10.1005, 45.0705],
        spatial_res=0.001,
        tile_size=16,
    )
    build_twice(path, "s2")
    [source] = lock_of(path)["datasets"]["s2"]["sources"].values()
    content = source["content"]
    assert content["bands"] == ["B4"]
    listed = ee_emulator_image_ids(ee_emulator)
    assert [i["id"] for i in content["images"]] == listed
    assert all(i["version"] is not None for i in content["images"])


def ee_emulator_image_ids(emu) -> list[str]:
    """The collection's images in the time range, asked of the emulator through the ee client."""
    import ee

    from multistore.stores.earthengine.session import ensure_initialized
    from multistore.stores.earthengine.store import EarthEngineDataStore

    store = EarthEngineDataStore(**ee_store_params(emu))
    ensure_initialized(store._session)
    info = (
        ee.ImageCollection("TEST/S2LIKE")
        .filterDate("2024-01-01", "2024-02-01")
        .sort("system:time_start")
        .getInfo()
    )
    return [f["id"] for f in info["features"]]


def overlapping(catalog, bbox: list[float]) -> list[str]:
    """Items whose COG footprint (by GDAL, not the item JSON) meets ``bbox``."""
    ids = []
    for item_id, item in catalog.items.items():
        with rasterio.open(item.assets["B04"]) as src:
            w, s, e, n = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        if w < bbox[2] and e > bbox[0] and s < bbox[3] and n > bbox[1]:
            ids.append(item_id)
    return sorted(ids)


def test_zenodo_preloaded_member_names_its_archive_and_manifest(zenodo, tmp_path):
    from xcube.core.store import new_data_store

    from multistore.testing.sample_zenodo import zip_bytes

    archive = zip_bytes({"france/mask.tif": geotiff_bytes(HEIGHT, nodata=-9999.0)})
    zenodo.add_record(RID, {"france.zip": archive})
    store = new_data_store(
        "zenodo",
        root=RID,
        base_url=zenodo.base_url,
        max_retries=0,
        cache_store_params={"root": str(tmp_path / "cache")},
    )
    store.preload_data("france.zip")
    identity = store.source_identity("france/mask.zarr")["content"]
    assert identity["key"] == "france.zip"
    assert identity["md5"] == "md5:" + hashlib.md5(archive).hexdigest()
    assert identity["member"] == "france.zip:mask.tif"  # the archive member it came from
    assert "france/mask.zarr<-france.zip:mask.tif" in identity["members"]


def test_signed_stac_hrefs_are_locked_unsigned(tiny_catalog, tmp_path):
    """Pre-signed hrefs (SAS tokens) change at every signing and carry credentials."""
    root = tmp_path / "signed"
    shutil.copytree(tiny_catalog.root, root)
    signatures = {}
    for n, item_path in enumerate(sorted(root.rglob("*.json"))):
        doc = json.loads(item_path.read_text())
        if doc.get("type") != "Feature":
            continue
        for asset in doc["assets"].values():
            sig = f"s3cretSig{n}%3D"
            signatures[sig] = asset["href"]
            asset["href"] = (
                f"https://account.blob.example/c/{Path(asset['href']).name}"
                f"?st=2026-12-01T00%3A00Z&se=2026-12-02T00%3A00Z&sp=r&sv=2024-05-04&sr=b&sig={sig}"
            )
        item_path.write_text(json.dumps(doc))
    url = str(root / "catalog.json")
    store = {"identifier": "cat", "store_id": "stac", "store_params": {"url": url}}
    dataset = {
        "identifier": "s2",
        "store": "cat",
        "data_id": TINY_COLLECTION,
        "open_params": {"asset_names": ["B04"]},
    }
    path = write(tmp_path, [store], dataset, crs="EPSG:4326", bbox=BBOX, spatial_res=0.0002)
    result = CliRunner().invoke(main, ["lock", str(path)])
    assert result.exit_code == 0, result.output
    text = path.with_name(f"{path.stem}.lock.json").read_text()
    assert "s3cretSig" not in text and "sig=" not in text and "se=" not in text
    [source] = json.loads(text)["datasets"]["s2"]["sources"].values()
    hrefs = [item["assets"]["B04"] for item in source["content"]["items"]]
    assert hrefs and all(h.startswith("https://account.blob.example/c/") for h in hrefs)
    assert all("?" not in h for h in hrefs), hrefs
