"""An offline Zenodo: a small HTTP server speaking the parts of Zenodo's REST API we use.

It lives in the package (not in ``tests/``) so the demo can serve a record
offline too. Records are served from bytes or files on disk; switches
(``Faults``) make the server misbehave the ways the real one does: 429 with
``Retry-After``, 503, bodies cut short, wrong checksums, slow answers, no
Range support. Every request is logged (method, path, Range header, status)
for assertions; tokens never are.

Routes (as on zenodo.org):

- ``GET /api/records/<id>``: the record JSON (``files[]`` with ``key``, ``size``,
  ``checksum`` ``md5:<hex>`` and ``links.self``)
- ``GET /api/records/<id>/files``: ``{"entries": [...]}``
- ``GET|HEAD /records/<id>/files/<key>`` (also ``?download=1``): the content, with Range/206
- ``GET /api/records/<id>/files/<key>/content``: the content, always 200 (no Range)
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from .http import QuietHTTPServer

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_COPY_CHUNK = 1 << 16


@dataclass
class Faults:
    """Misbehaviour switches. Counters apply to the next N matching requests and count down."""

    status_429: int = 0
    retry_after: int = 1  # seconds, sent with 429 (and 503)
    status_503: int = 0
    truncate: int = 0  # next N content bodies are cut short (connection closed)
    truncate_at: int | None = None  # bytes sent before cutting; default half the body
    truncate_start: int | None = None  # only bodies starting at this byte are cut (None: any)
    wrong_checksum: bool = False  # advertise a wrong md5
    delay_s: float = 0.0  # sleep before every answer
    body_delay_s: float = 0.0  # per file: sleep before each 64 KiB of a body (a slow transfer)
    range_support: bool = True  # False: ignore Range headers (always 200)


@dataclass
class EmulatedFile:
    key: str
    content: bytes | Path
    file_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    faults: Faults = field(default_factory=Faults)

    @property
    def size(self) -> int:
        return len(self.content) if isinstance(self.content, bytes) else self.content.stat().st_size

    @property
    def md5(self) -> str:
        digest = hashlib.md5(usedforsecurity=False)
        if isinstance(self.content, bytes):
            digest.update(self.content)
        else:
            with open(self.content, "rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
        return digest.hexdigest()

    def read(self, start: int, end: int) -> bytes:
        """Bytes ``start..end`` inclusive."""
        if isinstance(self.content, bytes):
            return self.content[start : end + 1]
        with open(self.content, "rb") as f:
            f.seek(start)
            return f.read(end - start + 1)


@dataclass
class EmulatedRecord:
    record_id: str
    files: dict[str, EmulatedFile]
    title: str = ""
    access_token: str | None = None  # set: a restricted record, needs "Authorization: Bearer"


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str  # URL-decoded, without query
    query: str
    range: str | None  # the Range header as sent
    status: int
    authorized: bool  # an Authorization header was present (its value is never kept)


class ZenodoEmulator:
    """``with ZenodoEmulator() as z: z.add_record("1", {"a.tif": b"..."}); z.base_url``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._records: dict[str, EmulatedRecord] = {}
        self._log: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._active_bodies = 0
        self._max_active_bodies = 0
        self.faults = Faults()
        self._server = QuietHTTPServer((host, port), _handler_class(self))
        self._thread: threading.Thread | None = None

    # -- setup ------------------------------------------------------------------

    def add_record(
        self,
        record_id: str,
        files: Mapping[str, bytes | Path],
        *,
        title: str = "",
        access_token: str | None = None,
    ) -> EmulatedRecord:
        record = EmulatedRecord(
            record_id=str(record_id),
            files={key: EmulatedFile(key, content) for key, content in files.items()},
            title=title or f"Emulated record {record_id}",
            access_token=access_token,
        )
        with self._lock:
            self._records[record.record_id] = record
        return record

    def file(self, record_id: str, key: str) -> EmulatedFile:
        return self._records[str(record_id)].files[key]

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- request log --------------------------------------------------------------

    @property
    def requests(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()
            self._max_active_bodies = self._active_bodies

    @property
    def max_parallel_bodies(self) -> int:
        """The most file bodies (GET content answers) being sent at the same time so far."""
        with self._lock:
            return self._max_active_bodies

    def _body_started(self) -> None:
        with self._lock:
            self._active_bodies += 1
            self._max_active_bodies = max(self._max_active_bodies, self._active_bodies)

    def _body_finished(self) -> None:
        with self._lock:
            self._active_bodies -= 1

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> ZenodoEmulator:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="zenodo-emulator",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> ZenodoEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- used by the handler --------------------------------------------------------

    def _record(self, record_id: str) -> EmulatedRecord | None:
        with self._lock:
            return self._records.get(record_id)

    def _take(self, faults: Faults, name: str, start: int | None = None) -> bool:
        """Consume one unit of the counter ``name`` of ``faults``; True if it was positive.

        With ``start`` (a body's first byte), only when ``faults.truncate_start`` allows it.
        """
        with self._lock:
            if start is not None and faults.truncate_start not in (None, start):
                return False
            count = getattr(faults, name)
            if count > 0:
                setattr(faults, name, count - 1)
                return True
            return False

    def _append(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._log.append(entry)

    def _file_json(self, record: EmulatedRecord, f: EmulatedFile) -> dict[str, Any]:
        md5 = f.md5
        if f.faults.wrong_checksum or self.faults.wrong_checksum:
            md5 = hashlib.md5(md5.encode(), usedforsecurity=False).hexdigest()
        quoted = urllib.parse.quote(f.key)
        api = f"{self.base_url}/api/records/{record.record_id}/files/{quoted}"
        return {
            "id": f.file_id,
            "key": f.key,
            "size": f.size,
            "checksum": f"md5:{md5}",
            "links": {"self": f"{api}/content", "content": f"{api}/content"},
        }

    def _record_json(self, record: EmulatedRecord) -> dict[str, Any]:
        rid = record.record_id
        doi = f"10.5281/zenodo.{rid}"
        return {
            "id": int(rid) if rid.isdigit() else rid,
            "recid": rid,
            "conceptrecid": rid,
            "doi": doi,
            "doi_url": f"https://doi.org/{doi}",
            "title": record.title,
            "created": "2024-08-16T00:00:00+00:00",
            "updated": "2024-08-16T00:00:00+00:00",
            "metadata": {
                "title": record.title,
                "doi": doi,
                "publication_date": "2024-08-16",
                "version": "1.0",
                "resource_type": {"title": "Dataset", "type": "dataset"},
                "license": {"id": "cc-by-4.0"},
                "creators": [{"name": "Emulator, Zenodo"}],
            },
            "links": {
                "self": f"{self.base_url}/api/records/{rid}",
                "html": f"{self.base_url}/records/{rid}",
                "files": f"{self.base_url}/api/records/{rid}/files",
            },
            "files": [self._file_json(record, f) for f in record.files.values()],
        }


def _handler_class(emulator: ZenodoEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        pass

    Handler.emulator = emulator
    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    emulator: ZenodoEmulator

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Silent: the request log is ``ZenodoEmulator.requests``."""

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    # -- routing ------------------------------------------------------------------

    def _dispatch(self, head: bool) -> None:
        emulator = self.emulator
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        self._logged = (path, url.query)
        if emulator.faults.delay_s:
            time.sleep(emulator.faults.delay_s)
        parts = path.strip("/").split("/")
        record_file = _route(parts)
        record = emulator._record(record_file[1]) if record_file else None
        file = record.files.get(record_file[2]) if record and record_file[2] else None
        file_faults = file.faults if file is not None else None
        if file_faults is not None and file_faults.delay_s:
            time.sleep(file_faults.delay_s)
        for faults in (emulator.faults, file_faults):
            if faults is None:
                continue
            if emulator._take(faults, "status_429"):
                return self._error(429, "Too many requests", retry_after=faults.retry_after)
            if emulator._take(faults, "status_503"):
                return self._error(503, "Service unavailable", retry_after=faults.retry_after)
        if record_file is None:
            return self._error(404, "The requested URL was not found on the server.")
        kind, record_id, key = record_file
        if record is None:
            return self._error(404, "The persistent identifier does not exist.")
        if record.access_token is not None:
            auth = self.headers.get("Authorization", "")
            if auth != f"Bearer {record.access_token}":
                return self._error(403, "Permission denied.")
        if kind == "record":
            return self._json(200, emulator._record_json(record), head)
        if kind == "files":
            entries = [emulator._file_json(record, f) for f in record.files.values()]
            return self._json(200, {"entries": entries}, head)
        if file is None:
            return self._error(404, f"File {key!r} not found in record {record_id}.")
        ranged = kind == "download"
        return self._content(file, head, ranged)

    def send_response(self, code: int, message: str | None = None) -> None:
        # Logged before any byte is sent, so a client never sees an answer the log lacks.
        path, query = getattr(self, "_logged", (self.path, ""))
        self.emulator._append(
            LoggedRequest(
                method=self.command,
                path=path,
                query=query,
                range=self.headers.get("Range"),
                status=code,
                authorized="Authorization" in self.headers,
            )
        )
        super().send_response(code, message)

    # -- answers ------------------------------------------------------------------

    def _content(self, file: EmulatedFile, head: bool, ranged: bool) -> None:
        emulator = self.emulator
        size = file.size
        range_ok = ranged and emulator.faults.range_support and file.faults.range_support
        start, end, status = 0, size - 1, 200
        header = self.headers.get("Range")
        if range_ok and header:
            match = _RANGE.fullmatch(header.strip())
            if match is None or match.group(1) == match.group(2) == "":
                return self._error(416, "Invalid range.")
            first, last = match.groups()
            if first == "":  # suffix range: the last N bytes
                start, end = max(0, size - int(last)), size - 1
            else:
                start = int(first)
                end = min(int(last), size - 1) if last else size - 1
            if start >= size or start > end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        if range_ok:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Disposition", f"attachment; filename={file.key!r}")
        self.end_headers()
        if head:
            return
        limit = end + 1
        for faults in (emulator.faults, file.faults):
            if emulator._take(faults, "truncate", start):
                cut = faults.truncate_at if faults.truncate_at is not None else size // 2
                limit = min(limit, max(start, cut))
                self.close_connection = True
                break
        # A body counts as active until its last piece is sent, so a client that has
        # received a whole body never sees it counted.
        emulator._body_started()
        active = True
        try:
            position = start
            while position < limit:
                chunk_end = min(limit, position + _COPY_CHUNK) - 1
                if file.faults.body_delay_s:
                    time.sleep(file.faults.body_delay_s)
                if chunk_end + 1 >= limit:
                    active = False
                    emulator._body_finished()
                self.wfile.write(file.read(position, chunk_end))
                position = chunk_end + 1
            self.wfile.flush()
        finally:
            if active:
                emulator._body_finished()

    def _json(self, status: int, body: Any, head: bool = False) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-RateLimit-Limit", "60")
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _error(self, status: int, message: str, retry_after: int | None = None) -> None:
        data = json.dumps({"status": status, "message": message}).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
            self.send_header("X-RateLimit-Remaining", "0")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def _route(parts: list[str]) -> tuple[str, str, str | None] | None:
    """(kind, record id, file key) for a known route, else None."""
    match parts:
        case ["api", "records", rid]:
            return "record", rid, None
        case ["api", "records", rid, "files"]:
            return "files", rid, None
        case ["api", "records", rid, "files", *key, "content"] if key:
            return "content", rid, "/".join(key)
        case ["records", rid, "files", *key] if key:
            return "download", rid, "/".join(key)
    return None
