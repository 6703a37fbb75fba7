"""``regrid_dataset``: put every spatial variable of a source onto a ``TargetGrid``.

The result is lazy, one dask block per output tile per plane. Behind them,
one warp task per tile and group of planes reads only the source chunks that
overlap the tile's source window (footprints for the whole grid in ``plan.py``,
tasks band by band as dask asks for them in ``tiles.py``; read inside the task,
see ``reader.py``) and warps them (``kernel.py``). Peak memory
therefore follows chunk size x workers, not cube size. docs/performance.md
explains the choices and their measurements.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import pyproj
import xarray as xr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from ..errors import NoOverlapError, RegridError
from ..grid import TargetGrid
from . import plan
from .kernel import (
    VarSpec,
    convert_block,
    needs_conversion,
)
from .methods import (
    AGGREGATING_METHODS,
    KERNEL_RADIUS,
    ResampleParams,
    parse_params,
    resolve_methods,
)
from .source import SourceGrid, detect_source_grid, kind_dtype, spatial_variables
from .specs import out_attrs, var_spec, with_encoding
from .tiles import TileGraph

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
    windows_by_method: dict[str, plan.Windows] = {}
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
    windows: plan.Windows,
    lattice_from: plan.Footprints | None,
) -> dict[str, xr.DataArray]:
    """Warp variables that share a method and spatial chunks in the same tasks.

    Their planes are stacked into the plane groups of one warp task per tile,
    so coordinates are computed once per tile for all of them: 16 band
    variables cost what one 16-band variable costs. The tasks are planned
    band by band when dask asks for them (``tiles.py``).
    """
    spec = members[0].spec
    window_bounds = windows.bounds()
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
    src = members[0].src
    pieces = plan.max_pieces(
        windows, np.cumsum((0,) + src.chunks[-2]), np.cumsum((0,) + src.chunks[-1]), grid
    )
    per_group = min(_planes_per_group(m.src, target, m.spec, pieces) for m in members)
    groups = [planes[i : i + per_group] for i in range(0, len(planes), per_group)]
    tiles = TileGraph(
        [m.src for m in members],
        grid,
        target,
        windows,
        spec,
        groups,
        (group_name, out_names),
        None if lattice_from is None else lattice_from.lattice,
        None if lattice_from is None else lattice_from.lattice_ok,
    )
    warp_graph = HighLevelGraph.from_collections(
        group_name, tiles.warp_layer(), dependencies=[m.src for m in members]
    )
    out = {}
    for vi, (m, out_name) in enumerate(zip(members, out_names, strict=True)):
        graph = HighLevelGraph(
            {**warp_graph.layers, out_name: tiles.out_layer(vi)},
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


def _planes_per_group(src: da.Array, target: TargetGrid, spec: VarSpec, pieces: int) -> int:
    """How many planes one task warps: as many as fit the memory budgets, for tiles whose
    windows are cut into at most ``pieces`` source chunks.

    GDAL transforms coordinates once per call for all planes, so grouping
    cuts the cost per plane several times; the budgets keep task memory flat.
    """
    item = max(spec.work_dtype.itemsize, spec.out_dtype.itemsize)
    out_plane = target.tile_size[0] * target.tile_size[1] * item
    block = max(src.chunks[-2]) * max(src.chunks[-1]) * src.dtype.itemsize
    # planes held per source block (a block spanning several planes serves them all)
    planes_per_block = max(1, int(np.prod([max(c) for c in src.chunks[:-2]], dtype=int)))
    in_plane = pieces * block / planes_per_block
    n = min(_GROUP_OUT_BYTES // max(out_plane, 1), _GROUP_IN_BYTES // max(int(in_plane), 1))
    return max(1, int(n))


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
