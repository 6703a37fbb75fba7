"""Write cubes into the storage store: Zarr (v2 chunk by chunk, v3), NetCDF, xcube levels.

Each writer clears the marker first and writes it last (see ``storage``), so
an interrupted write is never taken for a finished cube.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from typing import Any

import numcodecs
import numpy as np
import xarray as xr
import zarr

from .errors import WriteError
from .resume import ChunkJournal, start_journal, start_object_journal
from .storage import StorageTarget, clear, resumable_chunks, write_marker, zarr_store
from .zarrchunks import array_writes, chunk_writes, metadata_template

log = logging.getLogger(__name__)

_CF_ENCODING = ("_FillValue", "dtype", "scale_factor", "add_offset", "units", "calendar")


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
    The chunk writes go to ``compute_writes`` (default ``compute``),
    which may compute them in waves (``DaskRunner.compute_in_waves``).
    A write on local storage or an object store resumes an interrupted write of the
    same build, computing only the chunks not yet stored (see resume.py)."""
    store = zarr_store(target)
    ds = with_gdal_crs(ds)
    encoding = encoding_for(ds, zarr_format)
    journaled = target.is_local
    resumable = target.is_local or target.is_object_store
    header = {
        "fingerprint": fingerprint,
        "sources_digest": ds.attrs.get("multistore_sources_digest"),
        "zarr_format": zarr_format,
    }
    done = resumable_chunks(target, header, zarr_format) if resumable else None
    try:
        journal = None
        if done is None:
            clear(target)
            # metadata and numpy variables now; dask blocks by our own tasks (see zarrchunks)
            metadata_template(ds, encoding).to_zarr(
                store, mode="w", compute=False, consolidated=False, zarr_format=zarr_format,
                encoding=encoding,
            )  # fmt: skip
            if journaled:
                journal = start_journal(target.journal_path, target.path, header)
            elif resumable:
                start_object_journal(target.fs, target.journal_path, header)
        else:
            log.info("resuming %s: %d chunk(s) already stored", target.output, len(done))
            if journaled:
                journal = ChunkJournal(target.journal_path, target.path)
        if zarr_format == 2:
            writes = chunk_writes(
                ds, encoding, target.fs, target.path, journal, done or frozenset()
            )
        else:
            group = zarr.open_group(store, mode="r+", zarr_format=3)
            writes = array_writes(
                ds, encoding, group, target.path, target.fs, journal, done or frozenset()
            )
        (compute_writes or compute)(writes)
        with warnings.catch_warnings():  # consolidated metadata is not in the v3 spec (yet)
            warnings.simplefilter("ignore", category=UserWarning)
            zarr.consolidate_metadata(store, zarr_format=zarr_format)
    except Exception as e:
        raise WriteError(f"writing {target.output} failed: {type(e).__name__}: {e}") from e
    write_marker(target, fingerprint, ds, sources)


def write_netcdf(
    ds: xr.Dataset,
    target: StorageTarget,
    fingerprint: str,
    compute: Callable[[Any], Any],
    sources: dict[str, str] | None = None,
) -> None:
    """Write ``ds`` as NetCDF4 via a local temporary file, then upload and mark."""
    clear(target)
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
            compute(ds.to_netcdf(local, engine="h5netcdf", encoding=encoding, compute=False))
            parent = target.path.rsplit("/", 1)[0]
            if parent != target.path:
                target.fs.makedirs(parent, exist_ok=True)
            target.fs.put_file(local, target.path)
        except Exception as e:
            raise WriteError(f"writing {target.output} failed: {type(e).__name__}: {e}") from e
    write_marker(target, fingerprint, ds, sources)


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

    clear(target)
    x_name, y_name = xy_names(ds)
    chunks = ds.chunksizes
    tile = [max(chunks.get(name, (ds.sizes[name],))) for name in (x_name, y_name)]
    plain = ds.copy()
    for var in plain.variables.values():
        var.encoding = {k: v for k, v in var.encoding.items() if k in _CF_ENCODING}
    try:
        FsMultiLevelDataset.write_dataset(
            plain, target.path, fs=target.fs, replace=True, tile_size=tile, zarr_format=2
        )
    except Exception as e:
        raise WriteError(f"writing {target.output} failed: {type(e).__name__}: {e}") from e
    write_marker(target, fingerprint, ds, sources)
