"""Read-only, seekable files over HTTP Range requests, for lazy opening without download.

Reads go through a ``requests`` session, so they share its retries, rate
limit and auth headers (fsspec's HTTP filesystem would bypass all three).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import requests

from ..errors import StoreError

DEFAULT_BLOCK_SIZE = 1 << 20
ZIP_BLOCK_SIZE = 64 << 10  # zip headers are small and scattered; member data is read whole


class HttpRangeReader(io.RawIOBase):
    """A raw file of known ``size`` at ``url``; every read is one ``Range`` GET."""

    def __init__(self, session: requests.Session, url: str, size: int, *, timeout: float = 60.0):
        super().__init__()
        self._session = session
        self._url = url
        self._size = size
        self._timeout = timeout
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        if self._pos >= self._size:
            return 0
        end = min(self._size, self._pos + len(buffer)) - 1
        response = self._session.get(
            self._url, headers={"Range": f"bytes={self._pos}-{end}"}, timeout=self._timeout
        )
        if response.status_code != 206:
            raise StoreError(
                f"range read of {self._url} answered HTTP {response.status_code}, expected 206"
            )
        data = response.content
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n


def open_range_file(
    session: requests.Session,
    url: str,
    size: int,
    *,
    timeout: float = 60.0,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> io.BufferedReader:
    """A buffered, seekable binary file over range reads (reads above ``block_size`` go direct)."""
    return io.BufferedReader(HttpRangeReader(session, url, size, timeout=timeout), block_size)


def range_opener(
    session: requests.Session,
    url: str,
    size: int,
    *,
    name: str,
    timeout: float = 60.0,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> Callable[[str, str], io.BufferedReader]:
    """A rasterio ``opener`` serving exactly the file ``name``; any other path does not exist.

    GDAL probes side-car files (``.aux.xml``, ``.msk``...); answering those
    locally saves a round trip each against a rate-limited server.
    """

    def opener(path: str, mode: str = "rb") -> io.BufferedReader:
        if path.rstrip("/").rsplit("/", 1)[-1] != name or "w" in mode:
            raise FileNotFoundError(path)
        return open_range_file(session, url, size, timeout=timeout, block_size=block_size)

    return opener
