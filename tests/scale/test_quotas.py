"""Service quotas hold for the whole cluster: 4 worker processes share one budget (issue 17.1)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dask
import numpy as np
import pytest
import xarray as xr
import yaml

from multistore import MultiSourceDataStore
from multistore.config.model import DaskConfig
from multistore.preload.http import new_session
from multistore.retry import RetryPolicy
from multistore.scheduler import dask_runner
from tests.servers.earthengine import store_params
from tests.servers.ee_emulator import Emulator

pytestmark = pytest.mark.timeout(120)

CLUSTER = {"scheduler": "distributed", "n_workers": 4, "threads_per_worker": 2}


def ee_config(tmp_path, emu: Emulator, concurrency: int) -> str:
    config = {
        "data_stores": [
            {"identifier": "storage", "store_id": "file", "store_params": {"root": "out"}},
            {
                "identifier": "gee",
                "store_id": "earthengine",
                "store_params": store_params(emu, max_retries=0, max_concurrency=concurrency),
            },
        ],
        "grid_mappings": [
            {
                "identifier": "gm",
                "crs": "EPSG:4326",
                "bbox": [10.0005, 45.0005, 10.1005, 45.0705],
                "spatial_res": 0.001,
                "tile_size": 32,
            }
        ],
        "datasets": [
            {
                "identifier": "s2",
                "store": "gee",
                "data_id": "TEST/S2LIKE",
                "grid_mapping": "gm",
                "open_params": {"time_range": ["2024-01-01", "2024-02-01"], "bands": ["B4"]},
            }
        ],
        "general": {"display": "none", "retries": {"max_retries": 0}, "dask": CLUSTER},
    }
    path = tmp_path / "ee.yml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_earth_engine_concurrency_holds_across_worker_processes(tmp_path, ee_offline):
    # The server answers 429 above 2 requests in flight; each request takes 50 ms, so
    # 4 processes x 2 threads would overlap well beyond 2 with per-process limiters.
    with Emulator(latency_s=0.05, max_concurrency=2) as emu:
        report = MultiSourceDataStore(ee_config(tmp_path, emu, concurrency=2)).generate()
        stats = emu.stats
    assert report.ok, [r.message for r in report.failed]
    assert stats.statuses[429] == 0
    assert stats.max_in_flight == 2  # the quota was used in full, never exceeded
    assert stats.pixel_requests == 3 * 3 * 4  # 3 time steps x 3 x 4 tiles, none retried
    cube = xr.open_zarr(tmp_path / "out" / "s2.zarr", mask_and_scale=False)
    assert cube["B4"].shape == (3, 70, 100) and int(np.count_nonzero(cube["B4"].values)) > 0


class _PacedServer(ThreadingHTTPServer):
    """Records arrival times; answers 429 when more than ``limit`` arrive within ``window_s``."""

    def __init__(self, limit: int, window_s: float):
        super().__init__(("127.0.0.1", 0), _PacedHandler)
        self.limit, self.window_s = limit, window_s
        self.arrivals: list[float] = []
        self.rejected = 0
        self.lock = threading.Lock()


class _PacedHandler(BaseHTTPRequestHandler):
    server: _PacedServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        srv = self.server
        with srv.lock:
            now = time.monotonic()
            recent = [t for t in srv.arrivals if now - t < srv.window_s]
            srv.arrivals.append(now)
            over = len(recent) >= srv.limit
            srv.rejected += over
        body = b"slow down" if over else b"ok"
        self.send_response(429 if over else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _get(session, url: str) -> int:
    return session.get(url, timeout=10).status_code


def test_request_pacing_holds_across_worker_processes():
    # Zenodo's pacing (requests per window) through the session Zenodo uses, with a 1 s
    # window instead of 60 s; the server tolerates 5 per 0.7 s (a request sent on time may
    # arrive late behind a busy process). Without pacing all 16 arrive within milliseconds.
    server = _PacedServer(limit=5, window_s=0.7)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/file"
    policy = RetryPolicy(max_retries=0, backoff_s=0.01)
    session = new_session(policy, requests_per_minute=5, rate_name="paced", rate_window_s=1.0)
    try:
        with dask_runner(DaskConfig(**CLUSTER)) as runner:
            tasks = [dask.delayed(_get)(session, url, dask_key_name=f"get-{i}") for i in range(16)]
            codes = runner.compute(tasks)
    finally:
        server.shutdown()
    assert codes == [200] * 16
    assert server.rejected == 0
    arrivals = sorted(server.arrivals)
    assert all(b - a >= 0.7 for a, b in zip(arrivals, arrivals[5:], strict=False))
