"""The Earth Engine emulator answers the real ``earthengine-api`` client like the real service."""

from __future__ import annotations

import threading

import ee
import numpy as np
import pytest

from tests.servers.earthengine import PIXEL_GRID
from tests.servers.ee_emulator import TOO_MANY_REQUESTS, Emulator, RequestGrid


def _init(emu: Emulator) -> None:
    ee.Initialize(credentials=None, url=emu.url, project="test-project")
    ee.data.setMaxRetries(0)


def test_client_initialises_and_fetches_asset_pixels(ee_emulator):
    _init(ee_emulator)
    assert ee_emulator.stats.by_kind["discovery"] >= 1
    # straddles the corner of the image's masked box (10.10, 45.10)
    at_mask = dict(
        PIXEL_GRID,
        affineTransform=dict(PIXEL_GRID["affineTransform"], translateX=10.097, translateY=45.102),
    )
    arr = ee.data.getPixels(
        {"assetId": "TEST/LANDCOVER", "fileFormat": "NUMPY_NDARRAY", "grid": at_mask}
    )
    grid = RequestGrid("EPSG:4326", (0.001, 0, 10.097, 0, -0.001, 45.102), 6, 4)
    expected = ee_emulator.catalog.render("TEST/LANDCOVER", ["Map"], grid)["Map"]
    assert arr.dtype.names == ("Map",) and arr["Map"].dtype == np.uint8
    # masked pixels come back as 0, like the real API
    np.testing.assert_array_equal(arr["Map"], expected.filled(0))
    assert expected.mask.any() and not expected.mask.all()


def test_compute_pixels_and_get_info_walk_the_expression(ee_emulator):
    _init(ee_emulator)
    col = ee.ImageCollection("TEST/S2LIKE").filterDate("2024-01-01", "2024-02-01")
    info = col.filter(ee.Filter.lt("CLOUDY_PIXEL_PERCENTAGE", 20)).getInfo()
    assert [f["id"] for f in info["features"]] == ["TEST/S2LIKE/20240105A", "TEST/S2LIKE/20240120"]
    img = col.mosaic().select(["B4"]).unmask(65535, False)
    arr = ee.data.computePixels(
        {"expression": img, "fileFormat": "NUMPY_NDARRAY", "grid": PIXEL_GRID}
    )
    grid = RequestGrid("EPSG:4326", (0.001, 0, 10.0, 0, -0.001, 45.11), 6, 4)
    ids = ["TEST/S2LIKE/20240105A", "TEST/S2LIKE/20240105B", "TEST/S2LIKE/20240120"]
    layers = [ee_emulator.catalog.render(i, ["B4"], grid)["B4"] for i in ids]
    expected = np.full((4, 6), 65535, dtype=np.uint16)
    for layer in layers:  # last on top
        expected[~layer.mask] = layer.data[~layer.mask]
    np.testing.assert_array_equal(arr["B4"], expected)


def test_real_error_messages(ee_offline):
    with Emulator(byte_limit=100) as emu:
        _init(emu)
        with pytest.raises(
            ee.EEException,
            match=r"^Total request size \(288 bytes\) must be less than or equal to 100 bytes\.$",
        ):
            # 6 x 4 px x 4 uint16 bands x (2 + 1 mask byte)
            ee.data.getPixels(
                {
                    "assetId": "TEST/S2LIKE/20240120",
                    "fileFormat": "NUMPY_NDARRAY",
                    "grid": PIXEL_GRID,
                }
            )
        big = dict(PIXEL_GRID, dimensions={"width": 40000, "height": 1})
        with pytest.raises(
            ee.EEException,
            match=r"^Pixel grid dimensions \(40000x1\) must be less than or equal to 32768\.$",
        ):
            ee.data.getPixels(
                {"assetId": "TEST/LANDCOVER", "fileFormat": "NUMPY_NDARRAY", "grid": big}
            )
        with pytest.raises(ee.EEException, match="not found"):
            ee.data.getPixels(
                {"assetId": "TEST/NOPE", "fileFormat": "NUMPY_NDARRAY", "grid": PIXEL_GRID}
            )
        assert emu.stats.size_errors == 1 and emu.stats.dimension_errors == 1


def test_concurrency_cap_answers_429(ee_offline):
    # the latency keeps requests at the server long enough for all five to overlap
    with Emulator(latency_s=2.0, max_concurrency=2) as emu:
        _init(emu)
        errors: list[str] = []
        start = threading.Barrier(5)

        def fetch() -> None:
            start.wait(30)
            try:
                ee.data.getPixels(
                    {"assetId": "TEST/LANDCOVER", "fileFormat": "NUMPY_NDARRAY", "grid": PIXEL_GRID}
                )
            except ee.EEException as e:
                errors.append(str(e))

        threads = [threading.Thread(target=fetch) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors and all(e == TOO_MANY_REQUESTS for e in errors)
        assert emu.stats.statuses[429] == len(errors)
        assert emu.stats.pixel_ok == 5 - len(errors) >= 2
