"""GeoTIFF, NetCDF and Zarr sources on a non-AWS S3, for every s3fs spelling of the options.

The sources live on moto's S3 server (real HTTP on 127.0.0.1, recording each
request's signing key); cubes are generated through a config and compared with
the raw files.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import rasterio
import s3fs
import xarray as xr
import yaml
from affine import Affine

from multistore import MultiSourceDataStore
from tests.servers.s3 import S3Server, recording_s3, self_signed_certificate

KEY, SECRET, TOKEN = "gdal-test-key", "gdal-test-secret-value", "gdal-test-session-token"
UPLOADER = "uploader"
TIF_TRANSFORM = Affine(30.0, 0.0, 500_000.0, 0.0, -30.0, 5_300_000.0)

Spelling = Callable[[str, Path], dict]

# Every way s3fs accepts to say where the server is and who is asking.
SPELLINGS: dict[str, Spelling] = {
    "top-level endpoint_url": lambda ep, _: {"key": KEY, "secret": SECRET, "endpoint_url": ep},
    "client_kwargs endpoint_url": lambda ep, _: {
        "key": KEY,
        "secret": SECRET,
        "client_kwargs": {"endpoint_url": ep},
    },
    "anon": lambda ep, _: {"anon": True, "endpoint_url": ep},
    "token and top-level region_name": lambda ep, _: {
        "key": KEY,
        "secret": SECRET,
        "token": TOKEN,
        "region_name": "eu-west-3",
        "client_kwargs": {"endpoint_url": ep},
    },
    "botocore names in client_kwargs": lambda ep, _: {
        "client_kwargs": {
            "endpoint_url": ep,
            "aws_access_key_id": KEY,
            "aws_secret_access_key": SECRET,
            "region_name": "eu-west-3",
        }
    },
    "https with a private CA": lambda ep, cert: {
        "key": KEY,
        "secret": SECRET,
        "endpoint_url": ep,
        "client_kwargs": {"verify": str(cert)},
    },
}


def raw_sources(folder: Path) -> dict[str, object]:
    """A uint16 GeoTIFF with nodata, a CF NetCDF and a Zarr, with distinct values per pixel."""
    rng = np.random.default_rng(3)
    tif = rng.integers(1, 60_000, (3, 70, 90), dtype="uint16")
    tif[:, :5, :7] = 0
    with rasterio.open(
        folder / "scene.tif",
        "w",
        driver="GTiff",
        width=90,
        height=70,
        count=3,
        dtype="uint16",
        crs="EPSG:32633",
        transform=TIF_TRANSFORM,
        nodata=0,
        tiled=True,
        blockxsize=32,
        blockysize=32,
    ) as dst:
        dst.write(tif)
    lat = 48.0 - (np.arange(40) + 0.5) * 0.01
    lon = 11.0 + (np.arange(50) + 0.5) * 0.01
    nc = xr.Dataset(
        {"t": (("lat", "lon"), rng.normal(280, 5, (40, 50)).astype("float32"))},
        coords={"lat": lat, "lon": lon},
    )
    nc.to_netcdf(folder / "air.nc")
    zarr = xr.Dataset(
        {"z": (("lat", "lon"), rng.integers(-500, 3000, (40, 50)).astype("int16"))},
        coords={"lat": lat, "lon": lon},
    )
    return {"tif": tif, "nc": nc, "zarr": zarr}


def upload(server: S3Server, cert: Path | None, folder: Path, zarr: xr.Dataset) -> str:
    bucket = f"gdal-{uuid.uuid4().hex[:12]}"
    client = {"endpoint_url": server.endpoint, **({"verify": str(cert)} if cert else {})}
    fs = s3fs.S3FileSystem(
        key=UPLOADER,
        secret="uploader-secret",
        client_kwargs=client,
        s3_additional_kwargs={"ACL": "public-read"},  # moto serves public-read objects to anon
    )
    fs.mkdir(bucket, acl="public-read")
    fs.put_file(str(folder / "scene.tif"), f"{bucket}/in/scene.tif")
    fs.put_file(str(folder / "air.nc"), f"{bucket}/in/air.nc")
    zarr.to_zarr(fs.get_mapper(f"{bucket}/in/dem.zarr"), mode="w", consolidated=True, zarr_format=2)
    return bucket


def config(bucket: str, storage_options: dict, out: Path) -> dict:
    w = TIF_TRANSFORM.c + 20 * 30.0
    n = TIF_TRANSFORM.f - 10 * 30.0
    return {
        "data_stores": [
            {"identifier": "storage", "store_id": "file", "store_params": {"root": str(out)}},
            {
                "identifier": "bucket",
                "store_id": "s3",
                "store_params": {"root": f"{bucket}/in", "storage_options": storage_options},
            },
        ],
        "grid_mappings": [
            # pixel-aligned window of the GeoTIFF: nearest neighbour is a plain crop
            {
                "identifier": "utm",
                "crs": "EPSG:32633",
                "bbox": [w, n - 40 * 30.0, w + 50 * 30.0, n],
                "spatial_res": 30.0,
                "tile_size": 16,
            }
        ],
        "datasets": [
            {"identifier": "tif", "store": "bucket", "data_id": "scene.tif"},
            {
                "identifier": "tif_crop",
                "store": "bucket",
                "data_id": "scene.tif",
                "grid_mapping": "utm",
                "spatial_resample_params": {"method": "nearest"},
            },
            {"identifier": "nc", "store": "bucket", "data_id": "air.nc"},
            {"identifier": "zarr", "store": "bucket", "data_id": "dem.zarr"},
        ],
        "general": {"display": "none", "dask": {"scheduler": "threads", "num_workers": 2}},
    }


@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_every_source_kind_reads_from_a_custom_endpoint(tmp_path, spelling, caplog):
    https = spelling.startswith("https")
    cert_key = self_signed_certificate(tmp_path) if https else None
    raw = raw_sources(tmp_path)
    environ = dict(os.environ)
    with recording_s3(cert_key) as server:
        bucket = upload(server, cert_key and cert_key[0], tmp_path, raw["zarr"])
        options = SPELLINGS[spelling](server.endpoint, cert_key and cert_key[0])
        path = tmp_path / "config.yml"
        path.write_text(yaml.safe_dump(config(bucket, options, tmp_path / "out")))
        with caplog.at_level(logging.DEBUG):
            report = MultiSourceDataStore(path).generate()
        assert report.ok, [(d.identifier, d.message) for d in report.datasets]

        # GDAL (the GeoTIFF) signed its requests with the store's key, or did not sign them
        expected_key = None if spelling == "anon" else KEY
        for name in ("scene.tif", "air.nc", "dem.zarr"):
            assert server.keys_for(f"/{bucket}/in/{name}") - {UPLOADER} == {expected_key}
    assert dict(os.environ) == environ

    tif = xr.open_zarr(tmp_path / "out" / "tif.zarr", mask_and_scale=False)
    got = np.stack([tif[f"band_{i}"].values for i in (1, 2, 3)])
    np.testing.assert_array_equal(got, raw["tif"])
    crop = xr.open_zarr(tmp_path / "out" / "tif_crop.zarr", mask_and_scale=False)
    np.testing.assert_array_equal(crop["band_2"].values, raw["tif"][1, 10:50, 20:70])
    nc = xr.open_zarr(tmp_path / "out" / "nc.zarr", mask_and_scale=False)
    np.testing.assert_array_equal(nc["t"].values, raw["nc"]["t"].values)
    dem = xr.open_zarr(tmp_path / "out" / "zarr.zarr", mask_and_scale=False)
    np.testing.assert_array_equal(dem["z"].values, raw["zarr"]["z"].values)

    # secrets never reach our logs nor GDAL's (botocore's own DEBUG lines show the token)
    for record in caplog.records:
        ours = record.name.split(".")[0] in ("multistore", "rasterio")
        if ours or record.levelno >= logging.INFO:
            message = record.getMessage()
            assert SECRET not in message and TOKEN not in message, record.name


def test_two_runs_in_one_process_keep_their_own_s3_settings(tmp_path):
    """Two configs generated at once in threads: each run's reads reach its own server and key."""
    raw = raw_sources(tmp_path)
    environ = dict(os.environ)
    runs = {}
    with recording_s3() as server_a, recording_s3() as server_b:
        for name, server, key in (("a", server_a, "key-of-run-a"), ("b", server_b, "key-of-run-b")):
            bucket = upload(server, None, tmp_path, raw["zarr"])
            # one run names its endpoint at the top level, the other in client_kwargs
            options = {"key": key, "secret": f"{key}-secret"}
            if name == "a":
                options["endpoint_url"] = server.endpoint
            else:
                options["client_kwargs"] = {"endpoint_url": server.endpoint}
            cfg = config(bucket, options, tmp_path / f"out-{name}")
            cfg["general"]["gdal_http_params"] = {"gdal_http_max_retry": 1 if name == "a" else 2}
            cfg["general"]["max_parallel_datasets"] = 2
            path = tmp_path / f"{name}.yml"
            path.write_text(yaml.safe_dump(cfg))
            runs[name] = (server, bucket, key, path)

        barrier = threading.Barrier(2)

        def generate(path: Path):
            store = MultiSourceDataStore(path)
            barrier.wait()
            return store.generate()

        with ThreadPoolExecutor(2) as pool:
            reports = dict(
                zip(runs, pool.map(generate, [r[3] for r in runs.values()]), strict=True)
            )

    for name, (server, bucket, key, _) in runs.items():
        report = reports[name]
        assert report.ok, [(d.identifier, d.message) for d in report.datasets]
        other = server_b if server is server_a else server_a
        assert server.keys_for(f"/{bucket}/in/scene.tif") - {UPLOADER} == {key}
        assert server.keys_for(f"/{bucket}/in/dem.zarr") - {UPLOADER} == {key}
        assert not other.keys_for(f"/{bucket}/"), f"run {name} read from the other run's server"
        crop = xr.open_zarr(tmp_path / f"out-{name}" / "tif_crop.zarr", mask_and_scale=False)
        np.testing.assert_array_equal(crop["band_2"].values, raw["tif"][1, 10:50, 20:70])
    assert dict(os.environ) == environ


def test_cli_describes_a_geotiff_on_a_custom_endpoint(tmp_path):
    raw = raw_sources(tmp_path)
    with recording_s3() as server:
        bucket = upload(server, None, tmp_path, raw["zarr"])
        options = {"key": KEY, "secret": SECRET, "endpoint_url": server.endpoint}
        path = tmp_path / "config.yml"
        path.write_text(yaml.safe_dump(config(bucket, options, tmp_path / "out")))
        result = subprocess.run(
            [sys.executable, "-m", "multistore", "describe", str(path), "bucket", "scene.tif"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        assert server.keys_for(f"/{bucket}/in/scene.tif") - {UPLOADER} == {KEY}
    described = json.loads(result.stdout)
    assert described["dims"] == {"y": 70, "x": 90}
    assert SECRET not in result.stdout + result.stderr
