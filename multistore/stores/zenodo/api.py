"""A thin client for Zenodo's public REST API: records, their files and checksums.

Not ``zenodo-client`` from PyPI: it refuses to work without a token even for
public records, cannot be pointed at another base URL per instance (our tests
and the demo use a local emulator) and does not expose checksums for
verification. What we need is two GETs, so a small ``requests`` client it is.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import requests

from ...errors import StoreError
from ...preload.http import describe_retry_error, new_session
from ...retry import RetryPolicy

DEFAULT_BASE_URL = "https://zenodo.org"
GUEST_REQUESTS_PER_MINUTE = 60
TOKEN_REQUESTS_PER_MINUTE = 100

_RECORD_ID = re.compile(r"\d+")
_DOI = re.compile(r"(?:https?://(?:dx\.)?doi\.org/|doi:)?10\.\d+/zenodo\.(\d+)", re.IGNORECASE)
_RECORD_URL = re.compile(r"https?://[^/]+/(?:api/)?(?:records?|deposit)/(\d+)(?:[/?#].*)?")
# The three forms as one JSON Schema pattern, so `validate` rejects a bad root up front.
ROOT_PATTERN = (
    r"(?i)^\s*(?:" + "|".join(p.pattern for p in (_RECORD_ID, _DOI, _RECORD_URL)) + r")\s*$"
)


def resolve_record_id(root: str | int) -> str:
    """A record id from an id, a DOI (``10.5281/zenodo.13333034``) or a record URL."""
    text = str(root).strip()
    for pattern in (_RECORD_ID, _DOI, _RECORD_URL):
        match = pattern.fullmatch(text)
        if match:
            return match.group(1) if match.groups() else match.group(0)
    raise StoreError(
        f"root {text!r} is not a Zenodo record id, DOI (10.5281/zenodo.<id>) or record URL "
        "(https://zenodo.org/records/<id>)"
    )


@dataclass(frozen=True)
class ZenodoFile:
    key: str
    size: int | None
    checksum: str | None  # as published, e.g. "md5:<hex>"
    content_url: str  # links.self of the record's file entry

    @property
    def md5(self) -> str | None:
        if self.checksum is None:
            return None
        algorithm, _, digest = self.checksum.partition(":")
        return digest.lower() if algorithm.lower() == "md5" and digest else None


@dataclass(frozen=True)
class ZenodoRecord:
    record_id: str
    doi: str | None
    title: str | None
    files: tuple[ZenodoFile, ...]
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    def file(self, key: str) -> ZenodoFile:
        for f in self.files:
            if f.key == key:
                return f
        available = ", ".join(repr(f.key) for f in self.files) or "none"
        raise StoreError(
            f"Zenodo record {self.record_id} has no file {key!r}; available: {available}"
        )

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(f.key for f in self.files)


_MD5 = re.compile(r"[0-9a-fA-F]{32}")
MAX_FILE_SIZE = 2**44  # 16 TiB; Zenodo's quota is 50 GB per record (more on request)
_RESERVED_TOP = ".multistore"  # the cache's own folder (manifest, staging)


def checked_file(record_id: str, file: ZenodoFile) -> ZenodoFile:
    """``file`` if its key, size and checksum are safe to use as cache paths and numbers.

    A record's JSON comes from the network: a key like ``../../x`` or ``/etc/x``, or
    a checksum like ``md5:../../x``, would otherwise become a path outside the cache.
    """
    where = f"Zenodo record {record_id}"
    key = file.key
    if not isinstance(key, str) or not key:
        raise StoreError(f"{where} lists a file without a usable key: {key!r}")
    parts = key.split("/")
    if (
        "\\" in key
        or any(ord(c) < 32 for c in key)
        or key.startswith("/")
        or (len(key) > 1 and key[1] == ":")
        or any(p in ("", ".", "..") for p in parts)
        or parts[0] == _RESERVED_TOP
    ):
        raise StoreError(f"{where} lists a file key that is not a safe relative path: {key!r}")
    if file.size is not None and (
        not isinstance(file.size, int)
        or isinstance(file.size, bool)
        or not 0 <= file.size <= MAX_FILE_SIZE
    ):
        raise StoreError(f"{where}, file {key!r}: implausible size {file.size!r}")
    if file.checksum is not None:
        if not isinstance(file.checksum, str):
            raise StoreError(f"{where}, file {key!r}: checksum {file.checksum!r} is not text")
        algorithm, _, digest = file.checksum.partition(":")
        if algorithm.lower() == "md5" and not _MD5.fullmatch(digest):
            raise StoreError(
                f"{where}, file {key!r}: checksum {file.checksum!r} is not an md5 hex digest"
            )
    return file


class ZenodoClient:
    """Reads records from ``base_url``; the access token is only ever sent as a header."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        access_token: str | None = None,
        policy: RetryPolicy | None = None,
        timeout: float = 60.0,
        requests_per_minute: int | None = None,
        max_connections: int = 10,
    ):
        self.base_url = base_url.rstrip("/")
        self.policy = policy = policy or RetryPolicy()
        self.timeout = timeout
        if requests_per_minute is None:
            requests_per_minute = (
                TOKEN_REQUESTS_PER_MINUTE if access_token else GUEST_REQUESTS_PER_MINUTE
            )
        headers = {"Accept": "application/json"}
        if access_token:
            headers["Authorization"] = f"Bearer {access_token}"
        self.session = new_session(
            policy,
            requests_per_minute=requests_per_minute,
            headers=headers,
            pool_size=max_connections,
            rate_name=f"zenodo:{self.base_url}",
        )

    def __repr__(self) -> str:
        return f"ZenodoClient({self.base_url!r})"

    def get_record(self, record_id: str) -> ZenodoRecord:
        url = f"{self.base_url}/api/records/{record_id}"
        response = self._get(url, f"Zenodo record {record_id}")
        if response.status_code == 404:
            raise StoreError(f"Zenodo record {record_id} not found at {self.base_url} (HTTP 404)")
        if response.status_code in (401, 403):
            raise StoreError(
                f"Zenodo record {record_id} at {self.base_url}: access denied "
                f"(HTTP {response.status_code}); restricted records need a valid access_token"
            )
        if response.status_code != 200:
            raise StoreError(
                f"Zenodo record {record_id} at {self.base_url}: HTTP {response.status_code}"
            )
        try:
            body = response.json()
            files = tuple(
                checked_file(
                    record_id,
                    ZenodoFile(
                        key=f["key"],
                        size=f.get("size"),
                        checksum=f.get("checksum"),
                        content_url=(f.get("links") or {}).get("self")
                        or self.content_url(record_id, f["key"]),
                    ),
                )
                for f in body.get("files") or ()
            )
        except (ValueError, KeyError, TypeError) as e:
            raise StoreError(
                f"Zenodo record {record_id} at {self.base_url}: unexpected answer: {e}"
            ) from e
        metadata = body.get("metadata") or {}
        return ZenodoRecord(
            record_id=str(body.get("id", record_id)),
            doi=body.get("doi") or metadata.get("doi"),
            title=metadata.get("title") or body.get("title"),
            files=files,
            metadata=metadata,
        )

    def download_url(self, record_id: str, key: str) -> str:
        """The file URL that honours Range requests on zenodo.org."""
        return f"{self.base_url}/records/{record_id}/files/{urllib.parse.quote(key)}"

    def content_url(self, record_id: str, key: str) -> str:
        return f"{self.base_url}/api/records/{record_id}/files/{urllib.parse.quote(key)}/content"

    def supports_range(self, url: str, label: str) -> bool:
        """True when the server answers a one-byte Range request with 206 (detected, not assumed)."""
        response = self._get(url, label, headers={"Range": "bytes=0-0"}, stream=True)
        with response:
            if response.status_code == 404:
                raise StoreError(f"{label}: not found (HTTP 404)")
            return response.status_code == 206

    def _get(self, url: str, label: str, **kwargs: Any) -> requests.Response:
        try:
            return self.session.get(url, timeout=self.timeout, **kwargs)
        except requests.exceptions.RetryError as e:
            raise StoreError(f"{label}: {describe_retry_error(e, self.policy)}") from e
        except requests.exceptions.RequestException as e:
            raise StoreError(f"{label}: request to {self.base_url} failed: {e}") from e

    def close(self) -> None:
        self.session.close()
