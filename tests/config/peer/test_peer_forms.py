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

    def load(name: str) -> MultiSourceDataStore:
        path = project.root / f"{name}.yml"
        shutil.copy(HERE / f"{name}.yml", path)
        msds = MultiSourceDataStore(load_config(path))
        for summary in msds.describe_plan():
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
