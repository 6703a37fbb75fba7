"""A raster opened through a Python opener in one thread closes cleanly in another."""

import threading

import fsspec
import numpy as np
import rasterio
from rasterio.transform import from_origin

import multistore.cube  # noqa: F401  (installs the shared registry, as the pipeline does)


def test_dataset_opened_in_a_worker_thread_closes_in_the_main_thread(tmp_path):
    path = tmp_path / "a.tif"
    profile = dict(driver="GTiff", width=64, height=64, count=1, dtype="uint8", crs="EPSG:4326")
    with rasterio.open(path, "w", transform=from_origin(0, 1, 0.01, 0.01), **profile) as dst:
        dst.write(np.arange(64 * 64, dtype="uint8").reshape(1, 64, 64))
    fs = fsspec.filesystem("file")
    opened = {}

    def worker() -> None:
        opened["ds"] = rasterio.open(str(path), opener=fs.open)
        opened["sum"] = int(opened["ds"].read(1).sum(dtype="int64"))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    opened["ds"].close()  # raised SystemError (LookupError in GDAL's close callback) before
    with rasterio.open(path) as src:
        assert opened["sum"] == int(src.read(1).sum(dtype="int64"))
