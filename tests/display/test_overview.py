"""xcube-multistore's notebook API: display_config()'s per-dataset table and
display_geolocations()'s extents (PNG outside Jupyter), secrets redacted."""

from __future__ import annotations

import numpy as np
import yaml
from pyproj import Transformer

from multistore import MultiSourceDataStore
from multistore.display.overview import config_rows, extents


def _config(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_API_TOKEN", "tok-s3cr3t-42")
    config = {
        "data_stores": [
            {"identifier": "storage", "store_id": "file", "store_params": {"root": "out"}},
            {"identifier": "local", "store_id": "file", "store_params": {"root": "data"}},
        ],
        "grid_mappings": [
            {"identifier": "geo", "bbox": [170, -10, -170, 10], "spatial_res": 0.5},
            {
                "identifier": "utm",
                "crs": "EPSG:32632",
                "bbox": [600000, 5300000, 620000, 5320000],
                "spatial_res": 100,
            },
        ],
        "datasets": [
            {"identifier": "pacific", "store": "local", "data_id": "a.nc", "grid_mapping": "geo"},
            {
                "identifier": "alps",
                "grid_mapping": "utm",
                "format_id": "levels",
                "variables": [
                    {"identifier": "v1", "store": "local", "data_id": "b.tif?t=${MY_API_TOKEN}"},
                    {"identifier": "v2", "store": "local", "data_id": "c.tif"},
                ],
            },
            {"identifier": "borrow", "store": "local", "data_id": "d.tif", "grid_mapping": "alps"},
            {"identifier": "native", "store": "local", "data_id": "e.tif"},
        ],
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return MultiSourceDataStore(path)


def test_display_config_table_redacts_secrets(tmp_path, monkeypatch, capsys):
    msds = _config(tmp_path, monkeypatch)
    rows = config_rows(msds.config)
    assert [r["dataset"] for r in rows] == ["pacific", "alps.v1", "alps.v2", "borrow", "native"]
    assert rows[1]["output"] == "alps.levels" and rows[4]["grid_mapping"] == "(source grid)"
    msds.display_config()
    out = capsys.readouterr().out
    assert "tok-s3cr3t-42" not in out and "b.tif?t=***" in out
    assert out.splitlines()[0].split() == [
        "dataset", "store", "data_id", "grid_mapping", "format", "output"
    ]  # fmt: skip


def test_display_geolocations_png_and_extents(tmp_path, monkeypatch):
    msds = _config(tmp_path, monkeypatch)
    boxes = extents(msds.config, msds.open_cube)
    assert set(boxes) == {"pacific", "alps", "borrow"}  # native: not generated, unknown
    assert boxes["pacific"] == (170.0, -10.0, 190.0, 10.0)
    # UTM box: every corner (pyproj, point by point) lies inside the reported lon/lat box
    t = Transformer.from_crs(32632, 4326, always_xy=True)
    lon, lat = t.transform([600000, 620000, 600000, 620000], [5300000, 5300000, 5320000, 5320000])
    w, s, e, n = boxes["alps"]
    assert np.all((w <= np.array(lon)) & (np.array(lon) <= e))
    assert np.all((s <= np.array(lat)) & (np.array(lat) <= n))
    assert boxes["borrow"] == boxes["alps"]
    png = msds.display_geolocations(tmp_path / "map.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "map.png").read_bytes() == png
