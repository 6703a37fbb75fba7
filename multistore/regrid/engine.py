"""``regrid_dataset``: put every spatial variable of a source onto a ``TargetGrid``.

The result is lazy, one dask block per output tile per plane. Behind them,
one warp task per tile and group of planes reads only the source chunks that
overlap the tile's source window (planned once, see ``plan.py``; read inside
the task, see ``reader.py``) and warps them (``kernel.py``). Peak memory
therefore follows chunk size x workers, not cube size. docs/performance.md
explains the choices and their measurements.
"""

from __future__ import annotations

import bisect
import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import pyproj
import xarray as xr
from affine import Affine
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph
from rasterio.crs import CRS

from ..errors import NoOverlapError, RegridError
from ..grid import TargetGrid
from . import plan
from .kernel import (
    Piece,
    PlaneGroup,
    TileTask,
    VarSpec,
    convert_block,
    fill_block,
    needs_conversion,
    take_plane,
    warp_group,
    warp_group_reading,
)
from .methods import (
    AGGREGATING_METHODS,
    KERNEL_RADIUS,
    ResampleParams,
    parse_params,
    resolve_methods,
)
from .reader import SourceGraph
from .source import SourceGrid, detect_source_grid, kind_dtype, spatial_variables
from .specs import out_attrs, var_spec, with_encoding

LOG = logging.getLogger(__name__)

# Chunk size for sources held in memory as numpy arrays (no copy is made).
_NUMPY_SOURCE_CHUNK = 2048

# Memory budgets of one warp task: output planes, and source blocks it depends on.
_GROUP_OUT_BYTES = 32 * 2**20
_GROUP_IN_BYTES = 256 * 2**20


def regrid_dataset(
    ds: xr.Dataset, target: TargetGrid, params: Mapping[str, Any] | None = None
) -> xr.Dataset:
    """Regrid ``ds`` onto ``target`` lazily (see docs/performance.md for the design).

    ``params`` is the raw ``spatial_resample_params`` mapping of the config.
    Raises ``NoOverlapError`` when the source misses the target grid and
    ``SourceGridError`` when the source's grid cannot be understood.
    """
    p = parse_params(params)
    ds = _select_variables(ds, p)
    grid = detect_source_grid(ds)
    spatial, other, partial = spatial_variables(ds, grid)
    for name in partial:
        LOG.warning(
            "dropping variable %r: it has only one of the spatial dims %r/%r",
            name,
            grid.x_dim,
            grid.y_dim,
        )
    gm_names = _grid_mapping_names(ds)
    other = [n for n in other if n not in gm_names]
    if not spatial:
        raise RegridError(
            f"no data variable has both spatial dims {grid.y_dim!r} and {grid.x_dim!r}"
        )

    own = grid.as_target_grid(target.tile_size)
    if own is not None and target.same_grid(own):
        data = {name: _passthrough(ds[name], grid, target, p) for name in spatial}
    else:
        data = _warp_variables(ds, spatial, grid, target, p)

    coords = dict(target.coords())
    for name, coord in ds.coords.items():
        if name in (grid.x_dim, grid.y_dim) or name in gm_names:
            continue
        if grid.x_dim in coord.dims or grid.y_dim in coord.dims:
            continue
        coords[name] = coord
    # a dataset-level CRS attribute would describe the source grid, not the output's
    attrs = {k: v for k, v in ds.attrs.items() if k != "crs"}
    out = xr.Dataset(data, coords=coords, attrs=attrs)
    for name in other:
        out[name] = ds[name]
    return out


# -- warping ----------------------------------------------------------------------------


def _warp_variables(
    ds: xr.Dataset, names: list[str], grid: SourceGrid, target: TargetGrid, p: ResampleParams
) -> dict[str, xr.DataArray]:
    fp = plan.footprints(grid, target)
    scale = fp.scale(target)
    if not np.isfinite(scale).any() or not plan.overlaps(fp, grid):
        raise NoOverlapError(_no_overlap_message(grid, target))
    coarser = fp.is_coarser(target)
    methods = resolve_methods({n: kind_dtype(ds[n]) for n in names}, p, coarser)
    windows_by_method: dict[str, list[list[plan.SourceWindow | None]]] = {}
    # Variables warped together: same method, same dtype/nodata handling, same spatial chunks
    # (e.g. the bands of a GeoTIFF opened with band_as_variable: true).
    batches: dict[tuple, list[_Member]] = {}
    for name in names:
        method = methods[name]
        if method not in windows_by_method:
            aggregating = method in AGGREGATING_METHODS
            radius = 1 if aggregating else KERNEL_RADIUS[method]
            # Interpolating kernels widen with the scale only when GDAL downsamples.
            windows_by_method[method] = plan.windows(
                fp, grid, target, radius, scale_margin=aggregating or coarser
            )
        var = ds[name]
        norm = grid.normalise(var)
        src = norm.data
        if not isinstance(src, da.Array):
            src = da.from_array(
                src, chunks=(1,) * (src.ndim - 2) + (_NUMPY_SOURCE_CHUNK, _NUMPY_SOURCE_CHUNK)
            )
        spec = var_spec(var, p, method)
        key = (method, repr(spec), src.chunks[-2:])
        batches.setdefault(key, []).append(_Member(var, norm.dims[:-2], src, spec))
    out = {}
    for (method, _, _), members in batches.items():
        windows = windows_by_method[method]
        out.update(_warp_batch(members, grid, target, windows, fp if method == "nearest" else None))
    LOG.debug("regrid %s -> %s, methods %s", grid.crs.name, target.describe(), methods)
    return out


@dataclass(frozen=True, eq=False)
class _Member:
    """One variable of a batch: its source in normal form and how it is warped."""

    var: xr.DataArray
    extra_dims: tuple
    src: da.Array
    spec: VarSpec


def _warp_batch(
    members: list[_Member],
    grid: SourceGrid,
    target: TargetGrid,
    windows: list[list[plan.SourceWindow | None]],
    lattice_from: plan.Footprints | None,
) -> dict[str, xr.DataArray]:
    """Warp variables that share a method and spatial chunks in the same tasks.

    Their planes are stacked into the plane groups of one warp task per tile,
    so coordinates are computed once per tile for all of them: 16 band
    variables cost what one 16-band variable costs.
    """
    spec = members[0].spec
    window_bounds = _window_bounds(windows)
    lattices = None
    if lattice_from is not None and lattice_from.lattice is not None:
        # each tile's lattice relative to its window's corner (col, row), for all tiles at once
        corner = np.nan_to_num(window_bounds.reshape(len(windows), -1, 5)[..., [2, 0]])
        lattices = lattice_from.lattice - corner[..., None, None]
    tiles = _tile_tasks(members[0].src, grid, target, windows, lattices, lattice_from)
    out_names = [
        f"regrid-{m.var.name}-" + tokenize(m.src.name, target.to_dict(), m.spec, window_bounds)
        for m in members
    ]
    group_name = "warp-" + tokenize(*out_names)
    planes = [
        (vi, plane)
        for vi, m in enumerate(members)
        for plane in itertools.product(*(range(n) for n in m.src.shape[:-2]))
    ]
    per_group = min(_planes_per_group(m.src, target, m.spec, tiles) for m in members)
    groups = [planes[i : i + per_group] for i in range(0, len(planes), per_group)]
    locators = [_plane_locator(m.src) for m in members]
    warp_inputs: dict[tuple, tuple[TileTask, PlaneGroup, tuple]] = {}
    out_dsks: list[dict[tuple, Any]] = [{} for _ in members]
    for (ti, tj), tile in tiles.items():
        if tile is None:
            for vi, plane in planes:
                shape = (1,) * len(plane) + _tile_shape(target, ti, tj)
                out_dsks[vi][(out_names[vi], *plane, ti, tj)] = (fill_block, shape, spec)
            continue
        for gi, group in enumerate(groups):
            inputs: dict[tuple, int] = {}
            refs = []
            for vi, plane in group:
                chunk_idx, local = locators[vi](plane)
                src_name = members[vi].src.name
                positions = tuple(
                    inputs.setdefault(
                        (src_name, *chunk_idx, pc.row_chunk, pc.col_chunk), len(inputs)
                    )
                    for pc in tile.pieces
                )
                refs.append((local, positions))
            group_key = (group_name, gi, ti, tj)
            warp_inputs[group_key] = (tile, PlaneGroup(tuple(refs)), tuple(inputs))
            for k, (vi, plane) in enumerate(group):
                out_dsks[vi][(out_names[vi], *plane, ti, tj)] = (
                    take_plane,
                    group_key,
                    k,
                    len(plane),
                )
    source = SourceGraph(*(m.src for m in members))
    if source.can_inline(keys for _, _, keys in warp_inputs.values()):
        readers = source.readers(keys for _, _, keys in warp_inputs.values())
        warp_dsk = {
            key: (warp_group_reading, tile, spec, group, reader)
            for (key, (tile, group, _)), reader in zip(warp_inputs.items(), readers, strict=True)
        }
        warp_graph = HighLevelGraph.from_collections(group_name, warp_dsk, dependencies=[])
    else:
        LOG.debug(
            "variables %s: source graph shares work between chunks; tasks share chunks",
            [str(m.var.name) for m in members],
        )
        warp_dsk = {
            key: (warp_group, tile, spec, group, *keys)
            for key, (tile, group, keys) in warp_inputs.items()
        }
        warp_graph = HighLevelGraph.from_collections(
            group_name, warp_dsk, dependencies=[m.src for m in members]
        )
    out = {}
    for m, out_name, out_dsk in zip(members, out_names, out_dsks, strict=True):
        graph = HighLevelGraph(
            {**warp_graph.layers, out_name: out_dsk},
            {**warp_graph.dependencies, out_name: {group_name}},
        )
        extra_shape = m.src.shape[:-2]
        chunks = tuple((1,) * n for n in extra_shape) + target.chunks
        arr = da.Array(graph, out_name, chunks=chunks, dtype=m.spec.out_dtype)
        dims = (*m.extra_dims, target.y_name, target.x_name)
        name = str(m.var.name)
        out[name] = xr.DataArray(arr, dims=dims, attrs=out_attrs(m.var), name=name).pipe(
            with_encoding, m.var, m.spec
        )
    return out


def _tile_tasks(
    src: da.Array,
    grid: SourceGrid,
    target: TargetGrid,
    windows: list[list[plan.SourceWindow | None]],
    lattices: np.ndarray | None = None,
    lattice_from: plan.Footprints | None = None,
) -> dict[tuple[int, int], TileTask | None]:
    """Per output tile: its source window, how to assemble it from chunks, and geometry.

    With ``lattices`` (nearest: each tile's lattice in its window's pixels), tiles
    whose coordinates interpolate exactly enough (``lattice_from.lattice_ok``)
    carry their lattice so the task can gather by index.
    """
    lattice_ok = (
        lattice_from.lattice_ok.tolist()
        if lattices is not None and lattice_from is not None and lattice_from.lattice_ok is not None
        else None
    )
    # plain ints and lists: this loop runs once per tile (10^5 tiles on big grids)
    row_bounds = list(itertools.accumulate(src.chunks[-2], initial=0))
    col_bounds = list(itertools.accumulate(src.chunks[-1], initial=0))
    tile_rows, tile_cols = target.chunks
    row_offsets = list(itertools.accumulate(tile_rows, initial=0))
    col_offsets = list(itertools.accumulate(tile_cols, initial=0))
    period = grid.period
    dst_crs_wkt = CRS.from_wkt(target.crs_wkt).to_wkt()
    base_src_wkt = CRS.from_wkt(grid.crs.to_wkt()).to_wkt()
    corners = grid.corner_geoloc if grid.is_curvilinear else None
    tiles: dict[tuple[int, int], TileTask | None] = {}
    for ti, line in enumerate(windows):
        for tj, w in enumerate(line):
            if w is None:
                tiles[ti, tj] = None
                continue
            runs = plan.column_runs(w, grid.width, period)
            pieces = []
            for r_chunk in _overlapping(row_bounds, w.r0, w.r1):
                r_start = row_bounds[r_chunk]
                rs = max(w.r0, r_start)
                re = min(w.r1, row_bounds[r_chunk + 1])
                for win_c, src_c, n in runs:
                    for c_chunk in _overlapping(col_bounds, src_c, src_c + n):
                        c_start = col_bounds[c_chunk]
                        cs = max(src_c, c_start)
                        ce = min(src_c + n, col_bounds[c_chunk + 1])
                        pieces.append(
                            Piece(
                                row_chunk=r_chunk,
                                col_chunk=c_chunk,
                                src=(
                                    slice(rs - r_start, re - r_start),
                                    slice(cs - c_start, ce - c_start),
                                ),
                                dst=(
                                    slice(rs - w.r0, re - w.r0),
                                    slice(win_c + cs - src_c, win_c + ce - src_c),
                                ),
                            )
                        )
            covered = sum(n for _, _, n in runs)
            window_box = _translated(target.transform, col_offsets[tj], row_offsets[ti])
            geoloc = None
            src_transform = None
            window_shape = w.shape
            gaps = covered < (w.c1 - w.c0)
            if corners is not None:
                # GDAL reads geolocation arrays as pixel corners: hand it the window's corners,
                # one more than pixels each way, and pad the window with one masked row and
                # column so both have the same shape (see SourceGrid.corner_geoloc).
                geoloc = corners[:, w.r0 : w.r1 + 1, w.c0 : w.c1 + 1]
                window_shape = (w.r1 - w.r0 + 1, w.c1 - w.c0 + 1)
                gaps = True
                src_wkt = base_src_wkt
            else:
                src_transform = _translated(grid.transform, w.c0, w.r0)
                src_wkt = (
                    _wrapped_wkt(base_src_wkt, w.center_lon)
                    if w.center_lon is not None
                    else base_src_wkt
                )
            lattice = None
            # the lattice is in coordinates wrapped around the tile, not around 0 deg
            if lattice_ok is not None and lattice_ok[ti][tj] and not w.whole_globe:
                lattice = lattices[ti, tj]
            tiles[ti, tj] = TileTask(
                window_shape=window_shape,
                pieces=tuple(pieces),
                gaps=gaps,
                src_crs_wkt=src_wkt,
                src_transform=src_transform,
                geoloc=geoloc,
                dst_crs_wkt=dst_crs_wkt,
                dst_transform=window_box,
                dst_shape=(tile_rows[ti], tile_cols[tj]),
                lattice=lattice,
            )
    return tiles


def _tile_shape(target: TargetGrid, ti: int, tj: int) -> tuple[int, int]:
    return target.chunks[0][ti], target.chunks[1][tj]


def _planes_per_group(
    src: da.Array, target: TargetGrid, spec: VarSpec, tiles: Mapping[tuple[int, int], Any]
) -> int:
    """How many planes one task warps: as many as fit the memory budgets.

    GDAL transforms coordinates once per call for all planes, so grouping
    cuts the cost per plane several times; the budgets keep task memory flat.
    """
    item = max(spec.work_dtype.itemsize, spec.out_dtype.itemsize)
    out_plane = target.tile_size[0] * target.tile_size[1] * item
    pieces = max((len(t.pieces) for t in tiles.values() if t is not None), default=1)
    block = max(src.chunks[-2]) * max(src.chunks[-1]) * src.dtype.itemsize
    # planes held per source block (a block spanning several planes serves them all)
    planes_per_block = max(1, int(np.prod([max(c) for c in src.chunks[:-2]], dtype=int)))
    in_plane = pieces * block / planes_per_block
    n = min(_GROUP_OUT_BYTES // max(out_plane, 1), _GROUP_IN_BYTES // max(int(in_plane), 1))
    return max(1, int(n))


def _plane_locator(src: da.Array):
    """plane index -> (chunk index along non-spatial dims, index inside that chunk)."""
    bounds = [np.cumsum((0,) + c) for c in src.chunks[:-2]]

    def locate(plane: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        chunk = tuple(
            int(np.searchsorted(b, i, side="right") - 1) for b, i in zip(bounds, plane, strict=True)
        )
        local = tuple(i - int(b[c]) for b, i, c in zip(bounds, plane, chunk, strict=True))
        return chunk, local

    return locate


def _overlapping(bounds: list[int], start: int, stop: int) -> range:
    """The chunks (between ``bounds``) that pixels ``start:stop`` fall in."""
    first = bisect.bisect_right(bounds, start) - 1
    last = bisect.bisect_left(bounds, stop) - 1
    return range(max(first, 0), min(last, len(bounds) - 2) + 1)


def _translated(t: Affine, x: float, y: float) -> tuple[float, ...]:
    """The coefficients of ``t @ Affine.translation(x, y)``, the same arithmetic, without
    building Affine objects per tile (a sixth of the plan's time on grids of 10^5 tiles)."""
    a, b, c, d, e, f = t[:6]
    return (a, b, a * x + b * y + c, d, e, d * x + e * y + f)


def _wrapped_wkt(wkt: str, center_lon: float) -> str:
    """A geographic CRS whose longitudes GDAL wraps into [center-180, center+180]."""
    ext = f'EXTENSION["CENTER_LONG",{center_lon:.12g}]'
    marker = ',AUTHORITY["'
    last_authority = wkt.rfind(marker)
    if last_authority != -1 and wkt.endswith("]]") and wkt.count("[", last_authority) == 1:
        return f"{wkt[:last_authority]},{ext}{wkt[last_authority:]}"
    return f"{wkt[:-1]},{ext}]"


def _window_bounds(windows: list[list[plan.SourceWindow | None]]) -> np.ndarray:
    """The windows as one array (NaN: no window or no centre), tokenized as bytes:
    a nested list of 10^5 tuples takes dask's tokenizer half a second."""
    nan = float("nan")
    return np.array(
        [
            [
                (nan,) * 5
                if w is None
                else (w.r0, w.r1, w.c0, w.c1, nan if w.center_lon is None else w.center_lon)
                for w in line
            ]
            for line in windows
        ],
        dtype=np.float64,
    ).reshape(len(windows), -1)


def _no_overlap_message(grid: SourceGrid, target: TargetGrid) -> str:
    west, south, east, north = grid.bounds()
    try:
        transformer = pyproj.Transformer.from_crs(grid.crs, target.crs, always_xy=True)
        src_bounds = transformer.transform_bounds(west, south, east, north, densify_pts=21)
        where = "in the target CRS"
    except pyproj.exceptions.ProjError:
        src_bounds = (west, south, east, north)
        where = "in the source CRS"
    fmt = ", ".join(f"{v:.6g}" for v in src_bounds)
    tgt = ", ".join(f"{v:.6g}" for v in target.bounds)
    return (
        f"the source does not overlap the target grid: source bounds ({fmt}) {where} "
        f"vs target bounds ({tgt}) [west, south, east, north]"
    )


# -- same-grid passthrough and variable selection --------------------------------------------


def _passthrough(
    var: xr.DataArray, grid: SourceGrid, target: TargetGrid, p: ResampleParams
) -> xr.DataArray:
    """A source already on the target grid: only rename, re-chunk and cast."""
    norm = grid.normalise(var)
    norm = norm.drop_vars(
        [c for c in norm.coords if c not in norm.dims or c in (grid.x_dim, grid.y_dim)]
    )
    norm = norm.rename({grid.y_dim: target.y_name, grid.x_dim: target.x_name})
    spec = var_spec(var, p, "nearest")
    chunks = (1,) * (norm.ndim - 2) + (target.tile_size[1], target.tile_size[0])
    data = da.asarray(norm.data).rechunk(chunks)
    if needs_conversion(spec):
        data = data.map_blocks(convert_block, spec, dtype=spec.out_dtype)
    out = xr.DataArray(
        data,
        dims=norm.dims,
        coords={c: norm.coords[c] for c in norm.coords if c in norm.dims[:-2]},
        attrs=out_attrs(var),
        name=var.name,
    )
    return with_encoding(out, var, spec)


def _select_variables(ds: xr.Dataset, p: ResampleParams) -> xr.Dataset:
    if p.variables is None:
        return ds
    missing = [v for v in p.variables if v not in ds.data_vars]
    if missing:
        raise RegridError(
            f"spatial_resample_params.variables names {missing}, which the source does not have "
            f"(it has {sorted(map(str, ds.data_vars))})"
        )
    gm = _grid_mapping_names(ds)
    keep = list(p.variables) + [n for n in gm if n in ds.data_vars]
    return ds[keep]


def _grid_mapping_names(ds: xr.Dataset) -> set[str]:
    """Variables that only describe a CRS (replaced by the output's ``spatial_ref``)."""
    names = set()
    for var in ds.data_vars.values():
        gm = var.attrs.get("grid_mapping") or var.encoding.get("grid_mapping")
        if isinstance(gm, str) and gm in ds.variables:
            names.add(gm)
    for name in ("spatial_ref", "crs"):
        if name in ds.variables and ds[name].ndim == 0:
            attrs = ds[name].attrs
            if {"crs_wkt", "spatial_ref", "grid_mapping_name"} & set(
                attrs
            ) or name == "spatial_ref":
                names.add(name)
    return names
