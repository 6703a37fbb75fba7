"""Where cubes go and when they are done: addressing, completion markers, scratch.

A cube counts as complete only when its completion marker exists and names
the same config fingerprint. The marker is deleted before any byte of a new
build is written and created after the last one, so an interrupted build is
always seen as incomplete, and a changed config as stale.
"""

from __future__ import annotations

import enum
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import xarray as xr
from xcube.core.store import DataStore

from . import __version__
from .errors import WriteError
from .resume import stored_objects, verified_chunks

log = logging.getLogger(__name__)

MARKER_DIR = ".multistore"
# fsspec protocols whose writes are atomic PUTs: an object is there whole or not at all
OBJECT_STORE_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"})


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
    def protocols(self) -> frozenset[str]:
        protocol = self.fs.protocol
        return frozenset((protocol,) if isinstance(protocol, str) else protocol)

    @property
    def is_local(self) -> bool:
        return bool({"file", "local"} & self.protocols)

    @property
    def is_object_store(self) -> bool:
        """Writes are atomic PUTs (S3, GCS, Azure, memory): partial objects never exist."""
        return bool(OBJECT_STORE_PROTOCOLS & self.protocols)


def zarr_store(target: StorageTarget) -> Any:
    """A plain path for local storage (zarr's LocalStore creates folders), else an fsspec mapper."""
    return target.path if target.is_local else target.fs.get_mapper(target.path)


def remove_scratch(target: StorageTarget) -> None:
    if target.fs.exists(target.scratch_path):
        target.fs.rm(target.scratch_path, recursive=True)


def remove_partial_cube(target: StorageTarget) -> None:
    """Delete an unfinished cube (no marker): a failed build leaves nothing taking space."""
    fs = target.fs
    if fs.exists(target.marker_path):
        return  # complete: not ours to remove
    # The journal first: if removing the cube fails half-way, the next run rebuilds it
    # instead of resuming a cube whose metadata may be gone.
    if fs.exists(target.journal_path):
        fs.rm(target.journal_path)
    if fs.exists(target.path):
        fs.rm(target.path, recursive=True)


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


def clear(target: StorageTarget) -> None:
    fs = target.fs
    if fs.exists(target.marker_path):
        fs.rm(target.marker_path)
    if fs.exists(target.journal_path):
        fs.rm(target.journal_path)
    if fs.exists(target.path):
        fs.rm(target.path, recursive=True)


def resumable_chunks(
    target: StorageTarget, header: dict[str, Any], zarr_format: int = 2
) -> frozenset[str] | None:
    """Chunks of an interrupted write of this very build (no marker: never a finished cube)."""
    fs = target.fs
    group = ".zgroup" if zarr_format == 2 else "zarr.json"
    if fs.exists(target.marker_path) or not fs.exists(f"{target.path}/{group}"):
        return None
    if target.is_local:
        return verified_chunks(target.journal_path, target.path, header)
    if target.is_object_store:
        return stored_objects(fs, target.journal_path, target.path, header)
    return None


def write_marker(
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
