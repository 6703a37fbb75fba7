"""The item index: build (parallel, resumable) and query, checked against a crawl."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from multistore.errors import FilterError, StoreError
from multistore.stores.stac.crawl import crawl
from multistore.stores.stac.index import (
    asset_hrefs,
    build_index,
    parts_dir,
    query_index,
    search_index,
)
from multistore.stores.stac.io import JsonReader
from multistore.stores.stac.query import ItemQuery
from tests.servers.stac import serve_directory
from tests.servers.stac_catalog import make_synthetic_catalog

N_SYNTHETIC = 600  # 6 sub-catalogs of 100 items


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return make_synthetic_catalog(
        tmp_path_factory.mktemp("synthetic"), N_SYNTHETIC, items_per_catalog=100, seed=7
    )


@pytest.fixture(scope="module")
def synthetic_index(synthetic, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("index") / "items.parquet"
    # small row groups so that row-group pruning is exercised
    build_index(str(synthetic), out, concurrency=4, row_group_size=64)
    return out


def crawl_ids(url: str, query: ItemQuery) -> list[str]:
    items, _ = crawl(JsonReader(), url, descend=query.may_contain, keep_item=query.matches)
    return sorted(i["id"] for i in items)


def test_index_columns(synthetic_index):
    table = pq.read_table(synthetic_index)
    assert table.num_rows == N_SYNTHETIC
    for name in ("id", "collection", "datetime", "geometry", "bbox", "assets", "clc_412"):
        assert name in table.column_names
    assert [f.name for f in table.schema.field("bbox").type] == ["xmin", "ymin", "xmax", "ymax"]
    assert pq.ParquetFile(synthetic_index).metadata.num_row_groups == -(-N_SYNTHETIC // 64)
    assert not parts_dir(synthetic_index).exists()  # parts are removed once the index is whole


@pytest.mark.parametrize(
    "query",
    [
        dict(bbox=[0.0, 40.0, 10.0, 50.0]),
        dict(bbox=[0.0, 40.0, 10.0, 50.0], time_range="2021-01-01/2021-12-31"),
        dict(time_range=["2022-03-01", None]),
        dict(bbox=[-10, 35, 30, 60], filter=["clc_412 > 0.8"]),
        dict(bbox=[5.0, 45.0, 20.0, 55.0], filter=["eo:cloud_cover < 20", "clc_412 >= 0.5"]),
        dict(filter={"op": "<", "args": [{"property": "eo:cloud_cover"}, 3]}),
        dict(query={"clc_412": {"lt": 0.1}}),
        dict(bbox=[100.0, 0.0, 110.0, 10.0]),
    ],
)
def test_query_returns_the_same_items_as_a_crawl(synthetic, synthetic_index, query):
    q = ItemQuery.create(**query)
    expected = crawl_ids(str(synthetic), q)
    got = sorted(d["id"] for d in query_index(synthetic_index, q))
    assert got == expected
    if query.get("bbox") != [100.0, 0.0, 110.0, 10.0]:
        assert 0 < len(expected) < N_SYNTHETIC  # the query selects something, not everything


def test_search_index_returns_items_and_hrefs(tiny_catalog, tmp_path):
    out = tmp_path / "tiny.parquet"
    stats = build_index(str(tiny_catalog.catalog_path), out, concurrency=2)
    assert stats.items == 6 and stats.nodes_fetched == 7
    items = search_index(
        out,
        bbox=[11.98, 47.99, 12.02, 48.01],
        datetime="2024-06-01/2024-06-11",
        filters=["eo:cloud_cover < 20"],
    )
    assert [i.id for i in items] == ["A-32632-0601", "B-32633-0601", "D-32633-0611"]
    assert items[0].properties["eo:cloud_cover"] == 12.0
    hrefs = asset_hrefs(items, ["B04"])
    assert hrefs == [str(tiny_catalog.items[i.id].assets["B04"]) for i in items]
    assert search_index(out, collections=["tiny-far"], limit=5)[0].id == "F-32634-0601"
    assert len(search_index(out, limit=2)) == 2


def test_filter_errors_name_the_filter(synthetic_index):
    with pytest.raises(FilterError, match="no property 'clc_999'"):
        search_index(synthetic_index, filters=["clc_999 > 0.8"])
    with pytest.raises(FilterError, match="cannot parse filter 'clc_412 >> 1'"):
        search_index(synthetic_index, filters=["clc_412 >> 1"])
    with pytest.raises(FilterError, match="cannot compare property 'clc_412'"):
        search_index(synthetic_index, filters=["clc_412 > abc"])


def test_interrupted_build_resumes_without_refetching(synthetic, tmp_path):
    server = serve_directory(synthetic.parent)
    try:
        url = f"{server.url}/catalog.json"
        broken = "/synthetic/part-0003/catalog.json"
        server.log.fail.add(broken)
        out = tmp_path / "items.parquet"
        with pytest.raises(StoreError, match="part-0003"):
            build_index(url, out, concurrency=3, retries=0)
        assert not out.exists()
        markers = [json.loads(p.read_text()) for p in parts_dir(out).glob("*.json")]
        finished = {m["href"] for m in markers if m["items"] > 0}
        assert finished, "some sub-catalogs finished before the failure"
        first_counts = dict(server.log.counts)

        server.log.fail.clear()
        stats = build_index(url, out, concurrency=3, retries=0)
        assert stats.items == N_SYNTHETIC and stats.nodes_resumed >= len(finished)
        assert pq.read_table(out, columns=["id"]).num_rows == N_SYNTHETIC
        for (
            href
        ) in finished:  # finished sub-catalogs: neither they nor their items are fetched again
            prefix = href.removeprefix(server.url).rsplit("/", 1)[0] + "/"
            for path, count in server.log.counts.items():
                if path.startswith(prefix):
                    assert count == first_counts.get(path), path
    finally:
        server.close()


def test_no_resume_starts_over(tiny_catalog, tmp_path):
    out = tmp_path / "items.parquet"
    parts = parts_dir(out)
    parts.mkdir()
    (parts / "junk.json").write_text(json.dumps({"href": "/nowhere", "children": []}))
    stats = build_index(str(tiny_catalog.catalog_path), out, resume=False)
    assert stats.nodes_resumed == 0 and stats.items == 6


def test_unreachable_catalog(tmp_path):
    with pytest.raises(StoreError, match="127.0.0.1:9"):
        build_index("http://127.0.0.1:9/catalog.json", tmp_path / "x.parquet", retries=0)
