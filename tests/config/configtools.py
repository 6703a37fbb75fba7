"""Shared by the config tests: a valid base config on disk, helpers to break it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from multistore.errors import ConfigError, Problem

HOOKS = """
import xarray as xr


def band_to_time(ds: xr.Dataset) -> xr.Dataset:
    return ds.rename(band="time")


async def unused(ds):
    return ds


try:
    from numpy import nanmean as imported_hook
except ImportError:
    imported_hook = None
"""

BASE: dict[str, Any] = {
    "data_stores": [
        {"identifier": "storage", "store_id": "file", "store_params": {"root": "out"}},
        {"identifier": "src", "store_id": "memory"},
        {
            "identifier": "bucket",
            "store_id": "s3",
            "store_params": {"root": "bucket/prefix", "storage_options": {"anon": True}},
        },
    ],
    "grid_mappings": [
        {
            "identifier": "gm_fr",
            "bbox": [-1.25, 43.5, 0.5, 44.8],
            "spatial_res": 0.00025,
            "tile_size": 1000,
        }
    ],
    "datasets": [
        {
            "identifier": "single",
            "store": "src",
            "data_id": "a.zarr",
            "grid_mapping": "gm_fr",
            "custom_processing": {"module_path": "hooks.py", "function_name": "band_to_time"},
        },
        {
            "identifier": "multi",
            "grid_mapping": "gm_fr",
            "variables": [
                {"identifier": "v1", "store": "bucket", "data_id": "b.zarr"},
                {"identifier": "v2", "store": "storage", "data_id": "single.zarr"},
            ],
        },
        {"identifier": "third", "store": "src", "data_id": "c.tif", "grid_mapping": "single"},
    ],
    "preload_datasets": [{"store": "src", "data_ids": ["x.zip"]}],
}


def base_config() -> dict[str, Any]:
    return copy.deepcopy(BASE)


def write_config(folder: Path, config: dict[str, Any] | str, name: str = "config.yml") -> Path:
    """Write ``config`` (a mapping or YAML text) plus the hooks module into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hooks.py").write_text(HOOKS)
    path = folder / name
    text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
    path.write_text(text)
    return path


def problems_of(call: Callable[[], Any]) -> tuple[Problem, ...]:
    with pytest.raises(ConfigError) as info:
        call()
    return info.value.problems


def assert_problem(problems: tuple[Problem, ...], location: str, fragment: str) -> None:
    listing = "\n".join(f"  {p.location!r}: {p.message}" for p in problems)
    assert any(p.location == location and fragment in p.message for p in problems), (
        f"no problem at {location!r} containing {fragment!r}; got:\n{listing}"
    )
