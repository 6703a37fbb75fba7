"""Issue 16: band patterns, server-side processing, catalog browsing, detached exports."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pyproj
import pytest
from xcube.core.store import new_data_store

from multistore.errors import ConfigError, SourceOpenError
from multistore.grid import TargetGrid
from multistore.stores.earthengine.store import EarthEngineDataStore
from tests.servers.earthengine import store_params
from tests.servers.ee_emulator import Catalog, Emulator, RequestGrid, SyntheticImage
from tests.servers.stac import StaticServer, serve_directory

SMALL = TargetGrid.from_bbox([10.0005, 45.0005, 10.0105, 45.0085], "EPSG:4326", 0.001, tile_size=8)


def request_grid(grid: TargetGrid) -> RequestGrid:
    return RequestGrid(grid.crs_wkt, tuple(grid.transform)[:6], grid.width, grid.height)


@pytest.fixture
def store(ee_emulator) -> EarthEngineDataStore:
    return new_data_store("earthengine", **store_params(ee_emulator))


# -- 1. band selection by pattern ----------------------------------------------------------


def test_band_patterns_fullmatch_in_native_order(store, ee_emulator):
    ds = store.open_data(
        "TEST/MULTI/uint16",
        bands={"include": ["b1.*", "b[2-3]"], "exclude": ["b11"]},
        rename_map={"b10": "ten"},
        scale_map={"b2": 0.5},
        target_grid=SMALL.to_dict(),
    )
    # fullmatch: "b1.*" takes b1, b10, b11, b12 but not b2; native order kept
    assert list(ds.data_vars) == ["b1", "b2", "b3", "ten", "b12"]
    ds = ds.compute()
    raw = ee_emulator.catalog.render("TEST/MULTI/uint16", ["b2", "b10"], request_grid(SMALL))
    np.testing.assert_array_equal(ds["b2"].values, raw["b2"].data.astype("float64") * 0.5)
    np.testing.assert_array_equal(ds["ten"].values, raw["b10"].data)


def test_band_patterns_errors(store):
    with pytest.raises(SourceOpenError, match="no band of TEST/MULTI/uint16 matches"):
        store.open_data(
            "TEST/MULTI/uint16", bands={"include": ["B.*"]}, target_grid=SMALL.to_dict()
        )
    with pytest.raises(ConfigError, match=r"open_params.bands.exclude\[0\]"):
        store.open_data("TEST/MULTI/uint16", bands={"exclude": ["b("]}, target_grid=SMALL.to_dict())
    with pytest.raises(ConfigError, match="open_params"):
        store.open_data("TEST/MULTI/uint16", bands={"pick": ["b1"]}, target_grid=SMALL.to_dict())
    with pytest.raises(SourceOpenError, match=r"no band\(s\) \['b13'\]"):
        store.open_data("TEST/MULTI/uint16", bands=["b13"], target_grid=SMALL.to_dict())


# -- 2. server-side processing -------------------------------------------------------------

QA_BANDS = (("B4", "uint16"), ("B8", "uint16"), ("QA", "uint16"))
QA_GRID = (0.001, 0.0, 10.0, 0.0, -0.001, 45.1)
QA_IDS = ["TEST/QA/20240103", "TEST/QA/20240111", "TEST/QA/20240127"]


def qa_catalog() -> Catalog:
    images = [
        SyntheticImage(
            image_id,
            QA_BANDS,
            f"2024-01-{image_id[-2:]}T10:00:00Z",
            "EPSG:4326",
            QA_GRID,
            (100, 100),
            (10.0, 45.0, 10.1, 45.1),
            boxes,
            seed,
        )
        for image_id, boxes, seed in zip(
            QA_IDS, (((10.002, 45.002, 10.006, 45.005),), (), ()), (21, 22, 23), strict=True
        )
    ]
    return Catalog(images, {"TEST/QA": QA_IDS})


@pytest.fixture
def qa_emulator(ee_offline) -> Iterator[Emulator]:
    with Emulator(qa_catalog()) as emu:
        yield emu


def test_mask_expression_median_match_numpy(qa_emulator, tmp_path):
    hook = tmp_path / "ee_hooks.py"
    hook.write_text(
        "def double_red(img):\n"
        "    return img.addBands(img.expression(\"b('B4') * 2\").rename(['B4x2']))\n"
    )
    store = new_data_store("earthengine", **store_params(qa_emulator))
    raw = {
        i: qa_emulator.catalog.render(i, ["B4", "B8", "QA"], request_grid(SMALL)) for i in QA_IDS
    }
    # values to mask: some QA values that occur in the first image's top row
    drop_values = sorted({int(v) for v in raw[QA_IDS[0]]["QA"].data[0, :3]})
    ds = store.open_data(
        "TEST/QA",
        bands={"include": ["B.*"]},
        mask=[{"band": "QA", "bits": [3]}, {"band": "QA", "values": drop_values}],
        expressions={"ndvi": "(B8 - B4) / (B8 + B4)"},
        resampling="bilinear",
        image_hook={"module_path": str(hook), "function_name": "double_red"},
        temporal_resolution="monthly",
        reducer="median",
        target_grid=SMALL.to_dict(),
    )
    assert list(ds.data_vars) == ["B4", "B8", "ndvi", "B4x2"]
    ds = ds.compute()

    # the same in NumPy on the emulator's raw pixels
    layers: dict[str, list[np.ma.MaskedArray]] = {"B4": [], "B8": [], "ndvi": [], "B4x2": []}
    for i in QA_IDS:
        r = raw[i]
        qa = r["QA"].data
        drop = np.ma.getmaskarray(r["B4"]) | ((qa & 8) != 0) | np.isin(qa, drop_values)
        b4 = r["B4"].data.astype("float32")
        b8 = r["B8"].data.astype("float32")
        ndvi = (b8 - b4) / (b8 + b4)
        for name, values in (("B4", b4), ("B8", b8), ("ndvi", ndvi), ("B4x2", b4 * 2)):
            layers[name].append(np.ma.MaskedArray(values, mask=drop))
    for name, stack in layers.items():
        want = np.ma.median(np.ma.stack(stack).astype("float64"), axis=0)
        got = ds[name].values[0]
        want_mask = np.ma.getmaskarray(want)
        assert want_mask.any() and not want_mask.all()  # the masks bite, not everywhere
        np.testing.assert_array_equal(np.isnan(got), want_mask, err_msg=name)
        np.testing.assert_array_equal(
            got[~want_mask], want.data[~want_mask].astype("float32"), err_msg=name
        )


def test_processing_graph_and_errors(qa_emulator, tmp_path):
    from multistore.stores.earthengine.source import step_expression

    store = new_data_store("earthengine", **store_params(qa_emulator))
    p = store._prepare(
        "TEST/QA",
        {
            "resampling": "bicubic",
            "mask": {"band": "QA", "bits": [0]},
            "target_grid": SMALL.to_dict(),
        },
    )
    graph = json.dumps(step_expression(p.recipe, p.steps[0]))
    assert '"Image.resample"' in graph and '"bicubic"' in graph and '"Image.updateMask"' in graph
    listed = store.open_data(
        "TEST/QA",
        bands=["ndvi", "B4"],
        expressions={"ndvi": "(B8 - B4) / (B8 + B4)", "unused": "B4 * 2"},
        target_grid=SMALL.to_dict(),
    )
    assert list(listed.data_vars) == ["ndvi", "B4"] and listed.ndvi.dtype == "float32"
    with pytest.raises(ConfigError, match=r"open_params.mask.band"):
        store.open_data("TEST/QA", mask={"band": "SCL", "values": [3]}, target_grid=SMALL.to_dict())
    with pytest.raises(ConfigError, match=r"open_params.mask: give values or bits"):
        store.open_data("TEST/QA", mask={"band": "QA"}, target_grid=SMALL.to_dict())
    with pytest.raises(ConfigError, match=r"open_params.expressions.bad"):
        store.open_data("TEST/QA", expressions={"bad": "(B8 -"}, target_grid=SMALL.to_dict())
    with pytest.raises(ConfigError, match=r"open_params.image_hook.module_path"):
        store.open_data(
            "TEST/QA",
            image_hook={"module_path": str(tmp_path / "nope.py"), "function_name": "f"},
            target_grid=SMALL.to_dict(),
        )


def test_image_hook_is_fingerprinted(tmp_path):
    from multistore.config.loader import load_config
    from multistore.plan import build_plan

    hook = tmp_path / "hooks" / "ee_hooks.py"
    hook.parent.mkdir()
    hook.write_text("def f(img):\n    return img\n")
    (tmp_path / "config.yml").write_text(
        "data_stores:\n"
        f"  - {{identifier: storage, store_id: file, store_params: {{root: '{tmp_path}'}}}}\n"
        "  - {identifier: gee, store_id: earthengine, store_params: {credentials: none}}\n"
        "datasets:\n"
        "  - identifier: s2\n"
        "    store: gee\n"
        "    data_id: TEST/QA\n"
        "    open_params: {image_hook: {module_path: hooks/ee_hooks.py, function_name: f}}\n"
    )
    config = load_config(tmp_path / "config.yml")
    source = config.datasets[0].sources[0]
    assert source.open_params["image_hook"]["module_path"] == str(hook)
    before = build_plan(config).cubes[0].fingerprint
    hook.write_text("def f(img):\n    return img.toFloat()\n")
    assert build_plan(config).cubes[0].fingerprint != before


# -- 3. catalog browsing -------------------------------------------------------------------


def _collection(ident: str, title: str, provider: str, bbox, interval, bands, **extra) -> dict:
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": ident,
        "title": title,
        "description": f"{title}, a test dataset.\nMore text.",
        "license": "proprietary",
        "keywords": extra.pop("keywords", []),
        "providers": [{"name": provider, "roles": ["producer"]}],
        "extent": {"spatial": {"bbox": [bbox]}, "temporal": {"interval": [interval]}},
        "summaries": {"eo:bands": bands},
        "links": [],
        **extra,
    }


def write_catalog(root) -> None:
    """A small tree shaped like Earth Engine's: root -> provider catalogs -> collections."""
    docs = {
        "catalog.json": {
            "type": "Catalog",
            "id": "GEE_catalog",
            "links": [
                {"rel": "child", "href": "COPERNICUS/catalog.json"},
                {"rel": "child", "href": "JAXA/catalog.json"},
            ],
        },
        "COPERNICUS/catalog.json": {
            "type": "Catalog",
            "id": "COPERNICUS",
            "links": [
                {"rel": "child", "href": "COPERNICUS_S2_SR_HARMONIZED.json"},
                {"rel": "child", "href": "COPERNICUS_DEM_GLO30.json"},
                {"rel": "parent", "href": "../catalog.json"},
            ],
        },
        "JAXA/catalog.json": {
            "type": "Catalog",
            "id": "JAXA",
            "links": [{"rel": "child", "href": "JAXA_ALOS_AW3D30.json"}],
        },
        "COPERNICUS/COPERNICUS_S2_SR_HARMONIZED.json": _collection(
            "COPERNICUS/S2_SR_HARMONIZED",
            "Harmonized Sentinel-2 MSI: MultiSpectral Instrument, Level-2A",
            "European Union/ESA/Copernicus",
            [-180, -56, 180, 83],
            ["2017-03-28T00:00:00Z", None],
            [
                {"name": "B4", "description": "Red", "gee:scale": 0.0001},
                {"name": "SCL", "description": "Scene classification"},
            ],
            keywords=["copernicus", "esa", "msi", "sentinel", "sr"],
            **{
                "gee:type": "image_collection",
                "gee:interval": {"type": "cadence", "unit": "day", "interval": 5},
            },
        ),
        "COPERNICUS/COPERNICUS_DEM_GLO30.json": _collection(
            "COPERNICUS/DEM/GLO30",
            "Copernicus DEM GLO-30: Global 30m Digital Elevation Model",
            "European Union/ESA/Copernicus",
            [-180, -90, 180, 90],
            ["2010-12-01T00:00:00Z", "2015-01-31T00:00:00Z"],
            [{"name": "DEM", "gee:units": "m"}],
            keywords=["dem", "elevation"],
            **{"gee:type": "image_collection"},
        ),
        "JAXA/JAXA_ALOS_AW3D30.json": _collection(
            "JAXA/ALOS/AW3D30/V3_2",
            "ALOS DSM: Global 30m v3.2",
            "JAXA Earth Observation Research Center",
            [-180, -82, 180, 82],
            ["2006-01-24T00:00:00Z", "2011-05-13T00:00:00Z"],
            [{"name": "DSM", "gee:units": "m"}],
            keywords=["alos", "dem", "elevation"],
            **{"gee:type": "image_collection"},
        ),
    }
    for rel, doc in docs.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc))


@pytest.fixture
def catalog_http(tmp_path) -> Iterator[StaticServer]:
    write_catalog(tmp_path / "stac")
    server = serve_directory(tmp_path / "stac")
    yield server
    server.close()


def test_catalog_search_describe_and_ids(catalog_http, tmp_path):
    params = {
        "credentials": "none",
        "catalog_url": f"{catalog_http.url}/catalog.json",
        "catalog_cache": str(tmp_path / "cache"),
        "backoff_s": 0.01,
    }
    store = EarthEngineDataStore(**params)
    assert store.list_data_ids() == [
        "COPERNICUS/DEM/GLO30",
        "COPERNICUS/S2_SR_HARMONIZED",
        "JAXA/ALOS/AW3D30/V3_2",
    ]
    assert [e.id for e in store.search_catalog(text="DEM elevation")] == [
        "COPERNICUS/DEM/GLO30",
        "JAXA/ALOS/AW3D30/V3_2",
    ]
    # time ranges overlap: the open-ended S2 and AW3D30 (until 2011-05)
    assert [e.id for e in store.search_catalog(time_range=["2011-01-01", "2012-01-01"])] == [
        "COPERNICUS/DEM/GLO30",
        "JAXA/ALOS/AW3D30/V3_2",
    ]
    assert [e.id for e in store.search_catalog(bbox=[10, 85, 11, 86])] == ["COPERNICUS/DEM/GLO30"]
    s2 = store.catalog_entry("COPERNICUS/S2_SR_HARMONIZED")
    assert s2.cadence == "5 day" and s2.provider == "European Union/ESA/Copernicus"
    assert [(b.name, b.scale) for b in s2.bands] == [("B4", 0.0001), ("SCL", None)]
    with pytest.raises(SourceOpenError, match="did you mean COPERNICUS/S2_SR_HARMONIZED"):
        store.catalog_entry("COPERNICUS/S2_SR_HARMONISED")
    # a second store reads the cache: no request
    fetched = sum(catalog_http.log.counts.values())
    assert fetched == 6
    assert len(EarthEngineDataStore(**params).catalog()) == 3
    assert sum(catalog_http.log.counts.values()) == fetched


def test_catalog_through_the_cli(catalog_http, tmp_path):
    from click.testing import CliRunner

    from multistore.cli import main

    config = tmp_path / "config.yml"
    config.write_text(
        "data_stores:\n"
        f"  - {{identifier: storage, store_id: file, store_params: {{root: '{tmp_path}'}}}}\n"
        "  - identifier: gee\n"
        "    store_id: earthengine\n"
        "    store_params:\n"
        "      credentials: none\n"
        f"      catalog_url: {catalog_http.url}/catalog.json\n"
        f"      catalog_cache: {tmp_path / 'cache'}\n"
        "datasets:\n"
        "  - {identifier: dem, store: gee, data_id: COPERNICUS/DEM/GLO30}\n"
    )
    runner = CliRunner()
    found = runner.invoke(
        main, ["search", str(config), "gee", "--text", "sentinel", "--bbox", "10,45,11,46"]
    )
    assert found.exit_code == 0, found.output
    [line] = found.output.splitlines()
    assert line.split("\t")[:4] == [
        "COPERNICUS/S2_SR_HARMONIZED",
        "Harmonized Sentinel-2 MSI: MultiSpectral Instrument, Level-2A",
        "European Union/ESA/Copernicus",
        "5 day",
    ]
    found = runner.invoke(
        main, ["search", str(config), "gee", "--time-range", "2016-01-01", "", "--json"]
    )
    assert [json.loads(x)["id"] for x in found.output.splitlines()] == [
        "COPERNICUS/S2_SR_HARMONIZED"
    ]
    described = runner.invoke(
        main, ["describe", str(config), "gee", "JAXA/ALOS/AW3D30/V3_2", "--catalog"]
    )
    assert described.exit_code == 0, described.output
    assert json.loads(described.output)["bands"][0]["units"] == "m"
    listed = runner.invoke(main, ["describe", str(config), "gee"])
    assert listed.output.split() == [
        "COPERNICUS/DEM/GLO30",
        "COPERNICUS/S2_SR_HARMONIZED",
        "JAXA/ALOS/AW3D30/V3_2",
    ]
    bad = runner.invoke(main, ["search", str(config), "gee", "--bbox", "1,2,3"])
    assert bad.exit_code == 2


# -- 4. detached exports -------------------------------------------------------------------

EXPORT_ROOT = "projects/test-project/assets/multistore-tmp"
EXPORT_GRID = {
    "identifier": "gm",
    "crs": "EPSG:4326",
    "bbox": [9.9975, 44.9975, 10.2475, 45.2475],
    "spatial_res": 0.005,
    "tile_size": 25,
}


def export_config(tmp_path, emu, **open_params) -> str:
    import yaml

    config = {
        "data_stores": [
            {"identifier": "storage", "store_id": "file", "store_params": {"root": "out"}},
            {"identifier": "gee", "store_id": "earthengine", "store_params": store_params(emu)},
        ],
        "grid_mappings": [EXPORT_GRID],
        "datasets": [
            {
                "identifier": "temp",
                "store": "gee",
                "data_id": "TEST/FLOAT",
                "grid_mapping": "gm",
                "open_params": {
                    "time_range": ["2024-01-01", "2024-03-01"],
                    "bands": ["temp"],
                    "temporal_resolution": "monthly",
                    "reducer": "mean",
                    "export_via": "asset",
                    "export_asset_root": EXPORT_ROOT,
                    "export_poll_s": 0.01,
                    **open_params,
                },
            }
        ],
        "general": {"display": "none"},
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def monthly_mean(emu, ids: list[str]) -> np.ndarray:
    """The NumPy reference: the masked mean of the images' raw pixels on the export grid."""
    grid = TargetGrid.from_bbox(EXPORT_GRID["bbox"], "EPSG:4326", 0.005, tile_size=25)
    stack = np.ma.stack([emu.catalog.render(i, ["temp"], request_grid(grid))["temp"] for i in ids])
    return np.ma.filled(stack.astype("float64").mean(axis=0).astype("float32"), np.nan)


def test_submit_only_wait_then_generate_reads_and_cleans_up(tmp_path, ee_emulator):
    import xarray as xr
    from click.testing import CliRunner

    from multistore.cli import main

    path = export_config(tmp_path, ee_emulator)
    runner = CliRunner()
    submitted = runner.invoke(main, ["generate", path, "--submit-only"])
    assert submitted.exit_code == 0, submitted.output
    lines = [line.split("\t") for line in submitted.output.splitlines()]
    assert [(c, s, state) for c, s, _, state in lines] == [("temp", "temp", "started")] * 2
    assert ee_emulator.stats.exports == 2 and not (tmp_path / "out" / "temp.zarr").exists()

    listed = runner.invoke(main, ["ee", "tasks", path, "--state", "READY"])
    assert listed.exit_code == 0, listed.output
    ids = [line.split("\t")[0] for line in listed.output.splitlines()]
    assert len(ids) == 2
    assert all("[" in line.split("\t")[3] for line in listed.output.splitlines())
    assert len(runner.invoke(main, ["ee", "tasks", path, "--recent", "1"]).output.splitlines()) == 1

    waited = runner.invoke(main, ["ee", "wait", path, *ids, "--poll", "0.01"])
    assert waited.exit_code == 0, waited.output
    assert sorted(line.split("\t")[1] for line in waited.output.splitlines()) == ["COMPLETED"] * 2
    assert len(ee_emulator.exported) == 2

    built = runner.invoke(main, ["generate", path])
    assert built.exit_code == 0, built.output
    assert ee_emulator.stats.exports == 2  # no new task: the finished exports were read
    cube = xr.open_zarr(tmp_path / "out" / "temp.zarr")
    jan = ["TEST/FLOAT/20240110", "TEST/FLOAT/20240125"]
    np.testing.assert_array_equal(cube.temp.values[0], monthly_mean(ee_emulator, jan))
    np.testing.assert_array_equal(
        cube.temp.values[1], monthly_mean(ee_emulator, ["TEST/FLOAT/20240215"])
    )
    # the cube is complete: its exported assets are gone
    assert ee_emulator.exported == {} and ee_emulator.stats.deletes == 2


def test_generate_adopts_running_submissions_and_keeps_exports(tmp_path, ee_emulator):
    from click.testing import CliRunner

    from multistore.cli import main

    path = export_config(tmp_path, ee_emulator, keep_exports=True)
    runner = CliRunner()
    assert runner.invoke(main, ["generate", path, "--submit-only"]).exit_code == 0
    again = runner.invoke(main, ["generate", path, "--submit-only"])
    assert [line.split("\t")[3] for line in again.output.splitlines()] == ["running"] * 2
    built = runner.invoke(main, ["generate", path])
    assert built.exit_code == 0, built.output
    assert ee_emulator.stats.exports == 2  # the running tasks were waited for, not restarted
    assert len(ee_emulator.exported) == 2 and ee_emulator.stats.deletes == 0  # keep_exports


def test_ee_cancel(tmp_path, ee_emulator):
    from click.testing import CliRunner

    from multistore.cli import main

    path = export_config(tmp_path, ee_emulator)
    runner = CliRunner()
    assert runner.invoke(main, ["generate", path, "--submit-only"]).exit_code == 0
    ids = [op.rsplit("/", 1)[-1] for op in ee_emulator.operations]
    cancelled = runner.invoke(main, ["ee", "cancel", path, ids[0]])
    assert cancelled.exit_code == 0, cancelled.output
    assert cancelled.output.split("\t")[1] == "CANCELLED"
    assert sorted(op.state for op in ee_emulator.operations.values()) == ["CANCELLED", "PENDING"]
    waited = runner.invoke(main, ["ee", "wait", path, ids[0], "--poll", "0.01"])
    assert waited.exit_code == 1
    bad = runner.invoke(main, ["ee", "tasks", path, "--store", "storage"])
    assert bad.exit_code == 2 and "not an earthengine store" in bad.output


# -- 5. native grids: alignment groups -----------------------------------------------------


def two_zone_catalog() -> Catalog:
    """Three images across the UTM 32/33 boundary (lon 12): two on zone 32's grid, one
    on zone 33's, with different origins."""
    bands = (("B4", "uint16"),)
    z32 = (20.0, 0.0, 780000.0, 0.0, -20.0, 5000000.0)
    z33 = (20.0, 0.0, 250000.0, 0.0, -20.0, 5010000.0)
    images = [
        SyntheticImage("TEST/ZONES/a32", bands, "2024-03-01T10:00:00Z", "EPSG:32632", z32,
                       (40, 30), (11.0, 44.0, 13.0, 46.0), (), 31),
        SyntheticImage("TEST/ZONES/b33", bands, "2024-03-01T10:00:05Z", "EPSG:32633", z33,
                       (50, 20), (11.0, 44.0, 13.0, 46.0), (), 32),
        SyntheticImage("TEST/ZONES/c32", bands, "2024-03-06T10:00:00Z", "EPSG:32632", z32,
                       (40, 30), (11.0, 44.0, 13.0, 46.0), (), 33),
    ]  # fmt: skip
    return Catalog(images, {"TEST/ZONES": [i.id for i in images]})


def test_two_utm_zones_make_two_alignment_groups_with_exact_native_pixels(ee_offline):
    from multistore.errors import SourceGridError

    with Emulator(two_zone_catalog()) as emu:
        store = EarthEngineDataStore(**store_params(emu))
        groups = store.alignment_groups("TEST/ZONES")
        assert groups == {
            "EPSG32632_x780000_y5000000_r20": ["TEST/ZONES/a32", "TEST/ZONES/c32"],
            "EPSG32633_x250000_y5010000_r20": ["TEST/ZONES/b33"],
        }
        with pytest.raises(SourceGridError, match="2 different native grids.*alignment_group"):
            store.open_data("TEST/ZONES")
        for name, ids in groups.items():
            ds = store.open_data("TEST/ZONES", alignment_group=name).compute()
            img = emu.catalog.images[ids[0]]
            width, height = img.dimensions
            assert (ds.sizes["x"], ds.sizes["y"]) == (width, height)
            assert pyproj.CRS(ds.spatial_ref.attrs["crs_wkt"]).to_epsg() == int(img.crs[5:])
            # the native pixel (i, j) holds the emulator's raw value of that pixel index
            i, j = np.meshgrid(np.arange(width), np.arange(height))
            for t, image_id in enumerate(ids):
                base = i * 7 + j * 13 + emu.catalog.images[image_id].seed * 37
                np.testing.assert_array_equal(ds.B4.values[t], np.mod(base, 60000))
        with pytest.raises(SourceOpenError, match="no alignment group 'nope'"):
            store.open_data("TEST/ZONES", alignment_group="nope")


def test_alignment_groups_cli(tmp_path, ee_offline):
    from click.testing import CliRunner

    from multistore.cli import main

    with Emulator(two_zone_catalog()) as emu:
        path = export_config(tmp_path, emu)
        found = CliRunner().invoke(
            main, ["ee", "groups", path, "TEST/ZONES", "-p", "time_range=[2024-03-01, 2024-03-02]"]
        )
        assert found.exit_code == 0, found.output
        assert found.output.splitlines() == [
            "EPSG32632_x780000_y5000000_r20\t1\tTEST/ZONES/a32",
            "EPSG32633_x250000_y5010000_r20\t1\tTEST/ZONES/b33",
        ]


def test_native_download_one_cube_per_group_and_manifest(tmp_path, ee_offline):
    import xarray as xr
    import yaml
    from click.testing import CliRunner

    from multistore.cli import main

    with Emulator(two_zone_catalog()) as emu:
        config = {
            "data_stores": [
                {"identifier": "storage", "store_id": "file", "store_params": {"root": "out"}},
                {"identifier": "gee", "store_id": "earthengine", "store_params": store_params(emu)},
            ],
            "datasets": [{"identifier": "zones", "store": "gee", "data_id": "TEST/ZONES"}],
            "general": {"display": "none"},
        }
        path = tmp_path / "config.yml"
        path.write_text(yaml.safe_dump(config))
        runner = CliRunner()
        done = runner.invoke(main, ["ee", "download", str(path), "-d", "zones"])
        assert done.exit_code == 0, done.output
        assert [line.split("\t")[1:] for line in done.output.splitlines()] == [
            ["EPSG32632_x780000_y5000000_r20", "2", "written"],
            ["EPSG32633_x250000_y5010000_r20", "1", "written"],
        ]
        out = tmp_path / "out" / "zones"
        manifest = json.loads((out / "manifest.json").read_text())
        assert [(r["id"], r["group"][:9], r["bytes"], r["status"]) for r in manifest["images"]] == [
            ("TEST/ZONES/a32", "EPSG32632", 40 * 30 * 2, "written"),
            ("TEST/ZONES/c32", "EPSG32632", 40 * 30 * 2, "written"),
            ("TEST/ZONES/b33", "EPSG32633", 50 * 20 * 2, "written"),
        ]
        cube = xr.open_zarr(out / "EPSG32633_x250000_y5010000_r20.zarr")
        i, j = np.meshgrid(np.arange(50), np.arange(20))
        np.testing.assert_array_equal(cube.B4.values[0], np.mod(i * 7 + j * 13 + 32 * 37, 60000))
        again = runner.invoke(main, ["ee", "download", str(path), "-d", "zones"])
        assert [line.split("\t")[3] for line in again.output.splitlines()] == ["skipped"] * 2
