"""The cache that preloaded data lives in: an xcube filesystem store (file, s3, ...).

Work happens in a local staging folder; finished entries are then moved
(local cache, same disk) or uploaded (any other filesystem) under their data
ids, and the manifest record is written last, so nothing half-done ever
counts as preloaded. Partial downloads stay in the staging folder so a later
run can resume them.
"""

from __future__ import annotations

import os
import shutil
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fsspec.implementations.local import LocalFileSystem
from xcube.core.store import DataStore

from ..errors import StoreError
from ..locks import LeaseLock
from .manifest import Manifest

STAGING_FOLDER = ".multistore/staging"
LOCK_FOLDER = ".multistore/locks"


class PreloadCache:
    """Wraps an xcube filesystem data store (it needs ``fs`` and ``root``) used as a cache."""

    def __init__(self, store: DataStore, *, staging_dir: Path | None = None):
        fs = getattr(store, "fs", None)
        root = getattr(store, "root", None)
        if fs is None or root is None:
            raise StoreError(
                f"cache store {type(store).__name__} is not a filesystem data store "
                "(file, s3, ...): it has no 'fs' and 'root'"
            )
        self.store = store
        self.fs = fs
        self.root = str(root).rstrip("/")
        self.is_local = isinstance(fs, LocalFileSystem)
        if self.is_local:
            fs.makedirs(self.root, exist_ok=True)
            staging_dir = staging_dir or Path(self.root) / STAGING_FOLDER
        if staging_dir is None:
            raise StoreError("a cache on a remote filesystem needs a local staging_dir")
        self.staging_dir = Path(staging_dir)
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        self.manifest = Manifest(fs, self.root)

    @property
    def protocol(self) -> str:
        protocol = self.fs.protocol
        return protocol if isinstance(protocol, str) else protocol[0]

    @property
    def partial_dir(self) -> Path:
        return self.staging_dir / "partial"

    def path(self, data_id: str) -> str:
        return self.manifest.full_path(data_id)

    def lock(self, name: str) -> LeaseLock:
        """A lease for one preload job, so two runs sharing this cache never do it at once."""
        path = f"{self.root}/{LOCK_FOLDER}/{urllib.parse.quote(name, safe='')}.lock"
        return LeaseLock(self.fs, path, f"preload of {name}")

    @contextmanager
    def workdir(self) -> Iterator[Path]:
        """A fresh local folder for one preload job, removed afterwards."""
        path = self.staging_dir / f"work-{uuid.uuid4().hex[:12]}"
        path.mkdir(parents=True)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def commit(self, local: Path, data_id: str) -> None:
        """Store the file or folder ``local`` as ``data_id``, replacing what was there."""
        target = self.path(data_id)
        if self.is_local:
            target_path = Path(target)
            target_path.parent.mkdir(parents=True, exist_ok=True)
            if target_path.exists() or target_path.is_symlink():
                old = target_path.with_name(f".{target_path.name}.old-{uuid.uuid4().hex[:8]}")
                os.replace(target_path, old)
                _remove_local(old)
            os.replace(local, target_path)
            return
        self.remove(data_id)
        self.fs.put(str(local), target, recursive=Path(local).is_dir())

    def remove(self, data_id: str) -> None:
        target = self.path(data_id)
        if self.fs.exists(target):
            self.fs.rm(target, recursive=True)


def _remove_local(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
