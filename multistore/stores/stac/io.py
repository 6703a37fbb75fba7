"""Reading STAC JSON from local paths, http(s) and any fsspec URL (s3, ...), and
turning fsspec-style ``storage_options`` into GDAL settings for asset reads.

HTTP goes through one ``requests`` session with urllib3 retries (pooled for
parallel crawls); other schemes through fsspec, which knows s3/gcs/az.
Errors name the href, never the storage options (they may hold secrets).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import fsspec
import requests
from odc.loader._rio import RioDriver
from pystac_client.conformance import ConformanceClasses
from requests.adapters import HTTPAdapter

from ...config.redact import unsigned_url
from ...config.resolve import is_url
from ...errors import StoreError
from ...retry import RetryPolicy, urllib3_retry

LOG = logging.getLogger(__name__)

_HTTP_SCHEMES = ("http", "https")


def is_http(href: str) -> bool:
    return urlparse(href).scheme in _HTTP_SCHEMES


class JsonReader:
    """Reads JSON documents; safe to share between threads."""

    def __init__(
        self,
        storage_options: Mapping[str, Any] | None = None,
        *,
        retries: int = 3,
        backoff: float = 0.2,
        pool_size: int = 16,
        timeout: float = 30.0,
    ):
        self._storage_options = dict(storage_options or {})
        self._timeout = timeout
        self._session = requests.Session()
        retry = urllib3_retry(RetryPolicy(max_retries=retries, backoff_s=backoff), False)
        adapter = HTTPAdapter(max_retries=retry, pool_connections=pool_size, pool_maxsize=pool_size)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        headers = self._storage_options.get("headers")
        if isinstance(headers, Mapping):
            self._session.headers.update(headers)
        self._fs_options = {k: v for k, v in self._storage_options.items() if k != "headers"}

    @property
    def session(self) -> requests.Session:
        return self._session

    def read(self, href: str) -> dict[str, Any]:
        try:
            raw = self._read_bytes(href)
        except StoreError:
            raise
        except (OSError, requests.RequestException) as e:
            raise StoreError(f"cannot read STAC document {href}: {_short(e)}") from None
        try:
            doc = json.loads(raw)
        except ValueError as e:
            raise StoreError(f"STAC document {href} is not valid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise StoreError(f"STAC document {href} is not a JSON object")
        return doc

    def _read_bytes(self, href: str) -> bytes:
        if is_http(href):
            response = self._session.get(href, timeout=self._timeout)
            if response.status_code != 200:
                raise StoreError(f"cannot read STAC document {href}: HTTP {response.status_code}")
            return response.content
        if not is_url(href) or urlparse(href).scheme == "file":
            with open(href.removeprefix("file://"), "rb") as f:
                return f.read()
        fs, path = fsspec.core.url_to_fs(href, **self._fs_options)
        return fs.cat_file(path)

    def close(self) -> None:
        self._session.close()


def _short(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text if len(text) < 300 else text[:300] + "..."


# -- GDAL settings for asset reads ---------------------------------------------------------


@dataclass(frozen=True)
class GdalAccess:
    """GDAL config options plus ``rasterio.session.AWSSession`` kwargs.

    Kept apart because rasterio refuses credentials as plain config options;
    odc-stac takes the session kwargs as ``_aws`` in its captured environment.
    """

    options: dict[str, str] = field(default_factory=dict)
    aws: dict[str, Any] | None = None


def gdal_access(
    storage_options: Mapping[str, Any] | None, *, max_retry: int = 3, retry_delay: float = 0.5
) -> GdalAccess:
    """Translate s3fs-style storage options (anon, key, secret, endpoint_url, ...) for GDAL."""
    so = dict(storage_options or {})
    client_kwargs = dict(so.get("client_kwargs") or {})
    options = {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "GDAL_HTTP_MAX_RETRY": str(int(max_retry)),
        "GDAL_HTTP_RETRY_DELAY": str(retry_delay),
    }
    aws: dict[str, Any] = {}
    endpoint = so.get("endpoint_url") or client_kwargs.get("endpoint_url")
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        aws["endpoint_url"] = parsed.netloc
        options["AWS_HTTPS"] = "NO" if parsed.scheme == "http" else "YES"
        options["AWS_VIRTUAL_HOSTING"] = "FALSE"
    if so.get("anon"):
        aws["aws_unsigned"] = True
    key, secret = so.get("key"), so.get("secret")
    if key and secret:
        aws["aws_access_key_id"] = key
        aws["aws_secret_access_key"] = secret
        if so.get("token"):
            aws["aws_session_token"] = so["token"]
    region = so.get("region_name") or client_kwargs.get("region_name")
    if region:
        aws["region_name"] = region
    if so.get("requester_pays"):
        aws["requester_pays"] = True
    return GdalAccess(options=options, aws=aws or None)


class ScopedRioDriver(RioDriver):
    """odc-stac's rasterio driver with this store's GDAL settings and AWS session.

    odc-stac captures the environment once per load and restores it around every
    chunk read (also on dask workers), so nothing is set process-wide.
    """

    def __init__(self, access: GdalAccess):
        super().__init__()
        self._access = access

    def capture_env(self) -> dict[str, Any]:
        env = {**super().capture_env(), **self._access.options}
        if self._access.aws is not None:
            env["_aws"] = dict(self._access.aws)
        return env


def is_json_path(data_id: str) -> bool:
    """xcube-stac's data ids: an item or collection JSON path relative to the store url."""
    return data_id.endswith(".json")


def abspath(path: str) -> str:
    import os

    return os.path.abspath(os.path.expanduser(path))


def conforms(uris: Sequence[str], cls: ConformanceClasses) -> bool:
    return any(isinstance(u, str) and cls.pattern.fullmatch(u) for u in uris)


def unsigned_href(href: str | None) -> str | None:
    """Signed hrefs (Planetary Computer SAS tokens, S3 pre-signed URLs) change at every
    signing and carry credentials: a lock names what they point at."""
    return unsigned_url(href) if href else href
