"""A real uvicorn server on 127.0.0.1 (random free port) running the service, in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
import yaml

from multistore.demo import data
from multistore.service.app import create_app
from multistore.service.jobs import Runner, ServiceSettings
from multistore.service.jobstore import JobStore

TOKEN = "test-token-0123456789abcdef"


@dataclass
class Service:
    url: str
    settings: ServiceSettings
    server: uvicorn.Server
    thread: threading.Thread

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(settings: ServiceSettings) -> Service:
    store = JobStore(settings.state)
    app = create_app(settings, TOKEN, Runner(store, settings))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the service did not start")
        time.sleep(0.05)
    return Service(f"http://127.0.0.1:{port}", settings, server, thread)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """The allowed root: sample GeoTIFF/NetCDF sources in data/, a hook file in hooks/."""
    root = tmp_path / "work"
    data.write_local_sources(root / "data")
    (root / "hooks").mkdir()
    (root / "hooks" / "slow.py").write_text(
        "import time\n\n\ndef slow(ds):\n    time.sleep(3)\n    return ds\n"
    )
    return root


@pytest.fixture
def service(tmp_path: Path, workspace: Path) -> Iterator[Service]:
    svc = start_service(
        ServiceSettings(state=tmp_path / "state", allow_roots=(workspace,), max_jobs=2, env={})
    )
    yield svc
    svc.stop()


def small_config(identifier: str = "landcover", storage: str = "out", **extra) -> str:
    """A one-cube config on the local sample GeoTIFF (small: builds in about a second)."""
    dataset = {
        "identifier": identifier,
        "store": "local",
        "data_id": data.LANDCOVER,
        "grid_mapping": "gm",
        "spatial_resample_params": {"method": "nearest"},
        **extra,
    }
    config = {
        "data_stores": [
            {"identifier": "storage", "store_id": "file", "store_params": {"root": storage}},
            {"identifier": "local", "store_id": "file", "store_params": {"root": "data"}},
        ],
        "grid_mappings": [
            {
                "identifier": "gm",
                "crs": "EPSG:4326",
                "bbox": [11.2, 47.6, 12.2, 48.3],
                "spatial_res": 0.01,
                "tile_size": 64,
            }
        ],
        "datasets": [dataset],
        "general": {"display": "none", "quicklook": True},
    }
    return yaml.safe_dump(config, sort_keys=False)
