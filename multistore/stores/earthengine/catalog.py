"""Browsing Earth Engine's public data catalog (the STAC JSON Google publishes).

The Earth Engine API cannot list the public collections, but Google publishes
the catalog as static STAC: a root catalog linking provider catalogs linking
one collection document per dataset (id, title, providers, cadence, bands with
scales, license, extent). ``load_catalog`` walks it once, keeps the fields a
user chooses a dataset by (``CatalogEntry``), and caches the flat list as one
JSON file, so ``search`` and ``describe`` then cost no request for a day.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ...errors import SourceOpenError
from ...retry import RetryPolicy
from .fetch import FetchCounters, call_with_retries

LOG = logging.getLogger(__name__)

CATALOG_URL = "https://earthengine-stac.storage.googleapis.com/catalog/catalog.json"
CATALOG_TTL_S = 86400.0
MAX_DEPTH = 4  # root -> provider -> (sub-catalog ->) collection


@dataclass(frozen=True)
class CatalogBand:
    name: str
    dtype: str | None = None
    scale: float | None = None
    offset: float | None = None
    units: str | None = None
    description: str = ""


@dataclass(frozen=True)
class CatalogEntry:
    """One dataset of the catalog, with what a user chooses a dataset by."""

    id: str
    title: str = ""
    type: str = ""  # image_collection, image, table, ...
    provider: str = ""
    cadence: str = ""  # e.g. "5 day"
    license: str = ""
    bbox: tuple[float, float, float, float] | None = None
    time_range: tuple[str | None, str | None] | None = None
    keywords: tuple[str, ...] = ()
    description: str = ""
    bands: tuple[CatalogBand, ...] = field(default_factory=tuple)
    url: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CatalogEntry:
        return cls(
            **{
                **d,
                "bbox": tuple(d["bbox"]) if d.get("bbox") else None,
                "time_range": tuple(d["time_range"]) if d.get("time_range") else None,
                "keywords": tuple(d.get("keywords") or ()),
                "bands": tuple(CatalogBand(**b) for b in d.get("bands") or ()),
            }
        )

    def matches(
        self,
        text: str | None = None,
        bbox: Sequence[float] | None = None,
        time_range: Sequence[str | None] | None = None,
    ) -> bool:
        """All words of ``text`` occur in the id, title, provider, keywords or description
        (case-insensitive); the extent intersects ``bbox`` (lon/lat) and ``time_range``."""
        if text:
            haystack = " ".join(
                [self.id, self.title, self.provider, " ".join(self.keywords), self.description]
            ).lower()
            if not all(word in haystack for word in text.lower().split()):
                return False
        if bbox is not None and self.bbox is not None:
            w, s, e, n = bbox
            bw, bs, be, bn = self.bbox
            if be < w or bw > e or bn < s or bs > n:
                return False
        if time_range is not None and self.time_range is not None:
            start, end = (_ts(t) for t in time_range)
            t0, t1 = (_ts(t) for t in self.time_range)
            if (end is not None and t0 is not None and t0 >= end) or (
                start is not None and t1 is not None and t1 < start
            ):
                return False
        return True


def _ts(value: str | None) -> pd.Timestamp | None:
    if not value:
        return None
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


# -- fetching ------------------------------------------------------------------------------


class _Transient(ConnectionError):
    """An HTTP 429/5xx or a dropped connection: retried by ``call_with_retries``."""


def get_json(session: Any, url: str, timeout_s: float) -> Any:
    """One catalog document through ``session`` (a ``requests.Session``); transient failures
    are raised as ``ConnectionError``/``TimeoutError`` so the shared retry loop retries them."""
    import requests

    try:
        response = session.get(url, timeout=timeout_s)
    except requests.Timeout:
        raise TimeoutError(f"reading {url} timed out") from None
    except requests.ConnectionError as e:
        raise _Transient(f"reading {url} failed: {type(e).__name__}") from None
    if response.status_code == 429 or response.status_code >= 500:
        raise _Transient(f"reading {url}: HTTP {response.status_code}")
    if response.status_code != 200:
        raise SourceOpenError(f"earthengine catalog: {url} answered HTTP {response.status_code}")
    try:
        return response.json()
    except ValueError:
        raise SourceOpenError(f"earthengine catalog: {url} is not JSON") from None


def load_catalog(
    url: str,
    fetch: Callable[[str], Any],
    cache_dir: Path | None,
    ttl_s: float = CATALOG_TTL_S,
    max_workers: int = 8,
) -> list[CatalogEntry]:
    """The catalog's entries, from the cache file when younger than ``ttl_s``."""
    cache = (
        cache_dir / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}.json" if cache_dir else None
    )
    if cache is not None and cache.is_file() and time.time() - cache.stat().st_mtime < ttl_s:
        try:
            return [CatalogEntry.from_dict(d) for d in json.loads(cache.read_text())["entries"]]
        except (ValueError, KeyError, TypeError):
            LOG.warning("earthengine catalog: ignoring the unreadable cache %s", cache)
    entries = _walk(url, fetch, max_workers)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"url": url, "entries": [e.to_dict() for e in entries]}))
        tmp.replace(cache)  # atomic: a concurrent reader sees the old or the new file
    return entries


def _walk(root: str, fetch: Callable[[str], Any], max_workers: int) -> list[CatalogEntry]:
    """Breadth-first over ``child`` links, fetching each level's documents in parallel."""
    entries: dict[str, CatalogEntry] = {}
    seen = {root}
    level = [root]
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        for _ in range(MAX_DEPTH + 1):
            if not level:
                break
            docs = list(pool.map(fetch, level))
            nxt = []
            for url, doc in zip(level, docs, strict=True):
                if not isinstance(doc, dict):
                    continue
                if doc.get("type") == "Collection":
                    entry = entry_of(doc, url)
                    entries.setdefault(entry.id, entry)
                for link in doc.get("links") or ():
                    if link.get("rel") == "child" and link.get("href"):
                        child = urllib.parse.urljoin(url, link["href"])
                        if child not in seen:
                            seen.add(child)
                            nxt.append(child)
            level = nxt
    return sorted(entries.values(), key=lambda e: e.id)


def entry_of(doc: dict[str, Any], url: str = "") -> CatalogEntry:
    """The fields of one STAC collection document of the Earth Engine catalog."""
    extent = doc.get("extent") or {}
    bboxes = (extent.get("spatial") or {}).get("bbox") or []
    intervals = (extent.get("temporal") or {}).get("interval") or []
    interval = doc.get("gee:interval") or {}
    cadence = (
        f"{interval.get('interval', '')} {interval.get('unit', '')}".strip()
        if interval.get("type") == "cadence"
        else ""
    )
    summaries = doc.get("summaries") or {}
    bands = tuple(
        CatalogBand(
            name=str(b.get("name", "")),
            dtype=b.get("gee:data_type") or b.get("data_type"),
            scale=b.get("gee:scale"),
            offset=b.get("gee:offset"),
            units=b.get("gee:units"),
            description=str(b.get("description", "")),
        )
        for b in summaries.get("eo:bands") or ()
    )
    providers = doc.get("providers") or []
    return CatalogEntry(
        id=str(doc.get("id", "")),
        title=str(doc.get("title", "")),
        type=str(doc.get("gee:type", "")),
        provider=str(providers[0].get("name", "")) if providers else "",
        cadence=cadence,
        license=str(doc.get("license", "")),
        bbox=tuple(float(v) for v in bboxes[0][:4]) if bboxes and bboxes[0] else None,
        time_range=(intervals[0][0], intervals[0][1]) if intervals and intervals[0] else None,
        keywords=tuple(str(k) for k in doc.get("keywords") or ()),
        description=str(doc.get("description", "")).strip().split("\n", 1)[0][:300],
        bands=bands,
        url=url,
    )


def fetcher(
    session: Any, policy: RetryPolicy, counters: FetchCounters, timeout_s: float
) -> Callable[[str], Any]:
    """``url -> JSON`` through ``session`` with the store's classified retries."""

    def fetch(url: str) -> Any:
        return call_with_retries(
            lambda: get_json(session, url, timeout_s),
            policy,
            counters,
            f"reading the catalog document {url}",
        )

    return fetch


def format_entries(entries: Iterable[CatalogEntry]) -> list[str]:
    """One tab-separated line per entry: id, title, provider, cadence, time range."""
    lines = []
    for e in entries:
        t0, t1 = e.time_range or (None, None)
        times = f"{(t0 or '')[:10]}..{(t1 or '')[:10]}" if e.time_range else ""
        lines.append("\t".join([e.id, e.title, e.provider, e.cadence, times]))
    return lines
