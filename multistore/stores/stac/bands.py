"""Band dtype and nodata for STAC assets that do not declare them.

odc-stac takes ``data_type`` and ``nodata`` from the raster extension
(``raster:bands``, or STAC 1.1 ``bands``); without them every asset loads as
float32 with no nodata, so a uint8 COG becomes a float cube whose fill pixels
look like data. When the item metadata does not say, the header of ONE asset
per (collection, asset key) is read with GDAL (a HEAD and one range GET for a
COG over HTTP), and the answer is written into the asset dicts of all items of
that collection before odc-stac parses them. Answers are cached per store
instance, so a store reads each header at most once in its lifetime.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pystac
import rasterio
import rasterio.errors
from odc.loader._rio import rio_env
from odc.stac._mdtools import has_proj_data, has_proj_ext, is_raster_data

from ...errors import SourceOpenError

LOG = logging.getLogger(__name__)

# hrefs tried per (collection, asset key) before giving up (a broken first item must not
# decide for the whole collection)
_MAX_TRIES = 3

HeaderKey = tuple[str | None, str]  # (collection id, asset key)


@dataclass(frozen=True)
class BandHeader:
    """What one asset's header says about its bands (one entry per band)."""

    data_types: tuple[str, ...]
    nodata: tuple[float | int | None, ...]


def read_header(href: str, env: Mapping[str, Any]) -> BandHeader:
    """dtype and nodata of every band of the raster at ``href``, within GDAL settings ``env``.

    ``env`` is what odc-stac's driver captures (GDAL options plus ``_aws`` session
    kwargs), so the header is read exactly as the pixels will be.
    """
    with rio_env(**env), rasterio.open(href) as src:
        return BandHeader(
            tuple(np.dtype(d).name for d in src.dtypes),
            tuple(_plain(v) for v in src.nodatavals),
        )


def _plain(value: Any) -> float | int | None:
    if value is None:
        return None
    value = float(value)
    return int(value) if value.is_integer() else value


def _band_dicts(asset: pystac.Asset) -> list[dict[str, Any]]:
    """The band entries odc-stac reads: STAC 1.1 ``bands``, else ``raster:bands``."""
    bands = asset.extra_fields.get("bands")
    if isinstance(bands, list) and bands:
        return bands
    raster = asset.extra_fields.get("raster:bands")
    return raster if isinstance(raster, list) else []


def _declared(item: pystac.Item, asset: pystac.Asset, key: str) -> bool:
    if key in item.properties or key in asset.extra_fields:
        return True
    bands = _band_dicts(asset)
    return bool(bands) and all(isinstance(b, Mapping) and key in b for b in bands)


def undeclared_assets(item: pystac.Item, needed: Sequence[str] | None) -> list[str]:
    """Asset keys of ``item`` that odc-stac will load and whose dtype the metadata omits.

    Without ``needed``, odc-stac's own heuristic picks the raster assets.
    """
    if needed is not None:
        keys = [k for k in needed if k in item.assets]
    else:
        check_proj = has_proj_ext(item) and any(has_proj_data(a) for a in item.assets.values())
        keys = [k for k, a in item.assets.items() if is_raster_data(a, check_proj)]
    return [k for k in keys if not _declared(item, item.assets[k], "data_type")]


def _apply(item: pystac.Item, asset: pystac.Asset, header: BandHeader) -> None:
    """Write the header's dtype (and nodata, where nothing declares one) into the asset."""
    set_nodata = not _declared(item, asset, "nodata")
    bands = _band_dicts(asset)
    if len(bands) != len(header.data_types):
        bands = [{} for _ in header.data_types]
        asset.extra_fields["raster:bands"] = bands
    for band, dtype, nodata in zip(bands, header.data_types, header.nodata, strict=True):
        band["data_type"] = dtype
        if set_nodata and nodata is not None:
            band.setdefault("nodata", nodata)


class AssetHeaders:
    """Per-store cache of asset headers, keyed by (collection id, asset key).

    Thread-safe: datasets opened in parallel on one store share the cache, and
    a header being read by one thread is not read again by another.
    """

    def __init__(self, env: Callable[[], Mapping[str, Any]], *, concurrency: int = 8) -> None:
        self._env = env
        self._concurrency = max(1, int(concurrency))
        self._lock = threading.Lock()
        self._known: dict[HeaderKey, BandHeader] = {}
        self._key_locks: dict[HeaderKey, threading.Lock] = {}
        self.reads = 0  # headers read by this instance (for logs and tests)

    def complete(self, items: Iterable[pystac.Item], needed: Sequence[str] | None) -> None:
        """Fill in dtype/nodata of every asset of ``items`` that odc-stac would load without them."""
        todo: list[tuple[pystac.Item, str]] = []
        hrefs: dict[HeaderKey, list[str]] = {}
        for item in items:
            for key in undeclared_assets(item, needed):
                todo.append((item, key))
                candidates = hrefs.setdefault((item.collection_id, key), [])
                if len(candidates) < _MAX_TRIES:
                    candidates.append(item.assets[key].get_absolute_href() or item.assets[key].href)
        if not todo:
            return
        headers = self._headers(hrefs)
        for item, key in todo:
            _apply(item, item.assets[key], headers[(item.collection_id, key)])

    def _headers(self, hrefs: Mapping[HeaderKey, list[str]]) -> dict[HeaderKey, BandHeader]:
        keys = list(hrefs)
        with self._lock:
            if all(k in self._known for k in keys):
                return {k: self._known[k] for k in keys}
        env = dict(self._env())
        workers = min(self._concurrency, len(keys))
        with ThreadPoolExecutor(workers, thread_name_prefix="stac-header") as pool:
            found = pool.map(lambda k: self._header(k, hrefs[k], env), keys)
            return dict(zip(keys, found, strict=True))

    def _header(self, key: HeaderKey, hrefs: Sequence[str], env: Mapping[str, Any]) -> BandHeader:
        with self._lock:
            if key in self._known:
                return self._known[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # one reader per key; others wait for its answer
            with self._lock:
                if key in self._known:
                    return self._known[key]
            header = self._read(key, hrefs, env)
            with self._lock:
                self._known[key] = header
            return header

    def _read(self, key: HeaderKey, hrefs: Sequence[str], env: Mapping[str, Any]) -> BandHeader:
        errors = []
        for href in hrefs:
            try:
                header = read_header(href, env)
            except (rasterio.errors.RasterioError, OSError) as e:
                errors.append(f"{href}: {e}")
                continue
            with self._lock:
                self.reads += 1
            LOG.info(
                "stac: collection %s asset %s has no raster:bands; header of %s says %s, nodata %s",
                key[0], key[1], href, list(header.data_types), list(header.nodata),
            )  # fmt: skip
            return header
        raise SourceOpenError(
            f"asset {key[1]!r} of collection {key[0]!r} declares no data_type (raster:bands) "
            f"and its header cannot be read: {'; '.join(errors)}"
        )
