"""custom_processing hooks: fresh code on every run of a session, results checked, sys.exit contained."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr

from multistore import MultiSourceDataStore
from multistore.config import load_config
from multistore.demo import data
from multistore.plan import build_plan
from multistore.status import Status
from multistore.storage import StorageTarget, read_marker

OFFSET_HOOK = textwrap.dedent(
    """
    import numpy as np


    def offset(ds):
        return ds.assign(temperature=ds["temperature"] + np.float32({value}))
    """
)


def temperature_cube(identifier: str, hook: dict | None = None) -> dict:
    cube = {
        "identifier": identifier,
        "store": "local",
        "data_id": data.TEMPERATURE,
        "grid_mapping": "gm",
        "spatial_resample_params": {"method": "nearest"},
    }
    if hook:
        cube["custom_processing"] = hook
    return cube


def test_edited_hook_runs_in_the_same_process(project):
    """The notebook flow: generate, edit the hook file, generate again in one process."""
    hook_file = project.root / "hooks" / "offset.py"
    hook_file.write_text(OFFSET_HOOK.format(value=1))
    config = project.base_config()
    config["datasets"] += [
        temperature_cube("plain"),
        temperature_cube("shifted", {"module_path": "hooks/offset.py", "function_name": "offset"}),
    ]
    # one cube at a time: netCDF4/HDF5 opening one file from two threads can crash the process
    config["general"]["max_parallel_datasets"] = 1
    path = project(config)
    msds = MultiSourceDataStore(path)
    first = msds.generate()
    assert first.ok, [r.message for r in first.failed]
    plain = msds.open_cube("plain")["temperature"].values
    np.testing.assert_array_equal(msds.open_cube("shifted")["temperature"].values, plain + 1)
    old_fingerprint = msds.plan().cube("shifted").fingerprint

    hook_file.write_text(OFFSET_HOOK.format(value=2))  # same size, same second: only bytes differ
    second = msds.generate()
    assert second["plain"].status is Status.SKIPPED
    assert second["shifted"].status is Status.COMPLETED, second["shifted"].message
    np.testing.assert_array_equal(msds.open_cube("shifted")["temperature"].values, plain + 2)

    # the marker names the fingerprint of the code that ran: the edited file's
    fresh = build_plan(load_config(path)).cube("shifted").fingerprint
    assert fresh != old_fingerprint
    marker = read_marker(StorageTarget(msds.stores.storage, "shifted.zarr"))
    assert marker is not None and marker["fingerprint"] == fresh


BROKEN_HOOKS = textwrap.dedent(
    """
    import sys

    import numpy as np


    def keep(ds):
        return ds


    def leave(ds):
        sys.exit(0)


    def _exit_in_block(block):
        sys.exit(0)


    def lazy_exit(ds):
        return ds.map_blocks(_exit_in_block, template=ds)  # exits when dask computes


    def empty(ds):
        return ds.drop_vars(list(ds.data_vars))


    def scalar(ds):
        return ds.mean()


    def crop(ds):
        return ds.isel(lat=slice(0, 10))


    def nan_lon(ds):
        return ds.assign_coords(lon=ds.lon.where(ds.lon < 11.5))


    def objects(ds):
        first = next(iter(ds.data_vars))
        return ds.assign({first: ds[first].astype(object)})


    def strings(ds):
        first = next(iter(ds.data_vars))
        return ds.assign({first: ds[first].astype(str)})
    """
)

# hook -> what the failure message must say
BROKEN = {
    "leave": "raised SystemExit: 0",
    "lazy_exit": "SystemExit",
    "empty": "it has no data variables",
    "scalar": "it holds only scalars",
    "crop": "'lat' has 10 values, the target grid 175",
    "nan_lon": "coordinate 'lon' has NaN or infinite values",
    "objects": "has dtype object; cubes hold numbers",
    "strings": "has dtype <U",
}


def multi(identifier: str, function: str) -> dict:
    return {
        "identifier": identifier,
        "grid_mapping": "gm",
        "variables": [
            {"identifier": "land_cover", "store": "local", "data_id": data.LANDCOVER},
            {"identifier": "elevation", "store": "bucket", "data_id": data.ELEVATION},
        ],
        "custom_processing": {"module_path": "hooks/broken.py", "function_name": function},
    }


def single(identifier: str, function: str) -> dict:
    return {
        "identifier": identifier,
        "store": "local",
        "data_id": data.LANDCOVER,
        "grid_mapping": "gm",
        "custom_processing": {"module_path": "hooks/broken.py", "function_name": function},
    }


def test_hook_results_are_checked_on_multi_and_single_source_datasets(project):
    (project.root / "hooks" / "broken.py").write_text(BROKEN_HOOKS)
    config = project.base_config()
    config["datasets"] = [multi("multi_ok", "keep"), single("single_ok", "keep")]
    config["datasets"] += [multi(f"multi_{name}", name) for name in BROKEN]
    # before regridding, a source's hook cannot be held to the target grid
    config["datasets"] += [
        single(f"single_{name}", name) for name in ("leave", "empty", "scalar", "objects")
    ]
    msds = MultiSourceDataStore(project(config))
    report = msds.generate()

    for ok in ("multi_ok", "single_ok"):
        assert report[ok].status is Status.COMPLETED, report[ok].message
    for name, reason in BROKEN.items():
        result = report[f"multi_{name}"]
        assert result.status is Status.FAILED, (name, result.message)
        assert reason in result.message, (name, result.message)
    assert "variable 'land_cover' has dtype object" in report["multi_objects"].message
    for name in ("leave", "empty", "scalar", "objects"):
        result = report[f"single_{name}"]
        assert result.status is Status.FAILED, (name, result.message)
        assert BROKEN[name] in result.message, (name, result.message)
    # nothing of a failed dataset counts as done
    for status in msds.status():
        if status.identifier.endswith("_ok"):
            continue
        assert str(status.state) != "complete", status
    # the good multi-source cube keeps the grid (independent: the config's bbox and res)
    cube = msds.open_cube("multi_ok")
    np.testing.assert_allclose(cube.lat.values, 48.3 - (np.arange(175) + 0.5) * 0.004)


def test_sys_exit_in_a_hook_fails_only_its_dataset_on_the_cli(project):
    (project.root / "hooks" / "broken.py").write_text(BROKEN_HOOKS)
    config = project.base_config()
    config["datasets"] = [
        single("first", "keep"),
        multi("quitter", "leave"),
        single("last", "keep"),
    ]
    path = project(config)
    result = subprocess.run(
        [sys.executable, "-m", "multistore", "generate", str(path), "--log-format", "log"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    summary = result.stderr.split("summary:")[1]
    for ident in ("first", "last"):
        assert ident in summary
    assert "quitter" in summary and "SystemExit" in summary
    assert "Traceback" not in result.stderr
    for ident in ("first", "last"):
        cube = xr.open_zarr(project.root / "out" / f"{ident}.zarr", mask_and_scale=False)
        assert cube["band_1"].dtype == np.uint8  # the GeoTIFF band, as read
    assert not (project.root / "out" / "quitter.zarr").exists()


def test_sys_exit_while_importing_a_hook_file_fails_the_dataset(project):
    exits = "import sys\n\nsys.exit(3)\n\n\ndef anything(ds):\n    return ds\n"
    (project.root / "hooks" / "exits.py").write_text(exits)
    config = project.base_config()
    config["datasets"] = [single("bad", "anything")]
    config["datasets"][0]["custom_processing"]["module_path"] = "hooks/exits.py"
    report = MultiSourceDataStore(project(config)).generate()
    assert report["bad"].status is Status.FAILED
    assert "importing exits.py failed: SystemExit: 3" in report["bad"].message


def test_hook_edited_after_planning_fails_instead_of_running_unhashed_code(project):
    """A plan's fingerprint hashes the hook file; the build runs those bytes or nothing."""
    from multistore.cube import build_cube
    from multistore.errors import ProcessingError

    hook_file = project.root / "hooks" / "offset.py"
    hook_file.write_text(OFFSET_HOOK.format(value=1))
    config = project.base_config()
    config["datasets"] = [
        temperature_cube("shifted", {"module_path": "hooks/offset.py", "function_name": "offset"})
    ]
    msds = MultiSourceDataStore(project(config))
    planned = msds.plan().cube("shifted")
    cube = build_cube(planned, msds.config, msds.stores, planned.grid)  # as planned: fine
    assert float(cube["temperature"].isel(time=0, lat=0, lon=0)) > 274

    hook_file.write_text(OFFSET_HOOK.format(value=2))  # edited mid-run
    with pytest.raises(ProcessingError, match="offset.py changed after this run was planned"):
        build_cube(planned, msds.config, msds.stores, planned.grid)
    replanned = msds.plan().cube("shifted")
    assert replanned.fingerprint != planned.fingerprint
    build_cube(replanned, msds.config, msds.stores, replanned.grid)
