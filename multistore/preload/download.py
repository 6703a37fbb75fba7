"""Streaming downloads that resume, verify their md5 and never leave a bad file behind.

A download goes to ``<partial_dir>/<name>.<md5>.part``; an interrupted body is
continued with an HTTP ``Range`` request (in this run or the next one, since
the partial file survives restarts), and the file is moved to its destination
only after its checksum matched. Keying partial files by checksum means a new
version of a file never resumes from an old one.

A file larger than ``split_bytes`` is fetched as parallel byte ranges when a
one-byte probe shows the server answers ranges with 206: each range goes to
its own ``<name>.<md5>.<first>-<last>.part`` (resumable on its own), the parts
are joined into the ``.part`` file and the whole is md5-verified as usual.
Every transfer (whole file or range) runs on the caller's ``executor``, so one
bounded pool caps the connections of files and ranges together.
"""

from __future__ import annotations

import hashlib
import random
import re
import shutil
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Executor, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import requests
import urllib3

from ..diskspace import explain, storage_os_error
from ..errors import ChecksumError, PreloadError
from ..retry import RetryPolicy
from .http import describe_retry_error

ByteProgress = Callable[[int, int | None], None]  # (bytes done, bytes total or None)

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_CHUNK = 1 << 20
DEFAULT_SPLIT_BYTES = 64 << 20  # files above this are fetched in parallel ranges
DEFAULT_PARALLEL_RANGES = 4  # without a caller's executor
Span = tuple[int, int]  # first and last byte, inclusive
T = TypeVar("T")


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


def _partial_stem(remote: RemoteFile) -> str:
    return f"{urllib.parse.quote(remote.key, safe='')}.{remote.md5 or 'unverified'}"


def partial_path(partial_dir: Path, remote: RemoteFile) -> Path:
    return Path(partial_dir) / f"{_partial_stem(remote)}.part"


def range_part_path(partial_dir: Path, remote: RemoteFile, span: Span) -> Path:
    """Where the bytes ``span`` of ``remote`` collect during a split download."""
    return Path(partial_dir) / f"{_partial_stem(remote)}.{span[0]}-{span[1]}.part"


MAX_RANGES = 10_000  # a record claiming a huge size must not make a huge list of ranges


def split_spans(size: int, split_bytes: int) -> list[Span]:
    """``size`` bytes as consecutive ranges of ``split_bytes`` (the last one shorter).

    At most ``MAX_RANGES`` ranges: larger files get larger ranges.
    """
    split_bytes = max(split_bytes, -(-size // MAX_RANGES))
    return [(s, min(s + split_bytes, size) - 1) for s in range(0, size, split_bytes)]


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
    split_bytes: int | None = None,
    executor: Executor | None = None,
) -> Path:
    """Download ``remote`` to ``dest`` (replacing it) and return ``dest``.

    ``split_bytes``: files larger than this are fetched in parallel ranges
    (if the server supports them). ``executor``: runs the transfers, shared
    with other downloads to bound connections; without it, a whole file is
    fetched in this thread and ranges on a private pool of
    ``DEFAULT_PARALLEL_RANGES`` threads.

    Raises ``ChecksumError`` when ``checksum_attempts`` full downloads all
    mismatch the md5 (the bad data is deleted), ``PreloadError`` for HTTP
    errors or when retries are exhausted (also when one range exhausts them:
    the other ranges are kept to resume later).
    """
    policy = policy or RetryPolicy()
    Path(partial_dir).mkdir(parents=True, exist_ok=True)
    part = partial_path(partial_dir, remote)
    actual = None
    for _attempt in range(max(1, policy.checksum_attempts)):
        transfer = _Transfer(session, remote, policy, timeout, progress, cancelled)
        transfer.fill(part, partial_dir, split_bytes, executor)
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


@dataclass(frozen=True)
class _Transfer:
    """One file's download settings, shared by its whole-file or range transfers."""

    session: requests.Session
    remote: RemoteFile
    policy: RetryPolicy
    timeout: float
    progress: ByteProgress | None
    cancelled: Callable[[], bool] | None

    def fill(
        self, part: Path, partial_dir: Path, split_bytes: int | None, executor: Executor | None
    ) -> None:
        """Fill ``part`` with the whole body: in ranges when worth it and possible."""
        size = self.remote.size
        spans = split_spans(size, split_bytes) if size and split_bytes else []
        # A partial single-stream file is resumed as such, not re-fetched in ranges.
        if len(spans) > 1 and not part.exists() and _run(executor, self.supports_ranges):
            self.fetch_ranges(part, partial_dir, spans, executor)
            return
        for span in spans:  # ranges left from a split attempt cannot be used any more
            range_part_path(partial_dir, self.remote, span).unlink(missing_ok=True)
        _run(executor, self.fetch, part)

    def supports_ranges(self) -> bool:
        """True when a one-byte range request is answered with 206 (detected, not assumed)."""
        response = self.get({"Range": "bytes=0-0", "Accept-Encoding": "identity"})
        with response:
            _raise_for_status(response, self.remote)
            if response.status_code != 206:
                return False  # closed unread: the body is the whole file
            _ = response.content  # one byte; read so the connection can be reused
            return True

    def fetch_ranges(
        self, part: Path, partial_dir: Path, spans: list[Span], executor: Executor | None
    ) -> None:
        """Fetch ``spans`` in parallel into their own files, then join them into ``part``."""
        paths = [range_part_path(partial_dir, self.remote, span) for span in spans]
        stop = threading.Event()  # after a failure, ranges not yet started are not started
        lock = threading.Lock()
        done = [p.stat().st_size if p.exists() else 0 for p in paths]

        def run(i: int) -> None:
            if stop.is_set():
                return

            def report(range_done: int, _total: int | None) -> None:
                with lock:
                    done[i] = range_done
                    if self.progress:
                        self.progress(sum(done), self.remote.size)

            _Transfer(
                self.session, self.remote, self.policy, self.timeout, report, self.cancelled
            ).fetch(paths[i], spans[i])

        own = executor is None
        pool = executor or ThreadPoolExecutor(
            max_workers=min(len(spans), DEFAULT_PARALLEL_RANGES), thread_name_prefix="range"
        )
        try:
            futures = [pool.submit(run, i) for i in range(len(spans))]
            finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
            if any(f.exception() is not None for f in finished):
                stop.set()
            wait(futures)
        finally:
            if own:
                pool.shutdown()
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            # a real failure explains more than the cancellations it caused
            raise next((e for e in errors if not isinstance(e, DownloadCancelled)), errors[0])
        with open(part, "wb") as out:
            for path in paths:
                with open(path, "rb") as f:
                    shutil.copyfileobj(f, out, _CHUNK)
        for path in paths:
            path.unlink()

    def get(self, headers: dict[str, str]) -> requests.Response:
        label = self.remote.label
        try:
            return self.session.get(
                self.remote.url, headers=headers, stream=True, timeout=self.timeout
            )
        except requests.exceptions.RetryError as e:
            raise PreloadError(f"{label}: {describe_retry_error(e, self.policy)}") from e
        except requests.exceptions.RequestException as e:
            # urllib3 already retried connection errors max_retries times.
            raise PreloadError(f"{label}: download failed: {_no_url(e)}") from e

    def fetch(self, part: Path, span: Span | None = None) -> None:
        """Fill ``part`` with the body (or the bytes ``span``), resuming after broken connections."""
        remote, policy = self.remote, self.policy
        first = span[0] if span else 0
        length = span[1] - span[0] + 1 if span else remote.size
        failures = 0
        while True:
            have = part.stat().st_size if part.exists() else 0
            if length is not None and have > length:
                part.unlink()
                have = 0
            if length is not None and have == length:
                return
            offset = first + have
            # identity: byte offsets must be those of the file, for Range resumes
            headers = {"Accept-Encoding": "identity"}
            if span:
                headers["Range"] = f"bytes={offset}-{span[1]}"
            elif offset:
                headers["Range"] = f"bytes={offset}-"
            response = self.get(headers)
            with response:
                _raise_for_status(response, remote)
                if span and response.status_code != 206:
                    raise PreloadError(
                        f"{remote.label}: the server stopped answering range requests "
                        f"(HTTP {response.status_code} for bytes {offset}-{span[1]})"
                    )
                have = _start_offset(response, offset) - first
                total = length if length is not None else _total_size(response, have)
                try:
                    with open(part, "ab" if have else "wb") as out:
                        done = have
                        for chunk in _body(response):
                            if self.cancelled and self.cancelled():
                                raise DownloadCancelled(f"{remote.label}: download cancelled")
                            out.write(chunk)
                            done += len(chunk)
                            if self.progress:
                                self.progress(done, total)
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
                    storage = storage_os_error(e)
                    if storage is not None:  # retrying cannot help: fail now, keep the part
                        kept = part.stat().st_size if part.exists() else 0
                        need = total - kept if total is not None else None
                        raise PreloadError(
                            f"{remote.label}: {explain(storage, str(part.parent), need)}; the "
                            f"partial file ({kept} bytes) is kept to resume later"
                        ) from e
                    error = e
            failures += 1
            if failures > policy.max_retries:
                where = f" (bytes {span[0]}-{span[1]})" if span else ""
                raise PreloadError(
                    f"{remote.label}: download{where} interrupted {failures} times; last "
                    f"error: {_no_url(error)}; the partial file is kept to resume later"
                )
            delay = policy.backoff(failures)
            time.sleep(delay + random.uniform(0, delay / 2))


def _run(executor: Executor | None, fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` on ``executor`` (waiting for it), so the pool bounds every request."""
    return fn(*args) if executor is None else executor.submit(fn, *args).result()


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
    """Forget a partial download of ``remote``: the single file and any range files."""
    partial_path(partial_dir, remote).unlink(missing_ok=True)
    ranges = re.compile(re.escape(_partial_stem(remote)) + r"\.\d+-\d+\.part")
    if Path(partial_dir).is_dir():
        for path in Path(partial_dir).iterdir():
            if ranges.fullmatch(path.name):
                path.unlink(missing_ok=True)
