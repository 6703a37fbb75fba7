"""Earth Engine download throughput (issue 5), against the offline emulator.

The emulator adds a fixed latency to every pixel request and answers 429
above a concurrency cap (40, Earth Engine's per-project quota). The store
downloads a cube needing at least 200 requests; the ideal throughput is
``concurrency x request bytes / latency`` (every slot busy all the time), and
the achieved share of it is ``requests x latency / (concurrency x wall time)``.
Bytes are Earth Engine's count (pixels x sum of (dtype bytes + 1 mask byte)).

    python benchmarks/earthengine_benchmark.py [--concurrency 40] [--latency 0.2]
        [--tiles 16] [--tile 128] [--bands 2] [--json]

The store caps ``max_concurrency`` at 39 (one slot kept below the quota, for
other clients); the share is reported against both 40 and the effective value.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import sys
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dask  # noqa: E402

from multistore.grid import TargetGrid  # noqa: E402
from multistore.stores.earthengine.store import EarthEngineDataStore  # noqa: E402
from tests.servers.ee_emulator import Emulator  # noqa: E402


def _serve(conn, latency: float, cap: int) -> None:
    """The emulator in its own process, as a remote server would be (its CPU is not ours)."""
    with Emulator(latency_s=latency, max_concurrency=cap) as emu:
        conn.send(emu.url)
        while True:
            cmd = conn.recv()
            if cmd == "reset":
                emu.reset_stats()
                conn.send(None)
            elif cmd == "stats":
                st = emu.stats
                conn.send(
                    {
                        "max_in_flight": st.max_in_flight,
                        "size_errors": st.size_errors + st.dimension_errors,
                        "http_429": st.statuses[429],
                        "pixel_requests": st.pixel_requests,
                    }
                )
            else:
                return


def run(concurrency: int, latency: float, tiles: int, tile: int, n_bands: int, steps: int) -> dict:
    import ee.deprecation

    os.environ.setdefault("NO_GCE_CHECK", "true")
    res = 0.0005  # TEST/MULTI images are 0.001-degree rasters over lon 9..11, lat 44..46
    size = tiles * tile * res
    grid = TargetGrid.from_bbox(
        [9.10025, 45.9 - size + 0.00025, 9.10025 + size, 45.90025], "EPSG:4326", res, tile_size=tile
    )
    bands = [f"b{k}" for k in range(1, n_bands + 1)]
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=_serve, args=(child, latency, 40), daemon=True)
    server.start()
    try:
        url = parent.recv()
        with mock.patch.object(ee.deprecation, "_FetchDataCatalogStac", return_value={}):
            store = EarthEngineDataStore(
                url=url, project="bench", credentials="none", max_concurrency=concurrency
            )
            plan = store.plan_requests("TEST/MULTI/uint16", bands=bands, target_grid=grid.to_dict())
            n_requests = plan.n_requests * steps
            ds = store.open_data("TEST/MULTI/uint16", bands=bands, target_grid=grid.to_dict())
            parent.send("reset")
            parent.recv()
            effective = store._session.max_concurrency
            cpu0, t0 = time.process_time(), time.perf_counter()
            # dask threads >= the store's concurrency, so the limiter (not dask) bounds requests
            with dask.config.set(scheduler="threads", num_workers=effective + 4):
                for _ in range(steps):
                    ds.compute()
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            parent.send("stats")
            stats = parent.recv()
    finally:
        parent.send("stop")
        server.join(timeout=10)
    request_bytes = plan.max_request_bytes
    return {
        "requests": n_requests,
        "request_bytes": request_bytes,
        "latency_s": latency,
        "max_concurrency_setting": concurrency,
        "effective_concurrency": effective,
        "wall_s": round(wall, 3),
        "client_cpu_ms_per_request": round(1000 * cpu / n_requests, 2),
        "achieved_MBps": round(n_requests * request_bytes / wall / 1e6, 2),
        "ideal_MBps_at_40": round(40 * request_bytes / latency / 1e6, 2),
        "share_of_ideal_at_40": round(n_requests * latency / (40 * wall), 3),
        "share_of_ideal_at_effective": round(n_requests * latency / (effective * wall), 3),
        **stats,
        "retries": store.counters.retries,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--concurrency", type=int, default=40)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--tiles", type=int, default=16, help="chunks per axis (one request each)")
    ap.add_argument("--tile", type=int, default=128, help="chunk size in pixels")
    ap.add_argument("--bands", type=int, default=2)
    ap.add_argument("--steps", type=int, default=1, help="repeat the download (fresh requests)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = run(args.concurrency, args.latency, args.tiles, args.tile, args.bands, args.steps)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{result['requests']} requests of {result['request_bytes']} B, {result['latency_s'] * 1000:.0f} ms each, "
        f"max_concurrency {result['max_concurrency_setting']} (effective {result['effective_concurrency']}): "
        f"{result['wall_s']} s, {result['achieved_MBps']} MB/s = {result['share_of_ideal_at_40']:.1%} of the ideal "
        f"at 40 ({result['share_of_ideal_at_effective']:.1%} at {result['effective_concurrency']}); "
        f"max in flight {result['max_in_flight']}, size errors {result['size_errors']}, "
        f"429s {result['http_429']}, retries {result['retries']}; client CPU "
        f"{result['client_cpu_ms_per_request']} ms/request, load average {result['load_avg_1min']} "
        f"on {result['cpus']} CPUs"
    )


if __name__ == "__main__":
    main()
