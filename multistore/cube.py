"""Assemble one cube lazily: open sources → hooks → time → regrid → merge → chunk → attrs.

Nothing here computes pixels; the result is a dask-backed dataset that the
writer streams tile by tile (and that ``multistore plan`` only measures).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import xarray as xr
from xcube.core.mldataset import MultiLevelDataset
from xcube.core.store import DataStore

from . import __version__, sourcechunks
from .config.model import Config, CustomProcessing, RetryConfig, SourceConfig
from .config.redact import Masker
from .errors import ProcessingError, SourceOpenError
from .gdalenv import GdalSettings, general_settings, scope_dataset
from .grid import TargetGrid, xy_names
from .hooks import apply_hook
from .netcdf import engine_for_store
from .plan import CubePlan
from .rasterio_threads import share_opener_registry
from .regrid import regrid_dataset
from .retry import with_retries
from .stores.contract import (
    TARGET_GRID,
    TILE_CACHE,
    TILE_CACHE_OPTIONS,
    accepts_scratch,
    accepts_target_grid,
    declared_open_params,
)
from .stores.pool import StorePool
from .temporal import resample_in_time

log = logging.getLogger(__name__)

share_opener_registry()  # datasets opened in worker threads close anywhere

# Encoding keys that describe the source's storage layout and must not leak into the cube.
_LAYOUT_ENCODING = (
    "chunks",
    "preferred_chunks",
    "compressor",
    "compressors",
    "filters",
    "serializer",
    "zlib",
    "complevel",
    "shuffle",
    "contiguous",
    "chunksizes",
    "fletcher32",
    "source",
    "original_shape",
    "szip_coding",
    "szip_pixels_per_block",
    "blosc_shuffle",
    "endian",
    "write_empty_chunks",
    "zarr_format",
    "coordinates",
    "grid_mapping",
)

StepCallback = Callable[[str], None]


@dataclass(frozen=True)
class Scratch:
    """A per-cube folder (fsspec URL) where stores may keep resumable work; removed on completion."""

    url: str
    storage_options: Mapping[str, Any] | None = None


def _open_params_schema_open(store: DataStore, data_id: str) -> bool:
    """Whether the opener passes params it does not declare on (xcube's NetCDF opener)."""
    try:
        schema = store.get_open_data_params_schema(data_id)
    except Exception:
        return False
    return getattr(schema, "additional_properties", None) is True


def open_params_for(
    source: SourceConfig, store: DataStore, grid: TargetGrid | None, scratch: Scratch | None = None
) -> dict[str, Any]:
    """The user's open params plus what the pipeline offers to stores that declare it:
    ``target_grid`` (read straight onto the grid) and ``tile_cache`` (resume downloads)."""
    params = dict(source.open_params)
    declared = declared_open_params(store, source.data_id)
    if grid is not None and accepts_target_grid(declared):
        params.setdefault(TARGET_GRID, grid.to_dict())
    if scratch is not None and accepts_scratch(declared) and TILE_CACHE not in params:
        params[TILE_CACHE] = f"{scratch.url}/{source.identifier}"
        if scratch.storage_options and TILE_CACHE_OPTIONS in declared:
            params.setdefault(TILE_CACHE_OPTIONS, dict(scratch.storage_options))
    return params


def open_source(
    source: SourceConfig,
    stores: StorePool,
    retries: RetryConfig,
    grid: TargetGrid | None,
    scratch: Scratch | None = None,
    gdal: GdalSettings | None = None,
    hook_hashes: Mapping[str, str] | None = None,
) -> xr.Dataset:
    """Open one source through its xcube data store and run its hook.

    ``gdal`` (default: the source store's own settings) applies while opening
    and inside every task that later reads the source, never process-wide;
    ``hook_hashes``: the hook files' hashes as planned (path -> sha256).
    """
    store = stores[source.store]
    params = _with_netcdf_engine(open_params_for(source, store, grid, scratch), store, source)
    gdal = gdal if gdal is not None else stores.gdal_settings(source.store)

    def _open() -> Any:
        return store.open_data(source.data_id, **params)

    with gdal.env():
        try:
            data = with_retries(_open, retries, f"opening {source.store}:{source.data_id}")
        except Exception as e:
            raise SourceOpenError(
                f"{source.location or source.identifier}: cannot open {source.data_id!r} "
                f"from store {source.store!r}: {type(e).__name__}: {e}"
            ) from e
        data = _base(data)
        if isinstance(data, xr.Dataset):
            data = _base(_with_aligned_chunks(data, source, store, params, retries))
        if isinstance(data, xr.DataArray):
            data = data.to_dataset(name=source.identifier)
        if not isinstance(data, xr.Dataset):
            raise SourceOpenError(
                f"{source.location}: store {source.store!r} returned {type(data).__name__} for "
                f"{source.data_id!r}, expected a dataset"
            )
        hook = source.custom_processing
        # on the source's grid: only the checks that hold on any grid
        data = apply_hook(hook, data, expected_sha256=_planned_hash(hook, hook_hashes))
    return scope_dataset(data, gdal)


def _with_netcdf_engine(params: dict[str, Any], store: DataStore, source: SourceConfig) -> dict:
    """Read NetCDF files with an engine safe under dask's threads, unless the user chose one."""
    if "engine" in params:
        return params
    declared = declared_open_params(store, source.data_id)
    if "engine" not in declared and not _open_params_schema_open(store, source.data_id):
        return params
    engine = engine_for_store(store, source.data_id)
    return params if engine is None else {**params, "engine": engine}


def _planned_hash(hook: CustomProcessing | None, hashes: Mapping[str, str] | None) -> str | None:
    if hook is None or hashes is None:
        return None
    return hashes.get(str(hook.module_path))


def _base(data: Any) -> Any:
    """Level 0 of a multi-level dataset (xcube's ``levels`` format), else the data as is."""
    if isinstance(data, MultiLevelDataset):
        return data.base_dataset
    return data


def _with_aligned_chunks(
    data: xr.Dataset,
    source: SourceConfig,
    store: DataStore,
    params: dict[str, Any],
    retries: RetryConfig,
) -> Any:
    """Reopen with chunks aligned to the file's blocks when the config chose none (issue 11.3)."""
    declared = declared_open_params(store, source.data_id)
    better = sourcechunks.reopen_params(
        data,
        params,
        declared,
        _open_params_schema_open(store, source.data_id),
        lambda: sourcechunks.raster_layout(store, source.data_id),
    )
    if better is None:
        return data
    log.debug("%s: reopening with block-aligned chunks %s", source.data_id, better)
    if (
        "tile_size" in better
        and "band_as_variable" in declared
        and "band_as_variable" not in params
        and sourcechunks.band_variable_names(data) is not None
    ):
        # one multi-band read per block serves every band variable (issue 11)
        try:
            multi = _base(store.open_data(source.data_id, **better, band_as_variable=False))
        except Exception as e:  # the plain reopen below reports real errors
            log.debug("%s: no multi-band reopen: %s", source.data_id, e)
        else:
            split = sourcechunks.split_bands(multi, data) if isinstance(multi, xr.Dataset) else None
            if split is not None:
                return split
    try:
        return with_retries(
            lambda: store.open_data(source.data_id, **better),
            retries,
            f"opening {source.store}:{source.data_id}",
        )
    except Exception as e:
        raise SourceOpenError(
            f"{source.location or source.identifier}: cannot open {source.data_id!r} "
            f"from store {source.store!r} with chunks {better}: {type(e).__name__}: {e}"
        ) from e


def build_cube(
    plan: CubePlan,
    config: Config,
    stores: StorePool,
    grid: TargetGrid | None,
    step: StepCallback = lambda _: None,
    scratch: Scratch | None = None,
) -> xr.Dataset:
    """The lazy cube of ``plan`` on ``grid`` (None: keep the source's own grid)."""
    ds_cfg = plan.dataset
    general = general_settings(config.general.gdal_http_params)
    mask = Masker(config.secret_values)
    parts = []
    for source in ds_cfg.sources:
        step("opening")
        gdal = stores.gdal_settings(source.store, general)
        data = open_source(
            source, stores, config.general.retries, grid, scratch, gdal, plan.hook_hashes
        )
        step("processing")
        tparams = source.temporal_resample_params
        if tparams and tparams.get("stage", "before") == "before":
            data = resample_in_time(data, tparams)
        if grid is not None:
            step("regridding")
            data = regrid_dataset(data, grid, source.spatial_resample_params)
        if tparams and tparams.get("stage") == "after":
            data = resample_in_time(data, tparams)
        parts.append(_name_variables(data, source, ds_cfg.multi, mask))
    step("processing")
    if len(parts) == 1:
        cube = parts[0]
    else:
        merge_params = {
            "join": "exact",
            "combine_attrs": "drop_conflicts",
            "compat": "no_conflicts",
            **ds_cfg.xr_merge_params,
        }
        try:
            cube = xr.merge(parts, **merge_params)
        except ValueError as e:
            raise ProcessingError(
                f"merging the variables of {ds_cfg.identifier!r} failed ({e}); "
                "set xr_merge_params (e.g. join: outer) if their coordinates differ"
            ) from e
    hook = ds_cfg.custom_processing
    cube = apply_hook(hook, cube, grid, _planned_hash(hook, plan.hook_hashes))
    if grid is not None:
        cube = georeference(cube, grid)
    cube = _chunk(cube, grid, ds_cfg.chunksize)
    return _annotate(cube, plan, config)


def georeference(ds: xr.Dataset, grid: TargetGrid) -> xr.Dataset:
    """The grid's x/y coordinates (with their CF attributes), its ``spatial_ref`` variable
    and ``grid_mapping`` on every gridded variable, re-applied after hooks.

    Hook code (``xr.where``, arithmetic) drops coordinate attributes and creates variables
    without ``grid_mapping``; readers such as rioxarray then cannot find x/y or the CRS.
    """
    ds = ds.assign_coords(grid.coords())
    x, y = grid.x_name, grid.y_name
    for var in ds.data_vars.values():
        if x in var.dims and y in var.dims:
            var.attrs["grid_mapping"] = "spatial_ref"
            var.encoding.pop("grid_mapping", None)
    return ds


def _name_variables(ds: xr.Dataset, source: SourceConfig, multi: bool, mask: Masker) -> xr.Dataset:
    """xcube-multistore's naming: one variable → the variable identifier; several → prefixed."""
    if not multi:
        return _tag(ds, source, list(ds.data_vars), mask)
    spatial = [n for n in ds.data_vars if _has_xy(ds[n])]
    if len(spatial) == 1:
        ds = ds.rename({spatial[0]: source.identifier})
        names = [source.identifier]
    else:
        mapping = {n: f"{source.identifier}_{n}" for n in spatial}
        ds = ds.rename(mapping)
        names = list(mapping.values())
    ds = ds.drop_vars([n for n in ds.data_vars if n not in names])
    return _tag(ds, source, names, mask)


def _tag(ds: xr.Dataset, source: SourceConfig, names: list[str], mask: Masker) -> xr.Dataset:
    """Record where each variable came from; a token in the data id never reaches the cube."""
    for name in names:
        ds[name].attrs["multistore_source"] = mask(f"{source.store}:{source.data_id}")
    return ds


def _has_xy(da: xr.DataArray) -> bool:
    try:
        x, y = xy_names(da)
    except Exception:
        return False
    return x in da.dims and y in da.dims


def _chunk(ds: xr.Dataset, grid: TargetGrid | None, chunksize: dict) -> xr.Dataset:
    try:
        x, y = xy_names(ds)
    except Exception:
        x = y = None
    chunks: dict[str, int] = {}
    for dim in ds.dims:
        if dim in chunksize:
            chunks[dim] = int(chunksize[dim])
        elif dim == x:
            chunks[dim] = grid.tile_size[0] if grid else 1024
        elif dim == y:
            chunks[dim] = grid.tile_size[1] if grid else 1024
        else:
            chunks[dim] = 1
    ds = ds.chunk({d: c for d, c in chunks.items() if d in ds.dims})
    for var in ds.variables.values():
        for key in _LAYOUT_ENCODING:
            var.encoding.pop(key, None)
    return ds


def _annotate(ds: xr.Dataset, plan: CubePlan, config: Config) -> xr.Dataset:
    sources = {
        name: ds[name].attrs.get("multistore_source")
        for name in ds.data_vars
        if "multistore_source" in ds[name].attrs
    }
    ds.attrs.update(
        {
            "multistore_version": __version__,
            "multistore_dataset": plan.identifier,
            "multistore_config_fingerprint": plan.fingerprint,
            "multistore_sources": json.dumps(sources, sort_keys=True),
        }
    )
    if config.path is not None:
        ds.attrs["multistore_config"] = config.path.name
    return ds
