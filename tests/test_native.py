"""Native-grid downloads through `generate`: one GeoTIFF per image, per alignment group.

Against the Earth Engine emulator (real earthengine-api client). Pixels, grids and
nodata are read back with rasterio and compared with the emulator's own images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine
from click.testing import CliRunner

from multistore import MultiSourceDataStore
from multistore.cli import main
from multistore.config import load_config
from multistore.errors import ConfigError
from multistore.native import image_file_name
from multistore.status import Status
from tests.servers.earthengine import store_params
from tests.servers.ee_emulator import Emulator
from tests.stores.earthengine.test_ee_workflows import two_zone_catalog

pytestmark = pytest.mark.usefixtures("ee_offline")

Z32 = "EPSG32632_x780000_y5000000_r20"
Z33 = "EPSG32633_x250000_y5010000_r20"


def write_config(tmp_path, emu, **dataset) -> str:
    config = {
        "data_stores": [
            {"identifier": "storage", "store_id": "file", "store_params": {"root": "out"}},
            {"identifier": "gee", "store_id": "earthengine", "store_params": store_params(emu)},
        ],
        "datasets": [
            {
                "identifier": "zones",
                "store": "gee",
                "data_id": "TEST/ZONES",
                "format_id": "geotiff",
                **dataset,
            }
        ],  # fmt: skip
        "general": {"display": "none"},
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_generate_writes_one_geotiff_per_image_on_its_native_grid(tmp_path):
    with Emulator(two_zone_catalog()) as emu:
        path = write_config(tmp_path, emu)
        runner = CliRunner()
        planned = runner.invoke(main, ["plan", path])
        assert planned.exit_code == 0, planned.output
        assert "native: 2 alignment group(s), 3 image(s)" in planned.output

        done = runner.invoke(main, ["generate", path])
        assert done.exit_code == 0, done.output
        out = tmp_path / "out" / "zones"
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.tif")) == [
            f"{Z32}/a32.tif",
            f"{Z32}/c32.tif",
            f"{Z33}/b33.tif",
        ]
        for group, name in ((Z32, "a32"), (Z32, "c32"), (Z33, "b33")):
            img = emu.catalog.images[f"TEST/ZONES/{name}"]
            with rasterio.open(out / group / f"{name}.tif") as tif:
                assert tif.crs.to_epsg() == int(img.crs[5:])
                assert tif.transform == Affine(*img.transform)  # the exact native pixels
                assert (tif.width, tif.height) == img.dimensions
                assert tif.dtypes == ("uint16",) and tif.descriptions == ("B4",)
                assert tif.tags()["image_id"] == img.id
                i, j = np.meshgrid(np.arange(tif.width), np.arange(tif.height))
                expected = np.mod(i * 7 + j * 13 + img.seed * 37, 60000)
                np.testing.assert_array_equal(tif.read(1), expected)

        manifest = json.loads((out / "manifest.json").read_text())
        rows = {r["id"]: r for r in manifest["images"]}
        assert rows["TEST/ZONES/b33"]["file"] == f"zones/{Z33}/b33.tif"
        assert rows["TEST/ZONES/b33"]["bytes"] == (out / Z33 / "b33.tif").stat().st_size
        assert {r["status"] for r in rows.values()} == {"written"}
        assert manifest["groups"][Z32]["images"] == 2

        status = runner.invoke(main, ["status", path])
        assert "complete" in status.output and "zones" in status.output, status.output
        msds = MultiSourceDataStore(load_config(path))
        again = msds.generate()
        assert again["zones"].status is Status.SKIPPED
        rerun = msds.download_native("zones")  # the Python API: complete groups are skipped
        assert {row["status"] for row in rerun.groups.values()} == {"skipped"}
        kept = json.loads((out / "manifest.json").read_text())["images"]
        assert [(r["file"], r["bytes"]) for r in kept] == [
            (r["file"], r["bytes"]) for r in manifest["images"]
        ]  # a skipped group keeps what the run that wrote it recorded


def test_an_interrupted_group_is_rewritten_whole(tmp_path):
    with Emulator(two_zone_catalog()) as emu:
        path = write_config(tmp_path, emu)
        msds = MultiSourceDataStore(load_config(path))
        assert msds.generate()["zones"].status is Status.COMPLETED
        out = tmp_path / "out" / "zones"
        marker = tmp_path / "out" / ".multistore" / "zones" / f"{Z33}.json"
        assert marker.exists()
        marker.unlink()  # as if killed before the group finished
        (tmp_path / "out" / ".multistore" / "zones.json").unlink()
        (out / Z33 / "stray.tif").write_bytes(b"partial")
        run = msds.download_native("zones")
        assert run.groups[Z32]["status"] == "skipped"
        assert run.groups[Z33]["status"] == "written"
        assert not (out / Z33 / "stray.tif").exists()


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ({"grid_mapping": "gm"}, "needs one source (no variables) and no grid_mapping"),
        ({"store": "local"}, "store_id 'file' cannot list images by native grid"),
    ],
)
def test_geotiff_outside_native_downloads_is_a_located_error(tmp_path, dataset, message):
    with Emulator(two_zone_catalog()) as emu:
        path = write_config(tmp_path, emu, **dataset)
    config = yaml.safe_load(Path(path).read_text())
    config["data_stores"].append(
        {"identifier": "local", "store_id": "file", "store_params": {"root": "data"}}
    )
    config["grid_mappings"] = [{"identifier": "gm", "bbox": [11, 44, 12, 45], "spatial_res": 0.01}]
    Path(path).write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "datasets[0].format_id: 'geotiff' writes one GeoTIFF per image" in str(info.value)
    assert message in str(info.value)
    result = CliRunner().invoke(main, ["validate", path])
    assert result.exit_code == 2 and "datasets[0].format_id" in result.output


def test_image_file_names():
    assert image_file_name("TEST/ZONES/a32", "TEST/ZONES") == "a32.tif"
    assert image_file_name("TEST/ZONES/a32", "TEST/ZONES/") == "a32.tif"
    assert image_file_name("OTHER/C/x y:1", "TEST/ZONES") == "OTHER_C_x_y_1.tif"
