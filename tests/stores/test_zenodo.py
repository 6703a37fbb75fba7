"""The zenodo data store against the offline emulator: preload, open, errors, secrets, S3 cache."""

from __future__ import annotations

import io
import json
import logging
import tarfile
import zipfile

import numpy as np
import pytest
import xarray as xr
from xcube.core.store import new_data_store

from multistore.errors import (
    ChecksumError,
    ConfigError,
    PreloadError,
    StoreError,
    UnsafeArchiveError,
)
from multistore.stores.zenodo import ZenodoDataStore
from multistore.stores.zenodo.api import resolve_record_id
from multistore.testing.sample_zenodo import geotiff_bytes, zip_bytes

RID = "13333034"
ANNUAL = (np.arange(3 * 32 * 32) % 7).astype(np.uint8).reshape(3, 32, 32)
ANNUAL[:, :2, :2] = 255
MASK = (np.arange(32 * 32) % 2).astype(np.uint8).reshape(32, 32)
HEIGHT = np.linspace(0, 40, 32 * 32, dtype=np.float32).reshape(32, 32)
FAST = dict(max_retries=3, backoff_s=0.01)


def tif(data, **kw) -> bytes:
    return geotiff_bytes(data, **kw)


FRANCE = zip_bytes(
    {
        "annual_disturbances_1985_2023_france.tif": tif(ANNUAL, nodata=255),
        "forest_mask_france.tif": tif(MASK, nodata=255),
    }
)
HEIGHT_TIF = tif(HEIGHT, nodata=-9999.0)


@pytest.fixture
def record(zenodo):  # noqa: F811
    zenodo.add_record(
        RID,
        {
            "france.zip": FRANCE,
            "france2.zip": zip_bytes({"france2/forest_mask_france2.tif": tif(MASK, nodata=255)}),
            "planet_canopy_height_30m_v0.1.tif": HEIGHT_TIF,
        },
    )
    return zenodo


def new_store(server, tmp_path, **params) -> ZenodoDataStore:
    params.setdefault("cache_store_params", {"root": str(tmp_path / "cache")})
    params = {**FAST, **params}
    return new_data_store(
        "zenodo", root=params.pop("root", RID), base_url=server.base_url, **params
    )


def downloads(server, key):
    return [
        r for r in server.requests if r.path == f"/records/{RID}/files/{key}" and r.method == "GET"
    ]


def cache_files(tmp_path) -> set[str]:
    """Every file in the cache, staging area (partial downloads, work folders) included."""
    root = tmp_path / "cache"
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}


@pytest.mark.parametrize(
    "root",
    [
        RID,
        int(RID),
        "10.5281/zenodo.13333034",
        "https://doi.org/10.5281/zenodo.13333034",
        "https://zenodo.org/records/13333034",
        "https://zenodo.org/records/13333034/files/x.zip?download=1",
        "https://zenodo.org/api/records/13333034",
        "https://zenodo.org/record/13333034",
    ],
)
def test_root_resolves_to_record_id(root):
    assert resolve_record_id(root) == RID


@pytest.mark.parametrize("root", ["france", "10.1000/xyz123", "https://example.org/x/13333034", ""])
def test_bad_root_is_a_clear_error(root):
    with pytest.raises(StoreError, match="not a Zenodo record id"):
        resolve_record_id(root)


def test_plugin_entry_point_and_listing(record, tmp_path):
    store = new_store(record, tmp_path, root="10.5281/zenodo.13333034")
    assert isinstance(store, ZenodoDataStore)
    assert store.list_data_ids() == [
        "france.zip",
        "france2.zip",
        "planet_canopy_height_30m_v0.1.tif",
    ]
    info = store.describe_data("france.zip").attrs
    assert info["size"] == len(FRANCE) and info["format"] == "zip" and not info["preloaded"]
    assert info["checksum"].startswith("md5:")


def test_preload_archive_then_open_converted_rasters(record, tmp_path):
    store = new_store(record, tmp_path)
    events = []
    assert store.preload_data("france.zip", progress=events.append) is store
    ids = store.list_data_ids()
    assert {
        "france/annual_disturbances_1985_2023_france.tif",
        "france/annual_disturbances_1985_2023_france.zarr",
        "france/forest_mask_france.tif",
        "france/forest_mask_france.zarr",
    } <= set(ids)
    assert not any(
        i.startswith("france2/") for i in ids
    )  # exact keys: france2.zip is not preloaded

    ds = store.open_data("france/annual_disturbances_1985_2023_france.zarr")
    band_data = ds.band_data
    assert band_data.dims == ("band", "y", "x") and band_data.dtype == np.uint8
    assert band_data.attrs["_FillValue"] == 255
    assert ds.rio.crs.to_epsg() == 3035
    np.testing.assert_array_equal(band_data.values, ANNUAL)

    # what a custom_processing hook does: band -> time
    hooked = ds.rename({"band": "time"}).assign_coords(time=[1985, 1986, 1987])
    assert hooked.band_data.sel(time=1986).values.tolist() == ANNUAL[1].tolist()

    split = store.open_data(
        "france/annual_disturbances_1985_2023_france.zarr", band_as_variable=True
    )
    assert sorted(split.data_vars) == ["band_1", "band_2", "band_3"]
    np.testing.assert_array_equal(split.band_3.values, ANNUAL[2])

    mask = store.open_data("france/forest_mask_france.zarr")
    assert mask.band_data.dims == ("y", "x") and mask.band_data.dtype == np.uint8

    # the unpacked GeoTIFF itself opens through xcube's GeoTIFF opener, params passed through
    member = store.open_data(
        "france/annual_disturbances_1985_2023_france.tif", band_as_variable=False
    )
    (name,) = member.data_vars
    assert member[name].dims == ("band", "y", "x") and member[name].dtype == np.uint8
    np.testing.assert_array_equal(member[name].values, ANNUAL)

    phases = [e.phase for e in events]
    assert phases[0] == "download" and phases[-1] == "done"
    assert {"verify", "unpack", "convert"} <= set(phases)
    last_download = [e for e in events if e.phase == "download"][-1]
    assert last_download.bytes_done == last_download.bytes_total == len(FRANCE)
    assert store.describe_data("france.zip").attrs["preloaded"] is True
    assert store.preload_handle.get_state("france.zip").status.name == "completed"


def test_already_preloaded_is_skipped_across_restarts_and_force_redoes(record, tmp_path):
    new_store(record, tmp_path).preload_data("france.zip")
    assert len(downloads(record, "france.zip")) == 1
    restarted = new_store(record, tmp_path)
    events = []
    restarted.preload_data("france.zip", progress=events.append)
    assert len(downloads(record, "france.zip")) == 1
    assert [e.phase for e in events] == ["skipped"]

    # france2.zip shares a prefix with france.zip: it is not considered preloaded
    restarted.preload_data("france2.zip")
    assert len(downloads(record, "france2.zip")) == 1
    assert "france2/forest_mask_france2.zarr" in restarted.list_data_ids()  # top folder not doubled

    restarted.preload_data("france.zip", force=True)
    assert len(downloads(record, "france.zip")) == 2

    # a lost output makes the preload incomplete: it is redone
    import shutil

    shutil.rmtree(tmp_path / "cache/france/forest_mask_france.zarr")
    restarted.preload_data("france.zip")
    assert len(downloads(record, "france.zip")) == 3


def test_archive_member_without_preload_says_to_preload(record, tmp_path):
    store = new_store(record, tmp_path)
    with pytest.raises(StoreError, match=r"inside the archive 'france.zip'.*preload"):
        store.open_data("france/annual_disturbances_1985_2023_france.zarr")
    with pytest.raises(StoreError, match=r"is an archive: preload it"):
        store.open_data("france.zip")
    with pytest.raises(StoreError, match="Zarr conversion of 'planet_canopy_height_30m_v0.1.tif'"):
        store.open_data("planet_canopy_height_30m_v0.1.zarr")
    with pytest.raises(StoreError, match=r"no data 'nope.tif'; available: 'france.zip'"):
        store.open_data("nope.tif")


def test_lazy_open_over_range_reads(record, tmp_path):
    store = new_store(record, tmp_path)
    ds = store.open_data("planet_canopy_height_30m_v0.1.tif", band_as_variable=False)
    np.testing.assert_array_equal(
        ds["band_data" if "band_data" in ds else next(iter(ds.data_vars))].values, HEIGHT
    )
    gets = downloads(record, "planet_canopy_height_30m_v0.1.tif")
    assert gets and all(r.range is not None and r.status == 206 for r in gets)
    assert sum(1 for r in gets if r.range == "bytes=0-0") == 1  # the 206 probe
    assert not any(p.endswith(".tif") for p in cache_files(tmp_path))  # nothing downloaded
    assert ds.rio.crs.to_epsg() == 3035


def test_without_range_support_the_file_is_downloaded_into_the_cache(record, tmp_path):
    record.file(RID, "planet_canopy_height_30m_v0.1.tif").faults.range_support = False
    store = new_store(record, tmp_path)
    ds = store.open_data("planet_canopy_height_30m_v0.1.tif")
    np.testing.assert_array_equal(ds.band_1.values, HEIGHT)
    assert "planet_canopy_height_30m_v0.1.tif" in cache_files(tmp_path)
    assert store.describe_data("planet_canopy_height_30m_v0.1.tif").attrs["preloaded"] is True


def test_root_raster_preload_gives_a_zarr_keeping_float32(record, tmp_path):
    store = new_store(record, tmp_path)
    store.preload_data("planet_canopy_height_30m_v0.1.tif")
    ds = store.open_data("planet_canopy_height_30m_v0.1.zarr")
    assert ds.band_data.dtype == np.float32 and ds.band_data.attrs["_FillValue"] == -9999
    np.testing.assert_array_equal(ds.band_data.values, HEIGHT)
    desc = store.describe_data("planet_canopy_height_30m_v0.1.zarr")
    assert desc.attrs["converted_from"] == "geotiff" and "band_data" in desc.data_vars


def test_resume_after_killed_preload(record, tmp_path):
    faults = record.file(RID, "france.zip").faults
    faults.truncate, faults.truncate_at = 1, len(FRANCE) // 3
    with pytest.raises(
        PreloadError, match=r"Zenodo record 13333034, file 'france.zip': download interrupted"
    ):
        new_store(record, tmp_path, max_retries=0).preload_data("france.zip")
    (partial,) = cache_files(tmp_path)
    assert partial.startswith(".multistore/staging/partial/france.zip.")
    assert new_store(record, tmp_path).describe_data("france.zip").attrs["preloaded"] is False
    new_store(record, tmp_path).preload_data("france.zip")
    gets = downloads(record, "france.zip")
    assert [g.range for g in gets] == [None, f"bytes={len(FRANCE) // 3}-"]
    ds = new_store(record, tmp_path).open_data("france/forest_mask_france.zarr")
    np.testing.assert_array_equal(ds.band_data.values, MASK)


def test_checksum_mismatch_fails_loudly_and_caches_nothing(record, tmp_path):
    record.file(RID, "france.zip").faults.wrong_checksum = True
    store = new_store(record, tmp_path)
    with pytest.raises(
        ChecksumError, match=r"Zenodo record 13333034, file 'france.zip': md5 mismatch after 3"
    ):
        store.preload_data("france.zip")
    assert len(downloads(record, "france.zip")) == 3
    assert cache_files(tmp_path) == set()
    assert store.list_data_ids() == [
        "france.zip",
        "france2.zip",
        "planet_canopy_height_30m_v0.1.tif",
    ]


def test_429_and_503_storms_are_survived(record, tmp_path):
    record.faults.status_429, record.faults.retry_after = 2, 0
    store = new_store(record, tmp_path)
    store.preload_data("france2.zip")
    record.file(RID, "france.zip").faults.status_503 = 2
    record.file(RID, "france.zip").faults.retry_after = 0
    store.preload_data("france.zip")
    assert [r.status for r in downloads(record, "france.zip")] == [503, 503, 200]
    assert "france/forest_mask_france.zarr" in store.list_data_ids()


def test_record_and_key_errors(record, tmp_path):
    with pytest.raises(
        StoreError, match=r"Zenodo record 999 not found at http://127.0.0.1:\d+ \(HTTP 404\)"
    ):
        new_store(record, tmp_path, root="999").list_data_ids()
    store = new_store(record, tmp_path)
    with pytest.raises(
        StoreError, match=r"has no file 'spain.zip'; available: 'france.zip', 'france2.zip'"
    ):
        store.preload_data("spain.zip")
    with pytest.raises(ConfigError, match=r"preload_params: Additional properties .*'bogus'"):
        store.preload_data("france.zip", bogus=1)


def unsafe_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("ok.tif", tif(MASK))
        zf.writestr("../../evil.tif", b"EVIL")
    return buffer.getvalue()


def test_unsafe_and_corrupt_archives(zenodo, tmp_path):  # noqa: F811
    zenodo.add_record(
        RID, {"evil.zip": unsafe_zip(), "broken.zip": b"PK\x03\x04 definitely not a zip"}
    )
    store = new_store(zenodo, tmp_path)
    with pytest.raises(
        UnsafeArchiveError, match=r"Zenodo record 13333034, evil.zip: member '../../evil.tif'"
    ):
        store.preload_data("evil.zip")
    with pytest.raises(PreloadError, match=r"Zenodo record 13333034, broken.zip: not a zip or tar"):
        store.preload_data("broken.zip")
    assert not list(tmp_path.rglob("evil.tif"))
    assert cache_files(tmp_path) == set()


def test_two_failures_are_reported_together(zenodo, tmp_path):  # noqa: F811
    zenodo.add_record(RID, {"evil.zip": unsafe_zip(), "broken.zip": b"nope"})
    with pytest.raises(PreloadError, match=r"2 of 2 preloads failed:\n.*\n.*"):
        new_store(zenodo, tmp_path).preload_data("evil.zip", "broken.zip")


def test_tar_gz_holding_a_zarr(zenodo, tmp_path):  # noqa: F811
    cube = xr.Dataset({"v": (("time", "lat"), np.arange(6, dtype=np.int16).reshape(2, 3))})
    cube.to_zarr(tmp_path / "cube.zarr", zarr_format=2, consolidated=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        tf.add(tmp_path / "cube.zarr", arcname="cube.zarr")
        tf.add(tmp_path / "cube.zarr" / "v" / ".zarray", arcname="notes/readme.txt")
    zenodo.add_record(RID, {"cube.tar.gz": buffer.getvalue()})
    store = new_store(zenodo, tmp_path)
    store.preload_data("cube.tar.gz")
    ids = store.list_data_ids()
    assert ids == ["cube.tar.gz", "cube/cube.zarr", "cube/notes/readme.txt"]
    np.testing.assert_array_equal(store.open_data("cube/cube.zarr").v.values, cube.v.values)


def test_token_is_sent_but_never_shown(zenodo, tmp_path, caplog):  # noqa: F811
    token = "s3cr3t-t0ken-value"
    zenodo.add_record(RID, {"france.zip": FRANCE}, access_token=token)
    caplog.set_level(logging.DEBUG)
    store = new_store(zenodo, tmp_path, access_token=token)
    store.preload_data("france.zip")
    assert store.open_data("france/forest_mask_france.zarr").band_data.dtype == np.uint8
    assert all(r.authorized for r in zenodo.requests)
    with pytest.raises(StoreError) as info:
        new_store(zenodo, tmp_path, access_token="wrong-t0ken-value").list_data_ids()
    texts = [
        caplog.text,
        str(info.value),
        repr(store),
        repr(store.describe_data("france.zip").to_dict()),
        json.dumps(store.list_data_ids(include_attrs=True)),
        str(store.get_data_store_params_schema().to_dict()),
    ]
    texts += [p.read_text(errors="ignore") for p in (tmp_path / "cache").rglob("*.json")]
    assert "access denied (HTTP 403)" in str(info.value)
    for text in texts:
        assert token not in text and "wrong-t0ken-value" not in text


def test_cache_on_s3(record, tmp_path, s3_bucket, s3_storage_options):
    params = dict(
        cache_store_id="s3",
        cache_store_params={"root": f"{s3_bucket}/zenodo", "storage_options": s3_storage_options},
        staging_dir=str(tmp_path / "staging"),
    )
    store = new_store(record, tmp_path, **params)
    store.preload_data("france.zip")
    ds = store.open_data("france/annual_disturbances_1985_2023_france.zarr")
    assert ds.band_data.dtype == np.uint8
    np.testing.assert_array_equal(ds.band_data.values, ANNUAL)
    fs = store.cache_store.fs
    assert fs.exists(f"{s3_bucket}/zenodo/france/forest_mask_france.zarr/.zmetadata")
    assert fs.exists(f"{s3_bucket}/zenodo/.multistore/manifest/france.zip.json")

    again = new_store(record, tmp_path, **params)
    again.preload_data("france.zip")
    assert len(downloads(record, "france.zip")) == 1
    np.testing.assert_array_equal(
        again.open_data("france/forest_mask_france.zarr").band_data.values, MASK
    )


def test_emulator_speaks_zenodo_shapes(record):
    import hashlib

    import requests

    base = record.base_url
    body = requests.get(f"{base}/api/records/{RID}", timeout=5).json()
    assert body["id"] == int(RID) and body["doi"] == f"10.5281/zenodo.{RID}"
    entry = next(f for f in body["files"] if f["key"] == "france.zip")
    assert entry["size"] == len(FRANCE)
    assert entry["checksum"] == "md5:" + hashlib.md5(FRANCE).hexdigest()
    assert entry["links"]["self"] == f"{base}/api/records/{RID}/files/france.zip/content"
    listing = requests.get(f"{base}/api/records/{RID}/files", timeout=5).json()
    assert [e["key"] for e in listing["entries"]] == [f["key"] for f in body["files"]]

    # like zenodo.org: Range on /records/<id>/files/<key>, not on .../content
    ranged = requests.get(
        f"{base}/records/{RID}/files/france.zip?download=1",
        headers={"Range": "bytes=10-19"},
        timeout=5,
    )
    assert ranged.status_code == 206 and ranged.content == FRANCE[10:20]
    assert ranged.headers["Content-Range"] == f"bytes 10-19/{len(FRANCE)}"
    suffix = requests.get(
        f"{base}/records/{RID}/files/france.zip", headers={"Range": "bytes=-5"}, timeout=5
    )
    assert suffix.content == FRANCE[-5:]
    content = requests.get(entry["links"]["self"], headers={"Range": "bytes=10-19"}, timeout=5)
    assert content.status_code == 200 and content.content == FRANCE
    head = requests.head(f"{base}/records/{RID}/files/france.zip", timeout=5)
    assert (
        head.headers["Content-Length"] == str(len(FRANCE))
        and head.headers["Accept-Ranges"] == "bytes"
    )

    missing = requests.get(f"{base}/api/records/1", timeout=5)
    assert missing.status_code == 404 and missing.json()["status"] == 404
    assert requests.get(f"{base}/records/{RID}/files/nope.zip", timeout=5).status_code == 404
    record.faults.status_429, record.faults.retry_after = 1, 7
    limited = requests.get(f"{base}/api/records/{RID}", timeout=5)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"
    assert [r.status for r in record.requests][-2:] == [404, 429]


def test_sample_record_is_deterministic_and_served():
    import hashlib

    import requests

    from multistore.testing.sample_zenodo import sample_record_files, serve_sample_record

    files = sample_record_files()
    assert files == sample_record_files()
    with serve_sample_record() as url:
        body = requests.get(f"{url}/api/records/{RID}", timeout=5).json()
    assert {f["key"]: f["checksum"] for f in body["files"]} == {
        k: "md5:" + hashlib.md5(v).hexdigest() for k, v in files.items()
    }


def test_demo_config_builds_a_multi_variable_cube(tmp_path, monkeypatch):
    """The issue's end-to-end case: a zip of GeoTIFFs preloaded, merged, band -> time by a hook."""
    import shutil
    from pathlib import Path

    from multistore.api import MultiSourceDataStore
    from multistore.testing.sample_zenodo import annual_disturbances, serve_sample_record

    configs = Path(__file__).parents[2] / "configs"
    shutil.copy(configs / "demo-zenodo.yml", tmp_path)
    shutil.copytree(configs / "hooks", tmp_path / "hooks")
    with serve_sample_record() as url:
        monkeypatch.setenv("MULTISTORE_ZENODO_URL", url)
        msds = MultiSourceDataStore(tmp_path / "demo-zenodo.yml")
        report = msds.generate()
        assert [r.status.value for r in report.results] == ["completed"] * 3
        cube = msds.open_cube("forest_disturbance")
    assert set(cube.data_vars) == {"disturbance", "forest_mask"}
    assert cube.disturbance.dims[0] == "time" and cube.sizes["time"] == 39
    assert (
        str(cube.time.values[0])[:10] == "1985-01-01"
        and str(cube.time.values[-1])[:10] == "2023-01-01"
    )
    values = cube.disturbance.values
    valid = values[~np.isnan(values)]
    assert set(np.unique(valid).tolist()) <= {
        0.0,
        1.0,
    }  # nearest: only source values, nodata masked
    assert 0 < valid.mean() < 0.2
    assert abs(valid.mean() - (annual_disturbances() == 1).mean()) < 0.02
    assert set(np.unique(cube.forest_mask.values[~np.isnan(cube.forest_mask.values)]).tolist()) == {
        0.0,
        1.0,
    }


def test_open_params_schemas_pass_xcube_openers_through(record, tmp_path):
    store = new_store(record, tmp_path)
    remote = store.get_open_data_params_schema("planet_canopy_height_30m_v0.1.tif").to_dict()
    assert {"band_as_variable", "tile_size", "overview_level"} <= set(remote["properties"])
    store.preload_data("france.zip")
    converted = store.get_open_data_params_schema("france/forest_mask_france.zarr").to_dict()
    assert {"band_as_variable", "mask_and_scale", "chunks"} <= set(converted["properties"])
    assert store.get_data_opener_ids("france/forest_mask_france.tif") == ("dataset:geotiff:file",)
    assert store.get_data_opener_ids("france.zip") == ()
    from xcube.core.store import list_data_store_ids

    assert "zenodo" in list_data_store_ids()


def test_large_files_preload_in_parallel_ranges_within_max_concurrency(record, tmp_path):
    france2 = record.file(RID, "france2.zip")
    for f in (record.file(RID, "france.zip"), france2):
        f.faults.body_delay_s = 0.2  # slow bodies, so parallel ones overlap
    store = new_store(record, tmp_path, range_split_bytes=400, max_concurrency=2)
    store.preload_data("france.zip", "france2.zip")
    ranges = [g.range for g in downloads(record, "france.zip")]
    assert ranges[0] == "bytes=0-0"  # the range-support probe
    assert sorted(ranges[1:]) == ["bytes=0-399", "bytes=400-799", "bytes=800-1188"]
    assert len(FRANCE) == 1189
    assert len(downloads(record, "france2.zip")) > 2  # split as well
    # ranges of both files in parallel, yet never more bodies than max_concurrency
    assert record.max_parallel_bodies == 2
    ds = store.open_data("france/annual_disturbances_1985_2023_france.zarr")
    np.testing.assert_array_equal(ds.band_data.values, ANNUAL)  # joined in order, md5 verified
    assert not any("staging/partial/" in p for p in cache_files(tmp_path))


def test_range_split_is_a_preload_param_too(record, tmp_path):
    store = new_store(record, tmp_path)  # default split: 64 MiB
    store.preload_data("france2.zip")
    assert [g.range for g in downloads(record, "france2.zip")] == [None]
    store.preload_data("france.zip", range_split_bytes=600)
    assert sorted(g.range for g in downloads(record, "france.zip")) == [
        "bytes=0-0",
        "bytes=0-599",
        "bytes=600-1188",
    ]
    np.testing.assert_array_equal(
        store.open_data("france/forest_mask_france.zarr").band_data.values, MASK
    )


def test_interrupted_range_fails_the_preload_and_resumes_alone(record, tmp_path):
    faults = record.file(RID, "france.zip").faults
    faults.truncate, faults.truncate_start, faults.truncate_at = 1, 400, 500
    with pytest.raises(PreloadError, match=r"'france.zip': download \(bytes 400-799\) interrupted"):
        new_store(record, tmp_path, max_retries=0, range_split_bytes=400).preload_data("france.zip")
    record.clear_log()
    store = new_store(record, tmp_path, range_split_bytes=400)
    store.preload_data("france.zip")
    ranges = sorted(g.range for g in downloads(record, "france.zip"))
    # the broken range resumes where it broke; a range that had not started when the first
    # run stopped (its threads race the failure) is fetched whole, a finished one not at all
    assert "bytes=500-799" in ranges and len(ranges) == len(set(ranges))
    assert set(ranges) <= {"bytes=0-0", "bytes=0-399", "bytes=500-799", "bytes=800-1188"}
    np.testing.assert_array_equal(
        store.open_data("france/forest_mask_france.zarr").band_data.values, MASK
    )


def test_without_range_support_large_files_download_as_one_stream(record, tmp_path):
    record.file(RID, "france.zip").faults.range_support = False
    store = new_store(record, tmp_path, range_split_bytes=400)
    store.preload_data("france.zip")
    assert [(g.range, g.status) for g in downloads(record, "france.zip")] == [
        ("bytes=0-0", 200),
        (None, 200),
    ]
    np.testing.assert_array_equal(
        store.open_data("france/forest_mask_france.zarr").band_data.values, MASK
    )


CUBE = xr.Dataset(
    {
        "agb": (
            ("y", "x"),
            np.random.default_rng(7).normal(100, 30, (512, 512)).astype(np.float32),
        )
    },
    coords={"y": np.arange(512, 0, -1) * 30.0, "x": np.arange(512) * 30.0},
).chunk({"y": 128, "x": 128})


@pytest.fixture
def zarr_record(zenodo):  # noqa: F811
    from multistore.testing.sample_zenodo import zarr_zip_bytes

    zenodo.add_record(RID, {"agb.zarr.zip": zarr_zip_bytes(CUBE)})
    return zenodo


def requested_bytes(server, key) -> int:
    total = 0
    for g in downloads(server, key):
        assert g.status == 206 and g.range is not None
        first, last = g.range.removeprefix("bytes=").split("-")
        total += int(last) - int(first) + 1
    return total


def test_zipped_zarr_opens_lazily_over_range_reads(zarr_record, tmp_path):
    size = zarr_record.file(RID, "agb.zarr.zip").size
    store = new_store(zarr_record, tmp_path)
    ds = store.open_data("agb.zarr.zip")
    assert requested_bytes(zarr_record, "agb.zarr.zip") < size // 4  # no chunk read yet
    np.testing.assert_array_equal(ds.agb[:128, :128].values, CUBE.agb[:128, :128].values)
    assert requested_bytes(zarr_record, "agb.zarr.zip") < size // 2  # one chunk of 16
    np.testing.assert_array_equal(ds.agb.values, CUBE.agb.values)
    np.testing.assert_array_equal(ds.x.values, CUBE.x.values)
    assert ds.agb.dtype == np.float32
    assert not any(".zarr" in p for p in cache_files(tmp_path))  # nothing downloaded
    assert store.get_data_opener_ids("agb.zarr.zip") == ("dataset:zarr:file",)


def test_zipped_zarr_open_params_pass_through(zarr_record, tmp_path):
    store = new_store(zarr_record, tmp_path)
    ds = store.open_data("agb.zarr.zip", drop_variables=["agb"])
    assert "agb" not in ds
    with pytest.raises(ConfigError, match=r"open_params: Additional .*'band_as_variable'"):
        store.open_data("agb.zarr.zip", band_as_variable=False)


def test_zipped_zarr_without_range_support_is_preloaded_then_opened(zarr_record, tmp_path):
    zarr_record.file(RID, "agb.zarr.zip").faults.range_support = False
    store = new_store(zarr_record, tmp_path)
    ds = store.open_data("agb.zarr.zip")
    np.testing.assert_array_equal(ds.agb.values, CUBE.agb.values)
    assert "agb.zarr/.zmetadata" in cache_files(tmp_path)
    assert [g.range for g in downloads(zarr_record, "agb.zarr.zip")] == ["bytes=0-0", None]
    zarr_record.clear_log()
    again = new_store(zarr_record, tmp_path)
    np.testing.assert_array_equal(again.open_data("agb.zarr").agb.values, CUBE.agb.values)
    np.testing.assert_array_equal(again.open_data("agb.zarr.zip").agb.values, CUBE.agb.values)
    assert downloads(zarr_record, "agb.zarr.zip") == []  # served from the cache


def test_bomb_limits_are_store_params_named_in_the_message(zenodo, tmp_path):  # noqa: F811
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:bz2") as tf:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 8 << 20
        tf.addfile(info, io.BytesIO(bytes(info.size)))
    zenodo.add_record(RID, {"zeros.tar.bz2": buffer.getvalue()})
    with pytest.raises(UnsafeArchiveError, match="Zenodo record 13333034, .*max_unpack_ratio=1000"):
        new_store(zenodo, tmp_path).preload_data("zeros.tar.bz2")
    with pytest.raises(UnsafeArchiveError, match="limit max_unpacked_bytes=1000000"):
        new_store(zenodo, tmp_path, max_unpacked_bytes=10**6, max_unpack_ratio=1e6).preload_data(
            "zeros.tar.bz2"
        )
    store = new_store(zenodo, tmp_path, max_unpack_ratio=1e6)
    store.preload_data("zeros.tar.bz2")
    assert store.list_data_ids() == ["zeros.tar.bz2", "zeros/zeros.bin"]


def test_rerun_with_a_full_cache_has_no_stray_handler_tracebacks(record, tmp_path, caplog):
    """Jobs that finish at once (already preloaded) must not trip xcube's handle bookkeeping."""
    from xcube.core.store import PreloadStatus

    keys = ("france.zip", "france2.zip", "planet_canopy_height_30m_v0.1.tif")
    new_store(record, tmp_path).preload_data(*keys)
    with caplog.at_level(logging.ERROR):
        for _ in range(15):
            store = new_store(record, tmp_path, max_concurrency=3)
            store.preload_data(*keys)
            states = {k: store.preload_handle.get_state(k).status for k in keys}
            assert states == dict.fromkeys(keys, PreloadStatus.completed)
    assert not [r for r in caplog.records if r.name == "concurrent.futures"], caplog.text
    assert "assert data_id is not None" not in caplog.text


def test_cube_of_a_failed_preload_points_at_the_preload_failure(record, tmp_path):
    from multistore.api import MultiSourceDataStore
    from multistore.status import Status

    record.file(RID, "france.zip").faults.wrong_checksum = True
    config = {
        "data_stores": [
            {"identifier": "storage", "store_id": "file", "store_params": {"root": str(tmp_path)}},
            {
                "identifier": "zenodo",
                "store_id": "zenodo",
                "store_params": {
                    "root": RID,
                    "base_url": record.base_url,
                    "cache_store_params": {"root": str(tmp_path / "cache")},
                    **FAST,
                },
            },
        ],
        "preload_datasets": [{"store": "zenodo", "data_ids": ["france.zip"]}],
        "datasets": [
            {
                "identifier": "mask",
                "store": "zenodo",
                "data_id": "france/forest_mask_france.zarr",
            }
        ],
        "general": {"display": "none"},
    }
    report = MultiSourceDataStore(config).generate()
    preload, cube = report.results
    assert preload.status is Status.FAILED and "md5 mismatch" in preload.message
    assert cube.status is Status.FAILED
    assert "preload it first" not in cube.message
    assert (
        "'france/forest_mask_france.zarr' comes from the preload of 'france.zip' in store "
        "'zenodo', which failed: " in cube.message
    ), cube.message
    assert "md5 mismatch" in cube.message


@pytest.mark.parametrize(
    "key", ["../../evil.tif", "/etc/evil.tif", "a//b.tif", "a/./b.tif", ".multistore/manifest.json"]
)
def test_record_with_unsafe_file_keys_is_refused(zenodo, tmp_path, key):  # noqa: F811
    zenodo.add_record(RID, {"ok.tif": HEIGHT_TIF, key: b"EVIL"})
    store = new_store(zenodo, tmp_path)
    with pytest.raises(StoreError, match="not a safe relative path"):
        store.preload_data("ok.tif")
    assert not list(tmp_path.rglob("evil.tif"))


@pytest.mark.parametrize(
    ("size", "checksum", "message"),
    [
        (10, "md5:../../../../tmp/x", "not an md5 hex digest"),
        (-1, None, "implausible size"),
        (2**60, None, "implausible size"),
        ("10", None, "implausible size"),
    ],
)
def test_record_numbers_and_checksums_are_checked(size, checksum, message):
    from multistore.stores.zenodo.api import ZenodoFile, checked_file

    with pytest.raises(StoreError, match=message):
        checked_file(RID, ZenodoFile("a.tif", size, checksum, "http://127.0.0.1/x"))
    good = ZenodoFile("dir/a.tif", 10, "md5:" + "0" * 32, "http://127.0.0.1/x")
    assert checked_file(RID, good) is good


def test_huge_sizes_do_not_make_huge_range_lists():
    from multistore.preload.download import MAX_RANGES, split_spans

    spans = split_spans(2**44, 1)
    assert len(spans) == MAX_RANGES
    assert spans[0][0] == 0 and spans[-1][1] == 2**44 - 1
    assert all(b[0] == a[1] + 1 for a, b in zip(spans, spans[1:], strict=False))


def test_two_stores_sharing_a_cache_preload_a_file_once(record, tmp_path):
    """Two runs sharing a cache: the second waits for the first's preload, then skips it."""
    import threading

    record.file(RID, "france.zip").faults.body_delay_s = 0.05
    events: dict[str, list] = {"a": [], "b": []}
    errors: list[BaseException] = []
    a_downloading, b_waiting = threading.Event(), threading.Event()

    def progress(name: str, e) -> None:
        events[name].append(e)
        if name == "a" and e.phase == "download":
            a_downloading.set()
        elif name == "a" and e.phase in ("unpack", "convert", "done"):
            b_waiting.wait(60)  # hold the preload until the second run waits for it
        elif name == "b" and e.phase == "waiting":
            b_waiting.set()

    def run(name: str) -> None:
        try:
            new_store(record, tmp_path).preload_data(
                "france.zip", progress=lambda e: progress(name, e)
            )
        except BaseException as e:  # reported below
            errors.append(e)
            a_downloading.set()

    first = threading.Thread(target=run, args=("a",))
    first.start()
    assert a_downloading.wait(60)
    second = threading.Thread(target=run, args=("b",))
    second.start()
    first.join()
    second.join()
    assert errors == []
    assert len(downloads(record, "france.zip")) == 1
    assert [e.phase for e in events["b"]][-1] == "skipped"
    assert any(
        e.phase == "waiting" and "being preloaded by process" in e.message for e in events["b"]
    )
    ds = new_store(record, tmp_path).open_data("france/forest_mask_france.zarr")
    np.testing.assert_array_equal(ds.band_data.values, MASK)


def test_netcdf_files_and_members_open_with_h5netcdf(zenodo, tmp_path):  # noqa: F811
    """netCDF-C crashes under dask's threads (see multistore.netcdf): never used by default."""
    values = np.arange(4 * 6, dtype="float32").reshape(4, 6)
    ds = xr.Dataset(
        {"v": (("lat", "lon"), values)}, coords={"lat": np.arange(4.0), "lon": np.arange(6.0)}
    )
    nc = ds.to_netcdf(engine="h5netcdf")
    zenodo.add_record(RID, {"t.nc": bytes(nc), "z.zip": zip_bytes({"m.nc": bytes(nc)})})
    store = new_store(zenodo, tmp_path)
    store.preload_data("z.zip")
    for data_id in ("t.nc", "z/m.nc"):
        opened = store.open_data(data_id)
        assert type(opened._close.__self__).__name__ == "H5NetCDFStore", data_id
        np.testing.assert_array_equal(opened["v"].values, values)
