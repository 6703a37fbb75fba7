"""The warp graph of one batch of variables, planned band by band as dask asks for it.

Planning every tile up front made a cube of 10^5 tiles wait seconds before its
first chunk and hold all its tasks in memory while it was written. Here the
warp layer is a mapping that plans a band of tile rows (windows -> chunk
pieces -> tasks, and whether tasks read their own chunks) the first time dask
looks up one of its keys. Culling a wave (``scheduler.row_band_waves``) looks
up only that wave's keys, so only the bands being submitted are planned, and
only the most recent ones are kept. Output layers need no plan: which task
and plane each output block takes is known from the plane groups alone.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
from affine import Affine
from rasterio.crs import CRS

from ..grid import TargetGrid
from . import plan
from .kernel import (
    Piece,
    PlaneGroup,
    TileTask,
    VarSpec,
    fill_block,
    take_plane,
    warp_group,
    warp_group_reading,
)
from .reader import SourceGraph
from .source import SourceGrid

LOG = logging.getLogger(__name__)

# Tiles planned together (whole tile rows); the source chunks they share are read once.
_BAND_TILES = 1024
# Planned tiles kept for later lookups: two waves culled at once stay planned.
_KEPT_TILES = 16384

Plane = tuple[int, ...]


@dataclass(frozen=True)
class _Band:
    warp: dict[tuple, tuple]  # warp task key -> task, for the band's tiles that see the source


class TileGraph:
    """The tasks that warp ``srcs`` (variables warped together) onto ``target``.

    ``groups`` lists, per warp task of a tile, its planes as (member, plane);
    ``windows`` and ``lattices`` come from ``plan``. ``warp_layer`` and
    ``out_layer`` are the graph layers, as mappings for ``HighLevelGraph``.
    """

    def __init__(
        self,
        srcs: Sequence[da.Array],
        grid: SourceGrid,
        target: TargetGrid,
        windows: plan.Windows,
        spec: VarSpec,
        groups: list[list[tuple[int, Plane]]],
        names: tuple[str, list[str]],
        lattices: np.ndarray | None = None,
        lattice_ok: np.ndarray | None = None,
    ):
        self.group_name, self.out_names = names
        self._srcs = list(srcs)
        self._grid = grid
        self._windows = windows
        self._spec = spec
        self._groups = groups
        self._lattices = lattices
        self._lattice_ok = (
            lattice_ok.tolist() if lattices is not None and lattice_ok is not None else None
        )
        src = srcs[0]
        # plain ints and lists: the tile loop runs once per tile (10^5 tiles on big grids)
        self._row_bounds = list(itertools.accumulate(src.chunks[-2], initial=0))
        self._col_bounds = list(itertools.accumulate(src.chunks[-1], initial=0))
        self._tile_rows, self._tile_cols = (list(c) for c in target.chunks)
        self._row_offsets = list(itertools.accumulate(self._tile_rows, initial=0))
        self._col_offsets = list(itertools.accumulate(self._tile_cols, initial=0))
        self._dst_transform = target.transform
        self._dst_crs_wkt = CRS.from_wkt(target.crs_wkt).to_wkt()
        self._src_crs_wkt = CRS.from_wkt(grid.crs.to_wkt()).to_wkt()
        self._corners = grid.corner_geoloc if grid.is_curvilinear else None
        # where each plane's values are: (chunk index along non-spatial dims, index inside)
        locators = [_plane_locator(s) for s in srcs]
        self._located = {
            (vi, plane): locators[vi](plane) for group in groups for vi, plane in group
        }
        # which warp task and which of its planes every output block takes
        self._taken = {
            (vi, plane): (gi, k)
            for gi, group in enumerate(groups)
            for k, (vi, plane) in enumerate(group)
        }
        self._planes = [[p for vi2, p in self._taken if vi2 == vi] for vi in range(len(srcs))]
        self._valid = windows.valid.tolist()
        self._rows_per_band = max(1, _BAND_TILES // max(1, len(self._tile_cols)))
        self._source = SourceGraph(*srcs)
        self._bands: OrderedDict[int, _Band] = OrderedDict()
        self._lock = threading.Lock()
        self._said_shared = False

    def __getstate__(self) -> dict[str, Any]:
        # dask.distributed ships the graph to the scheduler, which plans the bands it culls
        state = dict(self.__dict__)
        del state["_lock"]
        state["_bands"] = OrderedDict()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- layers --------------------------------------------------------------------------

    def warp_layer(self) -> Mapping:
        return _WarpLayer(self)

    def out_layer(self, member: int) -> Mapping:
        return _OutLayer(self, member)

    def _is_tile(self, ti: Any, tj: Any) -> bool:
        return (
            isinstance(ti, (int, np.integer))
            and isinstance(tj, (int, np.integer))
            and 0 <= ti < len(self._tile_rows)
            and 0 <= tj < len(self._tile_cols)
        )

    # -- planning ----------------------------------------------------------------------

    def band_tasks(self, ti: int) -> dict[tuple, tuple]:
        """The warp tasks of the band holding tile row ``ti``, planned on first use."""
        b = ti // self._rows_per_band
        with self._lock:
            band = self._bands.get(b)
            if band is None:
                band = self._plan_band(b)
                self._bands[b] = band
                band_tiles = self._rows_per_band * len(self._tile_cols)
                while len(self._bands) > max(1, _KEPT_TILES // band_tiles):
                    self._bands.popitem(last=False)
            else:
                self._bands.move_to_end(b)
            return band.warp

    def _plan_band(self, b: int) -> _Band:
        i0 = b * self._rows_per_band
        i1 = min(len(self._tile_rows), i0 + self._rows_per_band)
        src_names = [s.name for s in self._srcs]
        inputs_of: dict[tuple, tuple[TileTask, PlaneGroup, tuple]] = {}
        for ti, line in enumerate(self._windows.band(i0, i1), start=i0):
            for tj, w in enumerate(line):
                if w is None:
                    continue
                tile = self._tile(ti, tj, w)
                for gi, group in enumerate(self._groups):
                    inputs: dict[tuple, int] = {}
                    refs = []
                    for vi, plane in group:
                        chunk_idx, local = self._located[vi, plane]
                        positions = tuple(
                            inputs.setdefault(
                                (src_names[vi], *chunk_idx, pc.row_chunk, pc.col_chunk),
                                len(inputs),
                            )
                            for pc in tile.pieces
                        )
                        refs.append((local, positions))
                    key = (self.group_name, gi, ti, tj)
                    inputs_of[key] = (tile, PlaneGroup(tuple(refs)), tuple(inputs))
        keys = [keys for _, _, keys in inputs_of.values()]
        if self._source.can_inline(keys):
            readers = self._source.readers(keys)
            return _Band(
                {
                    key: (warp_group_reading, tile, self._spec, group, reader)
                    for (key, (tile, group, _)), reader in zip(
                        inputs_of.items(), readers, strict=True
                    )
                }
            )
        if not self._said_shared:
            self._said_shared = True
            LOG.debug("%s: source graph shares work between chunks; tasks share chunks", src_names)
        return _Band(
            {
                key: (warp_group, tile, self._spec, group, *keys)
                for key, (tile, group, keys) in inputs_of.items()
            }
        )

    def _tile(self, ti: int, tj: int, w: plan.SourceWindow) -> TileTask:
        """One tile's source window, how to assemble it from chunks, and its geometry."""
        grid = self._grid
        runs = plan.column_runs(w, grid.width, grid.period)
        row_bounds, col_bounds = self._row_bounds, self._col_bounds
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
        geoloc = None
        src_transform = None
        window_shape = w.shape
        gaps = covered < (w.c1 - w.c0)
        src_wkt = self._src_crs_wkt
        if self._corners is not None:
            # GDAL reads geolocation arrays as pixel corners: hand it the window's corners,
            # one more than pixels each way, and pad the window with one masked row and
            # column so both have the same shape (see SourceGrid.corner_geoloc).
            geoloc = self._corners[:, w.r0 : w.r1 + 1, w.c0 : w.c1 + 1]
            window_shape = (w.r1 - w.r0 + 1, w.c1 - w.c0 + 1)
            gaps = True
        else:
            src_transform = _translated(grid.transform, w.c0, w.r0)
            if w.center_lon is not None:
                src_wkt = _wrapped_wkt(src_wkt, w.center_lon)
        lattice = None
        # the lattice is in coordinates wrapped around the tile, not around 0 deg
        if self._lattice_ok is not None and self._lattice_ok[ti][tj] and not w.whole_globe:
            # relative to the window's corner; made per tile, not held for all tiles
            lattice = self._lattices[ti, tj] - np.array((w.c0, w.r0), float)[:, None, None]
        return TileTask(
            window_shape=window_shape,
            pieces=tuple(pieces),
            gaps=gaps,
            src_crs_wkt=src_wkt,
            src_transform=src_transform,
            geoloc=geoloc,
            dst_crs_wkt=self._dst_crs_wkt,
            dst_transform=_translated(
                self._dst_transform, self._col_offsets[tj], self._row_offsets[ti]
            ),
            dst_shape=(self._tile_rows[ti], self._tile_cols[tj]),
            lattice=lattice,
        )


class _WarpLayer(Mapping):
    """Warp tasks by key ``(group name, group, tile row, tile col)``, tiles that see the source."""

    def __init__(self, graph: TileGraph):
        self._g = graph

    def __contains__(self, key: object) -> bool:
        g = self._g
        return (
            type(key) is tuple
            and len(key) == 4
            and key[0] == g.group_name
            and isinstance(key[1], (int, np.integer))
            and 0 <= key[1] < len(g._groups)
            and g._is_tile(key[2], key[3])
            and g._valid[key[2]][key[3]]
        )

    def __getitem__(self, key: tuple) -> tuple:
        if key not in self:
            raise KeyError(key)
        return self._g.band_tasks(key[2])[key]

    def __iter__(self) -> Iterator[tuple]:
        g = self._g
        for ti, line in enumerate(g._valid):
            for tj, valid in enumerate(line):
                if valid:
                    for gi in range(len(g._groups)):
                        yield (g.group_name, gi, ti, tj)

    def __len__(self) -> int:
        return int(self._g._windows.valid.sum()) * len(self._g._groups)


class _OutLayer(Mapping):
    """One variable's output blocks by key ``(name, *plane, tile row, tile col)``: a plane of
    a warp task's result, or fill where the tile sees no source."""

    def __init__(self, graph: TileGraph, member: int):
        self._g = graph
        self._vi = member
        self._name = graph.out_names[member]
        self._ndim = len(graph._planes[member][0]) if graph._planes[member] else 0

    def __contains__(self, key: object) -> bool:
        return (
            type(key) is tuple
            and len(key) == self._ndim + 3
            and key[0] == self._name
            and (self._vi, key[1:-2]) in self._g._taken
            and self._g._is_tile(key[-2], key[-1])
        )

    def __getitem__(self, key: tuple) -> tuple:
        if key not in self:
            raise KeyError(key)
        g = self._g
        plane, ti, tj = key[1:-2], key[-2], key[-1]
        if not g._valid[ti][tj]:
            shape = (1,) * len(plane) + (g._tile_rows[ti], g._tile_cols[tj])
            return (fill_block, shape, g._spec)
        gi, k = g._taken[self._vi, plane]
        return (take_plane, (g.group_name, gi, ti, tj), k, len(plane))

    def __iter__(self) -> Iterator[tuple]:
        g = self._g
        for ti in range(len(g._tile_rows)):
            for tj in range(len(g._tile_cols)):
                for plane in g._planes[self._vi]:
                    yield (self._name, *plane, ti, tj)

    def __len__(self) -> int:
        g = self._g
        return len(g._tile_rows) * len(g._tile_cols) * len(g._planes[self._vi])


def _plane_locator(src: da.Array):
    """plane index -> (chunk index along non-spatial dims, index inside that chunk)."""
    bounds = [np.cumsum((0,) + c) for c in src.chunks[:-2]]

    def locate(plane: Plane) -> tuple[Plane, Plane]:
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
