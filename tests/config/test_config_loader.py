"""Good configs: xcube-multistore compatibility, defaults, env interpolation, paths, secrets."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import yaml
from configtools import assert_problem, base_config, problems_of, write_config

from multistore.config import (
    Config,
    CustomProcessing,
    DatasetConfig,
    generation_order,
    grid_source,
    load_config,
    redact,
)
from multistore.grid import TargetGrid

XCUBE_MULTISTORE_CONFIG = """\
# yaml-language-server: $schema=https://example.org/multistore-config.schema.json
datasets:
  - identifier: disturbances
    store: zenodo_fr
    data_id: france/annual_disturbances_1985_2023_france.zarr
    grid_mapping: gm_fr
    custom_processing:
      module_path: modify_dataset
      function_name: band_to_time
  - identifier: gami
    store: gami_s3
    data_id: collections/GAMI/GAMI_v2.1.zarr
    grid_mapping: gm_fr
    custom_processing:
      module_path: modify_dataset
      function_name: transpose_dims
    spatial_resample_params:
      interp_methods: nearest
      agg_methods: {forest_age: mode}
      recover_nans: true
      tile_size: [1000, 1000]
  - identifier: forest_structure
    grid_mapping: gm_fr
    format_id: netcdf
    xr_merge_params:
      join: outer
    variables:
      - identifier: biomass
        store: zenodo_bio
        data_id: biomass.tif
      - identifier: canopy_height
        store: zenodo_bio
        data_id: canopy_height.tif
        open_params:
          tile_size: [512, 512]
      - identifier: canopy_cover
        store: zenodo_bio
        data_id: canopy_cover.tif

preload_datasets:
  - store: zenodo_fr
    data_ids:
      - france.zip

data_stores:
  - identifier: storage
    store_id: file
    store_params:
      root: data
  - identifier: zenodo_fr
    store_id: {zenodo_store_id}
    store_params:
      root: "13333034"
  - identifier: zenodo_bio
    store_id: {zenodo_store_id}
    store_params:
      root: "4161694"
  - identifier: gami_s3
    store_id: s3
    store_params:
      root: dog.atlas.eo-lincs
      storage_options:
        anon: true
        client_kwargs:
          endpoint_url: https://s3.example.org

grid_mappings:
  - identifier: gm_fr
    bbox: [-1.25, 43.5, 0.5, 44.8]
    spatial_res: 0.00025
    crs: EPSG:4326
    tile_size: 1000

general:
  visualize: false
  force_preload: false
  dask_scheduler: single-threaded
  gdal_http_params:
    gdal_http_max_retry: 10
    gdal_http_retry_delay: 5
"""

MODIFY_DATASET = """\
def band_to_time(ds):
    return ds.rename(band="time")


def transpose_dims(ds):
    return ds.transpose("members", "time", "latitude", "longitude")
"""


@pytest.mark.parametrize("zenodo_store_id", ["file", "zenodo"])
def test_xcube_multistore_config_loads(tmp_path: Path, zenodo_store_id: str) -> None:
    (tmp_path / "modify_dataset.py").write_text(MODIFY_DATASET)
    path = tmp_path / "config.yml"
    path.write_text(XCUBE_MULTISTORE_CONFIG.replace("{zenodo_store_id}", zenodo_store_id))

    config = load_config(path, env={})

    assert isinstance(config, Config)
    assert config.path == path and config.base_dir == tmp_path
    gm = config.grid_mapping("gm_fr")
    assert gm.bbox == (-1.25, 43.5, 0.5, 44.8)
    assert gm.crs == "EPSG:4326"
    assert gm.spatial_res == (0.00025, 0.00025)
    assert gm.tile_size == (1000, 1000)
    grid = TargetGrid.from_bbox(gm.bbox, gm.crs, gm.spatial_res, gm.tile_size)
    assert (grid.width, grid.height) == (7000, 5200)

    dist = config.dataset("disturbances")
    assert not dist.multi and dist.format_id == "zarr" and dist.file_name == "disturbances.zarr"
    assert dist.custom_processing is None
    (source,) = dist.sources
    assert source.identifier == "disturbances" and source.store == "zenodo_fr"
    assert source.data_id == "france/annual_disturbances_1985_2023_france.zarr"
    assert source.custom_processing == CustomProcessing(
        tmp_path / "modify_dataset.py", "band_to_time"
    )
    assert source.location == "datasets[0]"
    assert source.temporal_resample_params is None

    gami = config.dataset("gami")
    assert gami.sources[0].spatial_resample_params == {
        "interp_methods": "nearest",
        "agg_methods": {"forest_age": "mode"},
        "recover_nans": True,
        "tile_size": [1000, 1000],
    }

    forest = config.dataset("forest_structure")
    assert (
        forest.multi and forest.format_id == "netcdf" and forest.file_name == "forest_structure.nc"
    )
    assert [s.identifier for s in forest.sources] == ["biomass", "canopy_height", "canopy_cover"]
    assert [s.location for s in forest.sources] == [
        "datasets[2].variables[0]",
        "datasets[2].variables[1]",
        "datasets[2].variables[2]",
    ]
    assert forest.sources[1].open_params == {"tile_size": [512, 512]}
    assert forest.xr_merge_params == {"join": "outer", "combine_attrs": "drop_conflicts"}

    (preload,) = config.preload_datasets
    assert preload.store == "zenodo_fr" and preload.data_ids == ("france.zip",)
    assert preload.location == "preload_datasets[0]"

    assert config.store("storage").store_params == {"root": str(tmp_path / "data")}
    assert config.store("zenodo_fr").store_id == zenodo_store_id
    assert config.store("gami_s3").store_params["root"] == "dog.atlas.eo-lincs"

    general = config.general
    assert general.display == "log"
    assert general.dask.scheduler == "synchronous"
    assert general.force_preload is False
    assert general.gdal_http_params == {"gdal_http_max_retry": 10, "gdal_http_retry_delay": 5}
    assert general.max_parallel_datasets == 2 and general.zarr_format == 2
    assert general.retries.max_retries == 3


def test_defaults_and_multistore_keys(tmp_path: Path) -> None:
    config = base_config()
    config["$schema"] = "../schemas/multistore-config.schema.json"
    config["grid_mappings"][0].update(
        crs=3035, bbox=[3e6, 2e6, 3.1e6, 2.05e6], spatial_res=[20, 10]
    )
    del config["grid_mappings"][0]["tile_size"]
    config["datasets"][0]["temporal_resample_params"] = {"frequency": "MS", "method": "median"}
    config["datasets"][0]["spatial_resample_params"] = {
        "method": {"lc": "mode", "ndvi": "average"},
        "fill_values": {"lc": 255},
        "dtypes": "uint8",
        "variables": ["lc"],
    }
    config["datasets"][0]["chunksize"] = {"time": 1}
    config["general"] = {
        "display": "json",
        "dask": {"scheduler": "distributed", "n_workers": 2, "threads_per_worker": 1},
        "retries": {"max_retries": 0, "backoff_s": 0.5},
        "max_parallel_datasets": 4,
        "zarr_format": 3,
        "quicklook": True,
    }
    loaded = load_config(write_config(tmp_path, config))

    gm = loaded.grid_mappings[0]
    assert gm.crs == "EPSG:3035" and gm.spatial_res == (20.0, 10.0) and gm.tile_size == (1024, 1024)
    src = loaded.datasets[0].sources[0]
    assert src.temporal_resample_params == {
        "frequency": "MS",
        "method": "median",
        "stage": "before",
    }
    assert src.spatial_resample_params["method"] == {"lc": "mode", "ndvi": "average"}
    assert loaded.datasets[0].chunksize == {"time": 1}
    assert loaded.datasets[2].grid_mapping == "single"  # another dataset's grid
    g = loaded.general
    assert g.display == "json" and g.quicklook is True and g.zarr_format == 3
    assert g.dask == dataclasses.replace(
        g.dask, scheduler="distributed", n_workers=2, threads_per_worker=1, address=None
    )
    assert (g.retries.max_retries, g.retries.backoff_s, g.retries.max_backoff_s) == (0, 0.5, 30.0)
    assert g.max_parallel_datasets == 4
    assert "$schema" in loaded.raw


def test_dask_address_implies_distributed(tmp_path: Path) -> None:
    config = base_config()
    config["general"] = {"dask": {"address": "tcp://127.0.0.1:8786"}, "visualize": True}
    loaded = load_config(write_config(tmp_path, config))
    assert loaded.general.dask.scheduler == "distributed"
    assert loaded.general.dask.address == "tcp://127.0.0.1:8786"
    assert loaded.general.display == "auto"


def test_config_is_frozen_and_source_mapping_untouched(tmp_path: Path) -> None:
    write_config(tmp_path, base_config())  # hooks.py next to base_dir
    source = base_config()
    loaded = load_config(source, base_dir=tmp_path)
    assert source == base_config()
    assert loaded.path is None and loaded.base_dir == tmp_path
    assert loaded.store("storage").store_params["root"] == str(tmp_path / "out")
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.datasets = ()  # type: ignore[misc]
    assert isinstance(loaded.datasets[0], DatasetConfig)


def test_mapping_source_resolves_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path, base_config())
    monkeypatch.chdir(tmp_path)
    loaded = load_config(base_config())
    assert loaded.base_dir == tmp_path
    hook = loaded.datasets[0].sources[0].custom_processing
    assert hook == CustomProcessing(tmp_path / "hooks.py", "band_to_time")


def test_dates_stay_strings(tmp_path: Path) -> None:
    text = yaml.safe_dump(base_config(), sort_keys=False) + "general: {}\n"
    text = text.replace(
        "data_id: a.zarr",
        "data_id: a.zarr\n  open_params: {time_range: [2020-01-01, 2020-12-31]}",
    )
    loaded = load_config(write_config(tmp_path, text))
    assert loaded.datasets[0].sources[0].open_params == {"time_range": ["2020-01-01", "2020-12-31"]}


# -- environment variables ------------------------------------------------------------------


def test_env_interpolation(tmp_path: Path) -> None:
    config = base_config()
    config["data_stores"][0]["store_params"]["root"] = "${OUT_DIR}/cubes"
    config["data_stores"][2]["store_params"] = {
        "root": "${BUCKET:-default-bucket}/${PREFIX:-}",
        "storage_options": {"client_kwargs": {"endpoint_url": "http://${HOST}:${PORT:-9000}"}},
    }
    config["datasets"][0]["data_id"] = "$${NOT_A_VAR}.zarr"
    config["datasets"][2]["data_id"] = "${EMPTY:-fallback}.tif"
    env = {"OUT_DIR": str(tmp_path / "o"), "HOST": "127.0.0.1", "EMPTY": ""}
    loaded = load_config(write_config(tmp_path, config), env=env)

    assert loaded.store("storage").store_params["root"] == str(tmp_path / "o" / "cubes")
    assert loaded.store("bucket").store_params == {
        "root": "default-bucket/",
        "storage_options": {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}},
    }
    assert loaded.datasets[0].sources[0].data_id == "${NOT_A_VAR}.zarr"
    assert loaded.datasets[2].sources[0].data_id == "fallback.tif"
    assert loaded.raw["data_stores"][0]["store_params"]["root"] == f"{tmp_path / 'o'}/cubes"
    assert loaded.secret_values == frozenset()


def test_env_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULTISTORE_TEST_DATA_ID", "from-environ.zarr")
    config = base_config()
    config["datasets"][0]["data_id"] = "${MULTISTORE_TEST_DATA_ID}"
    loaded = load_config(write_config(tmp_path, config))
    assert loaded.datasets[0].sources[0].data_id == "from-environ.zarr"


def test_every_unset_variable_is_reported(tmp_path: Path) -> None:
    config = base_config()
    config["datasets"][0]["data_id"] = "${A}/${B:-b}/${C}"
    config["preload_datasets"][0]["data_ids"] = ["${D}"]
    problems = problems_of(lambda: load_config(write_config(tmp_path, config), env={}))
    assert_problem(problems, "datasets[0].data_id", "environment variable 'A' is not set")
    assert_problem(problems, "datasets[0].data_id", "environment variable 'C' is not set")
    assert_problem(
        problems, "preload_datasets[0].data_ids[0]", "environment variable 'D' is not set"
    )
    assert len(problems) == 3


# -- relative paths -------------------------------------------------------------------------


def test_relative_paths_resolve_against_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (project / "hooks" / "pkg").mkdir(parents=True)
    (project / "hooks" / "pkg" / "steps.py").write_text("def merge(ds):\n    return ds\n")
    config = base_config()
    config["data_stores"][0]["store_params"] = {"root": "../cubes"}
    config["data_stores"].append(
        {
            "identifier": "cached",
            "store_id": "memory",
            "store_params": {"cache_store_params": {"root": "cache"}},
        }
    )
    config["data_stores"].append(
        {
            "identifier": "cached_s3",
            "store_id": "memory",
            "store_params": {"cache_store_id": "s3", "cache_store_params": {"root": "bucket/c"}},
        }
    )
    config["data_stores"].append(
        {"identifier": "home", "store_id": "file", "store_params": {"root": "~/multistore-data"}}
    )
    config["data_stores"].append(
        {"identifier": "abs", "store_id": "file", "store_params": {"root": str(tmp_path / "abs")}}
    )
    config["datasets"][1]["custom_processing"] = {
        "module_path": "hooks/pkg/steps.py",
        "function_name": "merge",
    }
    config["datasets"][2]["custom_processing"] = {
        "module_path": "hooks.pkg.steps",  # a module name, as in xcube-multistore configs
        "function_name": "merge",
    }
    path = write_config(project, config)
    monkeypatch.chdir(elsewhere)

    loaded = _load_without_store_param_checks(path)

    assert loaded.store("storage").store_params["root"] == str(tmp_path / "cubes")
    assert loaded.store("cached").store_params["cache_store_params"]["root"] == str(
        project / "cache"
    )
    assert loaded.store("cached_s3").store_params["cache_store_params"]["root"] == "bucket/c"
    assert loaded.store("home").store_params["root"] == str(Path.home() / "multistore-data")
    assert loaded.store("abs").store_params["root"] == str(tmp_path / "abs")
    steps = project / "hooks" / "pkg" / "steps.py"
    assert loaded.datasets[1].custom_processing == CustomProcessing(steps, "merge")
    assert loaded.datasets[2].sources[0].custom_processing == CustomProcessing(steps, "merge")
    assert loaded.datasets[0].sources[0].custom_processing.module_path == project / "hooks.py"
    assert Path.cwd() == elsewhere


def _load_without_store_param_checks(path: Path) -> Config:
    """The memory store's schema has no cache params; they exercise path rules only."""
    from multistore.config import checks

    original = checks._store_params_problems
    try:
        checks._store_params_problems = lambda *args: []
        return load_config(path)
    finally:
        checks._store_params_problems = original


def test_hook_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    (tmp_path / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\n\ndef hook(ds):\n    return ds\n"
    )
    config = base_config()
    config["datasets"][0]["custom_processing"] = {"module_path": "evil.py", "function_name": "hook"}
    load_config(write_config(tmp_path, config))
    assert not marker.exists()


def test_hook_syntax_error_reported(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("def hook(ds):\n    return ds +\n")
    config = base_config()
    config["datasets"][0]["custom_processing"] = {
        "module_path": "broken.py",
        "function_name": "hook",
    }
    problems = problems_of(lambda: load_config(write_config(tmp_path, config)))
    assert_problem(problems, "datasets[0].custom_processing.module_path", "cannot parse")


# -- secrets --------------------------------------------------------------------------------


def test_secrets_collected_and_redacted(tmp_path: Path) -> None:
    config = base_config()
    config["data_stores"][2]["store_params"] = {
        "root": "bucket/prefix",
        "storage_options": {
            "key": "${AWS_ACCESS_KEY_ID}",
            "secret": "${AWS_SECRET_ACCESS_KEY}",
            "client_kwargs": {"endpoint_url": "http://${HOST}:9000", "region_name": "${REGION}"},
        },
    }
    config["data_stores"].append(
        {
            "identifier": "api",
            "store_id": "https",
            "store_params": {
                "root": "example.org/data?token=${API_TOKEN}",
                "storage_options": {
                    "password": "literal-password",
                    "headers": {"Authorization": "Bearer ${API_TOKEN}"},
                },
            },
        }
    )
    env = {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEYID",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t/value+xyz",
        "HOST": "127.0.0.1",
        "REGION": "eu-central-1",
        "API_TOKEN": "tok-123456",
    }
    loaded = load_config(write_config(tmp_path, config), env=env)

    assert loaded.secret_values == {
        "AKIAEXAMPLEKEYID",
        "s3cr3t/value+xyz",
        "tok-123456",
        "literal-password",
    }
    shown = redact(loaded.raw, loaded.secret_values)
    text = repr(shown)
    for secret in loaded.secret_values:
        assert secret not in text
    opts = shown["data_stores"][2]["store_params"]["storage_options"]
    assert opts["key"] == "***" and opts["secret"] == "***"
    assert opts["client_kwargs"] == {
        "endpoint_url": "http://127.0.0.1:9000",
        "region_name": "eu-central-1",
    }
    api = shown["data_stores"][3]["store_params"]
    assert api["root"] == "example.org/data?token=***"
    assert api["storage_options"]["headers"] == {"Authorization": "Bearer ***"}
    # the loaded values themselves are intact (stores need them) but never in a repr
    assert loaded.store("bucket").store_params["storage_options"]["secret"] == "s3cr3t/value+xyz"
    assert "s3cr3t" not in repr(loaded) and "tok-123456" not in repr(loaded)


def test_secrets_never_in_problems(tmp_path: Path) -> None:
    config = base_config()
    config["data_stores"][2]["store_params"]["storage_options"] = {
        "anon": "${AWS_SECRET_ACCESS_KEY}",  # wrong type: the message would quote the value
    }
    config["datasets"][0]["data_id"] = "${MISSING}"
    env = {"AWS_SECRET_ACCESS_KEY": "hunter2-secret"}
    with pytest.raises(Exception) as info:
        load_config(write_config(tmp_path, config), env=env)
    assert "hunter2-secret" not in str(info.value)
    problems = info.value.problems
    assert_problem(problems, "data_stores[2].store_params.storage_options.anon", "got string '***'")
    assert all("hunter2" not in p.message for p in problems)


def test_yaml_language_server_header(tmp_path: Path) -> None:
    schema = Path(__file__).parents[2] / "schemas" / "multistore-config.schema.json"
    text = f"# yaml-language-server: $schema={schema}\n" + yaml.safe_dump(base_config())
    loaded = load_config(write_config(tmp_path, text))
    assert [d.identifier for d in loaded.datasets] == ["single", "multi", "third"]
    assert "$schema" not in loaded.raw


def test_os_environ_not_modified(tmp_path: Path) -> None:
    before = dict(os.environ)
    config = base_config()
    config["general"] = {
        "gdal_http_params": {"gdal_http_max_retry": 3},
        "dask_scheduler": "processes",
    }
    loaded = load_config(write_config(tmp_path, config))
    assert loaded.general.dask.scheduler == "processes"
    assert dict(os.environ) == before


def test_docs_example_loads(tmp_path: Path) -> None:
    docs = (Path(__file__).parents[2] / "docs" / "config.md").read_text()
    example = docs.split("## A complete example", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "hooks.py").write_text(MODIFY_DATASET)
    config = load_config(write_config(tmp_path, example), env={})
    assert [d.identifier for d in config.datasets] == ["disturbances", "forest"]
    assert config.dataset("forest").grid_mapping == "disturbances"
    assert config.dataset("forest").sources[1].temporal_resample_params == {
        "frequency": "YS",
        "method": "mean",
        "stage": "before",
    }


def test_generation_order_follows_grid_dependencies(tmp_path: Path) -> None:
    config = base_config()
    # third -> single (base); add fourth -> third and a dataset named like a grid mapping
    config["datasets"].insert(
        0, {"identifier": "fourth", "store": "src", "data_id": "d", "grid_mapping": "third"}
    )
    config["datasets"].append({"identifier": "gm_fr", "store": "src", "data_id": "e"})
    config["datasets"].append(
        {"identifier": "sixth", "store": "src", "data_id": "f", "grid_mapping": "gm_fr"}
    )
    loaded = load_config(write_config(tmp_path, config))
    waves = [[d.identifier for d in wave] for wave in generation_order(loaded)]
    assert waves == [["single", "multi", "gm_fr", "sixth"], ["third"], ["fourth"]]
    assert grid_source(loaded, loaded.dataset("fourth")) is loaded.dataset("third")
    assert grid_source(loaded, loaded.dataset("sixth")) is None  # the grid mapping wins
