"""Quick-looks draw on their own Agg canvas: a notebook's plotting backend is left alone."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
import xarray as xr
from PIL import Image
from xcube.core.store import new_data_store

from multistore.quicklook import write_quicklook
from multistore.storage import StorageTarget


@pytest.fixture
def cube_target(tmp_path: Path) -> StorageTarget:
    lat = 48.0 - (np.arange(40) + 0.5) * 0.01
    lon = 11.0 + (np.arange(60) + 0.5) * 0.01
    ds = xr.Dataset(
        {"t": (("lat", "lon"), np.add.outer(np.arange(40.0), np.arange(60.0)).astype("float32"))},
        coords={"lat": lat, "lon": lon},
        attrs={"multistore_dataset": "cube"},
    )
    ds.to_zarr(tmp_path / "cube.zarr", zarr_format=2, consolidated=True)
    return StorageTarget(new_data_store("file", root=str(tmp_path)), "cube.zarr")


@pytest.fixture
def svg_backend():
    """A non-Agg backend standing in for a notebook's inline one; restored afterwards."""
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    yield "svg"
    matplotlib.use(before)


def test_quicklook_keeps_the_session_backend(cube_target: StorageTarget, svg_backend: str):
    path = write_quicklook(cube_target, lambda arrays: [np.asarray(a) for a in arrays])
    assert matplotlib.get_backend() == svg_backend
    with Image.open(path) as png:
        assert png.format == "PNG"
        assert png.size == (round(4.2 * 90), round(3.6 * 90))  # one panel at 90 dpi
        pixels = np.asarray(png.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # a colour ramp, not a blank
