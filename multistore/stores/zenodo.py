"""The ``zenodo`` xcube data store: a Zenodo record's files, archives and verified preloads.

Data ids are the record's file keys; after a preload also the files inside
archives (``france/annual_disturbances_1985_2023_france.tif``) and the Zarr
conversions of rasters (``france/annual_disturbances_1985_2023_france.zarr``,
``planet_agb_30m_v0.1.zarr``), the names xcube-multistore configs use.

Preloaded data opens from the cache store without contacting Zenodo.
GeoTIFFs that are not preloaded open lazily over HTTP range reads when the
server answers a range request with 206, else they are downloaded into the
cache first. A Zarr shipped zipped (``<name>.zarr.zip``, the ZipStore layout)
opens lazily the same way, reading only the zip directory, the metadata and
the chunks used; without range support it is preloaded (unpacked into the
cache as ``<name>.zarr``) and opened from there. Members of archives that
are not preloaded raise an error
telling to preload the archive: unpacking a multi-GB archive should be a
visible, deliberate step, not a side effect of opening one variable.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Container, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xarray as xr
from xcube.core.store import (
    DATASET_TYPE,
    DataDescriptor,
    DatasetDescriptor,
    DataStore,
    DataTypeLike,
    DefaultSearchMixin,
    PreloadHandle,
    PreloadState,
    PreloadStatus,
    new_data_descriptor,
    new_data_store,
)
from xcube.core.store.preload import ExecutorPreloadHandle, NullPreloadHandle
from xcube.util.jsonencoder import to_json_value
from xcube.util.jsonschema import (
    JsonBooleanSchema,
    JsonComplexSchema,
    JsonIntegerSchema,
    JsonNumberSchema,
    JsonObjectSchema,
    JsonStringSchema,
)

from ..errors import MultistoreError, PreloadError, StoreError
from ..locks import Lease
from ..preload.archive import ArchiveLimits, archive_stem
from ..preload.cache import PreloadCache
from ..preload.convert import RASTER_VARIABLE, is_raster, zarr_name
from ..preload.download import DEFAULT_SPLIT_BYTES, RemoteFile, download_file, remove_partial
from ..preload.events import Phase, PreloadEvent, ProgressCallback
from ..preload.http import RetryPolicy
from ..preload.manifest import PreloadOutput, PreloadRecord
from ..preload.process import PreloadOptions, file_format, process_file
from ..preload.rangefile import ZIP_BLOCK_SIZE, open_range_file, range_opener
from ..rasterio_threads import share_opener_registry
from .zenodo_api import (
    DEFAULT_BASE_URL,
    ROOT_PATTERN,
    ZenodoClient,
    ZenodoFile,
    ZenodoRecord,
    resolve_record_id,
)

log = logging.getLogger(__name__)

share_opener_registry()  # datasets opened in worker threads close anywhere


DEFAULT_CACHE_ROOT = Path("~/.cache/multistore/zenodo")
_OPENABLE_FORMATS = ("zarr", "geotiff", "netcdf")
_ZARR_ZIP_SUFFIX = ".zarr.zip"
# xcube's Zarr open params that are not xarray.open_zarr's
_NOT_OPEN_ZARR_PARAMS = ("cache_size", "engine")
_RANGE_SPLIT_SCHEMA = JsonIntegerSchema(
    minimum=1,
    nullable=True,
    default=DEFAULT_SPLIT_BYTES,
    title="Files larger than this download in parallel HTTP ranges (null: never)",
)


def _raster_params_schema(base: JsonObjectSchema | None = None) -> JsonObjectSchema:
    """xcube's GeoTIFF open params (``tile_size``, ``band_as_variable``, ``overview_level``)."""
    from xcube.core.store.fs.impl.rasterio import RASTERIO_OPEN_DATA_PARAMS_SCHEMA

    if base is None:
        return RASTERIO_OPEN_DATA_PARAMS_SCHEMA
    properties = dict(base.properties)
    properties["tile_size"] = RASTERIO_OPEN_DATA_PARAMS_SCHEMA.properties["tile_size"]
    properties["band_as_variable"] = JsonBooleanSchema(
        default=False,
        description="Split the converted raster's 'band' dimension into variables band_1...",
    )
    return JsonObjectSchema(properties=properties, additional_properties=False)


class ZenodoDataStore(DefaultSearchMixin, DataStore):
    """Files of one Zenodo record; ``preload_data`` downloads, verifies, unpacks, converts."""

    #: ``preload_data`` takes ``progress`` and ``force`` (``contract.MonitoredPreloader``)
    preload_monitored = True

    def __new__(cls, root: str | int | None = None, **params: Any):
        """Without ``root`` (xcube-multistore's older form) the store serves every record,
        with data ids ``<record>/<file>``: see ``zenodo_records.py``."""
        if root is None and cls is ZenodoDataStore:
            from .zenodo_records import ZenodoRecordsStore

            return ZenodoRecordsStore(**params)
        return super().__new__(cls)

    def __init__(
        self,
        root: str | int,
        base_url: str = DEFAULT_BASE_URL,
        access_token: str | None = None,
        cache_store_id: str = "file",
        cache_store_params: dict[str, Any] | None = None,
        max_concurrency: int = 4,
        max_retries: int = 6,
        backoff_s: float = 1.0,
        timeout: float = 60.0,
        requests_per_minute: int | None = None,
        staging_dir: str | None = None,
        max_unpacked_bytes: int | None = None,
        max_archive_members: int | None = None,
        max_unpack_ratio: float | None = None,
        range_split_bytes: int | None = DEFAULT_SPLIT_BYTES,
    ):
        self._record_id = resolve_record_id(root)
        self._source = f"zenodo:{self._record_id}"
        self._policy = RetryPolicy(max_retries=max_retries, backoff_s=backoff_s)
        self._timeout = timeout
        self._max_concurrency = max_concurrency
        self._range_split_bytes = range_split_bytes
        defaults = ArchiveLimits()
        self._limits = ArchiveLimits(
            max_total_bytes=max_unpacked_bytes or defaults.max_total_bytes,
            max_members=max_archive_members or defaults.max_members,
            max_ratio=max_unpack_ratio or defaults.max_ratio,
        )
        self._client = ZenodoClient(
            base_url,
            access_token=access_token,
            policy=self._policy,
            timeout=timeout,
            requests_per_minute=requests_per_minute,
            max_connections=max(10, 2 * max_concurrency),
        )
        self._cache = self._new_cache(cache_store_id, cache_store_params, staging_dir)
        self._record: ZenodoRecord | None = None
        self._lock = threading.Lock()
        self.preload_handle: PreloadHandle = NullPreloadHandle()

    def _new_cache(
        self, store_id: str, params: dict[str, Any] | None, staging_dir: str | None
    ) -> PreloadCache:
        params = dict(params or {"root": str(DEFAULT_CACHE_ROOT / self._record_id)})
        if store_id == "file" and "root" in params:
            params["root"] = str(Path(params["root"]).expanduser().absolute())
        try:
            store = new_data_store(store_id, **params)
        except Exception as e:
            raise StoreError(
                f"Zenodo record {self._record_id}: cache store {store_id!r} could not be "
                f"created: {e}"
            ) from e
        staging = Path(staging_dir).expanduser() if staging_dir else None
        if staging is None and store_id != "file":
            staging = DEFAULT_CACHE_ROOT.expanduser() / "staging" / self._record_id
        return PreloadCache(store, staging_dir=staging)

    def __repr__(self) -> str:
        return f"ZenodoDataStore(record={self._record_id!r}, base_url={self._client.base_url!r})"

    # -- schema and types ------------------------------------------------------------

    @classmethod
    def get_data_store_params_schema(cls) -> JsonObjectSchema:
        return JsonObjectSchema(
            properties=dict(
                root=JsonComplexSchema(
                    one_of=[
                        JsonStringSchema(
                            min_length=1,
                            pattern=ROOT_PATTERN,
                            title="a record id, DOI (10.5281/zenodo.<id>) or record URL",
                        ),
                        JsonIntegerSchema(minimum=1),
                    ],
                    title="Record id, DOI (10.5281/zenodo.<id>) or record URL; without it, "
                    "data ids are '<record>/<file>'",
                ),
                base_url=JsonStringSchema(default=DEFAULT_BASE_URL, title="Zenodo server"),
                access_token=JsonStringSchema(
                    nullable=True, title="Personal access token, for restricted records"
                ),
                cache_store_id=JsonStringSchema(default="file"),
                cache_store_params=JsonObjectSchema(
                    additional_properties=True,
                    title="Params of the cache store (default root ~/.cache/multistore/zenodo/<id>)",
                ),
                max_concurrency=JsonIntegerSchema(minimum=1, default=4),
                max_retries=JsonIntegerSchema(minimum=0, default=6),
                backoff_s=JsonNumberSchema(minimum=0, default=1.0),
                timeout=JsonNumberSchema(exclusive_minimum=0, default=60.0),
                requests_per_minute=JsonIntegerSchema(
                    minimum=1, nullable=True, title="Default: 60 as guest, 100 with a token"
                ),
                staging_dir=JsonStringSchema(
                    nullable=True, title="Local folder for downloads (resumable partial files)"
                ),
                max_unpacked_bytes=JsonIntegerSchema(minimum=1, nullable=True),
                max_archive_members=JsonIntegerSchema(minimum=1, nullable=True),
                max_unpack_ratio=JsonNumberSchema(
                    minimum=1,
                    nullable=True,
                    title="Unpacked or converted bytes per byte of archive or file (default 1000)",
                ),
                range_split_bytes=_RANGE_SPLIT_SCHEMA,
            ),
            additional_properties=False,
        )

    @classmethod
    def get_data_types(cls) -> tuple[str, ...]:
        return (DATASET_TYPE.alias,)

    def get_data_types_for_data(self, data_id: str) -> tuple[str, ...]:
        self._require(data_id)
        return (DATASET_TYPE.alias,)

    # -- the record --------------------------------------------------------------

    @property
    def record_id(self) -> str:
        return self._record_id

    @property
    def record(self) -> ZenodoRecord:
        """The record's metadata, fetched once per store."""
        with self._lock:
            if self._record is None:
                self._record = self._client.get_record(self._record_id)
            return self._record

    @property
    def cache_store(self) -> DataStore:
        return self._cache.store

    def _records(self) -> list[PreloadRecord]:
        """This record's preloads (read from the cache, no network)."""
        return [r for r in self._cache.manifest.records() if r.source == self._source]

    def _preloaded(self) -> dict[str, PreloadOutput]:
        """Outputs of this record's preloads, by data id."""
        return {o.data_id: o for r in self._records() for o in r.outputs}

    # -- listing and describing ------------------------------------------------------

    def get_data_ids(
        self, data_type: DataTypeLike = None, include_attrs: Container[str] | bool = False
    ) -> Iterator[str] | Iterator[tuple[str, dict[str, Any]]]:
        records = self._records()
        preloaded = {o.data_id: o for r in records for o in r.outputs}
        preloaded_keys = {r.key for r in records}
        files = {f.key: f for f in self.record.files}
        ids = list(files) + [d for d in preloaded if d not in files]
        for data_id in ids:
            if include_attrs is False:
                yield data_id
                continue
            info = self._info(data_id, files.get(data_id), preloaded.get(data_id), preloaded_keys)
            if include_attrs is not True:
                info = {k: v for k, v in info.items() if k in include_attrs}
            yield data_id, info

    def has_data(self, data_id: str, data_type: DataTypeLike = None) -> bool:
        if data_type is not None and not DATASET_TYPE.is_super_type_of(data_type):
            return False
        return data_id in self._preloaded() or data_id in self.record.keys

    def describe_data(self, data_id: str, data_type: DataTypeLike = None) -> DataDescriptor:
        records = self._records()
        preloaded = next((o for r in records for o in r.outputs if o.data_id == data_id), None)
        file = next((f for f in self.record.files if f.key == data_id), None)
        if preloaded is None and file is None:
            self._require(data_id)
        info = self._info(data_id, file, preloaded, {r.key for r in records})
        if preloaded is not None and preloaded.format in _OPENABLE_FORMATS:
            descriptor = new_data_descriptor(data_id, self.open_data(data_id))
            descriptor.attrs = {**(descriptor.attrs or {}), **info}
            return descriptor
        return DatasetDescriptor(data_id, attrs=info)

    def _info(
        self,
        data_id: str,
        file: ZenodoFile | None,
        preloaded: PreloadOutput | None,
        preloaded_keys: set[str],
    ) -> dict[str, Any]:
        info: dict[str, Any] = {
            "zenodo_record": self._record_id,
            "format": preloaded.format if preloaded else file_format(data_id),
            "preloaded": preloaded is not None or data_id in preloaded_keys,
        }
        if file is not None:
            info.update(size=file.size, checksum=file.checksum)
        if preloaded is not None:
            info["source"] = preloaded.source
            if preloaded.converted_from:
                info["converted_from"] = preloaded.converted_from
        return info

    def _require(self, data_id: str) -> None:
        if not self.has_data(data_id):
            available = ", ".join(repr(d) for d in self.get_data_ids()) or "none"
            raise StoreError(
                f"Zenodo record {self._record_id} has no data {data_id!r}; available: {available}"
            )

    # -- openers ------------------------------------------------------------------

    def get_data_opener_ids(
        self, data_id: str | None = None, data_type: DataTypeLike = None
    ) -> tuple[str, ...]:
        protocol = self._cache.protocol
        if data_id is None:
            return tuple(f"dataset:{fmt}:{protocol}" for fmt in _OPENABLE_FORMATS)
        output = self._preloaded().get(data_id)
        fmt = output.format if output else file_format(data_id)
        if output is None and _is_zarr_zip(data_id):
            fmt = "zarr"
        return (f"dataset:{fmt}:{protocol}",) if fmt in _OPENABLE_FORMATS else ()

    def get_open_data_params_schema(
        self, data_id: str | None = None, opener_id: str | None = None
    ) -> JsonObjectSchema:
        output = self._preloaded().get(data_id) if data_id else None
        if output is None and data_id is not None and file_format(data_id) == "geotiff":
            return _raster_params_schema()
        if opener_id is None:
            opener_ids = self.get_data_opener_ids(data_id) if data_id else ()
            if not opener_ids:
                return JsonObjectSchema(additional_properties=True)
            opener_id = opener_ids[0]
        schema = self._cache.store.get_open_data_params_schema(opener_id=opener_id)
        if output is not None and output.converted_from == "geotiff":
            return _raster_params_schema(schema)
        return schema

    def open_data(self, data_id: str, opener_id: str | None = None, **open_params) -> Any:
        open_params.pop("data_type", None)
        preloaded = self._preloaded()
        output = preloaded.get(data_id)
        if output is None and _is_zarr_zip(data_id):
            output = preloaded.get(archive_stem(data_id) or "")  # its unpacked copy
        if output is not None:
            return self._open_cached(output, opener_id, open_params)
        record = self.record
        file = next((f for f in record.files if f.key == data_id), None)
        if file is not None:
            return self._open_remote(file, opener_id, open_params)
        label = f"Zenodo record {self._record_id}"
        archive = self._archive_holding(data_id)
        if archive is not None:
            raise StoreError(
                f"{label}: {data_id!r} is inside the archive {archive!r}, which is not "
                f"preloaded; preload it first (preload_datasets in the config, or "
                f"store.preload_data({archive!r}))"
            )
        raster = next((k for k in record.keys if is_raster(k) and zarr_name(k) == data_id), None)
        if raster is not None:
            raise StoreError(
                f"{label}: {data_id!r} is the Zarr conversion of {raster!r}, made by a preload; "
                f"preload {raster!r} first, or open {raster!r} directly"
            )
        self._require(data_id)
        raise StoreError(f"{label}: cannot open {data_id!r}")  # pragma: no cover

    def source_identity(self, data_id: str, **open_params: Any) -> dict[str, Any]:
        """What identifies ``data_id``'s content (for lockfiles): record version and md5."""
        for record in self._records():
            output = record.output(data_id)
            if output is None and _is_zarr_zip(data_id):
                output = record.output(archive_stem(data_id) or "")
            if output is not None:
                return {
                    "content": {
                        "record_id": self._record_id,
                        "key": record.key,
                        "md5": record.checksum,
                        "size": record.size,
                        "member": output.source,
                        "members": sorted(f"{o.data_id}<-{o.source}" for o in record.outputs),
                    },
                    "info": {"preloaded": True},
                }
        record = self.record
        file = record.file(data_id)
        return {
            "content": {
                "record_id": record.record_id,
                "doi": record.doi,
                "key": file.key,
                "md5": file.md5,
                "size": file.size,
            }
        }

    def _archive_holding(self, data_id: str) -> str | None:
        head = data_id.split("/", 1)[0]
        if "/" not in data_id:
            return None
        return next((k for k in self.record.keys if archive_stem(k) == head), None)

    def _open_cached(
        self, output: PreloadOutput, opener_id: str | None, open_params: dict[str, Any]
    ) -> Any:
        fmt = output.format
        if opener_id is None and fmt in _OPENABLE_FORMATS:
            opener_id = f"dataset:{fmt}:{self._cache.protocol}"
        band_as_variable = False
        tile_size = None
        if output.converted_from == "geotiff":
            # Like xcube's GeoTIFF opener: values as stored (a uint8 raster stays uint8).
            open_params.setdefault("mask_and_scale", False)
            band_as_variable = bool(open_params.pop("band_as_variable", False))
            tile_size = open_params.pop("tile_size", None)
        try:
            data = self._cache.store.open_data(output.data_id, opener_id=opener_id, **open_params)
        except MultistoreError:
            raise
        except Exception as e:
            raise StoreError(
                f"Zenodo record {self._record_id}: cannot open preloaded {output.data_id!r}: {e}"
            ) from e
        if tile_size is not None:
            data = data.chunk({"x": int(tile_size[0]), "y": int(tile_size[1])})
        if band_as_variable:
            data = _bands_as_variables(data)
        return data

    def _open_remote(
        self, file: ZenodoFile, opener_id: str | None, open_params: dict[str, Any]
    ) -> Any:
        label = f"Zenodo record {self._record_id}, file {file.key!r}"
        fmt = file_format(file.key)
        if _is_zarr_zip(file.key) and file.size:
            url = self._client.download_url(self._record_id, file.key)
            if self._client.supports_range(url, label):
                return self._open_remote_zarr_zip(file, url, open_params)
            log.info("%s: server does not support range reads; preloading it", label)
            self.preload_data(file.key)
            output = self._preloaded().get(archive_stem(file.key) or "")
            if output is None or output.format != "zarr":
                raise StoreError(f"{label}: preloaded, but it holds no Zarr at its top level")
            return self._open_cached(output, opener_id, open_params)
        if fmt in ("zip", "tar"):
            raise StoreError(
                f"{label} is an archive: preload it, then open its members as "
                f"'{archive_stem(file.key)}/<member>'"
            )
        if fmt == "geotiff" and file.size:
            url = self._client.download_url(self._record_id, file.key)
            if self._client.supports_range(url, label):
                return self._open_remote_raster(file, url, open_params)
            log.info("%s: server does not support range reads; downloading it", label)
        self.preload_data(file.key, convert_rasters=False)
        output = self._preloaded().get(file.key)
        if output is None:  # pragma: no cover - preload_data raises instead
            raise StoreError(f"{label}: downloaded but not found in the cache")
        return self._open_cached(output, opener_id, open_params)

    def _open_remote_zarr_zip(
        self, file: ZenodoFile, url: str, open_params: dict[str, Any]
    ) -> xr.Dataset:
        """Open a zipped Zarr lazily: zip directory, metadata and chunks come by range reads."""
        from fsspec.implementations.zip import ZipFileSystem

        label = f"Zenodo record {self._record_id}, file {file.key!r}"
        schema = self._cache.store.get_open_data_params_schema(
            opener_id=f"dataset:zarr:{self._cache.protocol}"
        )
        unknown = sorted(set(open_params) - set(schema.properties))
        try:
            if unknown:
                raise ValueError(
                    f"unknown: {', '.join(unknown)}; known: {sorted(schema.properties)}"
                )
            schema.validate_instance(open_params)
        except Exception as e:
            raise StoreError(f"{label}: invalid open_params: {e}") from e
        params = {k: v for k, v in open_params.items() if k not in _NOT_OPEN_ZARR_PARAMS}
        remote = open_range_file(
            self._client.session, url, file.size, timeout=self._timeout, block_size=ZIP_BLOCK_SIZE
        )
        try:
            zip_fs = ZipFileSystem(fo=remote, skip_instance_cache=True)  # one per file
            return xr.open_zarr(zip_fs.get_mapper(""), **params)
        except MultistoreError:
            raise
        except Exception as e:
            remote.close()
            raise StoreError(f"{label}: cannot open as a zipped Zarr over HTTP: {e}") from e

    def _open_remote_raster(self, file: ZenodoFile, url: str, open_params: dict[str, Any]) -> Any:
        import rioxarray

        schema = _raster_params_schema()
        try:
            schema.validate_instance(open_params)
        except Exception as e:
            raise StoreError(f"invalid open_params for {file.key!r}: {e}") from e
        tile_size = open_params.get("tile_size")
        x_size, y_size = tile_size or (1024, 1024)
        chunks = {"x": int(x_size), "y": int(y_size)}
        band_as_variable = open_params.get("band_as_variable", True)
        name = file.key.rsplit("/", 1)[-1]
        opener = range_opener(
            self._client.session, url, file.size, name=name, timeout=self._timeout
        )
        try:
            array = rioxarray.open_rasterio(
                name,
                opener=opener,
                overview_level=open_params.get("overview_level"),
                chunks=chunks,
                band_as_variable=band_as_variable,
            )
        except Exception as e:
            raise StoreError(
                f"Zenodo record {self._record_id}, file {file.key!r}: cannot open over HTTP: {e}"
            ) from e
        if band_as_variable:
            dataset = array
        else:
            dataset = xr.Dataset({array.name or "data": array}).squeeze(drop=True)
        if "spatial_ref" in dataset.coords:
            for var in dataset.data_vars.values():
                var.attrs["grid_mapping"] = "spatial_ref"
        for var in dataset.variables.values():
            var.attrs.update(to_json_value(var.attrs))
        dataset.attrs.update(to_json_value(dataset.attrs))
        return dataset

    # -- preload ----------------------------------------------------------------

    def get_preload_data_params_schema(self) -> JsonObjectSchema:
        return JsonObjectSchema(
            properties=dict(
                force=JsonBooleanSchema(default=False, title="Redo even if already preloaded"),
                convert_rasters=JsonBooleanSchema(
                    default=True, title="Also write each GeoTIFF as <stem>.zarr"
                ),
                convert_netcdf=JsonBooleanSchema(
                    default=False, title="Also write each NetCDF file as <stem>.zarr"
                ),
                chunk_size=JsonIntegerSchema(minimum=16, default=1024),
                zarr_format=JsonIntegerSchema(enum=[2, 3], default=2),
                range_split_bytes=_RANGE_SPLIT_SCHEMA,
                silent=JsonBooleanSchema(default=True, title="No xcube preload tables on stdout"),
            ),
            additional_properties=False,
        )

    def preload_data(
        self,
        *data_ids: str,
        progress: ProgressCallback | None = None,
        force: bool = False,
        **preload_params: Any,
    ) -> DataStore:
        """Preload file keys (archives or plain files); blocks until done, raises on failure.

        ``progress`` receives a ``PreloadEvent`` per step; ``force`` redoes
        preloads already done; other params: ``get_preload_data_params_schema()``.
        Returns this store, with ``preload_handle`` set, as xcube's API does.
        """
        preload_params["force"] = bool(preload_params.get("force", False) or force)
        try:
            self.get_preload_data_params_schema().validate_instance(preload_params)
        except Exception as e:
            raise StoreError(f"Zenodo record {self._record_id}: invalid preload params: {e}") from e
        schema = self.get_preload_data_params_schema()
        params = {k: preload_params.get(k, s.default) for k, s in schema.properties.items()}
        split_bytes = preload_params.get("range_split_bytes", self._range_split_bytes)
        options = PreloadOptions(
            convert_rasters=params["convert_rasters"],
            convert_netcdf=params["convert_netcdf"],
            chunk_size=params["chunk_size"],
            zarr_format=params["zarr_format"],
            limits=self._limits,
        )
        keys = tuple(dict.fromkeys(data_ids))
        record = self.record
        files = {key: record.file(key) for key in keys}  # unknown keys fail before any work
        # Our own record of failures: xcube's handle can miss a job that fails very fast.
        failures: dict[str, BaseException] = {}
        # Every HTTP transfer (a whole file or one range of a large one) runs on this one
        # pool, so max_concurrency bounds the connections of all files together. File
        # workers only wait for their transfers, then verify, unpack and convert.
        # xcube's handle maps a finished future to its data id through a dict it fills
        # only after submitting: a job that ends at once (already preloaded) finds no entry
        # and its done-callback fails ("assert data_id is not None") or names the wrong id.
        # So jobs start only once the handle is fully built; then we wait for them.
        started = threading.Event()
        workers = ThreadPoolExecutor(
            max_workers=self._max_concurrency, thread_name_prefix="zenodo-preload"
        )
        with ThreadPoolExecutor(
            max_workers=self._max_concurrency, thread_name_prefix="zenodo-transfer"
        ) as transfers:
            try:
                handle = ExecutorPreloadHandle(
                    keys,
                    preload_data=functools.partial(
                        self._preload_file,
                        files=files,
                        force=params["force"],
                        options=options,
                        progress=progress,
                        failures=failures,
                        transfer=_TransferSettings(transfers, split_bytes),
                        started=started,
                    ),
                    executor=workers,
                    blocking=False,
                    silent=params["silent"],
                )
            finally:
                started.set()
                workers.shutdown(wait=True)
        self.preload_handle = handle
        errors = [failures[key] for key in keys if key in failures]
        if len(errors) == 1:
            raise errors[0]
        if errors:
            text = "\n".join(f"  {e}" for e in errors)
            raise PreloadError(
                f"Zenodo record {self._record_id}: {len(errors)} of {len(keys)} preloads "
                f"failed:\n{text}"
            ) from errors[0]
        return self

    def _preload_file(
        self,
        handle: PreloadHandle,
        key: str,
        *,
        files: dict[str, ZenodoFile],
        force: bool,
        options: PreloadOptions,
        progress: ProgressCallback | None,
        failures: dict[str, BaseException],
        transfer: _TransferSettings,
        started: threading.Event,
    ) -> None:
        started.wait()
        emit = functools.partial(self._emit, handle, progress, key)
        try:
            self._preload_steps(handle, files[key], force, options, emit, transfer)
        except BaseException as e:
            failures[key] = e
            emit("failed", message=str(e))
            handle.notify(PreloadState(key, status=PreloadStatus.failed, exception=e))
            raise
        handle.notify(PreloadState(key, status=PreloadStatus.completed))

    def _preload_steps(
        self,
        handle: PreloadHandle,
        file: ZenodoFile,
        force: bool,
        options: PreloadOptions,
        emit: functools.partial,
        transfer: _TransferSettings,
    ) -> None:
        lock = self._cache.lock(f"{self._source}/{file.key}")

        def waiting(holder: Lease | None, path: str) -> None:
            who = holder.describe() if holder else "another run"
            emit("waiting", message=f"being preloaded by {who} (lock {path})")

        lock.acquire(on_wait=waiting)
        try:
            self._preload_locked(handle, file, force, options, emit, transfer)
        finally:
            lock.release()

    def _preload_locked(
        self,
        handle: PreloadHandle,
        file: ZenodoFile,
        force: bool,
        options: PreloadOptions,
        emit: functools.partial,
        transfer: _TransferSettings,
    ) -> None:
        key = file.key
        label = f"Zenodo record {self._record_id}, file {key!r}"
        manifest = self._cache.manifest
        if not force and manifest.current(self._source, key, file.checksum) is not None:
            emit("skipped", message="already preloaded")
            return
        remote = RemoteFile(
            url=self._client.download_url(self._record_id, key),
            key=key,
            label=label,
            size=file.size,
            md5=file.md5,
        )
        manifest.remove(key)
        if force:
            remove_partial(self._cache.partial_dir, remote)
        with self._cache.workdir() as work:
            local = download_file(
                self._client.session,
                remote,
                work / key,
                partial_dir=self._cache.partial_dir,
                policy=self._policy,
                timeout=self._timeout,
                progress=lambda done, total: emit("download", bytes_done=done, bytes_total=total),
                cancelled=lambda: handle.cancelled,
                on_verify=lambda: emit("verify", message="checking md5"),
                split_bytes=transfer.split_bytes,
                executor=transfer.executor,
            )
            try:
                processed = process_file(
                    local,
                    key,
                    work,
                    options,
                    progress=lambda phase, done, total: emit(
                        phase, files_done=done, files_total=total
                    ),
                )
            except PreloadError as e:
                raise type(e)(f"Zenodo record {self._record_id}, {e}") from e
            for entry in processed.entries:
                self._cache.commit(entry.local, entry.name)
        manifest.put(PreloadRecord(self._source, key, file.checksum, file.size, processed.outputs))
        emit("done", message=f"{len(processed.outputs)} data id(s)")

    def _emit(
        self,
        handle: PreloadHandle,
        progress: ProgressCallback | None,
        key: str,
        phase: Phase,
        **fields: Any,
    ) -> None:
        event = PreloadEvent(store=self._source, data_id=key, phase=phase, **fields)
        if progress is not None:
            try:
                progress(event)
            except Exception:  # a broken display must not break the preload
                log.exception("preload progress callback failed")
        if phase not in ("done", "failed"):  # xcube's handle sets the final status itself
            message = f"{phase}: {event.message}" if event.message else phase
            handle.notify(PreloadState(key, progress=event.fraction, message=message))

    def close(self) -> None:
        """Closes connections; the cache is kept (it is the point of preloading)."""
        client = getattr(self, "_client", None)  # None when __init__ failed (bad root)
        if client is not None:
            client.close()


def _is_zarr_zip(key: str) -> bool:
    return key.lower().endswith(_ZARR_ZIP_SUFFIX) and len(key) > len(_ZARR_ZIP_SUFFIX)


@dataclass(frozen=True)
class _TransferSettings:
    """How one ``preload_data`` call downloads: its shared transfer pool and range split size."""

    executor: Executor
    split_bytes: int | None


def _bands_as_variables(ds: xr.Dataset) -> xr.Dataset:
    """``band_data(band, y, x)`` -> ``band_1``, ``band_2``... as xcube's GeoTIFF opener names them."""
    if RASTER_VARIABLE not in ds or "band" not in ds[RASTER_VARIABLE].dims:
        return ds.rename({RASTER_VARIABLE: "band_1"}) if RASTER_VARIABLE in ds else ds
    variable = ds[RASTER_VARIABLE]
    bands = {f"band_{int(b)}": variable.sel(band=b, drop=True) for b in variable["band"].values}
    return ds.drop_vars([RASTER_VARIABLE, "band"]).assign(bands)
