"""Frozen, resolved config types.

A ``Config`` is what the rest of multistore sees: env vars interpolated,
relative paths made absolute against the config file's folder, defaults
filled in, cross-references checked. Raw user dicts survive only where a
store or the regridder interprets them (``store_params``, ``open_params``,
resample params).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from ..errors import UnknownNameError
from .redact import Masker

STORAGE_STORE = "storage"

DisplayMode = Literal["auto", "rich", "notebook", "log", "json", "none"]


@dataclass(frozen=True)
class CustomProcessing:
    """A user hook ``function_name(ds: xr.Dataset) -> xr.Dataset`` in ``module_path``."""

    module_path: Path  # absolute
    function_name: str


@dataclass(frozen=True)
class StoreConfig:
    identifier: str
    store_id: str
    store_params: Mapping[str, Any] = field(repr=False)  # may hold credentials


@dataclass(frozen=True)
class GridMappingConfig:
    identifier: str
    bbox: tuple[float, float, float, float]  # west, south, east, north in `crs`
    crs: str
    spatial_res: tuple[float, float]  # x, y (both positive)
    tile_size: tuple[int, int]  # x, y


@dataclass(frozen=True)
class SourceConfig:
    """Where one variable (or a single dataset's content) comes from."""

    identifier: str  # the variable identifier; for single datasets the dataset identifier
    store: str
    data_id: str
    open_params: Mapping[str, Any] = field(default_factory=dict)
    custom_processing: CustomProcessing | None = None
    spatial_resample_params: Mapping[str, Any] = field(default_factory=dict)
    temporal_resample_params: Mapping[str, Any] | None = None
    location: str = ""  # e.g. "datasets[2].variables[0]", for messages


@dataclass(frozen=True)
class DatasetConfig:
    identifier: str
    sources: tuple[SourceConfig, ...]
    multi: bool  # True when written with `variables:` in the config
    grid_mapping: str | None = None  # a grid_mappings identifier or a dataset identifier
    format_id: Literal["zarr", "netcdf", "levels", "geotiff"] = "zarr"
    chunksize: Mapping[str, int] = field(default_factory=dict)
    xr_merge_params: Mapping[str, Any] = field(default_factory=dict)
    custom_processing: CustomProcessing | None = None  # multi datasets: applied after merge
    location: str = ""  # "datasets[i]"

    @property
    def file_name(self) -> str:
        if self.format_id == "geotiff":  # a folder of alignment groups (multistore.native)
            return self.identifier
        suffix = {"netcdf": "nc", "levels": "levels"}.get(self.format_id, "zarr")
        return f"{self.identifier}.{suffix}"


@dataclass(frozen=True)
class PreloadConfig:
    store: str
    data_ids: tuple[str, ...]
    preload_params: Mapping[str, Any] = field(default_factory=dict)
    location: str = ""


@dataclass(frozen=True)
class DaskConfig:
    """Which dask scheduler runs the pixel work."""

    scheduler: Literal["threads", "processes", "synchronous", "distributed"] = "threads"
    num_workers: int | None = None  # threads/processes; None = number of cores
    address: str | None = None  # distributed: an existing scheduler
    n_workers: int | None = None  # distributed without address: a LocalCluster
    threads_per_worker: int | None = None
    # a batch system (dask-jobqueue): one worker per job; n_workers jobs unless adapt is set
    cluster: Literal["slurm", "pbs", "sge"] | None = None
    cores: int | None = None
    memory: str | None = None
    walltime: str | None = None
    queue: str | None = None
    account: str | None = None
    job_extra_directives: tuple[str, ...] = ()
    adapt: tuple[int, int] | None = None  # (minimum, maximum) jobs
    wave_chunks: int = 4096  # chunks of a cube computed per wave (bounded graphs)


@dataclass(frozen=True)
class RetryConfig:
    """Retries for transient errors when opening sources and writing cubes."""

    max_retries: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0


@dataclass(frozen=True)
class GeneralConfig:
    display: DisplayMode = "auto"
    force_preload: bool = False
    dask: DaskConfig = field(default_factory=DaskConfig)
    retries: RetryConfig = field(default_factory=RetryConfig)
    max_parallel_datasets: int = 2
    zarr_format: Literal[2, 3] = 2
    quicklook: bool = False
    gdal_http_params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    base_dir: Path  # folder of the config file; relative paths resolve here
    data_stores: tuple[StoreConfig, ...]
    grid_mappings: tuple[GridMappingConfig, ...]
    datasets: tuple[DatasetConfig, ...]
    preload_datasets: tuple[PreloadConfig, ...] = ()
    general: GeneralConfig = field(default_factory=GeneralConfig)
    path: Path | None = None
    # interpolated, for display/fingerprint; show it only through redact(raw, secret_values)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    # strings to redact wherever they appear
    secret_values: frozenset[str] = field(default=frozenset(), repr=False)

    def __repr__(self) -> str:
        """The dataclass repr with every secret masked (data ids may hold tokens)."""
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)
        return Masker(self.secret_values)(f"{type(self).__name__}({shown})")

    def store(self, identifier: str) -> StoreConfig:
        for store in self.data_stores:
            if store.identifier == identifier:
                return store
        raise UnknownNameError("store", identifier, (s.identifier for s in self.data_stores))

    def grid_mapping(self, identifier: str) -> GridMappingConfig | None:
        return next((g for g in self.grid_mappings if g.identifier == identifier), None)

    def dataset(self, identifier: str) -> DatasetConfig | None:
        return next((d for d in self.datasets if d.identifier == identifier), None)
