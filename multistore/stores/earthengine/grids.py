"""Grids of a query: the project grid as Earth Engine's pixel grid, the images' native grid,
and the alignment groups of images on different native grids."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pyproj
from affine import Affine

from ...errors import ConfigError, Problem, SourceGridError, SourceOpenError
from ...grid import TargetGrid, pair
from .fetch import PixelGrid
from .params import DEFAULT_TILE_SIZE
from .query import (
    ImageInfo,
)


def pixel_grid(grid: TargetGrid) -> PixelGrid:
    epsg = grid.crs.to_epsg()
    t = grid.transform
    transform = (t.a, t.b, t.c, t.d, t.e, t.f)
    if epsg is not None:
        return PixelGrid("crsCode", f"EPSG:{epsg}", transform)
    return PixelGrid("crsWkt", grid.crs.to_wkt(pyproj.enums.WktVersion.WKT1_GDAL), transform)


def native_grid(data_id: str, images: list[ImageInfo], bbox: Any, tile_size: Any) -> TargetGrid:
    """The images' own grid; all images must share it. ``bbox`` (lon/lat) crops it."""
    groups = alignment_groups(images)
    if len(groups) > 1:
        raise SourceGridError(
            f"earthengine: the images of {data_id} lie on {len(groups)} different native grids "
            f"({', '.join(sorted(groups))}); give crs, scale and bbox, or a grid_mapping, to put "
            "them on one grid, open one with alignment_group, or write one cube per group "
            "with `multistore ee download`"
        )
    crs, transform = images[0].crs, images[0].transform
    sizes = {i.dimensions for i in images if i.dimensions is not None}
    # same origin and pixel size: the group's grid covers its largest image
    dims = (max(d[0] for d in sizes), max(d[1] for d in sizes)) if sizes else None
    if crs is None or transform is None:
        raise SourceGridError(
            f"earthengine: {data_id} has no native grid; give crs, scale and bbox"
        )
    a, b, c, d, e, f = transform
    if b != 0 or d != 0 or a <= 0 or e >= 0:
        raise SourceGridError(
            f"earthengine: the native grid of {data_id} is not north-up ({transform})"
        )
    wkt = pyproj.CRS.from_user_input(crs).to_wkt()
    if bbox is None:
        if dims is None:
            raise SourceGridError(f"earthengine: {data_id} has no native size; give a bbox")
        return TargetGrid(wkt, Affine(a, 0.0, c, 0.0, e, f), dims[0], dims[1], pair(tile_size, int))
    to_native = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    west, south, east, north = to_native.transform_bounds(*bbox)
    col0, col1 = _floor((west - c) / a), _ceil((east - c) / a)
    row0, row1 = _floor((f - north) / -e), _ceil((f - south) / -e)
    return TargetGrid(
        wkt,
        Affine(a, 0.0, c + col0 * a, 0.0, e, f + row0 * e),
        max(1, col1 - col0),
        max(1, row1 - row0),
        pair(tile_size, int),
    )


def alignment_groups(images: Sequence[ImageInfo]) -> dict[str, list[str]]:
    """Images with identical native CRS and transform (origin and pixel size), by a group
    name made of the CRS and the origin, e.g. ``EPSG32632_x560000_y5000000_r10``."""
    by_key: dict[tuple[Any, Any], list[str]] = {}
    for img in images:
        by_key.setdefault((img.crs, img.transform), []).append(img.id)
    names: dict[str, list[str]] = {}
    for (crs, transform), ids in by_key.items():
        tag = re.sub(r"[^A-Za-z0-9]", "", str(crs or "nocrs"))[:24] or "crs"
        name = (
            f"{tag}_x{_num(transform[2])}_y{_num(transform[5])}_r{_num(abs(transform[0]))}"
            if transform
            else f"{tag}_notransform"
        )
        name = re.sub(r"[^A-Za-z0-9_.-]", "", name.replace("-", "m"))
        if name in names:  # same origin and x size, differing elsewhere (rare): disambiguate
            name += "_" + hashlib.sha256(repr((crs, transform)).encode()).hexdigest()[:8]
        names[name] = ids
    return names


def _num(v: float) -> str:
    """A number for a name: no exponent, no trailing zeros (5000000, 0.0001)."""
    return f"{v:.10f}".rstrip("0").rstrip(".")


def _floor(v: float) -> int:
    """Floor, but values within 1e-6 px of a whole number are that number (float noise)."""
    return round(v) if abs(v - round(v)) < 1e-6 else math.floor(v)


def _ceil(v: float) -> int:
    return round(v) if abs(v - round(v)) < 1e-6 else math.ceil(v)


def images_of_group(data_id: str, images: list[ImageInfo], group: str) -> list[ImageInfo]:
    """The images of one alignment group (see ``alignment_groups``)."""
    groups = alignment_groups(images)
    if group not in groups:
        raise SourceOpenError(
            f"earthengine: no alignment group {group!r} among the images of "
            f"{data_id}; groups: {sorted(groups)}"
        )
    members = set(groups[group])
    return [i for i in images if i.id in members]


def query_grid(data_id: str, params: Mapping[str, Any], images: list[ImageInfo]) -> TargetGrid:
    """The grid pixels are fetched on: the pipeline's, one given by crs/scale/bbox, or the
    images' native grid."""
    tile_size = params.get("tile_size", DEFAULT_TILE_SIZE)
    if params.get("target_grid"):
        try:
            return TargetGrid.from_dict(params["target_grid"])
        except (KeyError, TypeError, ValueError, pyproj.exceptions.CRSError) as e:
            raise ConfigError(
                [Problem("open_params.target_grid", f"not a target grid: {e}")]
            ) from None
    if params.get("crs") or params.get("scale"):
        if not (params.get("crs") and params.get("scale") and params.get("bbox")):
            raise ConfigError(
                [
                    Problem(
                        "open_params",
                        "crs, scale and bbox (in that crs) must be given together",
                    )
                ]
            )
        return TargetGrid.from_bbox(params["bbox"], params["crs"], params["scale"], tile_size)
    return native_grid(data_id, images, params.get("bbox"), tile_size)
