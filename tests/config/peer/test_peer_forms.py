"""xcube-multistore's config forms, one config per form in this folder: validate, plan, generate.

Each config is copied into a project folder holding the demo sources (``data/``) and
run as a user would; cube values are checked against GDAL or NumPy, not against
multistore's own output.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from multistore import MultiSourceDataStore
from multistore.config import load_config
from multistore.errors import ConfigError
from multistore.grid import TargetGrid
from multistore.status import Status
from tests.test_generate import warp_landcover

HERE = Path(__file__).parent


@pytest.fixture
def peer(project):
    """``peer(name) -> MultiSourceDataStore`` for ``<name>.yml`` placed in the project folder."""

    def load(name: str, preloaded: tuple[str, ...] = ()) -> MultiSourceDataStore:
        """``preloaded``: cubes whose data exist only after the preload (plan says so)."""
        path = project.root / f"{name}.yml"
        shutil.copy(HERE / f"{name}.yml", path)
        msds = MultiSourceDataStore(load_config(path))
        for summary in msds.describe_plan():
            if summary.identifier in preloaded:
                assert "preload it first" in summary.error, summary.error
            else:
                assert summary.error is None, summary.error
        return msds

    load.root = project.root
    return load


def test_identifiers_with_slash_and_space_write_sub_paths(peer):
    msds = peer("identifier_paths")
    results = msds.generate()
    assert results["AU-How/sen2 lc"].status is Status.COMPLETED, results["AU-How/sen2 lc"]
    assert results["AU-How/second"].status is Status.COMPLETED, results["AU-How/second"]
    grid = TargetGrid.from_bbox([11.2, 47.6, 12.2, 48.3], "EPSG:4326", 0.004, 64)
    expected = warp_landcover(grid)
    for name in ("sen2 lc", "second"):
        path = peer.root / "out" / "AU-How" / f"{name}.zarr"
        with xr.open_zarr(path, mask_and_scale=False) as cube:
            assert np.mean(cube["band_1"].values == expected) >= 0.99
    assert not (peer.root / "AU-How").exists()


@pytest.mark.parametrize(
    ("identifier", "reason"),
    [
        ("../escape", "'..'"),
        ("a/../../b", "'..'"),
        ("/abs/cube", "absolute"),
        ("a//b", "empty path segment"),
        ("a/", "empty path segment"),
    ],
)
def test_unsafe_identifiers_are_rejected_with_location(peer, identifier, reason):
    import yaml

    config = yaml.safe_load((HERE / "identifier_paths.yml").read_text())
    config["datasets"][0]["identifier"] = identifier
    config["datasets"][1]["grid_mapping"] = "gm"
    path = peer.root / "unsafe.yml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"datasets[0].identifier: {identifier!r}:" in str(info.value)
    assert reason in str(info.value)


def test_resampling_forms(peer):
    from pyproj import Transformer

    from multistore.demo import data

    msds = peer("resampling_forms")
    results = msds.generate()
    for name in ("lc_count", "lc_std", "temp_seasons", "temp_one"):
        assert results[name].status is Status.COMPLETED, results[name]
    out = peer.root / "out"

    # count: every valid source pixel lands in exactly one target pixel (pyproj + NumPy)
    src, transform, crs = data.landcover_array()
    rows, cols = np.mgrid[0 : src.shape[0], 0 : src.shape[1]] + 0.5
    xs, ys = transform * (cols, rows)
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    ci = np.floor((lon - 11.2) / 0.02).astype(int)
    ri = np.floor((48.3 - lat) / 0.02).astype(int)
    ok = (src != 255) & (ci >= 0) & (ci < 50) & (ri >= 0) & (ri < 35)
    expected = np.zeros((35, 50), dtype=int)
    np.add.at(expected, (ri[ok], ci[ok]), 1)
    with xr.open_zarr(out / "lc_count.zarr") as cube:
        assert list(cube.data_vars) == ["band_1"]
        assert cube["band_1"].dtype == np.int32
        assert np.array_equal(cube["band_1"].values, expected)
    with xr.open_zarr(out / "lc_std.zarr") as cube:
        assert cube["band_1"].dtype == np.float32
        std = cube["band_1"].values
        assert np.all(np.isnan(std) == (expected == 0))
        sq = np.zeros((35, 50))
        total = np.zeros((35, 50))
        v = src[ok].astype(float)
        np.add.at(total, (ri[ok], ci[ok]), v)
        mean = total / np.maximum(expected, 1)
        np.add.at(sq, (ri[ok], ci[ok]), (v - mean[ri[ok], ci[ok]]) ** 2)
        ref = np.sqrt(sq / np.maximum(expected, 1))
        np.testing.assert_allclose(std[expected > 0], ref[expected > 0], rtol=1e-5, atol=1e-6)

    # temporal lists: one variable per method; a list of one keeps the name
    raw = data.temperature_dataset()["temperature"].values  # (12, lat, lon)
    seasons = raw.reshape(4, 3, *raw.shape[1:])
    with xr.open_zarr(out / "temp_seasons.zarr") as cube:
        assert {"temperature_mean", "temperature_std", "temperature_count"} <= set(cube.data_vars)
        with np.errstate(invalid="ignore"), np.testing.suppress_warnings() as sup:
            sup.filter(RuntimeWarning)
            np.testing.assert_allclose(
                cube["temperature_mean"].values, np.nanmean(seasons, 1), rtol=1e-5
            )
            np.testing.assert_allclose(
                cube["temperature_std"].values, np.nanstd(seasons, 1), rtol=1e-4, atol=1e-5
            )
        np.testing.assert_array_equal(
            cube["temperature_count"].values, np.sum(~np.isnan(seasons), 1)
        )
    with xr.open_zarr(out / "temp_one.zarr") as cube:
        assert list(cube.data_vars) == ["temperature"]
        with np.testing.suppress_warnings() as sup:
            sup.filter(RuntimeWarning)
            ref = np.nanmax(raw.reshape(2, 6, *raw.shape[1:]), 1)
        np.testing.assert_allclose(cube["temperature"].values, ref)


def test_missing_plugin_store_ids_name_the_package(peer):
    path = peer.root / "plugin_store_ids.yml"
    shutil.copy(HERE / "plugin_store_ids.yml", path)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert (
        "data_stores[1].store_id: store_id 'cds' is provided by the xcube plugin package "
        "'xcube-cds', which is not installed; install it with `conda install -c conda-forge "
        "xcube-cds`" in text
    )
    assert (
        "data_stores[2].store_id: store_id 'stac-cdse-ardc' is provided by the xcube plugin "
        "package 'xcube-stac'" in text
    )
    assert "unknown store_id 'cds'" not in text


FAKE_PLUGIN = """
from xcube.constants import EXTENSION_POINT_DATA_STORES
from xcube.util import extension


def init_plugin(registry):
    registry.add_extension(
        loader=extension.import_component("fakezenodo_store:FakeZenodoStore"),
        point=EXTENSION_POINT_DATA_STORES,
        name="zenodo",
        description="another zenodo store",
    )
"""
FAKE_STORE = """
from xcube.core.store.fs.registry import get_fs_data_store_class

FakeZenodoStore = type(
    "FakeZenodoStore", (get_fs_data_store_class("file"),), {"__module__": __name__}
)
"""


def test_validate_names_the_plugin_used_for_a_shared_store_id(tmp_path):
    """A second installed plugin (a real dist-info with an entry point) claims 'zenodo'."""
    import subprocess
    import sys

    import yaml

    site = tmp_path / "site"
    dist = site / "fakezenodo-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakezenodo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[xcube_plugins]\nfakezenodo = fakezenodo:init_plugin\n")
    (dist / "top_level.txt").write_text("fakezenodo\nfakezenodo_store\n")
    (site / "fakezenodo.py").write_text(FAKE_PLUGIN)
    (site / "fakezenodo_store.py").write_text(FAKE_STORE)
    config = {
        "data_stores": [
            {"identifier": "storage", "store_id": "file", "store_params": {"root": "out"}},
            {"identifier": "zen", "store_id": "zenodo", "store_params": {"root": "123"}},
        ],
        "datasets": [{"identifier": "x", "store": "zen", "data_id": "a.tif"}],
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    env = {**__import__("os").environ}
    env["PYTHONPATH"] = f"{site}:{env.get('PYTHONPATH', '.')}"
    run = [sys.executable, "-m", "multistore", "validate", str(path)]
    result = subprocess.run(run, capture_output=True, text=True, env=env, timeout=300)
    probe = "from xcube.core.store import get_data_store_class as g; print(g('zenodo').__module__)"
    module = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300
    ).stdout.split()[-1]
    used = "fakezenodo" if module.startswith("fakezenodo") else "multistore"
    notes = [line for line in result.stdout.splitlines() if line.startswith("note:")]
    assert notes, result.stdout + result.stderr
    assert "store_id 'zenodo' is registered by" in notes[0]
    assert "multistore" in notes[0] and "fakezenodo" in notes[0]
    assert notes[0].endswith(f"xcube uses the one from {used}")


def test_zenodo_without_root(peer, zenodo, monkeypatch):
    from multistore.testing.sample_zenodo import geotiff_bytes, zip_bytes

    mask = (np.arange(32 * 32) % 3).astype(np.uint8).reshape(32, 32)
    height = np.linspace(0, 40, 32 * 32, dtype=np.float32).reshape(32, 32)
    zenodo.add_record(
        "1111",
        {"france.zip": zip_bytes({"forest_mask_france.tif": geotiff_bytes(mask, nodata=255)})},
    )
    zenodo.add_record("2222", {"canopy_height.tif": geotiff_bytes(height, nodata=-9999.0)})
    monkeypatch.setenv("PEER_ZENODO_URL", zenodo.base_url)
    msds = peer("zenodo_rootless", preloaded=("forest_mask",))
    results = msds.generate()
    for name in ("forest_mask", "canopy_height"):
        assert results[name].status is Status.COMPLETED, results[name]
    with xr.open_zarr(peer.root / "out" / "forest_mask.zarr", mask_and_scale=False) as cube:
        (var,) = [v for v in cube.data_vars if cube[v].ndim >= 2]
        np.testing.assert_array_equal(np.squeeze(cube[var].values), mask)
    with xr.open_zarr(peer.root / "out" / "canopy_height.zarr") as cube:
        (var,) = [v for v in cube.data_vars if cube[v].ndim >= 2]
        np.testing.assert_array_equal(np.squeeze(cube[var].values), height)
    assert (peer.root / "zenodo_cache" / "1111").is_dir()


def test_stac_item_and_collection_json_paths(peer, tiny_catalog, stac_http, monkeypatch):
    from tests.servers.stac_catalog import tiny_pixels

    monkeypatch.setenv("PEER_STAC_URL", stac_http.url)
    msds = peer("stac_paths")
    results = msds.generate()
    for name in ("one_item", "whole_collection"):
        assert results[name].status is Status.COMPLETED, results[name]
    with xr.open_zarr(peer.root / "out" / "one_item.zarr", mask_and_scale=False) as cube:
        assert cube["B04"].sizes["time"] == 1
        # the item's own grid: its raw COG pixels (written by the catalog generator)
        np.testing.assert_array_equal(cube["B04"].values[0], tiny_pixels(0, "B04"))
    with xr.open_zarr(peer.root / "out" / "whole_collection.zarr") as cube:
        days = {i.datetime.date() for i in tiny_catalog.items.values() if i.collection == "tiny-s2"}
        assert cube["B04"].sizes["time"] == len(days) == 3


def test_antimeridian_bbox_gives_a_wrapping_grid(peer):
    lon = np.arange(-179.5, 180, 1.0)
    lat = np.arange(89.5, -90, -1.0)
    values = (np.floor(lon)[None, :] * 1000 + np.floor(lat)[:, None]).astype("float32")
    data = peer.root / "data"
    data.mkdir(exist_ok=True)
    xr.Dataset({"v": (("lat", "lon"), values)}, coords={"lon": lon, "lat": lat}).to_netcdf(
        data / "global.nc"
    )
    msds = peer("antimeridian")
    assert msds.config.grid_mappings[0].bbox == (170.0, -10.0, 190.0, 10.0)
    assert msds.generate()["pacific"].status is Status.COMPLETED
    with xr.open_zarr(peer.root / "out" / "pacific.zarr") as cube:
        v = cube["v"].values
        x = cube[[d for d in cube["v"].dims if d != "lat"][0]].values
        y = cube["lat"].values
    assert v.shape == (40, 40) and x[0] == 170.25 and x[-1] == 189.75
    # reference: the source cell holding each target centre, longitudes wrapped by NumPy
    wrapped = (x + 180.0) % 360.0 - 180.0
    expected = np.floor(wrapped)[None, :] * 1000 + np.floor(y)[:, None]
    np.testing.assert_array_equal(v, expected)


def test_levels_pyramid_readable_by_xcube_file_store(peer):
    import json

    from xcube.core.store import new_data_store

    msds = peer("levels")
    assert msds.generate()["lc_pyramid"].status is Status.COMPLETED
    path = peer.root / "out" / "lc_pyramid.levels"
    meta = json.loads((path / ".zlevels").read_text())
    assert meta["num_levels"] >= 2 and (path / "0.zarr").is_dir()
    store = new_data_store("file", root=str(peer.root / "out"))
    ml = store.open_data("lc_pyramid.levels", data_type="mldataset")
    assert ml.num_levels == meta["num_levels"]
    level0 = ml.get_dataset(0)
    grid = TargetGrid.from_bbox([11.2, 47.6, 12.2, 48.3], "EPSG:4326", 0.004, 64)
    assert level0["band_1"].shape == grid.shape
    expected = warp_landcover(grid).astype("float32")
    expected[expected == 255] = np.nan  # xcube decodes the fill value
    got = level0["band_1"].values
    assert np.mean((got == expected) | (np.isnan(got) & np.isnan(expected))) >= 0.99
    with xr.open_zarr(path / "0.zarr", mask_and_scale=False) as raw:
        assert raw["band_1"].dtype == np.uint8
    level1 = ml.get_dataset(1)
    assert level1["band_1"].shape == tuple((n + 1) // 2 for n in grid.shape)
    # a second run finds the pyramid complete
    assert msds.generate()["lc_pyramid"].status is Status.SKIPPED
