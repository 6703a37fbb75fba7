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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from xcube.core.store import (
    DATASET_TYPE,
    DataDescriptor,
    DatasetDescriptor,
    DataStore,
    DataTypeLike,
    DefaultSearchMixin,
    PreloadHandle,
    new_data_descriptor,
    new_data_store,
)
from xcube.core.store.preload import ExecutorPreloadHandle, NullPreloadHandle
from xcube.util.jsonschema import (
    JsonObjectSchema,
)

from ...errors import PreloadError, StoreError
from ...preload.archive import ArchiveLimits, archive_stem
from ...preload.cache import PreloadCache
from ...preload.convert import is_raster, zarr_name
from ...preload.download import DEFAULT_SPLIT_BYTES
from ...preload.events import ProgressCallback
from ...preload.manifest import PreloadOutput, PreloadRecord
from ...preload.process import PreloadOptions, file_format
from ...rasterio_threads import share_opener_registry
from ...retry import RetryPolicy
from ..contract import DatasetsOnly
from ..validation import check_params
from .api import (
    DEFAULT_BASE_URL,
    ZenodoClient,
    ZenodoFile,
    ZenodoRecord,
    resolve_record_id,
)
from .params import preload_params_schema, raster_params_schema, store_params_schema
from .preload import RecordPreloader, TransferSettings
from .remote import OPENABLE_FORMATS, open_cached, open_raster, open_zarr_zip

log = logging.getLogger(__name__)

share_opener_registry()  # datasets opened in worker threads close anywhere


DEFAULT_CACHE_ROOT = Path("~/.cache/multistore/zenodo")
_ZARR_ZIP_SUFFIX = ".zarr.zip"


class ZenodoDataStore(DatasetsOnly, DefaultSearchMixin, DataStore):
    """Files of one Zenodo record; ``preload_data`` downloads, verifies, unpacks, converts."""

    #: ``preload_data`` takes ``progress`` and ``force`` (``contract.MonitoredPreloader``)
    preload_monitored = True

    def __new__(cls, root: str | int | None = None, **params: Any):
        """Without ``root`` (xcube-multistore's older form) the store serves every record,
        with data ids ``<record>/<file>``: see ``records.py``."""
        if root is None and cls is ZenodoDataStore:
            from .records import ZenodoRecordsStore

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
        return store_params_schema()

    def check_data_id(self, data_id: str) -> None:
        self._require(data_id)

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
        if preloaded is not None and preloaded.format in OPENABLE_FORMATS:
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
            return tuple(f"dataset:{fmt}:{protocol}" for fmt in OPENABLE_FORMATS)
        output = self._preloaded().get(data_id)
        fmt = output.format if output else file_format(data_id)
        if output is None and _is_zarr_zip(data_id):
            fmt = "zarr"
        return (f"dataset:{fmt}:{protocol}",) if fmt in OPENABLE_FORMATS else ()

    def get_open_data_params_schema(
        self, data_id: str | None = None, opener_id: str | None = None
    ) -> JsonObjectSchema:
        output = self._preloaded().get(data_id) if data_id else None
        if output is None and data_id is not None and file_format(data_id) == "geotiff":
            return raster_params_schema()
        if opener_id is None:
            opener_ids = self.get_data_opener_ids(data_id) if data_id else ()
            if not opener_ids:
                return JsonObjectSchema(additional_properties=True)
            opener_id = opener_ids[0]
        schema = self._cache.store.get_open_data_params_schema(opener_id=opener_id)
        if output is not None and output.converted_from == "geotiff":
            return raster_params_schema(schema)
        return schema

    def open_data(self, data_id: str, opener_id: str | None = None, **open_params) -> Any:
        open_params.pop("data_type", None)
        preloaded = self._preloaded()
        output = preloaded.get(data_id)
        if output is None and _is_zarr_zip(data_id):
            output = preloaded.get(archive_stem(data_id) or "")  # its unpacked copy
        if output is not None:
            return open_cached(
                self._cache, output, opener_id, open_params, f"Zenodo record {self._record_id}"
            )
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

    def _open_remote(
        self, file: ZenodoFile, opener_id: str | None, open_params: dict[str, Any]
    ) -> Any:
        label = f"Zenodo record {self._record_id}, file {file.key!r}"
        fmt = file_format(file.key)
        if _is_zarr_zip(file.key) and file.size:
            url = self._client.download_url(self._record_id, file.key)
            if self._client.supports_range(url, label):
                schema = self._cache.store.get_open_data_params_schema(
                    opener_id=f"dataset:zarr:{self._cache.protocol}"
                )
                return open_zarr_zip(
                    self._client.session, url, file.size, label, schema, open_params, self._timeout
                )
            log.info("%s: server does not support range reads; preloading it", label)
            self.preload_data(file.key)
            output = self._preloaded().get(archive_stem(file.key) or "")
            if output is None or output.format != "zarr":
                raise StoreError(f"{label}: preloaded, but it holds no Zarr at its top level")
            return open_cached(
                self._cache, output, opener_id, open_params, f"Zenodo record {self._record_id}"
            )
        if fmt in ("zip", "tar"):
            raise StoreError(
                f"{label} is an archive: preload it, then open its members as "
                f"'{archive_stem(file.key)}/<member>'"
            )
        if fmt == "geotiff" and file.size:
            url = self._client.download_url(self._record_id, file.key)
            if self._client.supports_range(url, label):
                name = file.key.rsplit("/", 1)[-1]
                return open_raster(
                    self._client.session, url, file.size, name, label, open_params, self._timeout
                )
            log.info("%s: server does not support range reads; downloading it", label)
        self.preload_data(file.key, convert_rasters=False)
        output = self._preloaded().get(file.key)
        if output is None:  # pragma: no cover - preload_data raises instead
            raise StoreError(f"{label}: downloaded but not found in the cache")
        return open_cached(
            self._cache, output, opener_id, open_params, f"Zenodo record {self._record_id}"
        )

    # -- preload ----------------------------------------------------------------

    def get_preload_data_params_schema(self) -> JsonObjectSchema:
        return preload_params_schema()

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
        check_params(self.get_preload_data_params_schema(), preload_params, "preload_params")
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
                        RecordPreloader(
                            self._source,
                            self._record_id,
                            self._client,
                            self._cache,
                            self._policy,
                            self._timeout,
                        ).preload_file,
                        files=files,
                        force=params["force"],
                        options=options,
                        progress=progress,
                        failures=failures,
                        transfer=TransferSettings(transfers, split_bytes),
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

    def close(self) -> None:
        """Closes connections; the cache is kept (it is the point of preloading)."""
        client = getattr(self, "_client", None)  # None when __init__ failed (bad root)
        if client is not None:
            client.close()


def _is_zarr_zip(key: str) -> bool:
    return key.lower().endswith(_ZARR_ZIP_SUFFIX) and len(key) > len(_ZARR_ZIP_SUFFIX)
