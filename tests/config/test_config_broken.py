"""A table of broken configs: each must yield a problem at an exact location with a clear message."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from configtools import assert_problem, base_config, problems_of, write_config

from multistore.config import load_config

Mutation = Callable[[dict[str, Any]], None]


def put(path: tuple, value: Any) -> Mutation:
    def apply(config: dict[str, Any]) -> None:
        target = config
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return apply


def drop(path: tuple) -> Mutation:
    def apply(config: dict[str, Any]) -> None:
        target = config
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return apply


def append(path: tuple, value: Any) -> Mutation:
    def apply(config: dict[str, Any]) -> None:
        target = config
        for key in path:
            target = target[key]
        target.append(value)

    return apply


D0 = ("datasets", 0)
V0 = ("datasets", 1, "variables", 0)
GM = ("grid_mappings", 0)
SPATIAL = (*D0, "spatial_resample_params")
TEMPORAL = (*D0, "temporal_resample_params")

CASES = [
    # -- structure (JSON Schema) --------------------------------------------------------------
    ("missing-data_id", drop((*D0, "data_id")), "datasets[0]", "'data_id' is a required property"),
    (
        "missing-datasets",
        drop(("datasets",)),
        "<file>: line 1",
        "'datasets' is a required property",
    ),
    ("unknown-top-level-key", put(("extras",), 1), "extras", "unknown key 'extras' (allowed: "),
    (
        "typo-in-dataset-key",
        put((*D0, "grid_maping"), "gm_fr"),
        "datasets[0].grid_maping",
        "unknown key 'grid_maping' (allowed: chunksize, custom_processing, data_id",
    ),
    (
        "data_stores-not-a-list",
        put(("data_stores",), {"a": 1}),
        "data_stores",
        "expected a list, got a mapping",
    ),
    (
        "open_params-not-a-mapping",
        put((*D0, "open_params"), 5),
        "datasets[0].open_params",
        "expected a mapping, got number 5",
    ),
    (
        "store-and-variables",
        put(("datasets", 1, "store"), "src"),
        "datasets[1].store",
        "either store + data_id or variables, not both",
    ),
    (
        "empty-variables",
        put(("datasets", 1, "variables"), []),
        "datasets[1].variables",
        "must not be empty",
    ),
    (
        "variable-missing-store",
        drop((*V0, "store")),
        "datasets[1].variables[0]",
        "'store' is a required property",
    ),
    (
        "identifier-leaves-storage",
        put((*D0, "identifier"), "my cube/../../1"),
        "datasets[0].identifier",
        "'..' segments are not allowed",
    ),
    (
        "format-tiff",
        put((*D0, "format_id"), "tiff"),
        "datasets[0].format_id",
        "'tiff' is not one of",
    ),
    (
        "format-geotiff-with-a-grid",
        put((*D0, "format_id"), "geotiff"),
        "datasets[0].format_id",
        "needs one source (no variables) and no grid_mapping",
    ),
    (
        "chunksize-zero",
        put((*D0, "chunksize"), {"time": 0}),
        "datasets[0].chunksize.time",
        "must be >= 1, got 0",
    ),
    (
        "bbox-three-numbers",
        put((*GM, "bbox"), [0, 1, 2]),
        "grid_mappings[0].bbox",
        "must have exactly 4 items, got 3",
    ),
    (
        "tile_size-zero",
        put((*GM, "tile_size"), 0),
        "grid_mappings[0].tile_size",
        "must be >= 1, got 0",
    ),
    (
        "tile_size-string",
        put((*GM, "tile_size"), "big"),
        "grid_mappings[0].tile_size",
        "must be a positive integer or a list [x, y] of two positive integers, got string 'big'",
    ),
    (
        "spatial_res-negative",
        put((*GM, "spatial_res"), -1),
        "grid_mappings[0].spatial_res",
        "must be > 0, got -1",
    ),
    (
        "spatial_res-pair-zero",
        put((*GM, "spatial_res"), [0.1, 0]),
        "grid_mappings[0].spatial_res[1]",
        "must be > 0, got 0",
    ),
    (
        "grid-mapping-without-bbox",
        drop((*GM, "bbox")),
        "grid_mappings[0]",
        "'bbox' is a required property",
    ),
    (
        "spatial-method-unknown",
        put(SPATIAL, {"method": "fancy"}),
        "datasets[0].spatial_resample_params.method",
        "'fancy' is not one of: nearest, bilinear",
    ),
    (
        "spatial-method-dict-bad",
        put(SPATIAL, {"method": {"lc": "bad"}}),
        "datasets[0].spatial_resample_params.method.lc",
        "'bad' is not one of: nearest",
    ),
    (
        "agg-method-unknown",
        put(SPATIAL, {"agg_methods": "geomean"}),
        "datasets[0].spatial_resample_params.agg_methods",
        "'geomean'",
    ),
    (
        "interp-method-spline-order-2",
        put(SPATIAL, {"interp_methods": {"x": 2}}),
        "datasets[0].spatial_resample_params.interp_methods",
        "does not match any allowed form",
    ),
    (
        "temporal-without-frequency",
        put(TEMPORAL, {"method": "mean"}),
        "datasets[0].temporal_resample_params",
        "'frequency' is a required property",
    ),
    (
        "temporal-stage-bad",
        put(TEMPORAL, {"frequency": "1D", "stage": "during"}),
        "datasets[0].temporal_resample_params.stage",
        "'during' is not one of: before, after",
    ),
    (
        "display-unknown",
        put(("general",), {"display": "fancy"}),
        "general.display",
        "'fancy' is not one of: auto, rich, notebook, log, json, none",
    ),
    (
        "max-parallel-zero",
        put(("general",), {"max_parallel_datasets": 0}),
        "general.max_parallel_datasets",
        "must be >= 1, got 0",
    ),
    (
        "zarr-format-4",
        put(("general",), {"zarr_format": 4}),
        "general.zarr_format",
        "4 is not one of: 2, 3",
    ),
    (
        "dask-address-no-scheme",
        put(("general",), {"dask": {"address": "localhost:8786"}}),
        "general.dask.address",
        "must be a dask scheduler address like tcp://host:8786",
    ),
    (
        "retries-negative",
        put(("general",), {"retries": {"max_retries": -1}}),
        "general.retries.max_retries",
        "must be >= 0, got -1",
    ),
    (
        "hook-function-name-not-identifier",
        put((*D0, "custom_processing", "function_name"), "band-to-time"),
        "datasets[0].custom_processing.function_name",
        "must be a Python identifier",
    ),
    # -- cross-references and meaning ---------------------------------------------------------
    (
        "unknown-store",
        put((*V0, "store"), "foo"),
        "datasets[1].variables[0].store",
        "'foo' is not defined (defined: storage, src, bucket)",
    ),
    (
        "unknown-grid-mapping",
        put((*D0, "grid_mapping"), "gm_eu"),
        "datasets[0].grid_mapping",
        "'gm_eu' is not defined (defined: gm_fr; or a dataset: multi, third)",
    ),
    (
        "duplicate-store",
        put(("data_stores", 1, "identifier"), "bucket"),
        "data_stores[2].identifier",
        "duplicate store identifier 'bucket' (also data_stores[1])",
    ),
    (
        "duplicate-dataset",
        put(("datasets", 2, "identifier"), "single"),
        "datasets[2].identifier",
        "duplicate dataset identifier 'single' (also datasets[0])",
    ),
    (
        "duplicate-grid-mapping",
        append(
            ("grid_mappings",), {"identifier": "gm_fr", "bbox": [0, 0, 1, 1], "spatial_res": 0.1}
        ),
        "grid_mappings[1].identifier",
        "duplicate grid mapping identifier 'gm_fr'",
    ),
    (
        "duplicate-variable",
        put(("datasets", 1, "variables", 1, "identifier"), "v1"),
        "datasets[1].variables[1].identifier",
        "duplicate variable identifier 'v1'",
    ),
    (
        "missing-storage-store",
        put(("data_stores", 0, "identifier"), "output"),
        "data_stores",
        "a store with identifier 'storage' is required",
    ),
    (
        "bbox-west-east",
        put((*GM, "bbox"), [1, 43.5, 0.5, 44.8]),
        "grid_mappings[0].bbox",
        "west (1) must be less than east (0.5)",
    ),
    (
        "bbox-south-north",
        put((*GM, "bbox"), [-1.25, 44.8, 0.5, 44.8]),
        "grid_mappings[0].bbox",
        "south (44.8) must be less than north (44.8)",
    ),
    (
        "bbox-latitude-out-of-range",
        put((*GM, "bbox"), [0, 80, 1, 95]),
        "grid_mappings[0].bbox",
        "latitudes must lie within -90..90",
    ),
    ("bad-crs", put((*GM, "crs"), "EPSG:99999"), "grid_mappings[0].crs", "not a valid CRS"),
    (
        "grid-too-large",
        put((*GM, "spatial_res"), 1e-12),
        "grid_mappings[0].spatial_res",
        "more than 2^31",
    ),
    (
        "resolution-in-wrong-units",
        put((*GM, "spatial_res"), 30),
        "grid_mappings[0].spatial_res",
        "spatial_res 30 along x is larger than the bbox extent 1.75: spatial_res is in the units of the CRS (degree)",
    ),
    (
        "unknown-store_id",
        put(("data_stores", 1, "store_id"), "nosuch"),
        "data_stores[1].store_id",
        "unknown store_id 'nosuch' (available: ",
    ),
    (
        "store-params-unknown-key",
        put(("data_stores", 0, "store_params", "bogus"), 1),
        "data_stores[0].store_params.bogus",
        "unknown key 'bogus' (allowed: excludes, includes",
    ),
    (
        "store-params-wrong-type",
        put(("data_stores", 2, "store_params", "storage_options", "anon"), "yes"),
        "data_stores[2].store_params.storage_options.anon",
        "expected true or false, got string 'yes'",
    ),
    (
        "storage-store-read-only",
        put(("data_stores", 0), {"identifier": "storage", "store_id": "reference"}),
        "data_stores[0].store_id",
        "cannot write data",
    ),
    (
        "hook-module-missing",
        put((*D0, "custom_processing", "module_path"), "nohooks.py"),
        "datasets[0].custom_processing.module_path",
        "module file not found",
    ),
    (
        "hook-function-missing",
        put((*D0, "custom_processing", "function_name"), "time_to_band"),
        "datasets[0].custom_processing.function_name",
        "'time_to_band' is not defined in ",
    ),
    (
        "multi-hook-function-missing",
        put(
            ("datasets", 1, "custom_processing"), {"module_path": "hooks", "function_name": "nope"}
        ),
        "datasets[1].custom_processing.function_name",
        "(functions: band_to_time, unused)",
    ),
    (
        "grid-mapping-self",
        put(("datasets", 2, "grid_mapping"), "third"),
        "datasets[2].grid_mapping",
        "dataset 'third' cannot use its own grid",
    ),
    (
        "grid-mapping-cycle",
        put((*D0, "grid_mapping"), "third"),
        "datasets[0].grid_mapping",
        "grid_mapping cycle: single -> third -> single",
    ),
    (
        "preload-unknown-store",
        put(("preload_datasets", 0, "store"), "zenodo"),
        "preload_datasets[0].store",
        "'zenodo' is not defined (defined: storage, src, bucket)",
    ),
    (
        "bad-frequency",
        put(TEMPORAL, {"frequency": "fortnightly"}),
        "datasets[0].temporal_resample_params.frequency",
        "'fortnightly' is not a pandas frequency",
    ),
    (
        "bad-tolerance",
        put(TEMPORAL, {"frequency": "1D", "tolerance": "soon"}),
        "datasets[0].temporal_resample_params.tolerance",
        "'soon' is not a time span",
    ),
    (
        "temporal-method-and-agg",
        put(TEMPORAL, {"frequency": "1D", "method": "mean", "agg_methods": "max"}),
        "datasets[0].temporal_resample_params",
        "give either method or agg_methods, not both",
    ),
    (
        "spatial-method-and-interp",
        put(SPATIAL, {"method": "nearest", "interp_methods": "bilinear"}),
        "datasets[0].spatial_resample_params",
        "give either method or interp_methods/agg_methods",
    ),
    (
        "bad-dtype",
        put(SPATIAL, {"dtypes": {"lc": "uint9"}}),
        "datasets[0].spatial_resample_params.dtypes.lc",
        "'uint9' is not a numpy dtype name",
    ),
    (
        "dask-scheduler-conflict",
        put(("general",), {"dask_scheduler": "processes", "dask": {"scheduler": "threads"}}),
        "general.dask_scheduler",
        "'processes' contradicts general.dask.scheduler 'threads'",
    ),
    (
        "dask-address-and-n_workers",
        put(("general",), {"dask": {"address": "tcp://127.0.0.1:8786", "n_workers": 2}}),
        "general.dask",
        "give either address (a running scheduler) or n_workers",
    ),
    (
        "dask-n_workers-without-distributed",
        put(("general",), {"dask": {"scheduler": "threads", "n_workers": 2}}),
        "general.dask.n_workers",
        "only applies to the distributed scheduler",
    ),
    # -- environment variables -----------------------------------------------------------------
    (
        "unset-env-var",
        put(("data_stores", 2, "store_params", "storage_options"), {"secret": "${AWS_SECRET}"}),
        "data_stores[2].store_params.storage_options.secret",
        "environment variable 'AWS_SECRET' is not set",
    ),
    (
        "malformed-env-reference",
        put((*D0, "data_id"), "${1BAD}/x.zarr"),
        "datasets[0].data_id",
        "invalid variable reference '${1BAD}'",
    ),
    (
        "unclosed-env-reference",
        put((*D0, "data_id"), "${HOME/x.zarr"),
        "datasets[0].data_id",
        "unclosed '${'",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "location", "fragment"),
    [pytest.param(m, loc, frag, id=name) for name, m, loc, frag in CASES],
)
def test_broken_config(tmp_path: Path, mutate: Mutation, location: str, fragment: str) -> None:
    config = base_config()
    mutate(config)
    path = write_config(tmp_path, config)
    problems = problems_of(lambda: load_config(path, env={"HOME": "/home/x"}))
    assert_problem(problems, location.replace("<file>", str(path)), fragment)
    for problem in problems:  # readable: no raw jsonschema dumps
        assert "Failed validating" not in problem.message
        assert len(problem.message) < 400


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 35
    assert len({name for name, *_ in CASES}) == len(CASES)


def test_all_problems_reported_together(tmp_path: Path) -> None:
    config = base_config()
    for mutate in (
        drop((*D0, "data_id")),
        put((*V0, "store"), "foo"),
        put((*GM, "bbox"), [1, 43.5, 0.5, 44.8]),
        put(("preload_datasets", 0, "store"), "nope"),
        put(("datasets", 2, "grid_mapping"), "gm_eu"),
        put(("general",), {"zarr_format": 5}),
        put((*D0, "custom_processing", "function_name"), "missing_hook"),
        put(("data_stores", 2, "store_params", "storage_options"), {"token": "${TOKEN_X}"}),
    ):
        mutate(config)
    problems = problems_of(lambda: load_config(write_config(tmp_path, config), env={}))
    expected = {
        "datasets[0]",
        "datasets[1].variables[0].store",
        "grid_mappings[0].bbox",
        "preload_datasets[0].store",
        "datasets[2].grid_mapping",
        "general.zarr_format",
        "datasets[0].custom_processing.function_name",
        "data_stores[2].store_params.storage_options.token",
    }
    assert {p.location for p in problems} == expected


def test_problem_messages_carry_yaml_line_numbers(tmp_path: Path) -> None:
    text = """\
data_stores:
  - identifier: storage
    store_id: file
datasets:
  - identifier: cube
    store: nowhere
    data_id: x.zarr
"""
    problems = problems_of(lambda: load_config(write_config(tmp_path, text)))
    assert_problem(
        problems, "datasets[0].store", "'nowhere' is not defined (defined: storage) (line 6)"
    )


@pytest.mark.parametrize(
    ("text", "location", "fragment"),
    [
        pytest.param("", "<file>: line 1", "the config is empty", id="empty-file"),
        pytest.param(
            "# only a comment\n", "<file>: line 1", "the config is empty", id="comment-only"
        ),
        pytest.param(
            "data_stores:\n  - identifier: storage\n   store_id: file\n",
            "<file>: line 3, column 4",
            "YAML syntax error",
            id="bad-indentation",
        ),
        pytest.param(
            "datasets: [a, b\n",
            "<file>: line 2, column 1",
            "YAML syntax error",
            id="unclosed-bracket",
        ),
        pytest.param(
            "- a\n- b\n",
            "<file>: line 1",
            "expected a mapping, got a list of 2 item(s)",
            id="top-list",
        ),
        pytest.param(
            "data_stores:\n  - identifier: storage\n    store_id: file\n    store_id: s3\n"
            "datasets: []\n",
            "data_stores[0].store_id",
            "duplicate key 'store_id' (lines 3 and 4)",
            id="duplicate-key",
        ),
    ],
)
def test_broken_yaml(tmp_path: Path, text: str, location: str, fragment: str) -> None:
    path = write_config(tmp_path, text)
    problems = problems_of(lambda: load_config(path))
    assert_problem(problems, location.replace("<file>", str(path)), fragment)


def test_missing_file(tmp_path: Path) -> None:
    problems = problems_of(lambda: load_config(tmp_path / "nope.yml"))
    assert len(problems) == 1
    assert "cannot read" in problems[0].message
    assert "No such file or directory" in problems[0].message


def _all_paths(obj: Any, path: tuple = ()) -> list[tuple]:
    paths = [path] if path else []
    if isinstance(obj, dict):
        for key, value in obj.items():
            paths += _all_paths(value, (*path, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            paths += _all_paths(value, (*path, i))
    return paths


def test_any_value_of_any_type_gives_config_error_not_traceback(tmp_path: Path) -> None:
    """Replace every value of the base config by values of other types: never a crash."""
    write_config(tmp_path, base_config())  # hooks.py in base_dir
    from multistore.errors import ConfigError

    crashes = []
    for path in _all_paths(base_config()):
        for value in (None, -1, "x", [], {"a": 1}):
            config = base_config()
            put(path, value)(config)
            try:
                load_config(config, base_dir=tmp_path, env={})
            except ConfigError as e:
                assert e.problems
            except Exception as e:  # noqa: BLE001 - any other exception is the bug
                crashes.append(f"{path} = {value!r}: {type(e).__name__}: {e}")
    assert not crashes, "\n".join(crashes)
