"""Store dask blocks as Zarr chunks from dask tasks: v2 directly, v3 through zarr-python.

zarr-python 3 routes every chunk write through its event loop and thread pool,
which cost about 5 ms per chunk here, three times the compression itself (see
docs/performance.md). Zarr v2 chunks are simple (the C-order bytes of the
full-size chunk, passed through the filters and compressor named in
``.zarray``), so once xarray and zarr have written the metadata, each dask task
encodes and stores its own block. Zarr v3 codecs are richer, so there each task
hands its block to zarr-python (``array[region] = block``); either way one task
stores one chunk, which lets an interrupted write resume chunk by chunk
(resume.py). Metadata, coordinates and consolidation stay with xarray and zarr.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import dask.array as da
import numcodecs
import numpy as np
import xarray as xr
from dask.highlevelgraph import HighLevelGraph
from xarray.conventions import encode_cf_variable

from .resume import ChunkJournal


def chunk_writes(
    ds: xr.Dataset,
    encoding: Mapping[str, Mapping[str, Any]],
    fs: Any,
    root: str,
    journal: ChunkJournal | None = None,
    done: frozenset[str] = frozenset(),
) -> list[Any]:
    """Dask arrays whose computation stores every block of ``ds`` into the Zarr v2 group at ``root``.

    The group's arrays must already exist (``to_zarr(compute=False, encoding=encoding)``)
    with chunks equal to the dask chunks; ``encoding`` is the one given to ``to_zarr``,
    so values are CF-encoded (fill values, dtype, scale/offset) exactly as xarray would.
    Each returned array has one 1-element block per stored chunk (``map_blocks``, so the
    store step fuses with the blockwise steps before it).

    ``journal`` records every stored chunk (for resuming); chunks in ``done`` (keys like
    ``"var/0.1"``, already stored and verified) are left out of the graph, so neither they
    nor their inputs are computed again.
    """
    writes = []
    for name, var in ds.variables.items():
        if not isinstance(var.data, da.Array):
            continue  # numpy variables were written with the metadata
        meta = json.loads(fs.cat_file(f"{root}/{name}/.zarray"))
        var = var.copy(deep=False)
        if name in encoding:  # xarray replaces a variable's encoding by the one given
            var.encoding = dict(encoding[name])
        encoded = var.data if _stored_as_is(var) else encode_cf_variable(var, name=name).data
        _check_chunks(name, encoded, meta["chunks"])
        spec = _ChunkSpec.from_meta(meta)
        put = encoded.map_blocks(
            _put_block,
            spec=spec,
            prefix=f"{root}/{name}/",
            fs=fs,
            journal=journal,
            chunks=tuple((1,) * len(c) for c in encoded.chunks),
            dtype=bool,
            meta=np.empty((0,) * encoded.ndim, dtype=bool),
            token=f"zarr-put-{name}",
        )
        stored = _stored_blocks(put, done, name, spec.chunk_key)
        writes.append(_skip_stored(put, stored))
    return writes


def array_writes(
    ds: xr.Dataset,
    encoding: Mapping[str, Mapping[str, Any]],
    group: Any,
    root: str,
    fs: Any,
    journal: ChunkJournal | None = None,
    done: frozenset[str] = frozenset(),
) -> list[Any]:
    """As ``chunk_writes``, for Zarr v3: each block is written through zarr-python
    (``array[region] = block``, the codec pipeline of ``zarr.json``) into ``group``,
    opened at ``root``; ``done`` keys look like ``"var/c/0/1"``."""
    writes = []
    for name, var in ds.variables.items():
        if not isinstance(var.data, da.Array):
            continue
        var = var.copy(deep=False)
        if name in encoding:
            var.encoding = dict(encoding[name])
        encoded = var.data if _stored_as_is(var) else encode_cf_variable(var, name=name).data
        array = group[str(name)]
        _check_chunks(name, encoded, list(array.chunks))
        written = encoded.map_blocks(
            _put_array_block,
            put=_ArrayPut(array, f"{root}/{name}", fs, journal),
            chunks=tuple((1,) * len(c) for c in encoded.chunks),
            dtype=bool,
            meta=np.empty((0,) * encoded.ndim, dtype=bool),
            token=f"zarr3-put-{name}",
        )
        stored = _stored_blocks(written, done, name, array.metadata.encode_chunk_key)
        writes.append(_skip_stored(written, stored))
    return writes


def _stored_blocks(
    put: da.Array, done: frozenset[str], name: str, chunk_key: Callable[[tuple[int, ...]], str]
) -> set[tuple[int, ...]]:
    """Block indices of ``put`` whose chunks are in ``done`` (keys ``"var/<chunk key>"``)."""
    if not any(k.startswith(f"{name}/") for k in done):
        return set()
    return {i for i in np.ndindex(*put.numblocks) if f"{name}/{chunk_key(i)}" in done}


def _skip_stored(put: da.Array, stored: set[tuple[int, ...]]) -> da.Array:
    """``put`` with the blocks in ``stored`` made constants.

    Culling a wave's graph then drops those blocks' inputs, so a resumed write
    computes only the missing chunks, and it is still one array that
    ``row_band_waves`` cuts into bounded waves (per-chunk delayed objects would
    put the whole cube's graph into one compute call).
    """
    if not stored:
        return put
    name = f"resumed-{put.name}"
    true = np.ones((1,) * put.ndim, dtype=bool)
    # a constant, or an alias of the put task (plain tuples: 5x faster to build than
    # task-spec nodes, 0.1 s at 10^5 blocks)
    layer = {
        (name, *index): true if index in stored else (put.name, *index)
        for index in np.ndindex(*put.numblocks)
    }
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[put])
    return da.Array(graph, name, put.chunks, meta=put._meta)


class _ArrayPut:
    """Writes one block as one chunk of a zarr-python array and journals it."""

    def __init__(self, array: Any, prefix: str, fs: Any, journal: ChunkJournal | None):
        self.array, self.prefix, self.fs, self.journal = array, prefix, fs, journal

    def __call__(self, block: np.ndarray, index: tuple[int, ...]) -> bool:
        chunks = self.array.chunks
        region = tuple(
            slice(i * c, i * c + n) for i, c, n in zip(index, chunks, np.shape(block), strict=True)
        )
        self.array[region] = block
        if self.journal is None:
            return True
        key = f"{self.prefix}/{self.array.metadata.encode_chunk_key(index)}"
        try:  # all-fill chunks are not stored (write_empty_chunks: false)
            data = self.fs.cat_file(key)
        except FileNotFoundError:
            data = None
        self.journal.record(key, data)
        return data is not None


def _put_array_block(block: np.ndarray, put: _ArrayPut, block_id=None) -> np.ndarray:
    return np.full((1,) * np.ndim(block), put(block, tuple(block_id)))


def metadata_template(
    ds: xr.Dataset, encoding: Mapping[str, Mapping[str, Any]] | None = None
) -> xr.Dataset:
    """``ds`` with each dask array swapped for an empty one with the same chunks.

    ``to_zarr(compute=False)`` on it writes the same metadata and numpy variables
    without first building the graph of the real work, which would be thrown away.
    """

    encoding = encoding or {}

    def swap(name: Any, var: xr.Variable) -> xr.Variable:
        if not isinstance(var.data, da.Array):
            return var
        # Zarr chunks given in the encoding: one dask chunk writes the same metadata with a
        # one-task graph instead of one task per chunk (seconds at 10^5 chunks).
        fixed = "chunks" in encoding.get(name, {}) and all(var.shape)
        empty = da.empty(var.shape, dtype=var.dtype, chunks=var.shape if fixed else var.chunks)
        return xr.Variable(var.dims, empty, var.attrs, var.encoding)

    return xr.Dataset(
        {name: swap(name, var.variable) for name, var in ds.data_vars.items()},
        coords={name: swap(name, var.variable) for name, var in ds.coords.items()},
        attrs=ds.attrs,
    )


def _put_block(
    block: np.ndarray,
    spec: _ChunkSpec,
    prefix: str,
    fs: Any,
    journal: ChunkJournal | None = None,
    block_id=None,
):
    key = prefix + spec.chunk_key(block_id)
    stored = _put_chunk(block, key, spec, fs, journal)
    return np.full((1,) * np.ndim(block), stored)


# Encodings that change the stored values of an integer variable.
_VALUE_ENCODINGS = frozenset({"scale_factor", "add_offset", "units", "calendar", "_Unsigned"})


def _stored_as_is(var: xr.Variable) -> bool:
    """Whether CF encoding leaves the values untouched, so no encoding task is needed.

    For integers xarray's only step is filling missing values, which integers
    cannot have; it still costs a ``where`` over every chunk.
    """
    enc = var.encoding
    return (
        var.dtype.kind in "iu"
        and var.dtype.isnative
        and not (_VALUE_ENCODINGS & (enc.keys() | var.attrs.keys()))
        and np.dtype(enc.get("dtype", var.dtype)) == var.dtype
    )


class _ChunkSpec:
    def __init__(self, chunks, dtype, fill_value, order, compressor, filters, separator):
        self.chunks = tuple(chunks)
        self.dtype = dtype
        self.fill_value = fill_value
        self.order = order
        self.compressor = compressor
        self.filters = filters
        self.separator = separator

    @classmethod
    def from_meta(cls, meta: dict) -> _ChunkSpec:
        dtype = np.dtype(meta["dtype"])
        fill = meta.get("fill_value")
        if isinstance(fill, str) and dtype.kind == "f":  # "NaN", "Infinity", "-Infinity"
            fill = float(fill.replace("Infinity", "inf"))
        return cls(
            chunks=meta["chunks"],
            dtype=dtype,
            fill_value=fill,
            order=meta.get("order", "C"),
            compressor=numcodecs.get_codec(meta["compressor"]) if meta.get("compressor") else None,
            filters=[numcodecs.get_codec(f) for f in meta.get("filters") or []],
            separator=meta.get("dimension_separator") or ".",
        )

    def chunk_key(self, index: tuple[int, ...]) -> str:
        """The v2 key of chunk ``index`` inside its array, e.g. ``"0.1"`` (``"0"`` for 0-d)."""
        return self.separator.join(map(str, index)) or "0"

    def is_empty(self, block: np.ndarray) -> bool:
        """All fill: not stored, as zarr does with ``write_empty_chunks=False``."""
        if self.fill_value is None:
            return False
        first = block.flat[0] if block.size else self.fill_value
        if isinstance(self.fill_value, float) and np.isnan(self.fill_value):
            if block.dtype.kind != "f" or not np.isnan(first):
                return False
            return bool(np.isnan(block).all())
        return first == self.fill_value and bool((block == self.fill_value).all())


def _put_chunk(
    block: np.ndarray, key: str, spec: _ChunkSpec, fs: Any, journal: ChunkJournal | None = None
) -> bool:
    """Store one chunk; False when it is all fill and therefore not stored."""
    block = np.asarray(block).astype(spec.dtype, copy=False)
    if spec.is_empty(block):
        if journal is not None:
            journal.record(key, None)
        return False
    if block.shape != spec.chunks:  # edge chunks are stored full size, padded with fill
        padded = np.full(
            spec.chunks, spec.fill_value if spec.fill_value is not None else 0, spec.dtype
        )
        padded[tuple(slice(0, n) for n in block.shape)] = block
        block = padded
    data: Any = np.ascontiguousarray(block) if spec.order == "C" else np.asfortranarray(block)
    for codec in spec.filters:
        data = codec.encode(data)
    if spec.compressor is not None:
        data = spec.compressor.encode(data)
    data = bytes(memoryview(data)) if not isinstance(data, bytes) else data
    fs.pipe_file(key, data)
    if journal is not None:
        journal.record(key, data)
    return True


def _check_chunks(name: str, array: da.Array, chunks: list[int]) -> None:
    for dim_chunks, size in zip(array.chunks, chunks, strict=True):
        if any(c != size for c in dim_chunks[:-1]) or dim_chunks[-1] > size:
            raise ValueError(
                f"dask chunks of {name!r} {array.chunks} do not match zarr chunks {chunks}"
            )
