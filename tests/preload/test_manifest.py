"""Preload records: exact keys, checksums, intact outputs, restarts."""

from __future__ import annotations

import fsspec

from multistore.preload.manifest import Manifest, PreloadOutput, PreloadRecord


def record(key: str, checksum: str = "md5:aa", outputs=("france/a.tif",)) -> PreloadRecord:
    return PreloadRecord(
        source="zenodo:1",
        key=key,
        checksum=checksum,
        size=10,
        outputs=tuple(PreloadOutput(o, "geotiff", f"{key}:{o}") for o in outputs),
    )


def setup(tmp_path, *paths):
    fs = fsspec.filesystem("file")
    for p in paths:
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / p).write_bytes(b"x")
    return fs, Manifest(fs, str(tmp_path))


def test_exact_keys_never_confused(tmp_path):
    fs, manifest = setup(tmp_path, "france/a.tif", "france2/a.tif")
    manifest.put(record("france2.zip", outputs=("france2/a.tif",)))
    assert manifest.current("zenodo:1", "france.zip", "md5:aa") is None
    assert manifest.get("france.zip") is None
    assert manifest.current("zenodo:1", "france2.zip", "md5:aa") is not None
    manifest.put(record("france.zip"))
    assert [r.key for r in manifest.records()] == ["france.zip", "france2.zip"]


def test_checksum_source_and_outputs_must_match(tmp_path):
    fs, manifest = setup(tmp_path, "france/a.tif")
    manifest.put(record("france.zip"))
    assert manifest.current("zenodo:1", "france.zip", "md5:aa").outputs[0].data_id == "france/a.tif"
    assert manifest.current("zenodo:1", "france.zip", "md5:bb") is None
    assert manifest.current("zenodo:2", "france.zip", "md5:aa") is None
    (tmp_path / "france/a.tif").unlink()
    assert manifest.current("zenodo:1", "france.zip", "md5:aa") is None


def test_survives_restart_and_ignores_damaged_records(tmp_path):
    fs, manifest = setup(tmp_path, "france/a.tif")
    manifest.put(record("weird key/ä.zip"))
    again = Manifest(fsspec.filesystem("file"), str(tmp_path))
    assert again.get("weird key/ä.zip") == manifest.get("weird key/ä.zip")
    damaged = next((tmp_path / ".multistore/manifest").iterdir())
    damaged.write_text("{not json")
    assert again.get("weird key/ä.zip") is None
    assert list(again.records()) == []
    again.remove("weird key/ä.zip")
    assert not damaged.exists()
