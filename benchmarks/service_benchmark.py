"""``multistore serve`` under load (issue 18): 20 concurrent submissions, status latency.

Starts ``multistore serve`` in its own process on 127.0.0.1 (a free port), submits
``--jobs`` small one-cube configs at once from as many client threads, then polls
``GET /api/jobs/{id}`` from ``--pollers`` threads while the jobs run (at most
``--max-jobs`` at once on the server) and reports the latency percentiles of those
polls and whether every job completed.

    python benchmarks/service_benchmark.py [--jobs 20] [--max-jobs 2] [--pollers 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from multistore.demo import data  # noqa: E402
from tests.service.conftest import small_config  # noqa: E402

TOKEN = "benchmark-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--max-jobs", type=int, default=2)
    parser.add_argument("--pollers", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="multistore-serve-bench-") as tmp:
        work = Path(tmp) / "work"
        data.write_local_sources(work / "data")
        port = free_port()
        env = {**os.environ, "MULTISTORE_TOKEN": TOKEN}
        server = subprocess.Popen(
            [sys.executable, "-m", "multistore", "serve", "--port", str(port),
             "--state", str(Path(tmp) / "state"), "--allow-root", str(work),
             "--max-jobs", str(args.max_jobs)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start")
                time.sleep(0.1)

            with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
                warm = client.post("/api/jobs", json={"config": small_config("warm", "out_w")})
                idle_id = warm.json()["id"]
                while client.get(f"/api/jobs/{idle_id}").json()["status"] != "completed":
                    time.sleep(0.2)
                idle = []
                for _ in range(200):
                    t0 = time.perf_counter()
                    client.get(f"/api/jobs/{idle_id}")
                    idle.append(time.perf_counter() - t0)

            def submit(i: int) -> str:
                text = small_config(f"cube_{i}", storage=f"out_{i}")
                r = httpx.post(
                    f"{url}/api/jobs", json={"config": text}, headers=headers, timeout=60
                )
                r.raise_for_status()
                return r.json()["id"]

            start = time.perf_counter()
            with ThreadPoolExecutor(args.jobs) as pool:
                ids = list(pool.map(submit, range(args.jobs)))
            submitted = time.perf_counter() - start
            latencies: list[float] = []
            statuses: dict[str, str] = {}
            done = threading.Event()
            lock = threading.Lock()

            def poll() -> None:
                with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
                    while not done.is_set():
                        job = random.choice(ids)
                        t0 = time.perf_counter()
                        r = client.get(f"/api/jobs/{job}")
                        elapsed = time.perf_counter() - t0
                        with lock:
                            latencies.append(elapsed)
                            statuses[job] = r.json()["status"]
                            if len(statuses) == len(ids) and all(
                                s in ("completed", "failed", "cancelled") for s in statuses.values()
                            ):
                                done.set()

            pollers = [threading.Thread(target=poll) for _ in range(args.pollers)]
            for t in pollers:
                t.start()
            done.wait(600)
            done.set()
            for t in pollers:
                t.join()
            total = time.perf_counter() - start
        finally:
            server.terminate()
            server.wait(30)

    ms = np.array(latencies) * 1000
    result = {
        "jobs": args.jobs,
        "max_jobs": args.max_jobs,
        "completed": sum(s == "completed" for s in statuses.values()),
        "submit_all_s": round(submitted, 2),
        "all_done_s": round(total, 2),
        "polls": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "max_ms": round(float(ms.max()), 1),
        "idle_p95_ms": round(float(np.percentile(np.array(idle) * 1000, 95)), 1),
        "load_avg_1m": round(os.getloadavg()[0], 1),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>14}: {value}")
    if result["completed"] != args.jobs:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
