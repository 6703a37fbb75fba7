"""Tile-level resume: every fetched chunk is kept as ``.npy`` under ``tile_cache``.

A rerun after a crash (or a second dataset needing the same pixels) reads the
chunks already fetched and requests only the missing ones, independently of
how the cube writer records its own progress. Keys hash everything that
determines the pixels (expression recipe, bands, types, grid window), so a
changed config never reads stale tiles. Writes are atomic (temporary file
then rename on local disks; object stores write whole objects), so a crash
mid-write leaves no half tile.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import uuid
from typing import Any

import fsspec
import numpy as np

LOG = logging.getLogger(__name__)


def tile_key(parts: Any) -> str:
    """A stable hash of a JSON-able description of a tile's content."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:40]


class TileCache:
    """``.npy`` files under ``root/<data id>/`` (a local folder or any fsspec URL)."""

    def __init__(self, root: str, data_id: str, storage_options: dict[str, Any] | None = None):
        self.root = root
        self.storage_options = dict(storage_options or {})
        self._fs, base = fsspec.core.url_to_fs(root, **self.storage_options)
        self._dir = f"{base.rstrip('/')}/{re.sub(r'[^A-Za-z0-9_.-]', '_', data_id)}"
        self._local = "file" in _protocols(self._fs)
        self._fs.makedirs(self._dir, exist_ok=True)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "data_id_dir": self._dir,
            "storage_options": self.storage_options,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.root, self.storage_options = state["root"], state["storage_options"]
        self._fs, _ = fsspec.core.url_to_fs(self.root, **self.storage_options)
        self._dir = state["data_id_dir"]
        self._local = "file" in _protocols(self._fs)

    def _path(self, key: str) -> str:
        return f"{self._dir}/{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        path = self._path(key)
        try:
            data = self._fs.cat_file(path)
        except FileNotFoundError:
            return None
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError:
            LOG.warning("earthengine: unreadable cached tile %s; fetching it again", path)
            return None

    def put(self, key: str, arr: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        path = self._path(key)
        if self._local:
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            with open(tmp, "wb") as f:
                f.write(buf.getvalue())
            os.replace(tmp, path)
        else:
            self._fs.pipe_file(path, buf.getvalue())

    def keys(self) -> list[str]:
        try:
            names = self._fs.ls(self._dir, detail=False)
        except FileNotFoundError:
            return []
        return sorted(os.path.basename(n)[: -len(".npy")] for n in names if n.endswith(".npy"))


def _protocols(fs: Any) -> tuple[str, ...]:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)
