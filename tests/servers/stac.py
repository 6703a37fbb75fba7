"""Local STAC servers for tests: a static HTTP file server (with Range support and
request counting), moto S3 and a real STAC API (``rustac serve``, in-memory)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.servers.stac_catalog import (
    TINY_COLLECTION,
    TinyCatalog,
    item_collection_with_base,
    make_tiny_catalog,
)


@dataclass
class RequestLog:
    counts: Counter = field(default_factory=Counter)  # GETs per url path
    heads: Counter = field(default_factory=Counter)  # HEADs per url path
    fail: set[str] = field(default_factory=set)  # url paths answered with 500
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hit(self, path: str, method: str = "GET") -> None:
        with self.lock:
            (self.heads if method == "HEAD" else self.counts)[path] += 1


class _Handler(SimpleHTTPRequestHandler):
    """Static files with single-range GETs (GDAL reads COGs by ranges)."""

    log_state: RequestLog

    def log_message(self, format, *args):  # quiet
        pass

    def do_HEAD(self):
        self.log_state.hit(self.path.split("?", 1)[0], "HEAD")
        super().do_HEAD()

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        self.log_state.hit(path)
        if path in self.log_state.fail:
            self.send_error(500, "injected failure")
            return
        rng = self.headers.get("Range")
        fs_path = self.translate_path(path)
        if not rng or not os.path.isfile(fs_path):
            return super().do_GET()
        size = os.path.getsize(fs_path)
        start_s, _, end_s = rng.removeprefix("bytes=").partition("-")
        start = int(start_s) if start_s else max(0, size - int(end_s))
        end = min(size - 1, int(end_s)) if (start_s and end_s) else size - 1
        if start >= size:
            self.send_error(416)
            return
        with open(fs_path, "rb") as f:
            f.seek(start)
            body = f.read(end - start + 1)
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(fs_path))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(body)


@dataclass
class StaticServer:
    url: str
    log: RequestLog
    server: ThreadingHTTPServer

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_directory(root: Path) -> StaticServer:
    log = RequestLog()
    handler = type("Handler", (_Handler,), {"log_state": log})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return StaticServer(f"http://127.0.0.1:{server.server_address[1]}", log, server)


@pytest.fixture(scope="session")
def tiny_catalog(tmp_path_factory) -> TinyCatalog:
    return make_tiny_catalog(tmp_path_factory.mktemp("tiny-stac"))


@pytest.fixture(scope="session")
def stac_http(tiny_catalog) -> Iterator[StaticServer]:
    server = serve_directory(tiny_catalog.root)
    yield server
    server.close()


# -- S3 (the moto server of tests/conftest.py) ---------------------------------------------


@dataclass(frozen=True)
class S3Catalog:
    url: str  # s3://bucket/catalog.json
    storage_options: dict


@pytest.fixture()
def stac_s3(tiny_catalog, s3_endpoint, s3_bucket, s3_storage_options) -> S3Catalog:
    """The tiny catalog uploaded to a fresh bucket of the local moto server."""
    from multistore.demo.servers import s3_filesystem

    fs = s3_filesystem(s3_endpoint)
    for path in tiny_catalog.root.rglob("*"):
        if path.is_file():
            fs.put_file(str(path), f"{s3_bucket}/{path.relative_to(tiny_catalog.root).as_posix()}")
    return S3Catalog(f"s3://{s3_bucket}/catalog.json", dict(s3_storage_options))


# -- STAC API -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def stac_api(tiny_catalog, stac_http, tmp_path_factory) -> Iterator[str]:
    """``rustac serve`` (in-memory backend) with the tiny collection; assets on ``stac_http``."""
    # the rustac wheel (a dev dependency) puts its executable next to the interpreter
    exe = shutil.which("rustac", path=str(Path(sys.executable).parent)) or shutil.which("rustac")
    assert exe, "the rustac executable is missing: install the dev extra (pip install -e .[dev])"
    work = tmp_path_factory.mktemp("stac-api")
    collection = json.loads(tiny_catalog.collection_path(TINY_COLLECTION).read_text())
    collection["links"] = []
    (work / "collection.json").write_text(json.dumps(collection))
    items = item_collection_with_base(tiny_catalog, stac_http.url, TINY_COLLECTION)
    (work / "items.json").write_text(json.dumps(items))
    port = _free_port()
    proc = subprocess.Popen(
        [exe, "serve", "--addr", f"127.0.0.1:{port}", "collection.json", "items.json"],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(f"{url}/collections/{TINY_COLLECTION}/items", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"rustac serve did not start: {err[-2000:]}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
