"""Shared fixtures: a real local S3 server (moto), env isolation, tiny sample rasters."""

from __future__ import annotations

import logging
import os
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

# Local servers speaking real APIs (Zenodo, STAC, Earth Engine), as fixtures for every test.
pytest_plugins = ("tests.servers.zenodo", "tests.servers.stac", "tests.servers.earthengine")

# Nothing may leave the machine: no cloud metadata probes, no AWS config from the host.
os.environ.setdefault("NO_GCE_CHECK", "true")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
logging.getLogger("werkzeug").setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 for the whole test session."""
    from multistore.demo.servers import local_s3

    with local_s3() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> Iterator[str]:
    """A fresh, uniquely named bucket (moto's state is shared within the process)."""
    from multistore.demo.servers import s3_filesystem

    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_filesystem(s3_endpoint).mkdir(name)
    yield name


@pytest.fixture
def s3_storage_options(s3_endpoint: str) -> dict:
    from multistore.demo.servers import DEMO_KEY, DEMO_SECRET

    return {
        "key": DEMO_KEY,
        "secret": DEMO_SECRET,
        "client_kwargs": {"endpoint_url": s3_endpoint},
    }


# -- a small project on disk ---------------------------------------------------------------

HOOKS = textwrap.dedent(
    """
    import numpy as np


    def kelvin_to_celsius(ds):
        t = ds["temperature"] - np.float32(273.15)
        t.attrs = {**ds["temperature"].attrs, "units": "degC"}
        return ds.assign(temperature=t)


    def explode(ds):
        raise RuntimeError("hook exploded on purpose")
    """
)


@pytest.fixture
def project(tmp_path: Path, s3_bucket: str, s3_storage_options: dict):
    """Returns ``write(config_dict) -> path``; sources are in ``<tmp>/data`` and on S3."""
    root = tmp_path / "project"
    (root / "hooks").mkdir(parents=True)
    (root / "hooks" / "hooks.py").write_text(HOOKS)
    from multistore.demo import data

    data.write_local_sources(root / "data")
    from multistore.demo.servers import s3_filesystem

    endpoint = s3_storage_options["client_kwargs"]["endpoint_url"]
    data.elevation_dataset().to_zarr(
        s3_filesystem(endpoint).get_mapper(f"{s3_bucket}/{data.ELEVATION}"),
        mode="w",
        consolidated=True,
        zarr_format=2,
    )

    def base_config() -> dict:
        return {
            "data_stores": [
                {"identifier": "storage", "store_id": "file", "store_params": {"root": "out"}},
                {"identifier": "local", "store_id": "file", "store_params": {"root": "data"}},
                {
                    "identifier": "bucket",
                    "store_id": "s3",
                    "store_params": {"root": s3_bucket, "storage_options": s3_storage_options},
                },
            ],
            "grid_mappings": [
                {
                    "identifier": "gm",
                    "crs": "EPSG:4326",
                    "bbox": [11.2, 47.6, 12.2, 48.3],
                    "spatial_res": 0.004,
                    "tile_size": 64,
                },
            ],
            "datasets": [],
            "general": {"display": "none"},
        }

    def write(config: dict, name: str = "config.yml") -> Path:
        path = root / name
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    write.root = root
    write.base_config = base_config
    return write
