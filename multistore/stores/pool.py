"""Named data stores of one config, created lazily on an instance (never shared class state)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from xcube.core.store import DataStore, get_data_store_params_schema, new_data_store

from ..config.model import STORAGE_STORE, StoreConfig
from ..errors import StoreError
from ..gdalenv import GdalSettings, s3_settings, s3fs_options

CACHE_FOLDER = ".multistore-cache"

# xcube's S3 file-system store: its storage_options are s3fs keywords.
S3_STORE_ID = "s3"
# Stores that read nothing over the network: GDAL's HTTP settings do not concern them.
LOCAL_STORE_IDS = frozenset({"file", "memory"})


class StorePool(Mapping[str, DataStore]):
    """``pool["storage"]`` or ``pool.storage``: the xcube data store of a config entry.

    Stores that keep a cache (their params schema has ``cache_store_params``)
    get a default cache folder next to the config, so preloaded data lives
    with the project rather than in the working directory.
    """

    def __init__(self, configs: tuple[StoreConfig, ...], base_dir: Path):
        self._configs = {c.identifier: c for c in configs}
        self._base_dir = Path(base_dir)
        self._stores: dict[str, DataStore] = {}
        self._lock = threading.Lock()

    def __getitem__(self, identifier: str) -> DataStore:
        with self._lock:
            if identifier not in self._stores:
                if identifier not in self._configs:
                    raise KeyError(
                        f"no data store {identifier!r} (defined: {', '.join(self._configs)})"
                    )
                self._stores[identifier] = self._create(self._configs[identifier])
            return self._stores[identifier]

    def __getattr__(self, identifier: str) -> DataStore:
        if identifier.startswith("_"):
            raise AttributeError(identifier)
        try:
            return self[identifier]
        except KeyError as e:
            raise AttributeError(str(e)) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._configs)

    def __len__(self) -> int:
        return len(self._configs)

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *self._configs]

    @property
    def storage(self) -> DataStore:
        return self[STORAGE_STORE]

    def store_params(self, cfg: StoreConfig) -> dict[str, Any]:
        """The params a store is created with, defaults filled in."""
        params = dict(cfg.store_params)
        if cfg.store_id == S3_STORE_ID and isinstance(params.get("storage_options"), Mapping):
            params["storage_options"] = s3fs_options(params["storage_options"])
        try:
            schema = get_data_store_params_schema(cfg.store_id)
            properties = schema.properties
        except Exception:  # an unknown store id is reported when the store is created
            properties = {}
        wants_cache = "cache_store_params" in properties and "cache_store_params" not in params
        if wants_cache and params.get("cache_store_id", "file") == "file":
            root = self._base_dir / CACHE_FOLDER / cfg.identifier
            params["cache_store_params"] = {"root": str(root)}
        return params

    def gdal_settings(self, identifier: str, general: GdalSettings | None = None) -> GdalSettings:
        """GDAL options for reading the data of store ``identifier``.

        ``general`` (the run's HTTP options) plus, for s3 stores, S3 access:
        xcube's GeoTIFF opener reads through GDAL's /vsis3/, which knows
        nothing of s3fs's storage options; these settings tell it the same.
        Local stores get none (no network: scoping their tasks would only cost).
        """
        cfg = self._configs.get(identifier)
        if cfg is None:
            raise KeyError(f"no data store {identifier!r} (defined: {', '.join(self._configs)})")
        if cfg.store_id in LOCAL_STORE_IDS:
            return GdalSettings()
        settings = general or GdalSettings()
        options = cfg.store_params.get("storage_options")
        if cfg.store_id != S3_STORE_ID or not isinstance(options, Mapping):
            return settings
        try:
            return settings.merged(s3_settings(options))
        except ValueError as e:
            raise StoreError(f"data store {identifier!r}: storage_options: {e}") from None

    def _create(self, cfg: StoreConfig) -> DataStore:
        try:
            return new_data_store(cfg.store_id, **self.store_params(cfg))
        except Exception as e:
            raise StoreError(
                f"data store {cfg.identifier!r} ({cfg.store_id}) could not be created: {e}"
            ) from e
