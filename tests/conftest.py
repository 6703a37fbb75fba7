"""Shared fixtures: a real local S3 server (moto), env isolation, tiny sample rasters."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator

import pytest

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
        "client_kwargs": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"},
    }
