"""Local stand-ins for remote services, so the demo runs offline on loopback only."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import s3fs

# moto accepts any credentials; these only keep botocore from looking for real ones.
DEMO_KEY = "multistore-demo-key"
DEMO_SECRET = "multistore-demo-secret"


@contextmanager
def local_s3() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (random port); yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_filesystem(endpoint: str) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(
        key=DEMO_KEY,
        secret=DEMO_SECRET,
        client_kwargs={"endpoint_url": endpoint},
    )
