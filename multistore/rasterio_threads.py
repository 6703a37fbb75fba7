"""Let rasterio datasets opened through a Python opener be closed from any thread.

rasterio 1.4 keeps the exit stacks of files opened through ``opener=`` (fsspec files:
Zenodo rasters over HTTP, xcube's GeoTIFFs on remote filesystems) in a ``ContextVar``
set only in the importing thread's context. A dataset opened in a dask worker thread
and closed elsewhere (xarray's file cache, garbage collection) raises ``LookupError``
inside GDAL's close callback, leaves GDAL's handle half-closed and can later crash
the process. One registry for all threads is what closing needs.
"""

from __future__ import annotations

from typing import Any


class _SharedRegistry:
    """A ``ContextVar`` stand-in holding one value for every thread and context."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def get(self, *default: Any) -> Any:
        return self._value

    def set(self, value: Any) -> None:
        self._value = value

    def reset(self, token: Any) -> None:  # tokens are never handed out
        pass


def share_opener_registry() -> None:
    """Install the shared registry once (idempotent; no-op without the private name)."""
    try:
        from rasterio import _vsiopener
    except ImportError:
        return
    current = getattr(_vsiopener, "_OPEN_FILE_EXIT_STACKS", None)
    if current is None or isinstance(current, _SharedRegistry):
        return
    try:
        value = current.get()
    except LookupError:
        value = {}
    _vsiopener._OPEN_FILE_EXIT_STACKS = _SharedRegistry(value)
