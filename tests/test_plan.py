"""Build order, dependency closure and fingerprints."""

from pathlib import Path

import pytest

from multistore.config import load_config
from multistore.errors import ConfigError
from multistore.plan import build_plan


def config(
    tmp_path: Path, res: float = 0.01, hook_body: str = "return ds", secret: str = "abcd1234"
):
    (tmp_path / "hooks.py").write_text(f"def hook(ds):\n    {hook_body}\n")
    return load_config(
        {
            "data_stores": [
                {"identifier": "storage", "store_id": "memory", "store_params": {"root": "out"}},
                {
                    "identifier": "src",
                    "store_id": "s3",
                    "store_params": {"root": "b", "storage_options": {"secret": "${THE_SECRET}"}},
                },
            ],
            "grid_mappings": [{"identifier": "gm", "bbox": [0, 0, 1, 1], "spatial_res": res}],
            "datasets": [
                {"identifier": "b", "store": "src", "data_id": "b.zarr", "grid_mapping": "a"},
                {
                    "identifier": "a",
                    "store": "src",
                    "data_id": "a.zarr",
                    "grid_mapping": "gm",
                    "custom_processing": {"module_path": "hooks.py", "function_name": "hook"},
                },
                {"identifier": "c", "store": "src", "data_id": "c.zarr", "grid_mapping": "gm"},
            ],
        },
        base_dir=tmp_path,
        env={"THE_SECRET": secret},
    )


def test_dependencies_are_built_first_and_pulled_in(tmp_path):
    plan = build_plan(config(tmp_path))
    assert plan.levels == (("a", "c"), ("b",))
    assert plan.cube("b").grid_from == "a" and plan.cube("b").grid is None
    only_b = build_plan(config(tmp_path), ["b"])
    assert only_b.identifiers == ("a", "b")
    with pytest.raises(ConfigError, match="'zz' is not defined"):
        build_plan(config(tmp_path), ["zz"])


def test_fingerprint_follows_what_changes_the_bytes(tmp_path):
    base = build_plan(config(tmp_path))
    fp = {c.identifier: c.fingerprint for c in base.cubes}
    assert fp == {c.identifier: c.fingerprint for c in build_plan(config(tmp_path)).cubes}
    # a changed grid changes its cubes and the cube that borrows the grid
    coarser = {c.identifier: c.fingerprint for c in build_plan(config(tmp_path, res=0.02)).cubes}
    assert all(coarser[k] != fp[k] for k in ("a", "b", "c"))
    # an edited hook changes only the cube using it (and its dependants)
    edited = {
        c.identifier: c.fingerprint
        for c in build_plan(config(tmp_path, hook_body="return ds.copy()")).cubes
    }
    assert edited["a"] != fp["a"] and edited["b"] != fp["b"] and edited["c"] == fp["c"]
    # a rotated secret changes nothing
    rotated = {
        c.identifier: c.fingerprint for c in build_plan(config(tmp_path, secret="wxyz9876")).cubes
    }
    assert rotated == fp
