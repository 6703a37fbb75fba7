"""Write cubes into the storage store so that "done" is never a guess.

A cube counts as complete only when its completion marker exists and names
the same config fingerprint. The marker is deleted before any byte of a new
build is written and created after the last one, so an interrupted build is
always seen as incomplete, and a changed config as stale.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numcodecs
import numpy as np
import xarray as xr
import zarr
from xcube.core.store import DataStore

from . import __version__
from .errors import WriteError
from .resume import ChunkJournal, start_journal, verified_chunks
from .zarrchunks import chunk_writes, metadata_template

log = logging.getLogger(__name__)

MARKER_DIR = ".multistore"
_CF_ENCODING = ("_FillValue", "dtype", "scale_factor", "add_offset", "units", "calendar")


class CubeState(enum.Enum):
    COMPLETE = "complete"
    STALE = "stale"  # complete, but built from another config fingerprint
    INCOMPLETE = "incomplete"  # bytes exist, no marker: an interrupted build
    MISSING = "missing"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class StorageTarget:
    """Where one cube goes: the storage store's filesystem and paths in it."""

    store: DataStore
    output: str  # path relative to the store root, e.g. "cube.zarr"

    @property
    def fs(self):
        fs = getattr(self.store, "fs", None)
        if fs is None:
            raise WriteError(
                f"the storage store ({type(self.store).__name__}) is not filesystem-based; "
                "use store_id file, s3, memory, abfs or ftp"
            )
        return fs

    @property
    def root(self) -> str:
        return str(getattr(self.store, "root", "")).rstrip("/")

    @property
    def path(self) -> str:
        return f"{self.root}/{self.output}" if self.root else self.output

    @property
    def scratch_path(self) -> str:
        base = f"{self.root}/{MARKER_DIR}" if self.root else MARKER_DIR
        return f"{base}/scratch/{self.output}"

    @property
    def marker_path(self) -> str:
        base = f"{self.root}/{MARKER_DIR}" if self.root else MARKER_DIR
        return f"{base}/{self.output}.json"

    @property
    def journal_path(self) -> str:
        """The per-chunk checksum list of a Zarr write, beside the marker (resume)."""
        base = f"{self.root}/{MARKER_DIR}" if self.root else MARKER_DIR
        return f"{base}/{self.output}.chunks.jsonl"

    @property
    def is_local(self) -> bool:
        protocol = self.fs.protocol
        protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol)
        return "file" in protocols or "local" in protocols


def zarr_store(target: StorageTarget) -> Any:
    """A plain path for local storage (zarr's LocalStore creates folders), else an fsspec mapper."""
    protocol = target.fs.protocol
    protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol)
    if "file" in protocols or "local" in protocols:
        return target.path
    return target.fs.get_mapper(target.path)


def remove_scratch(target: StorageTarget) -> None:
    if target.fs.exists(target.scratch_path):
        target.fs.rm(target.scratch_path, recursive=True)


def remove_partial_cube(target: StorageTarget) -> None:
    """Delete an unfinished cube (no marker): a failed build leaves nothing taking space."""
    fs = target.fs
    if fs.exists(target.marker_path):
        return  # complete: not ours to remove
    if fs.exists(target.path):
        fs.rm(target.path, recursive=True)
    if fs.exists(target.journal_path):
        fs.rm(target.journal_path)
    if fs.exists(target.journal_path):
        fs.rm(target.journal_path)


def read_marker(target: StorageTarget) -> dict[str, Any] | None:
    try:
        with target.fs.open(target.marker_path, "r") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("unreadable completion marker %s: %s", target.marker_path, e)
        return None


def cube_state(
    target: StorageTarget, fingerprint: str, sources_digest: str | None = None
) -> CubeState:
    """``sources_digest`` (the digest of the sources' identities now) also makes a cube
    stale when its marker records another one; markers without one are not judged."""
    marker = read_marker(target)
    exists = target.fs.exists(target.path)
    if marker is not None and exists:
        if marker.get("fingerprint") != fingerprint:
            return CubeState.STALE
        recorded = marker.get("sources_digest")
        if sources_digest is not None and recorded is not None and recorded != sources_digest:
            return CubeState.STALE
        return CubeState.COMPLETE
    return CubeState.INCOMPLETE if exists else CubeState.MISSING


# Blosc's automatic block size for zstd level 1 is small; 128 KiB blocks compress 1 MB
# chunks 1.4x faster to the same size (docs/decisions.md).
BLOSC_BLOCKSIZE = 128 * 1024


def encoding_for(ds: xr.Dataset, zarr_format: int) -> dict[str, dict[str, Any]]:
    """Chunks = dask chunks; zstd compression; fill values from the regridder."""
    encoding: dict[str, dict[str, Any]] = {}
    for name, var in ds.data_vars.items():
        # xarray replaces a variable's encoding by the one passed here: keep the CF parts.
        enc: dict[str, Any] = {k: v for k, v in var.encoding.items() if k in _CF_ENCODING}
        if var.chunks:
            enc["chunks"] = tuple(c[0] for c in var.chunks)
        if zarr_format == 2:
            blosc = numcodecs.Blosc(
                cname="zstd", clevel=1, shuffle=numcodecs.Blosc.SHUFFLE, blocksize=BLOSC_BLOCKSIZE
            )
            enc["compressors"] = (blosc,)
        else:
            from zarr.codecs import BloscCodec

            enc["compressors"] = (
                BloscCodec(cname="zstd", clevel=1, shuffle="shuffle", blocksize=BLOSC_BLOCKSIZE),
            )
        if "_FillValue" in var.attrs:
            enc["_FillValue"] = var.attrs.pop("_FillValue")
        elif var.dtype.kind == "f" and "_FillValue" not in var.encoding:
            enc["_FillValue"] = np.nan
        encoding[name] = enc
    return encoding


ProgressCallback = Callable[[float], None]


def with_gdal_crs(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with GDAL's ``_CRS`` attribute (``{"wkt": ...}``) on every variable that has
    a CF ``grid_mapping``: GDAL's Zarr driver reads only ``_CRS`` before 3.9 (Debian ships 3.6)."""
    out = ds.copy()  # shallow: new attrs dicts, same data
    for name, var in ds.data_vars.items():
        gm = var.attrs.get("grid_mapping") or var.encoding.get("grid_mapping")
        if not isinstance(gm, str) or gm not in ds.variables:
            continue
        gm_attrs = ds[gm].attrs
        wkt = gm_attrs.get("crs_wkt") or gm_attrs.get("spatial_ref")
        if isinstance(wkt, str):
            out[name].attrs = {**var.attrs, "_CRS": {"wkt": wkt}}
    return out


def write_zarr(
    ds: xr.Dataset,
    target: StorageTarget,
    fingerprint: str,
    compute: Callable[[Any], Any],
    zarr_format: int = 2,
    sources: dict[str, str] | None = None,
    compute_writes: Callable[[list[Any]], Any] | None = None,
) -> None:
    """Write ``ds`` as a consolidated Zarr, then the completion marker.

    ``sources`` (source -> identity digest) goes into the marker, for staleness checks.
    The chunk writes of a Zarr v2 cube go to ``compute_writes`` (default ``compute``),
    which may compute them in waves (``DaskRunner.compute_in_waves``).
    Zarr v2 on local storage keeps a chunk journal: an interrupted write of the same
    build resumes, computing only the chunks not yet stored and verified."""
    store = zarr_store(target)
    ds = with_gdal_crs(ds)
    encoding = encoding_for(ds, zarr_format)
    journaled = zarr_format == 2 and target.is_local
    header = {
        "fingerprint": fingerprint,
        "sources_digest": ds.attrs.get("multistore_sources_digest"),
        "zarr_format": zarr_format,
    }
    done = _resumable(target, header) if journaled else None
    try:
        if zarr_format == 2:
            journal = None
            if done is None:
                _clear(target)
                # metadata and numpy variables now; dask blocks by our own tasks (see zarrchunks)
                metadata_template(ds, encoding).to_zarr(
                    store, mode="w", compute=False, consolidated=False, zarr_format=2,
                    encoding=encoding,
                )  # fmt: skip
                if journaled:
                    journal = start_journal(target.journal_path, target.path, header)
            else:
                log.info("resuming %s: %d chunk(s) already stored", target.output, len(done))
                journal = ChunkJournal(target.journal_path, target.path)
            writes = chunk_writes(
                ds, encoding, target.fs, target.path, journal, done or frozenset()
            )
            (compute_writes or compute)(writes)
            zarr.consolidate_metadata(store, zarr_format=2)
        else:
            _clear(target)
            delayed = ds.to_zarr(
                store, mode="w", compute=False, consolidated=True, zarr_format=3,
                encoding=encoding,
            )  # fmt: skip
            compute(delayed)
    except Exception as e:
        raise WriteError(f"writing {target.output} failed: {type(e).__name__}: {e}") from e
    _write_marker(target, fingerprint, ds, sources)


def write_netcdf(
    ds: xr.Dataset,
    target: StorageTarget,
    fingerprint: str,
    compute: Callable[[Any], Any],
    sources: dict[str, str] | None = None,
) -> None:
    """Write ``ds`` as NetCDF4 via a local temporary file, then upload and mark."""
    _clear(target)
    encoding = {
        name: {
            "zlib": True,
            "complevel": 4,
            **{k: v for k, v in enc.items() if k == "_FillValue"},
            "chunksizes": enc.get("chunks"),
        }
        for name, enc in encoding_for(ds, 2).items()
    }
    with tempfile.TemporaryDirectory(prefix="multistore-") as tmp:
        local = os.path.join(tmp, os.path.basename(target.output))
        try:
            compute(ds.to_netcdf(local, engine="netcdf4", encoding=encoding, compute=False))
            parent = target.path.rsplit("/", 1)[0]
            if parent != target.path:
                target.fs.makedirs(parent, exist_ok=True)
            target.fs.put_file(local, target.path)
        except Exception as e:
            raise WriteError(f"writing {target.output} failed: {type(e).__name__}: {e}") from e
    _write_marker(target, fingerprint, ds, sources)


def write_levels(
    ds: xr.Dataset,
    target: StorageTarget,
    fingerprint: str,
    compute: Callable[[Any], Any],
    sources: dict[str, str] | None = None,
) -> None:
    """Write ``ds`` as xcube's ``levels`` pyramid (``0.zarr`` ... and ``.zlevels``), readable by
    xcube's file store as ``mldataset``. The levels and their aggregation are xcube's own;
    xcube computes each level itself (dask's current scheduler), so ``compute`` is unused."""
    from xcube.core.mldataset import FsMultiLevelDataset

    from .grid import xy_names

    _clear(target)
    x_name, y_name = xy_names(ds)
    chunks = ds.chunksizes
    tile = [max(chunks.get(name, (ds.sizes[name],))) for name in (x_name, y_name)]
    plain = ds.copy()
    for var in plain.variables.values():
        var.encoding = {k: v for k, v in var.encoding.items() if k in _LEVEL_ENCODING}
    try:
        FsMultiLevelDataset.write_dataset(
            plain, target.path, fs=target.fs, replace=True, tile_size=tile, zarr_format=2
        )
    except Exception as e:
        raise WriteError(f"writing {target.output} failed: {type(e).__name__}: {e}") from e
    _write_marker(target, fingerprint, ds, sources)


_LEVEL_ENCODING = ("_FillValue", "dtype", "scale_factor", "add_offset", "units", "calendar")


def _clear(target: StorageTarget) -> None:
    fs = target.fs
    if fs.exists(target.marker_path):
        fs.rm(target.marker_path)
    if fs.exists(target.journal_path):
        fs.rm(target.journal_path)
    if fs.exists(target.path):
        fs.rm(target.path, recursive=True)


def _resumable(target: StorageTarget, header: dict[str, Any]) -> frozenset[str] | None:
    """Chunks of an interrupted write of this very build (no marker: never a finished cube)."""
    fs = target.fs
    if fs.exists(target.marker_path) or not fs.exists(f"{target.path}/.zgroup"):
        return None
    return verified_chunks(target.journal_path, target.path, header)


def _write_marker(
    target: StorageTarget,
    fingerprint: str,
    ds: xr.Dataset,
    sources: dict[str, str] | None = None,
) -> None:
    marker: dict[str, Any] = {
        "fingerprint": fingerprint,
        "completed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "multistore_version": __version__,
        "variables": sorted(map(str, ds.data_vars)),
        "dims": {str(k): int(v) for k, v in ds.sizes.items()},
    }
    if "multistore_sources_digest" in ds.attrs:
        marker["sources_digest"] = ds.attrs["multistore_sources_digest"]
    if sources is not None:
        marker["sources"] = dict(sorted(sources.items()))
    fs = target.fs
    parent = target.marker_path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    with fs.open(target.marker_path, "w") as f:
        json.dump(marker, f, indent=1)
