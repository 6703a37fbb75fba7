"""CQL2 filters on STAC items (issue 10.8): the same items as a plain Python predicate
over the catalog's JSON files, whichever way the items are found, and located exit-2
errors from ``multistore validate``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from multistore.stores.stac import StacDataStore
from multistore.stores.stac.index import build_index, query_index
from multistore.stores.stac.query import ItemQuery
from tests.servers.stac_catalog import TINY_COLLECTION

AND_FILTER = "eo:cloud_cover < 20 AND platform = 'sentinel-2a'"


def python_selection(root: Path, predicate) -> list[str]:
    """Ids of the tiny collection's items whose properties satisfy ``predicate``, read
    straight from the item JSON files."""
    ids = []
    for path in root.rglob("*.json"):
        doc = json.loads(path.read_text())
        if (
            doc.get("type") == "Feature"
            and doc.get("collection") == TINY_COLLECTION
            and predicate(doc["properties"])
        ):
            ids.append(doc["id"])
    return sorted(ids)


@pytest.fixture(scope="module")
def tiny_index(tiny_catalog, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny-index") / "items.parquet"
    build_index(str(tiny_catalog.catalog_path), out, concurrency=2)
    return out


@pytest.mark.parametrize("source", ["crawl", "index", "api"])
def test_and_filter_selects_what_python_selects(source, tiny_catalog, tiny_index, request):
    expected = python_selection(
        tiny_catalog.root, lambda p: p["eo:cloud_cover"] < 20 and p["platform"] == "sentinel-2a"
    )
    assert expected == ["A-32632-0601", "E-32632-0621"]  # not all, not none
    query = ItemQuery.create(collections=[TINY_COLLECTION], filter=AND_FILTER)
    if source == "crawl":
        items = StacDataStore(str(tiny_catalog.catalog_path)).find_items(query)
    elif source == "index":
        items = query_index(tiny_index, query)
    else:
        items = StacDataStore(request.getfixturevalue("stac_api")).find_items(query)
    assert sorted(i["id"] for i in items) == expected


def test_filter_list_entries_are_anded(tiny_catalog):
    store = StacDataStore(str(tiny_catalog.catalog_path))
    query = ItemQuery.create(
        collections=[TINY_COLLECTION],
        filter=["platform IN ('sentinel-2b')", "eo:cloud_cover BETWEEN 4 AND 100"],
    )
    expected = python_selection(
        tiny_catalog.root, lambda p: p["platform"] == "sentinel-2b" and p["eo:cloud_cover"] >= 4
    )
    assert [i["id"] for i in store.find_items(query)] == expected == ["D-32633-0611"]


# -- validate ----------------------------------------------------------------------------------


def _config(catalog: Path, filters: list) -> dict:
    return {
        "data_stores": [
            {"identifier": "storage", "store_id": "file", "store_params": {"root": "out"}},
            {"identifier": "s2", "store_id": "stac", "store_params": {"url": str(catalog)}},
        ],
        "grid_mappings": [
            {"identifier": "gm", "bbox": [11.98, 47.99, 12.02, 48.01], "spatial_res": 0.0002}
        ],
        "datasets": [
            {
                "identifier": f"d{i}",
                "store": "s2",
                "data_id": TINY_COLLECTION,
                "grid_mapping": "gm",
                "open_params": {"filter": f},
            }
            for i, f in enumerate(filters)
        ],
    }


def _validate(tmp_path: Path, config: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return subprocess.run(
        [sys.executable, "-m", "multistore", "validate", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        timeout=300,
    )


def test_validate_reports_located_filter_errors(tiny_catalog, tmp_path):
    filters = [
        AND_FILTER,
        "eo:cloud_cover < 20 AND",  # syntax error
        ["eo:cloud_cover < 20", "S_INTERSECTS(geometry, POINT(1 2))"],  # unsupported
        {"op": "<", "args": [{"property": "eo:cloud_cover"}]},  # CQL2-JSON, one arg
    ]
    run = _validate(tmp_path, _config(tiny_catalog.catalog_path, filters))
    output = run.stdout + run.stderr
    assert run.returncode == 2, output
    assert "Traceback" not in output
    lines = [line.strip() for line in output.splitlines()]
    assert any(
        line.startswith("datasets[1].open_params.filter: cannot parse filter") for line in lines
    ), output
    assert any(
        line.startswith("datasets[2].open_params.filter[1]: filter S_INTERSECTS")
        and "not supported" in line
        for line in lines
    ), output
    assert any(line.startswith("datasets[3].open_params.filter: ") for line in lines), output
    assert not any(line.startswith("datasets[0]") for line in lines), output
    assert not any(line.startswith("datasets[2].open_params.filter[0]") for line in lines)

    good = _validate(tmp_path, _config(tiny_catalog.catalog_path, [AND_FILTER]))
    assert good.returncode == 0, good.stdout + good.stderr


def test_stac_search_cli_takes_cql2_text(tiny_index):
    from click.testing import CliRunner

    from multistore.cli.stac import stac

    runner = CliRunner()
    found = runner.invoke(stac, ["search", str(tiny_index), "--filter", AND_FILTER])
    assert found.exit_code == 0, found.output
    assert found.output.split() == ["A-32632-0601", "E-32632-0621"]
    bad = runner.invoke(stac, ["search", str(tiny_index), "--filter", "eo:cloud_cover < 20 AND"])
    assert bad.exit_code == 2 and "cannot parse filter 'eo:cloud_cover < 20 AND'" in bad.output
