"""Checks the JSON Schema cannot express: references, uniqueness, CRSs, files, frequencies.

Each check runs only on parts that passed the schema (``Checker.clean``), so a
broken part yields one problem, not a cascade. Nothing here imports or runs
user code: hooks are inspected with ``ast``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import Problem
from .checker import Checker, first_line
from .checks_general import check_general
from .checks_hooks import check_hook
from .locations import Location, render_location
from .model import STORAGE_STORE
from .validate import validate_against

MAX_PIXELS_PER_AXIS = 2**31
MAX_TILE_PIXELS = 2**28


def cross_check(
    data: Any, base_dir: Path, schema_error_paths: Iterable[Location]
) -> list[tuple[Location, Problem]]:
    """Every semantic problem of a config whose structure was schema-checked."""
    if not isinstance(data, Mapping):
        return []
    checker = Checker(data, base_dir, set(schema_error_paths))
    stores = _check_stores(checker)
    grid_ids = _check_grid_mappings(checker)
    _check_datasets(checker, stores, grid_ids)
    _check_preloads(checker, stores)
    check_general(checker)
    return checker.problems


# -- identifiers -------------------------------------------------------------------


def _identifiers(
    checker: Checker, entries: Iterable[tuple[Location, Mapping[str, Any]]], what: str
) -> list[str]:
    """Identifiers in order; duplicates reported at the later occurrence."""
    first: dict[str, Location] = {}
    for path, entry in entries:
        identifier = entry.get("identifier")
        if not isinstance(identifier, str):
            continue
        if identifier in first:
            checker.add(
                (*path, "identifier"),
                f"duplicate {what} identifier {identifier!r} (also {render_location(first[identifier])})",
            )
        else:
            first[identifier] = path
    return list(first)


# -- data stores -----------------------------------------------------------------------


def _check_stores(checker: Checker) -> list[str] | None:
    """Store identifiers, or None when data_stores is unusable (then references are not checked)."""
    if not isinstance(checker.data.get("data_stores"), list):
        return None
    entries = [(("data_stores", i), s) for i, s in checker.items("data_stores")]
    identifiers = _identifiers(checker, entries, "store")
    if STORAGE_STORE not in identifiers:
        checker.add(
            ("data_stores",),
            f"a store with identifier {STORAGE_STORE!r} is required: the cubes are written into it",
        )
    known = _known_store_ids()
    for path, store in entries:
        store_id = store.get("store_id")
        if not isinstance(store_id, str) or not checker.clean((*path, "store_id")):
            continue
        if known is not None and store_id not in known:
            from ..storeids import install_hint

            hint = install_hint(store_id)
            checker.add(
                (*path, "store_id"),
                f"{hint} (available: {', '.join(sorted(known))})"
                if hint
                else f"unknown store_id {store_id!r} (available: {', '.join(sorted(known))})",
            )
            continue
        params = store.get("store_params", {})
        if checker.clean((*path, "store_params")) and isinstance(params, Mapping):
            checker.problems.extend(
                _store_params_problems(store_id, params, (*path, "store_params"))
            )
        if store.get("identifier") == STORAGE_STORE:
            writable = _is_writable(store_id)
            if writable is False:
                checker.add(
                    (*path, "store_id"),
                    f"store_id {store_id!r} cannot write data, but the {STORAGE_STORE!r} store "
                    "receives the generated cubes",
                )
    return identifiers


def _known_store_ids() -> set[str] | None:
    """Store ids registered with xcube (built-ins and plugins); None if xcube fails."""
    try:
        from xcube.core.store import find_data_store_extensions

        return {ext.name for ext in find_data_store_extensions()}
    except Exception:  # a broken xcube plugin must not hide the config's own problems
        return None


def _store_params_problems(
    store_id: str, params: Mapping[str, Any], prefix: Location
) -> list[tuple[Location, Problem]]:
    try:
        from xcube.core.store import get_data_store_params_schema

        schema = get_data_store_params_schema(store_id).to_dict()
    except Exception:  # store class cannot be loaded: it will fail later with its own error
        return []
    return validate_against(schema, params, prefix)


def _is_writable(store_id: str) -> bool | None:
    try:
        from xcube.core.store import MutableDataStore, get_data_store_class

        return issubclass(get_data_store_class(store_id), MutableDataStore)
    except Exception:
        return None


# -- grid mappings ---------------------------------------------------------------------


def _check_grid_mappings(checker: Checker) -> list[str]:
    entries = [(("grid_mappings", i), g) for i, g in checker.items("grid_mappings")]
    identifiers = _identifiers(checker, entries, "grid mapping")
    for path, gm in entries:
        crs = _check_crs(checker, path, gm.get("crs", "EPSG:4326"))
        bbox = gm.get("bbox")
        if not checker.clean((*path, "bbox")) or not isinstance(bbox, list | tuple):
            continue
        west, south, east, north = (float(v) for v in bbox)
        if not all(math.isfinite(v) for v in (west, south, east, north)):
            checker.add((*path, "bbox"), "bbox values must be finite numbers")
            continue
        if east < 0 < west and crs is not None and crs.is_geographic:
            east += 360.0  # crosses the antimeridian: the grid wraps (build.py does the same)
        if west >= east:
            checker.add((*path, "bbox"), f"west ({west:g}) must be less than east ({east:g})")
        if south >= north:
            checker.add((*path, "bbox"), f"south ({south:g}) must be less than north ({north:g})")
        if crs is not None and crs.is_geographic:
            if south < -90 or north > 90:
                checker.add(
                    (*path, "bbox"), "latitudes must lie within -90..90 for a geographic CRS"
                )
            if east - west > 360:
                checker.add((*path, "bbox"), "the bbox spans more than 360 degrees of longitude")
            if not -540 <= west <= 540:
                checker.add((*path, "bbox"), f"west ({west:g}) is not a longitude")
        res = gm.get("spatial_res")
        if (
            res is not None
            and west < east
            and south < north
            and checker.clean((*path, "spatial_res"))
        ):
            _check_size(checker, path, (east - west, north - south), res, crs)
        _check_tile_size(checker, (*path, "tile_size"), gm.get("tile_size"))
    return identifiers


def _check_tile_size(checker: Checker, path: Location, tile_size: Any) -> None:
    """A tile is one chunk in memory and one compressor buffer: Blosc stops at 2 GiB."""
    if tile_size is None or not checker.clean(path):
        return
    x, y = (tile_size, tile_size) if isinstance(tile_size, int) else tile_size
    if x * y > MAX_TILE_PIXELS:
        checker.add(
            path,
            f"a {x} x {y} tile has more than {MAX_TILE_PIXELS} pixels (2 GiB at 8 bytes per "
            "pixel, more than a chunk can hold): use tiles of at most 16384 x 16384",
        )


def _check_crs(checker: Checker, path: Location, crs: Any):
    if not checker.clean((*path, "crs")) or not isinstance(crs, str | int):
        return None
    import pyproj

    try:
        return pyproj.CRS.from_user_input(f"EPSG:{crs}" if isinstance(crs, int) else crs)
    except pyproj.exceptions.CRSError as e:
        checker.add((*path, "crs"), f"not a valid CRS: {first_line(e)}")
        return None


def _check_size(
    checker: Checker, path: Location, extent: tuple[float, float], res: Any, crs
) -> None:
    res_xy = (res, res) if isinstance(res, int | float) else tuple(res)
    unit = crs.axis_info[0].unit_name if crs is not None and crs.axis_info else ""
    units_hint = "spatial_res is in the units of the CRS" + (f" ({unit})" if unit else "")
    for axis, size, r in zip("xy", extent, res_xy, strict=True):
        pixels = size / float(r)
        if pixels > MAX_PIXELS_PER_AXIS:
            checker.add(
                (*path, "spatial_res"),
                f"the grid would be {pixels:.3g} pixels along {axis}, more than 2^31: {units_hint}",
            )
        elif pixels < 1:
            checker.add(
                (*path, "spatial_res"),
                f"spatial_res {float(r):g} along {axis} is larger than the bbox extent "
                f"{size:g}: {units_hint}",
            )


# -- datasets ----------------------------------------------------------------------------


def _check_datasets(checker: Checker, stores: list[str] | None, grid_ids: list[str]) -> None:
    entries = [(("datasets", i), d) for i, d in checker.items("datasets")]
    dataset_ids = _identifiers(checker, entries, "dataset")
    for path, ds in entries:
        if checker.clean((*path, "identifier")):
            _check_output_path(checker, (*path, "identifier"), ds.get("identifier"))
    depends_on: dict[str, tuple[Location, str]] = {}
    for path, ds in entries:
        variables = ds.get("variables")
        if isinstance(variables, list):
            var_entries = [
                ((*path, "variables", j), v)
                for j, v in enumerate(variables)
                if isinstance(v, Mapping)
            ]
            _identifiers(checker, var_entries, "variable")
            sources = var_entries
        else:
            sources = [(path, ds)]
        store_ids = _store_ids_by_identifier(checker)
        for src_path, src in sources:
            _check_store_ref(checker, (*src_path, "store"), src.get("store"), stores)
            _check_source_params(checker, src_path, src)
            _check_open_params(checker, src_path, src, store_ids)
        if isinstance(variables, list):
            check_hook(checker, (*path, "custom_processing"), ds.get("custom_processing"))
        if ds.get("format_id") == "geotiff":
            _check_native_download(checker, path, ds, store_ids)
        grid = ds.get("grid_mapping")
        identifier = ds.get("identifier")
        if not isinstance(grid, str) or not checker.clean((*path, "grid_mapping")):
            continue
        if grid in grid_ids:
            continue
        if grid == identifier:
            checker.add((*path, "grid_mapping"), f"dataset {grid!r} cannot use its own grid")
        elif grid in dataset_ids:
            if isinstance(identifier, str):
                depends_on.setdefault(identifier, ((*path, "grid_mapping"), grid))
        else:
            others = [d for d in dataset_ids if d != identifier]
            hint = f"defined: {', '.join(grid_ids) or 'no grid_mappings'}"
            if others:
                hint += f"; or a dataset: {', '.join(others)}"
            checker.add((*path, "grid_mapping"), f"{grid!r} is not defined ({hint})")
    _check_cycles(checker, dataset_ids, depends_on)


def _check_native_download(
    checker: Checker, path: Location, ds: Mapping[str, Any], store_ids: Mapping[str, str]
) -> None:
    """``format_id: geotiff`` writes one GeoTIFF per image of a native-grid download."""
    fpath = (*path, "format_id")
    what = "'geotiff' writes one GeoTIFF per image on its native grid"
    if "variables" in ds or ds.get("grid_mapping") is not None:
        checker.add(fpath, f"{what}: it needs one source (no variables) and no grid_mapping")
        return
    store_id = store_ids.get(ds.get("store")) if isinstance(ds.get("store"), str) else None
    if store_id is None:
        return
    try:
        from xcube.core.store import get_data_store_class

        store_class = get_data_store_class(store_id)
    except Exception:  # store class cannot be loaded: it will fail later with its own error
        return
    from ..stores.contract import alignment_grouper

    if alignment_grouper(store_class) is None:
        checker.add(
            fpath,
            f"{what}: store_id {store_id!r} cannot list images by native grid (earthengine can)",
        )


def output_path_problem(identifier: str) -> str | None:
    """Why a dataset identifier cannot name a path inside the storage store, or None.

    As in xcube-multistore, '/' makes sub-folders and spaces are kept; only what
    would leave the store or name nothing is refused.
    """
    if identifier.startswith(("/", "\\")) or (identifier[:1].isalpha() and identifier[1:2] == ":"):
        return "must be a path relative to the storage store, not an absolute path"
    segments = identifier.replace("\\", "/").split("/")
    if any(seg == "" for seg in segments):
        return "empty path segment ('//' or a trailing '/'): the cube path would be ambiguous"
    if ".." in segments:
        return "'..' segments are not allowed: the cube must stay inside the storage store"
    return None


def _check_output_path(checker: Checker, path: Location, identifier: Any) -> None:
    if isinstance(identifier, str):
        problem = output_path_problem(identifier)
        if problem is not None:
            checker.add(path, f"{identifier!r}: {problem}")


def _check_store_ref(
    checker: Checker, path: Location, store: Any, stores: list[str] | None
) -> None:
    if (
        stores is not None
        and isinstance(store, str)
        and checker.clean(path)
        and store not in stores
    ):
        checker.add(path, f"{store!r} is not defined (defined: {', '.join(stores) or 'none'})")


def _store_ids_by_identifier(checker: Checker) -> dict[str, str]:
    return {
        s["identifier"]: s["store_id"]
        for _, s in checker.items("data_stores")
        if isinstance(s.get("identifier"), str) and isinstance(s.get("store_id"), str)
    }


def _check_open_params(
    checker: Checker, path: Location, src: Mapping[str, Any], store_ids: Mapping[str, str]
) -> None:
    """Ask the source's store class for open-param problems its schema cannot express.

    A store opts in with a classmethod ``open_params_problems(params)`` returning
    (location relative to ``open_params``, message) pairs (the stac store checks
    its filter grammar); nothing is opened or connected.
    """
    params = src.get("open_params")
    store_id = store_ids.get(src.get("store")) if isinstance(src.get("store"), str) else None
    opath = (*path, "open_params")
    if store_id is None or not isinstance(params, Mapping) or not checker.clean(opath):
        return
    try:
        from xcube.core.store import get_data_store_class

        from ..stores.contract import open_params_checker

        store_class = get_data_store_class(store_id)
    except Exception:  # store class cannot be loaded: it will fail later with its own error
        return
    check = open_params_checker(store_class)
    if check is not None:
        for where, message in check.open_params_problems(params):
            checker.add((*opath, *where), message)


def _check_source_params(checker: Checker, path: Location, src: Mapping[str, Any]) -> None:
    check_hook(checker, (*path, "custom_processing"), src.get("custom_processing"))
    spatial = src.get("spatial_resample_params")
    spath = (*path, "spatial_resample_params")
    if isinstance(spatial, Mapping) and checker.clean(spath):
        if "method" in spatial and ("interp_methods" in spatial or "agg_methods" in spatial):
            checker.add(spath, "give either method or interp_methods/agg_methods, not both")
        dtypes = spatial.get("dtypes")
        named = dtypes.items() if isinstance(dtypes, Mapping) else [(None, dtypes)]
        for var, name in named:
            if isinstance(name, str) and not _is_dtype(name):
                where = (*spath, "dtypes") if var is None else (*spath, "dtypes", var)
                checker.add(
                    where, f"{name!r} is not a numpy dtype name (e.g. uint8, int16, float32)"
                )
    temporal = src.get("temporal_resample_params")
    tpath = (*path, "temporal_resample_params")
    if isinstance(temporal, Mapping) and checker.clean(tpath):
        if "method" in temporal and "agg_methods" in temporal:
            checker.add(tpath, "give either method or agg_methods, not both")
        _check_frequency(checker, (*tpath, "frequency"), temporal.get("frequency"))
        for key in ("offset", "tolerance"):
            if isinstance(temporal.get(key), str):
                _check_timedelta(checker, (*tpath, key), temporal[key])


def _is_dtype(name: str) -> bool:
    import numpy as np

    try:
        np.dtype(name)
    except TypeError:
        return False
    return True


def _check_frequency(checker: Checker, path: Location, frequency: Any) -> None:
    if not isinstance(frequency, str):
        return
    from pandas.tseries.frequencies import to_offset

    try:
        offset = to_offset(frequency)
    except (ValueError, OverflowError):
        checker.add(path, f"{frequency!r} is not a pandas frequency (e.g. 1D, 7D, MS, YS)")
        return
    if offset.n <= 0:
        checker.add(path, f"{frequency!r} must be a positive frequency (e.g. 1D, 7D, MS, YS)")


def _check_timedelta(checker: Checker, path: Location, value: str) -> None:
    import pandas as pd

    try:
        span = pd.to_timedelta(value)
    except (ValueError, OverflowError):
        checker.add(path, f"{value!r} is not a time span (e.g. 12h, 1D)")
        return
    if span is pd.NaT:
        checker.add(path, f"{value!r} is not a time span (e.g. 12h, 1D)")


def _check_cycles(
    checker: Checker, order: list[str], depends_on: dict[str, tuple[Location, str]]
) -> None:
    """Report each grid_mapping cycle once, at its first dataset in config order."""
    reported: set[frozenset[str]] = set()
    for start in order:
        chain = [start]
        while chain[-1] in depends_on:
            nxt = depends_on[chain[-1]][1]
            if nxt in chain:
                cycle = chain[chain.index(nxt) :]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    first = min(cycle, key=order.index)
                    i = cycle.index(first)
                    ring = [*cycle[i:], *cycle[:i], first]
                    checker.add(
                        depends_on[first][0],
                        f"grid_mapping cycle: {' -> '.join(ring)} (a dataset can use the grid of "
                        "another dataset only if that one does not depend on it)",
                    )
                break
            chain.append(nxt)


# -- preload / general ---------------------------------------------------------------------------


def _check_preloads(checker: Checker, stores: list[str] | None) -> None:
    for i, preload in checker.items("preload_datasets"):
        _check_store_ref(checker, ("preload_datasets", i, "store"), preload.get("store"), stores)
