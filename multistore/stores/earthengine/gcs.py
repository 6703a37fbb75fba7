"""Reading finished Cloud Storage exports (GeoTIFFs on the target grid) back into the cube.

Earth Engine writes one export as ``<prefix>.tif`` or, split by
``fileDimensions``, as ``<prefix>-<row offset>-<col offset>.tif`` (offsets in
pixels, ten digits). The files are read through ``gcsfs`` (so a local GCS
endpoint works in tests, and credentials come from the storage options) with
rasterio's fsspec opener: only the byte ranges of a chunk's window are fetched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import FetchError
from .source import ChunkSource

_SHARD = re.compile(r"-(\d{10})-(\d{10})\.tif")


def _filesystem(storage_options: Mapping[str, Any]) -> Any:
    # the JSON-API filesystem: gcsfs' default (ExtendedGcsFileSystem) probes buckets over
    # gRPC, which a custom endpoint_url cannot redirect, and plain object reads need none of it
    from gcsfs.core import GCSFileSystem

    return GCSFileSystem(**dict(storage_options))


def _local_copy(fs: Any, path: str) -> str:
    """A local copy of an exported file, downloaded once per machine (atomic rename).

    rasterio's Python-file opener over gcsfs crashed (segfault) under dask threads,
    so windows are read from a local copy; the name hashes the object's path and
    generation, so a re-export is downloaded again.
    """
    info = fs.info(path)
    digest = hashlib.sha256(f"{path}#{info.get('generation')}#{info['size']}".encode()).hexdigest()
    folder = Path(tempfile.gettempdir()) / "multistore-ee-exports"
    folder.mkdir(parents=True, exist_ok=True)
    local = folder / f"{digest[:32]}.tif"
    if not local.exists():
        tmp = folder / f"{local.name}.{uuid.uuid4().hex}.part"
        try:
            fs.get_file(path, str(tmp))
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)
    return str(local)


def exported_files(
    bucket: str, prefix: str, storage_options: Mapping[str, Any]
) -> list[tuple[str, int, int]]:
    """The GeoTIFFs of the export ``prefix``: ``(bucket/object, row offset, col offset)``."""
    fs = _filesystem(storage_options)
    fs.invalidate_cache()
    folder, _, base = f"{bucket}/{prefix}".rpartition("/")
    try:
        paths = fs.find(folder, prefix=base)
    except FileNotFoundError:
        return []
    files = []
    for path in paths:
        rest = path[len(f"{folder}/{base}") :] if path.startswith(f"{folder}/{base}") else None
        if rest == ".tif":
            files.append((path, 0, 0))
        elif rest is not None and (m := _SHARD.fullmatch(rest)):
            files.append((path, int(m.group(1)), int(m.group(2))))
    return sorted(files, key=lambda f: (f[1], f[2]))


def delete_exported_files(bucket: str, prefix: str, storage_options: Mapping[str, Any]) -> int:
    """Delete the GeoTIFFs of the export ``prefix``; how many were deleted."""
    files = exported_files(bucket, prefix, storage_options)
    fs = _filesystem(storage_options)
    for path, _, _ in files:  # one DELETE each: gcsfs' bulk rm uses the batch endpoint
        fs.rm_file(path)
    return len(files)


@dataclass(frozen=True)
class GeoTiffChunkSource(ChunkSource):
    """Like ``ChunkSource``, but a chunk's raw pixels come from the step's exported GeoTIFF(s)."""

    files: tuple[tuple[tuple[str, int, int], ...], ...] = ()  # per step
    storage_options: tuple[tuple[str, Any], ...] = field(default=(), repr=False)  # secrets

    def raw(self, t: int, ci: int) -> np.ndarray:
        import rasterio
        from rasterio.windows import Window

        chunk = self.chunks[ci].chunk
        out = np.zeros(
            (chunk.height, chunk.width),
            dtype=list(zip(self.request_bands, self.request_dtypes, strict=True)),
        )
        fs = _filesystem(dict(self.storage_options))
        covered = 0
        for path, row0, col0 in self.files[t]:
            if row0 >= chunk.row_off + chunk.height or col0 >= chunk.col_off + chunk.width:
                continue
            with rasterio.open(_local_copy(fs, path)) as src:
                r0, r1 = (
                    max(row0, chunk.row_off),
                    min(row0 + src.height, chunk.row_off + chunk.height),
                )
                c0, c1 = (
                    max(col0, chunk.col_off),
                    min(col0 + src.width, chunk.col_off + chunk.width),
                )
                if r0 >= r1 or c0 >= c1:
                    continue
                if src.count != len(self.request_bands):
                    raise FetchError(
                        f"earthengine: {path} has {src.count} band(s), "
                        f"expected {list(self.request_bands)}",
                        permanent=True,
                    )
                data = src.read(window=Window(c0 - col0, r0 - row0, c1 - c0, r1 - r0))
            rows = slice(r0 - chunk.row_off, r1 - chunk.row_off)
            cols = slice(c0 - chunk.col_off, c1 - chunk.col_off)
            for k, (band, dt) in enumerate(
                zip(self.request_bands, self.request_dtypes, strict=True)
            ):
                out[band][rows, cols] = data[k].astype(dt)
            covered += (r1 - r0) * (c1 - c0)
        if covered != chunk.height * chunk.width:
            raise FetchError(
                f"earthengine: the exported files of {self.data_id} step {t} do not cover "
                f"rows {chunk.row_off}+{chunk.height}, cols {chunk.col_off}+{chunk.width}",
                permanent=True,
            )
        return out


def geotiff_source(
    source: ChunkSource,
    files: tuple[tuple[tuple[str, int, int], ...], ...],
    storage_options: Mapping[str, Any],
) -> GeoTiffChunkSource:
    fields = {f.name: getattr(source, f.name) for f in dataclasses.fields(ChunkSource)}
    return GeoTiffChunkSource(
        **fields, files=files, storage_options=tuple(sorted(storage_options.items()))
    )
