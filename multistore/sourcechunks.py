"""Source chunks from the file's own block layout, when the config names none (issue 11.3).

xcube's openers chunk badly by default for a streaming regridder: its GeoTIFF
opener lets dask pick ("auto": one chunk per whole band), its NetCDF opener
gives no dask chunks at all (the whole variable is loaded at once), and Zarr
sources come in the store's chunks, which may be tiny. Each warp task reads
the source chunks under its window, so chunks should be whole multiples of
the file's blocks (no block decoded for two chunks), about 512 px on a side
(the size that measured best for 1000 px target tiles: several chunks per
window, few re-reads at window edges), and one plane deep along other dims.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import xarray as xr

from .grid import xy_names
from .stores.contract import file_path, file_store

LOG = logging.getLogger(__name__)

# Aimed-at chunk edge in source pixels along x and y (rounded up to whole blocks).
CHUNK_EDGE = 512

# Open params through which users choose chunks themselves.
_USER_CHUNK_PARAMS = ("tile_size", "chunks")


def aligned_edge(block: int, size: int, edge: int = CHUNK_EDGE) -> int:
    """The whole number of blocks closest above ``edge`` pixels, at most the dim size."""
    block = max(1, int(block))
    return min(int(size), block * max(1, math.ceil(edge / block)))


def reopen_params(
    ds: xr.Dataset,
    params: Mapping[str, Any],
    declared: set[str],
    accepts_any: bool,
    geotiff_blocks: Any = None,
) -> dict[str, Any] | None:
    """Open params to reopen ``ds`` with block-aligned chunks, or None when it is fine as is.

    ``declared`` are the opener's open params, ``accepts_any`` whether it
    passes unknown ones on to xarray. ``geotiff_blocks()`` returns the
    (width, height, block width, block height) of a raster source.
    """
    if any(k in params for k in _USER_CHUNK_PARAMS):
        return None
    if "tile_size" in declared:
        layout = geotiff_blocks() if geotiff_blocks is not None else None
        if layout is None:
            return None
        width, height, bw, bh = layout
        # xcube's GeoTIFF opener requires at least 512; dask clips a chunk to its dim
        tile = [max(CHUNK_EDGE, aligned_edge(bw, width)), max(CHUNK_EDGE, aligned_edge(bh, height))]
        return {**params, "tile_size": tile}
    if "chunks" not in declared and not accepts_any:
        return None
    chunks = _aligned_chunks(ds)
    if chunks is None:
        return None
    return {**params, "chunks": chunks}


def _aligned_chunks(ds: xr.Dataset) -> dict[str, int] | None:
    """Per dim: whole file blocks, about ``CHUNK_EDGE`` along x/y, one block along the others."""
    try:
        x, y = xy_names(ds)
    except Exception:  # no spatial dims: nothing to regrid, keep the opener's chunks
        return None
    chunks: dict[str, int] = {}
    found = False
    for var in ds.data_vars.values():
        if x not in var.dims or y not in var.dims:
            continue
        preferred = var.encoding.get("preferred_chunks") or {}
        found = found or bool(preferred)
        for dim, size in zip(var.dims, var.shape, strict=True):
            block = int(preferred.get(dim, size))
            # an unblocked (contiguous) non-spatial dim is read plane by plane
            plane = 1 if block >= size else block
            edge = aligned_edge(block, size) if dim in (x, y) else plane
            # variables sharing a dim may be blocked differently: keep the smaller choice
            chunks[str(dim)] = min(chunks.get(str(dim), edge), edge)
    if not found:
        return None
    current = {
        str(d): max(c)
        for v in ds.data_vars.values()
        if v.chunks
        for d, c in zip(v.dims, v.chunks, strict=True)
    }
    if current and all(current.get(d) == c for d, c in chunks.items()):
        return None
    return chunks


def raster_layout(store: Any, data_id: str) -> tuple[int, int, int, int] | None:
    """(width, height, block width, block height) of a raster in an fsspec-based store.

    Reads only the file's header; None when the store has no filesystem or
    the file cannot be read as a raster (the opener then reports the error).
    """
    import rasterio
    from rasterio.errors import RasterioError

    files = file_store(store)
    if files is None or files.fs is None:
        return None
    try:
        with files.fs.open(file_path(files, data_id), "rb") as f, rasterio.open(f) as r:
            bh, bw = r.block_shapes[0]
            return r.width, r.height, bw, bh
    except (OSError, ValueError, RasterioError) as e:
        LOG.debug("no block layout for %s: %s", data_id, e)
        return None


def band_variable_names(ds: xr.Dataset) -> list[str] | None:
    """``band_1`` .. ``band_N`` when ``ds`` is exactly the band variables of a raster
    (xcube's and rioxarray's ``band_as_variable: true``), else None."""
    names = [f"band_{i}" for i in range(1, len(ds.data_vars) + 1)]
    if not names or set(map(str, ds.data_vars)) != set(names):
        return None
    return names


def split_bands(multi: xr.Dataset, like: xr.Dataset) -> xr.Dataset | None:
    """``like`` (band variables) with each band's values taken from ``multi``'s one
    (band, y, x) variable, or None when the two do not correspond exactly.

    Opened as band variables, a raster is read band by band: 16 reads, lock
    acquisitions and graph nodes per block instead of one (issue 11). Opened as
    one variable and split here, every band variable is a slice of one
    multi-band block read, so all of them are read at once; names, attrs,
    coords and encoding stay those of ``like``. Values are the same raw pixels:
    both opens decode nothing (no mask/scale), checked by dtype and shape.
    """
    names = band_variable_names(like)
    if names is None or len(multi.data_vars) != 1:
        return None
    arr = next(iter(multi.data_vars.values()))
    first = like[names[0]]
    spatial = first.dims
    if first.ndim != 2 or arr.dims[-2:] != spatial or arr.shape[-2:] != first.shape:
        return None
    if arr.ndim == 2:
        planes = [arr.data] if len(names) == 1 else None
    elif arr.ndim == 3 and arr.shape[0] == len(names):
        planes = [arr.data[i] for i in range(len(names))]
    else:
        planes = None
    if planes is None:
        return None
    out = {}
    for name, plane in zip(names, planes, strict=True):
        var = like[name]
        if var.dims != spatial or var.dtype != arr.dtype or var.shape != first.shape:
            return None
        out[name] = var.copy(data=plane)
    return like.assign(out)
