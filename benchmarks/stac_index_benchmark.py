"""Benchmark: querying a 100,000-item stac-geoparquet index vs crawling the static catalog.

Usage: python benchmarks/stac_index_benchmark.py [--items 100000] [--repeat 7]

The synthetic catalog (JSON only, 100 sub-catalogs) is cached in
benchmarks/_work/ (git-ignored); generating it takes a minute or two.
Figures are printed; docs/performance-stac.md records a run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test servers (tests/)

import numpy as np  # noqa: E402

from multistore.stores.stac.crawl import crawl  # noqa: E402
from multistore.stores.stac.index import build_index, query_index  # noqa: E402
from multistore.stores.stac.io import JsonReader  # noqa: E402
from multistore.stores.stac.query import ItemQuery  # noqa: E402
from tests.servers.stac_catalog import make_synthetic_catalog  # noqa: E402

WORK = Path(__file__).parent / "_work"


def catalog(n_items: int) -> Path:
    root = WORK / f"synthetic-{n_items}"
    done = root / ".complete"
    if not done.exists():
        t0 = time.perf_counter()
        make_synthetic_catalog(root, n_items, items_per_catalog=1000, seed=1)
        done.write_text("ok")
        print(f"generated {n_items} items in {time.perf_counter() - t0:.1f} s")
    return root / "catalog.json"


def queries(n: int, seed: int = 3) -> list[ItemQuery]:
    """Berlin-sized (0.5 x 0.3 degree) boxes in the catalog's area, one-year windows."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w, s = rng.uniform(-9.0, 28.0), rng.uniform(36.0, 58.0)
        year = int(rng.integers(2020, 2024))
        out.append(
            ItemQuery.create(
                bbox=[w, s, w + 0.5, s + 0.3], time_range=[f"{year}-01-01", f"{year}-12-31"]
            )
        )
    out.append(
        ItemQuery.create(
            bbox=[5.0, 45.0, 15.0, 55.0],
            time_range="2021-01-01/2021-12-31",
            filter=["clc_412 > 0.8"],
        )
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--skip-crawl", action="store_true")
    args = parser.parse_args()

    cat = catalog(args.items)
    index = WORK / f"synthetic-{args.items}.parquet"
    if not index.exists():
        stats = build_index(str(cat), index, concurrency=args.concurrency)
        print(
            f"index build: {stats.items} items, {stats.nodes_fetched} catalogs in {stats.seconds:.1f} s, "
            f"{index.stat().st_size / 1e6:.1f} MB"
        )

    qs = queries(10)
    hits = {}
    medians = []
    for i, q in enumerate(qs):
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            found = query_index(index, q)
            times.append(time.perf_counter() - t0)
        hits[i] = sorted(d["id"] for d in found)
        medians.append(statistics.median(times))
        print(
            f"query {i:2d}: {len(found):4d} hits, median {1000 * medians[-1]:6.1f} ms ({q.describe()})"
        )
    print(
        f"index query: median of medians {1000 * statistics.median(medians):.1f} ms, max {1000 * max(medians):.1f} ms"
    )

    if not args.skip_crawl:
        q = qs[0]
        t0 = time.perf_counter()
        items, st = crawl(
            JsonReader(pool_size=args.concurrency),
            str(cat),
            concurrency=args.concurrency,
            descend=q.may_contain,
            keep_item=q.matches,
        )
        seconds = time.perf_counter() - t0
        same = sorted(d["id"] for d in items) == hits[0]
        print(
            f"crawl (local disk, {args.concurrency} threads) for query 0: {seconds:.1f} s, "
            f"{st.items_fetched} items read, {len(items)} hits, same items as index: {same}"
        )


if __name__ == "__main__":
    main()
