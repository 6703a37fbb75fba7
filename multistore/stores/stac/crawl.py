"""Crawling static STAC catalogs with bounded parallel requests.

One thread pool of ``concurrency`` workers fetches documents; the calling
thread only schedules (no worker ever waits on another, so no deadlock).
Sub-trees are pruned as soon as a node's document rules them out, and every
finished node (a catalog or collection with all its direct items fetched) is
reported, which lets the index builder write resumable part files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from pystac.utils import make_absolute_href

from ...errors import StoreError
from .io import JsonReader

LOG = logging.getLogger(__name__)

_NODE_TYPES = ("Catalog", "Collection")


@dataclass(frozen=True)
class FinishedNode:
    """A catalog/collection whose own item links were all fetched."""

    href: str
    children: tuple[str, ...]
    items: tuple[dict[str, Any], ...]


@dataclass
class _NodeState:
    href: str
    children: tuple[str, ...]
    waiting: int
    collection: str | None
    items: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class CrawlStats:
    nodes_fetched: int
    nodes_skipped: int  # known from a previous run (resume)
    nodes_pruned: int
    items_fetched: int


def absolutize_item(doc: dict[str, Any], href: str, collection: str | None) -> dict[str, Any]:
    """Make asset and link hrefs absolute and record where the item came from."""
    for asset in (doc.get("assets") or {}).values():
        if isinstance(asset, dict) and "href" in asset:
            asset["href"] = make_absolute_href(asset["href"], href)
    links = [
        {**link, "href": make_absolute_href(link["href"], href)}
        for link in doc.get("links") or []
        if isinstance(link, dict) and "href" in link and link.get("rel") != "self"
    ]
    links.append({"rel": "self", "href": href, "type": "application/geo+json"})
    doc["links"] = links
    if not doc.get("collection") and collection:
        doc["collection"] = collection
    return doc


def _links(doc: Mapping[str, Any], rel: str, base: str) -> tuple[str, ...]:
    return tuple(
        make_absolute_href(link["href"], base)
        for link in doc.get("links") or []
        if isinstance(link, dict) and link.get("rel") == rel and "href" in link
    )


def crawl(
    reader: JsonReader,
    root: str,
    *,
    concurrency: int = 16,
    descend: Callable[[Mapping[str, Any]], bool] = lambda node: True,
    keep_item: Callable[[Mapping[str, Any]], bool] = lambda item: True,
    known: Mapping[str, Sequence[str]] | None = None,
    on_node: Callable[[FinishedNode], None] | None = None,
    fail_fast: bool = True,
) -> tuple[list[dict[str, Any]], CrawlStats]:
    """Crawl from ``root`` (a catalog or collection document href).

    ``descend(node_doc)`` prunes sub-trees; ``keep_item(item_doc)`` filters items.
    ``known`` maps node hrefs finished in an earlier run to their children: those
    nodes are not fetched again. With ``on_node``, kept items are handed over per
    finished node instead of being returned (constant memory for huge catalogs).
    Without ``fail_fast``, unreadable documents do not stop the crawl: every other
    node still finishes (and is reported), then one error lists the failures.
    """
    known = known or {}
    collected: list[dict[str, Any]] = []
    states: dict[str, _NodeState] = {}
    counts = {"nodes": 0, "skipped": 0, "pruned": 0, "items": 0}
    seen: set[str] = set()
    failures: list[str] = []

    with ThreadPoolExecutor(
        max_workers=max(1, concurrency), thread_name_prefix="stac-crawl"
    ) as pool:
        pending: dict[Future, tuple[str, str, str | None]] = {}

        def visit_node(href: str, collection: str | None) -> None:
            if href in seen:  # catalogs may link a child twice
                return
            seen.add(href)
            if href in known:
                counts["skipped"] += 1
                for child in known[href]:
                    visit_node(child, collection)
                return
            pending[pool.submit(reader.read, href)] = ("node", href, collection)

        def finish(state: _NodeState) -> None:
            node = FinishedNode(state.href, state.children, tuple(state.items))
            if on_node is not None:
                on_node(node)
            else:
                collected.extend(node.items)
            del states[state.href]

        visit_node(root, None)
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    kind, href, context = pending.pop(future)
                    try:
                        doc = future.result()
                    except StoreError as e:
                        if fail_fast:
                            raise
                        failures.append(str(e))
                        continue
                    if kind == "node":
                        counts["nodes"] += 1
                        node_type = doc.get("type")
                        if node_type not in _NODE_TYPES:
                            raise StoreError(
                                f"{href} is not a STAC catalog or collection (type {node_type!r})"
                            )
                        if href != root and not descend(doc):
                            counts["pruned"] += 1
                            continue
                        collection = doc.get("id") if node_type == "Collection" else context
                        children = _links(doc, "child", href)
                        item_hrefs = _links(doc, "item", href)
                        state = _NodeState(href, children, len(item_hrefs), collection)
                        states[href] = state
                        for child in children:
                            visit_node(child, collection)
                        for item_href in item_hrefs:
                            pending[pool.submit(reader.read, item_href)] = ("item", item_href, href)
                        if not item_hrefs:
                            finish(state)
                    else:
                        counts["items"] += 1
                        state = states[context]
                        item = absolutize_item(doc, href, state.collection)
                        if keep_item(item):
                            state.items.append(item)
                        state.waiting -= 1
                        if state.waiting == 0:
                            finish(state)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    if failures:
        shown = "\n  ".join(failures[:5])
        more = f"\n  ... and {len(failures) - 5} more" if len(failures) > 5 else ""
        raise StoreError(f"{len(failures)} STAC document(s) could not be read:\n  {shown}{more}")
    stats = CrawlStats(counts["nodes"], counts["skipped"], counts["pruned"], counts["items"])
    return collected, stats
