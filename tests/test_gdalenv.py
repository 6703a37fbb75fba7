"""GDAL settings: s3fs spellings as GDAL options, and settings scoped to each task."""

from __future__ import annotations

import os

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import yaml
from rasterio.env import get_gdal_config

from multistore.gdalenv import (
    GdalSettings,
    apply_cache_max,
    cache_max_bytes,
    general_settings,
    s3_settings,
    s3fs_options,
    scope_dataset,
)

# The options GDAL's /vsis3/ documents (https://gdal.org/user/virtual_file_systems.html#vsis3).
S3_CASES = [
    (
        {"key": "k", "secret": "s", "endpoint_url": "http://127.0.0.1:9000"},
        {
            "AWS_S3_ENDPOINT": "127.0.0.1:9000",
            "AWS_HTTPS": "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE",
            "AWS_NO_SIGN_REQUEST": "NO",
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
        },
    ),
    (
        {"anon": True, "client_kwargs": {"endpoint_url": "https://minio.example.org/"}},
        {
            "AWS_S3_ENDPOINT": "minio.example.org",
            "AWS_HTTPS": "YES",
            "AWS_VIRTUAL_HOSTING": "FALSE",
            "AWS_NO_SIGN_REQUEST": "YES",
        },
    ),
    (
        {
            "key": "k",
            "secret": "s",
            "token": "t",
            "region_name": "eu-west-3",
            "requester_pays": True,
        },
        {
            "AWS_NO_SIGN_REQUEST": "NO",
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
            "AWS_SESSION_TOKEN": "t",
            "AWS_REGION": "eu-west-3",
            "AWS_REQUEST_PAYER": "requester",
        },
    ),
    (
        {
            "client_kwargs": {
                "endpoint_url": "http://ceph.local:7480/prefix",
                "aws_access_key_id": "k",
                "aws_secret_access_key": "s",
                "region_name": "default",
                "verify": False,
            },
            "config_kwargs": {"s3": {"addressing_style": "virtual"}},
        },
        {
            "AWS_S3_ENDPOINT": "ceph.local:7480/prefix",
            "AWS_HTTPS": "NO",
            "AWS_VIRTUAL_HOSTING": "TRUE",
            "AWS_NO_SIGN_REQUEST": "NO",
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
            "AWS_REGION": "default",
            "GDAL_HTTP_UNSAFESSL": "YES",
        },
    ),
    ({"profile": "science"}, {"AWS_PROFILE": "science"}),
    ({}, {}),
]


@pytest.mark.parametrize(("storage_options", "expected"), S3_CASES)
def test_s3fs_spellings_become_gdal_options(storage_options, expected):
    assert s3_settings(storage_options).as_dict() == expected


def test_a_bad_endpoint_is_named():
    with pytest.raises(ValueError, match="ftp://host"):
        s3_settings({"endpoint_url": "ftp://host"})


def test_top_level_region_moves_to_client_kwargs_for_s3fs():
    so = s3fs_options({"region_name": "eu-west-3", "client_kwargs": {"endpoint_url": "http://x"}})
    assert so == {"client_kwargs": {"endpoint_url": "http://x", "region_name": "eu-west-3"}}


def test_settings_never_show_secrets():
    settings = s3_settings({"key": "AKIAXYZ", "secret": "s3cr3t-value", "token": "tok3n"})
    shown = repr(settings) + str(settings)
    assert "s3cr3t-value" not in shown and "tok3n" not in shown and "AKIAXYZ" not in shown
    assert "AWS_SECRET_ACCESS_KEY=***" in shown


def test_general_settings_defaults_yield_to_the_environment(monkeypatch):
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "1")
    values = general_settings({"gdal_http_max_retry": 3, "gdal_http_timeout": 30}).as_dict()
    assert values == {"GDAL_HTTP_MAX_RETRY": "3", "GDAL_HTTP_TIMEOUT": "30"}


@pytest.mark.parametrize(
    ("value", "expected"), [(128, 128 * 2**20), ("512", 512 * 2**20), (200_000_000, 200_000_000)]
)
def test_cache_max_reads_like_gdal(value, expected):
    assert cache_max_bytes(value) == expected


def test_cache_max_percent_and_bad_values():
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert cache_max_bytes("10%") == int(ram * 0.1)
    with pytest.raises(ValueError, match="gdal_cachemax"):
        cache_max_bytes("lots")


def test_cache_max_sets_gdals_block_cache():
    before = get_gdal_config("GDAL_CACHEMAX")
    try:
        assert apply_cache_max({"gdal_cachemax": 96}) == 96 * 2**20
        assert get_gdal_config("GDAL_CACHEMAX") == 96 * 2**20
    finally:
        apply_cache_max({"gdal_cachemax": before})


def _seen(block: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """What GDAL's config says inside the task that produces ``block``."""
    out = np.empty(block.shape, dtype=object)
    out[...] = "|".join(str(get_gdal_config(n)) for n in names)
    return out


@pytest.mark.parametrize("scheduler", ["threads", "synchronous"])
def test_every_task_reads_with_its_own_sources_settings(scheduler):
    names = ("GDAL_HTTP_MAX_RETRY", "AWS_S3_ENDPOINT", "AWS_SECRET_ACCESS_KEY")
    base = da.zeros((8, 8), chunks=4)
    source = xr.Dataset(
        {"v": (("y", "x"), base.map_blocks(_seen, names, dtype=object, meta=np.array((), object)))}
    )
    a = scope_dataset(
        source,
        GdalSettings.of({"GDAL_HTTP_MAX_RETRY": 1}).merged(
            s3_settings({"key": "ka", "secret": "sa", "endpoint_url": "http://127.0.0.1:1"})
        ),
    )
    b = scope_dataset(
        source.rename(v="w"),
        s3_settings({"key": "kb", "secret": "sb", "endpoint_url": "http://127.0.0.1:2"}),
    )
    outside = tuple(get_gdal_config(n) for n in names)
    with dask.config.set(scheduler=scheduler):
        got_a, got_b = dask.compute(a["v"].data, b["w"].data)
    assert set(got_a.ravel()) == {"1|127.0.0.1:1|sa"}
    assert set(got_b.ravel()) == {"None|127.0.0.1:2|sb"}
    # nothing stays behind in the calling thread, nor in the environment
    assert tuple(get_gdal_config(n) for n in names) == outside
    assert "AWS_S3_ENDPOINT" not in os.environ


def test_scoping_keeps_values_coords_and_encoding():
    data = da.arange(24, chunks=5).reshape(4, 6).rechunk(2)
    lat2d = xr.DataArray(da.ones((4, 6), chunks=3), dims=("y", "x"), attrs={"units": "deg"})
    ds = xr.Dataset({"v": (("y", "x"), data, {"units": "K"})}, coords={"lat2d": lat2d})
    ds["v"].encoding["_FillValue"] = -1
    out = scope_dataset(ds, GdalSettings.of({"GDAL_HTTP_MAX_RETRY": 2}))
    assert "lat2d" in out.coords and out["lat2d"].attrs == {"units": "deg"}
    assert out["v"].attrs == {"units": "K"} and out["v"].encoding["_FillValue"] == -1
    np.testing.assert_array_equal(out["v"].values, np.arange(24).reshape(4, 6))
    assert scope_dataset(ds, GdalSettings()) is ds


def test_legacy_tuple_graphs_are_scoped_too():
    from operator import add

    graph = {("legacy", 0): (add, "one", 1), ("legacy", 1): (add, "one", 2), "one": 1}
    arr = da.Array(graph, "legacy", chunks=((1, 1),), dtype=int, meta=np.array((), int))
    arr = arr.map_blocks(lambda b: np.atleast_1d(b), dtype=int)
    out = scope_dataset(xr.Dataset({"v": ("i", arr)}), GdalSettings.of({"CPL_DEBUG": "OFF"}))
    np.testing.assert_array_equal(out["v"].values, [2, 3])


def test_a_bad_cache_size_is_a_located_config_error(tmp_path):
    from multistore.config import load_config
    from multistore.errors import ConfigError

    config = {
        "data_stores": [
            {"identifier": "storage", "store_id": "file", "store_params": {"root": "o"}}
        ],
        "datasets": [],
        "general": {"gdal_http_params": {"gdal_cachemax": "lots"}},
    }
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="gdal_http_params.gdal_cachemax"):
        load_config(path)


def test_each_store_gets_its_own_settings(tmp_path):
    from multistore.config.model import StoreConfig
    from multistore.stores.pool import StorePool

    pool = StorePool(
        (
            StoreConfig("local", "file", {"root": "data"}),
            StoreConfig("web", "https", {"root": "example.org"}),
            StoreConfig(
                "bucket",
                "s3",
                {"root": "b", "storage_options": {"anon": True, "endpoint_url": "http://h:1"}},
            ),
        ),
        tmp_path,
    )
    general = general_settings({"gdal_http_max_retry": 4})
    assert not pool.gdal_settings("local", general)  # no network, nothing to scope
    assert pool.gdal_settings("web", general) == general
    bucket = pool.gdal_settings("bucket", general).as_dict()
    assert bucket["GDAL_HTTP_MAX_RETRY"] == "4" and bucket["AWS_S3_ENDPOINT"] == "h:1"
    assert bucket["AWS_NO_SIGN_REQUEST"] == "YES"
    # s3fs itself gets a top-level region_name inside client_kwargs
    so = {"region_name": "eu-west-3"}
    params = pool.store_params(StoreConfig("r", "s3", {"root": "b", "storage_options": so}))
    assert params["storage_options"] == {"client_kwargs": {"region_name": "eu-west-3"}}
