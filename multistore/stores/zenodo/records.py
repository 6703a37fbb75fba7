"""``store_id: zenodo`` without ``root`` (xcube-multistore's older form): one store for any
record, data ids ``<record>/<file>`` and, after preload, ``<record>/<archive stem>/<member>``.

Each record is served by its own ``ZenodoDataStore`` (same parameters), created on first
use; a given cache or staging root gets a ``<record>`` sub-folder so records never share
cache paths.
"""

from __future__ import annotations

import threading
from collections.abc import Container, Iterator
from typing import Any

from xcube.core.store import DataDescriptor, DataStore, DataTypeLike
from xcube.core.store.preload import NullPreloadHandle, PreloadHandle
from xcube.util.jsonschema import JsonObjectSchema

from ...errors import PreloadError, StoreError
from ...preload.events import ProgressCallback


class ZenodoRecordsStore(DataStore):
    """Routes ``<record>/<rest>`` data ids to one ``ZenodoDataStore`` per record."""

    #: ``preload_data`` takes ``progress`` and ``force`` (``contract.MonitoredPreloader``)
    preload_monitored = True

    def __init__(self, **params: Any):
        self._params = params
        self._children: dict[str, DataStore] = {}
        self._lock = threading.Lock()
        self.preload_handle: PreloadHandle = NullPreloadHandle()

    def __repr__(self) -> str:
        return f"ZenodoRecordsStore(records={sorted(self._children)})"

    @classmethod
    def get_data_store_params_schema(cls) -> JsonObjectSchema:
        from .store import ZenodoDataStore

        return ZenodoDataStore.get_data_store_params_schema()

    @classmethod
    def get_data_types(cls) -> tuple[str, ...]:
        from .store import ZenodoDataStore

        return ZenodoDataStore.get_data_types()

    # -- routing ---------------------------------------------------------------------

    def record_store(self, record_id: str) -> DataStore:
        """The store of one record, made on first use."""
        from .store import ZenodoDataStore

        with self._lock:
            store = self._children.get(record_id)
            if store is None:
                params = dict(self._params)
                cache = dict(params.get("cache_store_params") or {})
                if "root" in cache:
                    cache["root"] = f"{str(cache['root']).rstrip('/')}/{record_id}"
                    params["cache_store_params"] = cache
                if params.get("staging_dir"):
                    params["staging_dir"] = f"{str(params['staging_dir']).rstrip('/')}/{record_id}"
                store = ZenodoDataStore(root=record_id, **params)
                self._children[record_id] = store
            return store

    def _route(self, data_id: str) -> tuple[str, DataStore, str]:
        record, _, rest = data_id.partition("/")
        if not record.isdigit() or not rest:
            raise StoreError(
                f"zenodo store without 'root': data id {data_id!r} must be "
                "'<record id>/<file>' (or '<record id>/<archive stem>/<member>' after preload)"
            )
        return record, self.record_store(record), rest

    # -- DataStore -------------------------------------------------------------------

    def get_data_types_for_data(self, data_id: str) -> tuple[str, ...]:
        return self._route(data_id)[1].get_data_types_for_data(self._route(data_id)[2])

    def get_data_ids(
        self, data_type: DataTypeLike = None, include_attrs: Container[str] | bool = False
    ) -> Iterator[str] | Iterator[tuple[str, dict[str, Any]]]:
        """Ids of the records used so far (a rootless store cannot list all of Zenodo)."""
        for record, store in sorted(self._children.items()):
            for item in store.get_data_ids(data_type, include_attrs):
                if isinstance(item, tuple):
                    yield f"{record}/{item[0]}", item[1]
                else:
                    yield f"{record}/{item}"

    def has_data(self, data_id: str, data_type: DataTypeLike = None) -> bool:
        try:
            _, store, rest = self._route(data_id)
        except StoreError:
            return False
        return store.has_data(rest, data_type)

    def describe_data(self, data_id: str, data_type: DataTypeLike = None) -> DataDescriptor:
        _, store, rest = self._route(data_id)
        descriptor = store.describe_data(rest, data_type)
        descriptor.data_id = data_id
        return descriptor

    def get_data_opener_ids(
        self, data_id: str | None = None, data_type: DataTypeLike = None
    ) -> tuple[str, ...]:
        if data_id is None:
            return ()
        _, store, rest = self._route(data_id)
        return store.get_data_opener_ids(rest, data_type)

    def get_open_data_params_schema(
        self, data_id: str | None = None, opener_id: str | None = None
    ) -> JsonObjectSchema:
        if data_id is None:
            return JsonObjectSchema(additional_properties=True)
        _, store, rest = self._route(data_id)
        return store.get_open_data_params_schema(rest, opener_id)

    def open_data(self, data_id: str, opener_id: str | None = None, **open_params) -> Any:
        record, store, rest = self._route(data_id)
        try:
            return store.open_data(rest, opener_id, **open_params)
        except StoreError as e:  # the record store names keys without the record prefix
            raise StoreError(
                f"{e} (this store has no root: its data ids and preload keys are '{record}/<key>')"
            ) from e

    def search_data(self, data_type: DataTypeLike = None, **search_params) -> Iterator:
        raise StoreError("zenodo store without 'root' cannot search; give data ids")

    @classmethod
    def get_search_params_schema(cls, data_type: DataTypeLike = None) -> JsonObjectSchema:
        return JsonObjectSchema(additional_properties=False)

    # -- preload ---------------------------------------------------------------------

    def get_preload_data_params_schema(self) -> JsonObjectSchema:
        from .store import ZenodoDataStore

        return ZenodoDataStore.get_preload_data_params_schema(self)  # record-independent

    def preload_data(
        self,
        *data_ids: str,
        progress: ProgressCallback | None = None,
        force: bool = False,
        **preload_params: Any,
    ) -> DataStore:
        """Preload ``<record>/<file>`` keys, record by record; raises after trying all."""
        by_record: dict[str, list[str]] = {}
        for data_id in dict.fromkeys(data_ids):
            record, _, rest = self._route(data_id)
            by_record.setdefault(record, []).append(rest)
        errors: list[BaseException] = []
        for record, keys in by_record.items():
            store = self.record_store(record)
            try:
                store.preload_data(*keys, progress=progress, force=force, **preload_params)
            except Exception as e:  # the other records still preload
                errors.append(e)
            self.preload_handle = store.preload_handle
        if len(errors) == 1:
            raise errors[0]
        if errors:
            text = "\n".join(f"  {e}" for e in errors)
            raise PreloadError(f"{len(errors)} Zenodo records failed to preload:\n{text}")
        return self

    def close(self) -> None:
        for store in self._children.values():
            store.close()
