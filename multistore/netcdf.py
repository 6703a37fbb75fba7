"""Which xarray engine reads a NetCDF file safely under dask's threads.

netCDF-C, behind the ``netcdf4`` engine that xcube's NetCDF opener uses by
default, is not thread-safe: with the PyPI wheels of netCDF4 a threaded dask
build crashes the process now and then even with xarray's locks
(Unidata/netcdf4-python#1452, pydata/xarray#7079); our own test suite hit it.
h5py serialises every HDF5 call behind its own lock, so NetCDF-4 files (HDF5
inside) are read with ``h5netcdf``, and classic files (CDF-1, CDF-2) with
SciPy's reader (NumPy only). Anything else (CDF-5, unknown) keeps xarray's choice.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .stores.contract import file_path, file_store

LOG = logging.getLogger(__name__)

NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# HDF5 finds its superblock at 0 or after a user block of 512, 1024, 2048, ... bytes
_HDF5_OFFSETS = (0, 512, 1024, 2048)
_CLASSIC_SIGNATURES = (b"CDF\x01", b"CDF\x02")
_BYTE_RANGE_PROTOCOLS = {"http", "https"}


def is_netcdf(name: str) -> bool:
    return name.lower().endswith(NETCDF_SUFFIXES)


def engine_for(head: bytes) -> str | None:
    """The engine for a file starting with ``head`` (its first 2056 bytes), or None."""
    if any(head[o : o + len(HDF5_SIGNATURE)] == HDF5_SIGNATURE for o in _HDF5_OFFSETS):
        return "h5netcdf"
    if head[:4] in _CLASSIC_SIGNATURES:
        return "scipy"
    return None


def _head_size() -> int:
    return _HDF5_OFFSETS[-1] + len(HDF5_SIGNATURE)


def engine_for_path(path: str | Path) -> str | None:
    """The engine for a local file, or None when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return engine_for(f.read(_head_size()))
    except OSError:
        return None


def engine_for_store(store: Any, data_id: str) -> str | None:
    """The engine for a NetCDF data id of a filesystem-backed store (one small read).

    None for other data ids and stores, or when the file cannot be read (the
    opener then reports the error).
    """
    files = file_store(store)
    if files is None or files.fs is None or not is_netcdf(data_id):
        return None
    protocols = (
        {files.fs.protocol} if isinstance(files.fs.protocol, str) else set(files.fs.protocol)
    )
    if protocols & _BYTE_RANGE_PROTOCOLS:
        # xcube opens these as "<url>#mode=bytes", netCDF-C's own HTTP reader; other
        # remote files it copies to a local file first
        return None
    try:
        with files.fs.open(file_path(files, data_id), "rb") as f:
            return engine_for(f.read(_head_size()))
    except (OSError, ValueError) as e:
        LOG.debug("cannot sniff the NetCDF flavour of %s: %s", data_id, e)
        return None
