"""Streaming downloads that resume, verify their md5 and never leave a bad file behind.

A download goes to ``<partial_dir>/<name>.<md5>.part``; an interrupted body is
continued with an HTTP ``Range`` request (in this run or the next one, since
the partial file survives restarts), and the file is moved to its destination
only after its checksum matched. Keying partial files by checksum means a new
version of a file never resumes from an old one.
"""

from __future__ import annotations

import hashlib
import random
import re
import shutil
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3

from ..errors import ChecksumError, PreloadError
from .http import RetryPolicy, describe_retry_error

ByteProgress = Callable[[int, int | None], None]  # (bytes done, bytes total or None)

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_CHUNK = 1 << 20


class DownloadCancelled(PreloadError):
    """The preload was cancelled while downloading."""


@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch. ``label`` names it in messages, e.g. "record 1, file 'a.zip'"."""

    url: str
    key: str
    label: str
    size: int | None = None
    md5: str | None = None  # hex digest


def md5_of(path: Path, chunk_size: int = _CHUNK) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def partial_path(partial_dir: Path, remote: RemoteFile) -> Path:
    name = urllib.parse.quote(remote.key, safe="")
    return Path(partial_dir) / f"{name}.{remote.md5 or 'unverified'}.part"


def download_file(
    session: requests.Session,
    remote: RemoteFile,
    dest: Path,
    *,
    partial_dir: Path,
    policy: RetryPolicy | None = None,
    timeout: float = 60.0,
    progress: ByteProgress | None = None,
    cancelled: Callable[[], bool] | None = None,
    on_verify: Callable[[], None] | None = None,
) -> Path:
    """Download ``remote`` to ``dest`` (replacing it) and return ``dest``.

    Raises ``ChecksumError`` when ``checksum_attempts`` full downloads all
    mismatch the md5 (the bad data is deleted), ``PreloadError`` for HTTP
    errors or when retries are exhausted.
    """
    policy = policy or RetryPolicy()
    Path(partial_dir).mkdir(parents=True, exist_ok=True)
    part = partial_path(partial_dir, remote)
    actual = None
    for _attempt in range(max(1, policy.checksum_attempts)):
        _fetch(session, remote, part, policy, timeout, progress, cancelled)
        if remote.md5 is None:
            break
        if on_verify:
            on_verify()
        actual = md5_of(part)
        if actual == remote.md5.lower():
            break
        part.unlink(missing_ok=True)
    else:
        raise ChecksumError(
            f"{remote.label}: md5 mismatch after {policy.checksum_attempts} download(s): "
            f"expected {remote.md5}, got {actual}; nothing was cached"
        )
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_dir():
        shutil.rmtree(dest)
    shutil.move(part, dest)
    return dest


def _fetch(
    session: requests.Session,
    remote: RemoteFile,
    part: Path,
    policy: RetryPolicy,
    timeout: float,
    progress: ByteProgress | None,
    cancelled: Callable[[], bool] | None,
) -> None:
    """Fill ``part`` with the whole body, resuming after broken connections."""
    failures = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        if remote.size is not None and offset > remote.size:
            part.unlink()
            offset = 0
        if remote.size is not None and offset == remote.size:
            return
        # identity: byte offsets must be those of the file, for Range resumes
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            response = session.get(remote.url, headers=headers, stream=True, timeout=timeout)
        except requests.exceptions.RetryError as e:
            raise PreloadError(f"{remote.label}: {describe_retry_error(e, policy)}") from e
        except requests.exceptions.RequestException as e:
            # urllib3 already retried connection errors max_retries times.
            raise PreloadError(f"{remote.label}: download failed: {_no_url(e)}") from e
        with response:
            _raise_for_status(response, remote)
            offset = _start_offset(response, offset)
            total = remote.size if remote.size is not None else _total_size(response, offset)
            try:
                with open(part, "ab" if offset else "wb") as out:
                    done = offset
                    for chunk in _body(response):
                        if cancelled and cancelled():
                            raise DownloadCancelled(f"{remote.label}: download cancelled")
                        out.write(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, total)
                if total is None or done >= total:
                    return
                error: Exception = OSError(f"connection closed after {done} of {total} bytes")
            except (
                requests.exceptions.RequestException,
                urllib3.exceptions.HTTPError,
                OSError,
            ) as e:
                if isinstance(e, PreloadError):
                    raise
                error = e
        failures += 1
        if failures > policy.max_retries:
            raise PreloadError(
                f"{remote.label}: download interrupted {failures} times; last error: "
                f"{_no_url(error)}; the partial file is kept to resume later"
            )
        delay = policy.backoff(failures)
        time.sleep(delay + random.uniform(0, delay / 2))


def _body(response: requests.Response) -> Iterator[bytes]:
    """The body in pieces as they arrive, so a broken connection loses nothing already received.

    (``iter_content`` drops the bytes of a partly filled chunk when the
    connection breaks.)
    """
    while chunk := response.raw.read1(_CHUNK, decode_content=True):
        yield chunk


def _raise_for_status(response: requests.Response, remote: RemoteFile) -> None:
    if response.status_code in (200, 206):
        return
    if response.status_code == 404:
        raise PreloadError(f"{remote.label}: not found on the server (HTTP 404)")
    if response.status_code in (401, 403):
        raise PreloadError(
            f"{remote.label}: access denied (HTTP {response.status_code}); a restricted "
            "record needs a valid access_token"
        )
    raise PreloadError(f"{remote.label}: unexpected HTTP {response.status_code}")


def _start_offset(response: requests.Response, requested: int) -> int:
    """Where the body starts: ``requested`` for a matching 206, else 0 (a full body)."""
    if response.status_code != 206:
        return 0
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    if match is None or int(match.group(1)) != requested:
        raise PreloadError(
            f"server answered a range request from byte {requested} with Content-Range "
            f"{response.headers.get('Content-Range')!r}"
        )
    return requested


def _total_size(response: requests.Response, offset: int) -> int | None:
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _no_url(error: BaseException) -> str:
    """Error text without query strings, which may carry tokens."""
    return re.sub(r"(https?://[^\s'\"?]+)\?[^\s'\"]*", r"\1?...", str(error))


def remove_partial(partial_dir: Path, remote: RemoteFile) -> None:
    partial_path(partial_dir, remote).unlink(missing_ok=True)
