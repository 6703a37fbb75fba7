"""``multistore stac index`` / ``search`` through click's CliRunner (and the installed CLI)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from multistore.cli.stac import stac

DAY1_CLEAR = ["A-32632-0601", "B-32633-0601"]


@pytest.fixture()
def index(tiny_catalog, stac_http, tmp_path):
    out = tmp_path / "items.parquet"
    result = CliRunner().invoke(
        stac, ["index", f"{stac_http.url}/catalog.json", "--out", str(out), "--concurrency", "4"]
    )
    assert result.exit_code == 0, result.output
    assert "indexed 6 items" in result.output
    return out


def test_search_ids_hrefs_json(index, stac_http):
    runner = CliRunner()
    args = [
        "search",
        str(index),
        "--bbox",
        "11.98,47.99,12.02,48.01",
        "--filter",
        "eo:cloud_cover < 20",
    ]
    ids = runner.invoke(stac, [*args, "--datetime", "2024-06-01/2024-06-01"])
    assert ids.exit_code == 0, ids.output
    assert ids.output.splitlines() == DAY1_CLEAR

    hrefs = runner.invoke(stac, [*args, "--datetime", "2024-06-01/2024-06-01", "--asset", "B04"])
    assert hrefs.output.splitlines() == [
        f"{stac_http.url}/tiny-s2/2024-06-01/{i}/B04.tif" for i in DAY1_CLEAR
    ]
    all_assets = runner.invoke(stac, [*args, "--datetime", "2024-06-01/2024-06-01", "--assets"])
    assert len(all_assets.output.splitlines()) == 6  # 2 items x 3 assets

    js = runner.invoke(stac, [*args, "--format", "json", "--limit", "3"])
    items = [json.loads(line) for line in js.output.splitlines()]
    assert [i["id"] for i in items] == ["A-32632-0601", "B-32633-0601", "D-32633-0611"]
    assert all(i["properties"]["eo:cloud_cover"] < 20 for i in items)


def test_search_a_catalog_url_directly(stac_http):
    result = CliRunner().invoke(
        stac, ["search", f"{stac_http.url}/catalog.json", "--collection", "tiny-far"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["F-32634-0601"]


def test_usage_errors_exit_2(index):
    runner = CliRunner()
    bad_bbox = runner.invoke(stac, ["search", str(index), "--bbox", "1,2,3"])
    assert bad_bbox.exit_code == 2 and "4 numbers" in bad_bbox.output
    bad_filter = runner.invoke(stac, ["search", str(index), "--filter", "cloud ~ 3"])
    assert bad_filter.exit_code == 2 and "cannot parse filter 'cloud ~ 3'" in bad_filter.output
    unknown = runner.invoke(stac, ["search", str(index), "--filter", "nope > 1"])
    assert unknown.exit_code == 2 and "no property 'nope'" in unknown.output


def test_unreachable_catalog_is_a_clean_error(tmp_path):
    result = CliRunner().invoke(
        stac,
        [
            "index",
            "http://127.0.0.1:9/catalog.json",
            "--out",
            str(tmp_path / "x.parquet"),
            "--retries",
            "0",
        ],
    )
    assert result.exit_code == 1
    assert "127.0.0.1:9/catalog.json" in result.output and "Traceback" not in result.output


def test_installed_cli(index):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "multistore",
            "stac",
            "search",
            str(index),
            "--collection",
            "tiny-far",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["F-32634-0601"]
