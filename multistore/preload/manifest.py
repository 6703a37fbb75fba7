"""Per-file preload records, so "already preloaded" is exact and survives restarts.

One small JSON document per source file, stored in the cache itself
(``.multistore/manifest/<quoted key>.json``), written only after every output
is in place. A file counts as preloaded when a record exists for exactly the
same source, key and checksum and all of its outputs still exist. No
substring matching: ``france.zip`` and ``france2.zip`` are different keys.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import fsspec

log = logging.getLogger(__name__)

MANIFEST_FOLDER = ".multistore/manifest"
_VERSION = 1


@dataclass(frozen=True)
class PreloadOutput:
    """One thing a preload produced, addressable as ``data_id`` (its path in the cache)."""

    data_id: str
    format: str  # "zarr", "geotiff", "netcdf", or the file's suffix
    source: str  # the member path (or file key) it came from
    converted_from: str | None = None  # "geotiff" or "netcdf" for Zarr written by a preload


@dataclass(frozen=True)
class PreloadRecord:
    source: str  # e.g. "zenodo:13333034"
    key: str  # the file key in the source
    checksum: str | None  # e.g. "md5:0123..."
    size: int | None
    outputs: tuple[PreloadOutput, ...]
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def output(self, data_id: str) -> PreloadOutput | None:
        return next((o for o in self.outputs if o.data_id == data_id), None)

    def to_json(self) -> str:
        return json.dumps({"version": _VERSION, **asdict(self)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> PreloadRecord:
        raw: dict[str, Any] = json.loads(text)
        if raw.pop("version", None) != _VERSION:
            raise ValueError("unknown manifest version")
        outputs = tuple(PreloadOutput(**o) for o in raw.pop("outputs"))
        return cls(outputs=outputs, **raw)


class Manifest:
    """The preload records stored under ``root`` of the filesystem ``fs``."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str):
        self._fs = fs
        self._folder = f"{root.rstrip('/')}/{MANIFEST_FOLDER}" if root else MANIFEST_FOLDER
        self._root = root.rstrip("/")

    def _path(self, key: str) -> str:
        return f"{self._folder}/{urllib.parse.quote(key, safe='')}.json"

    def get(self, key: str) -> PreloadRecord | None:
        path = self._path(key)
        try:
            text = self._fs.cat_file(path).decode("utf-8")
        except FileNotFoundError:
            return None
        try:
            record = PreloadRecord.from_json(text)
        except (ValueError, TypeError, KeyError) as e:
            log.warning("ignoring unreadable preload record %s: %s", path, e)
            return None
        return record if record.key == key else None

    def current(self, source: str, key: str, checksum: str | None) -> PreloadRecord | None:
        """The record if ``key`` of ``source`` is preloaded with this exact checksum and intact."""
        record = self.get(key)
        if record is None or record.source != source or record.checksum != checksum:
            return None
        if not all(self._fs.exists(self.full_path(o.data_id)) for o in record.outputs):
            return None
        return record

    def put(self, record: PreloadRecord) -> None:
        self._fs.makedirs(self._folder, exist_ok=True)
        self._fs.pipe_file(self._path(record.key), record.to_json().encode("utf-8"))

    def remove(self, key: str) -> None:
        path = self._path(key)
        if self._fs.exists(path):
            self._fs.rm_file(path)

    def records(self) -> Iterator[PreloadRecord]:
        try:
            names = self._fs.ls(self._folder, detail=False)
        except FileNotFoundError:
            return
        for name in sorted(names):
            if name.endswith(".json"):
                key = urllib.parse.unquote(name.rsplit("/", 1)[-1][: -len(".json")])
                record = self.get(key)
                if record is not None:
                    yield record

    def full_path(self, data_id: str) -> str:
        return f"{self._root}/{data_id}" if self._root else data_id
