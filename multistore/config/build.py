"""Turn a validated config mapping into the frozen ``Config`` dataclasses, filling defaults."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..grid import pair
from .checks_general import effective_scheduler
from .locations import render_location
from .model import (
    Config,
    CustomProcessing,
    DaskConfig,
    DatasetConfig,
    GeneralConfig,
    GridMappingConfig,
    PreloadConfig,
    RetryConfig,
    SourceConfig,
    StoreConfig,
)
from .resolve import find_module_file, resolve_path, resolve_store_params

DEFAULT_CRS = "EPSG:4326"
DEFAULT_TILE_SIZE = 1024
DEFAULT_TEMPORAL_STAGE = "before"
# xcube-multistore's defaults: sources regridded onto one grid must align exactly.
DEFAULT_XR_MERGE_PARAMS = {"join": "exact", "combine_attrs": "drop_conflicts"}


def build_config(
    data: Mapping[str, Any],
    base_dir: Path,
    path: Path | None,
    secret_values: frozenset[str],
) -> Config:
    """``data`` must have passed schema validation and cross-checks."""
    return Config(
        base_dir=base_dir,
        data_stores=tuple(_store(s, base_dir) for s in data["data_stores"]),
        grid_mappings=tuple(_grid_mapping(g) for g in data.get("grid_mappings", ())),
        datasets=tuple(
            _dataset(d, ("datasets", i), base_dir) for i, d in enumerate(data["datasets"])
        ),
        preload_datasets=tuple(
            PreloadConfig(
                store=p["store"],
                data_ids=tuple(p["data_ids"]),
                preload_params=copy.deepcopy(dict(p.get("preload_params", {}))),
                location=render_location(("preload_datasets", i)),
            )
            for i, p in enumerate(data.get("preload_datasets", ()))
        ),
        general=_general(data.get("general", {})),
        path=path,
        raw=copy.deepcopy(dict(data)),
        secret_values=secret_values,
    )


def _store(store: Mapping[str, Any], base_dir: Path) -> StoreConfig:
    return StoreConfig(
        identifier=store["identifier"],
        store_id=store["store_id"],
        store_params=resolve_store_params(
            store["store_id"], store.get("store_params", {}), base_dir
        ),
    )


def _grid_mapping(gm: Mapping[str, Any]) -> GridMappingConfig:
    crs = gm.get("crs", DEFAULT_CRS)
    return GridMappingConfig(
        identifier=gm["identifier"],
        bbox=_unwrapped_bbox(gm["bbox"], crs),
        crs=f"EPSG:{crs}" if isinstance(crs, int) else crs,
        spatial_res=pair(gm["spatial_res"], float),
        tile_size=pair(gm.get("tile_size", DEFAULT_TILE_SIZE), int),
    )


def _unwrapped_bbox(bbox: Any, crs: str | int) -> tuple[float, float, float, float]:
    """A geographic bbox with east < 0 < west crosses the antimeridian: east + 360, so the grid
    runs on past 180° (e.g. 170..190); the regridder wraps source longitudes onto it."""
    west, south, east, north = (float(v) for v in bbox)
    if east < 0 < west:
        import pyproj

        if pyproj.CRS.from_user_input(f"EPSG:{crs}" if isinstance(crs, int) else crs).is_geographic:
            east += 360.0
    return west, south, east, north


def _dataset(ds: Mapping[str, Any], path: tuple, base_dir: Path) -> DatasetConfig:
    multi = "variables" in ds
    if multi:
        sources = tuple(
            _source(v, (*path, "variables", j), base_dir) for j, v in enumerate(ds["variables"])
        )
        merge_params = {**DEFAULT_XR_MERGE_PARAMS, **copy.deepcopy(ds.get("xr_merge_params", {}))}
        hook = _hook(ds.get("custom_processing"), base_dir)
    else:
        sources = (_source(ds, path, base_dir),)
        merge_params = copy.deepcopy(dict(ds.get("xr_merge_params", {})))
        hook = None  # a single dataset's hook belongs to its one source
    return DatasetConfig(
        identifier=ds["identifier"],
        sources=sources,
        multi=multi,
        grid_mapping=ds.get("grid_mapping"),
        format_id=ds.get("format_id", "zarr"),
        chunksize=dict(ds.get("chunksize", {})),
        xr_merge_params=merge_params,
        custom_processing=hook,
        location=render_location(path),
    )


def _source(src: Mapping[str, Any], path: tuple, base_dir: Path) -> SourceConfig:
    temporal = src.get("temporal_resample_params")
    if temporal is not None:
        temporal = {"stage": DEFAULT_TEMPORAL_STAGE, **copy.deepcopy(dict(temporal))}
    return SourceConfig(
        identifier=src["identifier"],
        store=src["store"],
        data_id=src["data_id"],
        open_params=_resolve_image_hook(copy.deepcopy(dict(src.get("open_params", {}))), base_dir),
        custom_processing=_hook(src.get("custom_processing"), base_dir),
        spatial_resample_params=copy.deepcopy(dict(src.get("spatial_resample_params", {}))),
        temporal_resample_params=temporal,
        location=render_location(path),
    )


def _resolve_image_hook(open_params: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """An Earth Engine ``image_hook`` file is found like a ``custom_processing`` one
    (relative to the config file), so the store and the fingerprint see one absolute path."""
    hook = open_params.get("image_hook")
    if isinstance(hook, dict) and isinstance(hook.get("module_path"), str):
        path = hook["module_path"]
        file = find_module_file(path, base_dir) or resolve_path(path, base_dir)
        open_params["image_hook"] = {**hook, "module_path": str(file)}
    return open_params


def _hook(hook: Mapping[str, Any] | None, base_dir: Path) -> CustomProcessing | None:
    if hook is None:
        return None
    module_path = hook["module_path"]
    file = find_module_file(module_path, base_dir) or resolve_path(module_path, base_dir)
    return CustomProcessing(module_path=file, function_name=hook["function_name"])


def _general(general: Mapping[str, Any]) -> GeneralConfig:
    if "display" in general:
        display = general["display"]
    else:
        display = "log" if general.get("visualize") is False else "auto"
    dask = general.get("dask", {})
    scheduler = effective_scheduler(general)
    retries = general.get("retries", {})
    defaults = RetryConfig()
    base = GeneralConfig()
    return GeneralConfig(
        display=display,
        force_preload=bool(general.get("force_preload", base.force_preload)),
        dask=DaskConfig(
            scheduler=scheduler,
            num_workers=dask.get("num_workers"),
            address=dask.get("address"),
            n_workers=dask.get("n_workers"),
            threads_per_worker=dask.get("threads_per_worker"),
            cluster=dask.get("cluster"),
            cores=dask.get("cores"),
            memory=dask.get("memory"),
            walltime=dask.get("walltime"),
            queue=dask.get("queue"),
            account=dask.get("account"),
            job_extra_directives=tuple(dask.get("job_extra_directives", ())),
            wave_chunks=dask.get("wave_chunks", DaskConfig.wave_chunks),
            adapt=(
                (int(dask["adapt"].get("minimum", 0)), int(dask["adapt"]["maximum"]))
                if "adapt" in dask
                else None
            ),
        ),
        retries=RetryConfig(
            max_retries=int(retries.get("max_retries", defaults.max_retries)),
            backoff_s=float(retries.get("backoff_s", defaults.backoff_s)),
            max_backoff_s=float(retries.get("max_backoff_s", defaults.max_backoff_s)),
        ),
        max_parallel_datasets=int(general.get("max_parallel_datasets", base.max_parallel_datasets)),
        zarr_format=int(general.get("zarr_format", base.zarr_format)),
        quicklook=bool(general.get("quicklook", base.quicklook)),
        gdal_http_params=dict(general.get("gdal_http_params", {})),
    )
