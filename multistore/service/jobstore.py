"""The durable job store: SQLite in ``<state>/jobs.sqlite`` (jobs, per-dataset results,
events, log lines, all with secrets masked) and ``<state>/jobs/<id>/config.yml`` (the
config as sent, readable by the server's user only: a restart needs it to resume)."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from ..config import redact
from ..config.model import STORAGE_STORE, Config
from ..config.redact import Masker
from ..status import DatasetResult, Status

FINAL = ("completed", "failed", "cancelled")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, created REAL, started REAL, finished REAL, status TEXT,
    name TEXT, datasets TEXT, force INTEGER, trusted INTEGER, source TEXT,
    storage_root TEXT, config TEXT, message TEXT DEFAULT ''
);
CREATE TABLE IF NOT EXISTS results (
    job TEXT, identifier TEXT, kind TEXT, status TEXT, message TEXT, progress REAL,
    started REAL, finished REAL, name TEXT, bytes INTEGER, PRIMARY KEY (job, identifier)
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT, time REAL, data TEXT
);
CREATE INDEX IF NOT EXISTS events_job ON events (job, seq);
CREATE TABLE IF NOT EXISTS log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT, time REAL, line TEXT
);
"""


class JobStore:
    """SQLite in WAL mode: one writing connection behind a lock, one reading connection per
    thread (readers never wait for a build's writes: status requests stay fast under load)."""

    def __init__(self, state: Path):
        self.state = state
        state.mkdir(parents=True, exist_ok=True)
        (state / "jobs").mkdir(exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(state / "jobs.sqlite", check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        self._readers = threading.local()
        self._open: list[sqlite3.Connection] = []

    def close(self) -> None:
        with self._lock:
            self._db.close()
            for reader in self._open:
                reader.close()
            self._open.clear()

    def _reader(self) -> sqlite3.Connection:
        db = getattr(self._readers, "db", None)
        if db is None:
            db = sqlite3.connect(self.state / "jobs.sqlite", check_same_thread=False)
            db.row_factory = sqlite3.Row
            self._readers.db = db
            with self._lock:
                self._open.append(db)
        return db

    def _write(self, sql: str, args: Iterable[Any] = ()) -> None:
        with self._lock, self._db:
            self._db.execute(sql, tuple(args))

    def _read(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        return self._reader().execute(sql, tuple(args)).fetchall()

    def config_file(self, job: str) -> Path:
        return self.state / "jobs" / job / "config.yml"

    def create(
        self,
        *,
        name: str,
        text: str,
        config: Config,
        datasets: Sequence[str] | None,
        force: bool,
        trusted: bool = False,
        source: Path | None = None,
    ) -> str:
        job = uuid.uuid4().hex
        folder = self.state / "jobs" / job
        folder.mkdir(mode=0o700, parents=True)
        fd = os.open(folder / "config.yml", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        shown = yaml.safe_dump(redact(dict(config.raw), config.secret_values), sort_keys=False)
        self._write(
            "INSERT INTO jobs (id, created, status, name, datasets, force, trusted, source,"
            " storage_root, config) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?)",
            (
                job,
                time.time(),
                name,
                json.dumps(list(datasets)) if datasets else None,
                int(force),
                int(trusted),
                str(source) if source else None,
                storage_root(config),
                shown,
            ),
        )
        self.event(job, {"type": "job", "status": "queued"})
        return job

    def set_status(self, job: str, status: str, message: str = "", **times: float) -> None:
        sets = ", ".join(["status = ?", "message = ?", *(f"{k} = ?" for k in times)])
        self._write(f"UPDATE jobs SET {sets} WHERE id = ?", (status, message, *times.values(), job))
        self.event(job, {"type": "job", "status": status, "message": message})
        self.log(job, f"job {status}" + (f": {message}" if message else ""))

    def cancel_queued(self, job: str) -> bool:
        """Cancel ``job`` if it has not started; atomic against the runner picking it up."""
        with self._lock, self._db:
            changed = self._db.execute(
                "UPDATE jobs SET status = 'cancelled', finished = ? WHERE id = ? AND status = 'queued'",
                (time.time(), job),
            ).rowcount
        if changed:
            self.event(job, {"type": "job", "status": "cancelled", "message": ""})
            self.log(job, "job cancelled before it started")
        return bool(changed)

    def claim(self, job: str) -> bool:
        """Mark a queued job running; False if it was cancelled (or taken) meanwhile."""
        with self._lock, self._db:
            changed = self._db.execute(
                "UPDATE jobs SET status = 'running', started = ? WHERE id = ? AND status = 'queued'",
                (time.time(), job),
            ).rowcount
        if changed:
            self.event(job, {"type": "job", "status": "running", "message": ""})
            self.log(job, "job running")
        return bool(changed)

    def requeue_interrupted(self) -> list[str]:
        """Jobs a stopped server left running: mark them interrupted, queue them again."""
        rows = self._read("SELECT id FROM jobs WHERE status = 'running'")
        for row in rows:
            self.event(row["id"], {"type": "job", "status": "interrupted", "message": ""})
            self.log(row["id"], "job interrupted by a server stop; queued again")
            self._write(
                "UPDATE jobs SET status = 'queued', message = 'interrupted; resumed' WHERE id = ?",
                (row["id"],),
            )
            self.event(row["id"], {"type": "job", "status": "queued", "message": "resumed"})
        return [r["id"] for r in rows]

    def queued(self) -> list[str]:
        return [
            r["id"]
            for r in self._read("SELECT id FROM jobs WHERE status = 'queued' ORDER BY created")
        ]

    def result(self, job: str, r: DatasetResult, mask: Masker) -> None:
        name = PurePosixPath(r.output).name if r.output else None
        size = _size_on_disk(r.output) if r.output and r.status in _DONE else None
        self._write(
            "INSERT INTO results (job, identifier, kind, status, message, progress, started,"
            " finished, name, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (job, identifier) DO UPDATE SET kind = excluded.kind,"
            " status = excluded.status, message = excluded.message, progress = excluded.progress,"
            " started = excluded.started, finished = excluded.finished,"
            " name = COALESCE(excluded.name, results.name), bytes = excluded.bytes",
            (
                job,
                r.identifier,
                r.kind,
                str(r.status),
                mask(r.message or ""),
                r.progress,
                r.started,
                r.finished,
                name,
                size,
            ),
        )

    def event(self, job: str, data: Mapping[str, Any]) -> None:
        self._write(
            "INSERT INTO events (job, time, data) VALUES (?, ?, ?)",
            (job, time.time(), json.dumps(data)),
        )

    def log(self, job: str, line: str) -> None:
        self._write("INSERT INTO log (job, time, line) VALUES (?, ?, ?)", (job, time.time(), line))

    def events_after(self, job: str, seq: int) -> list[tuple[int, dict[str, Any]]]:
        rows = self._read(
            "SELECT seq, data FROM events WHERE job = ? AND seq > ? ORDER BY seq", (job, seq)
        )
        return [(r["seq"], json.loads(r["data"])) for r in rows]

    def log_lines(self, job: str) -> list[str]:
        rows = self._read("SELECT time, line FROM log WHERE job = ? ORDER BY seq", (job,))
        return [
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(r['time']))} {r['line']}"
            for r in rows
        ]

    def row(self, job: str) -> sqlite3.Row | None:
        rows = self._read("SELECT * FROM jobs WHERE id = ?", (job,))
        return rows[0] if rows else None

    def get(self, job: str) -> dict[str, Any] | None:
        row = self.row(job)
        if row is None:
            return None
        results = self._read("SELECT * FROM results WHERE job = ? ORDER BY rowid", (job,))
        return {
            **_job_summary(row),
            "config": row["config"],
            "datasets": [_result(job, r) for r in results],
        }

    def list(self) -> list[dict[str, Any]]:
        rows = self._read("SELECT * FROM jobs ORDER BY created DESC")
        return [_job_summary(r) for r in rows]

    def served_names(self, job: str) -> set[str]:
        """Top-level names under the job's storage that may be served: its finished cubes
        and their quick-looks (never locks, markers or scratch data)."""
        rows = self._read(
            "SELECT name FROM results WHERE job = ? AND kind = 'dataset'"
            " AND status IN ('completed', 'skipped') AND name IS NOT NULL",
            (job,),
        )
        names = {r["name"] for r in rows}
        return names | {f"{PurePosixPath(n).stem}.png" for n in names}

    def cubes(self) -> list[dict[str, Any]]:
        rows = self._read(
            "SELECT * FROM results WHERE kind = 'dataset' AND status IN ('completed', 'skipped')"
            " AND name IS NOT NULL ORDER BY rowid"
        )
        return [_result(r["job"], r) for r in rows]


# outputs that get a quick-look (quicklook.py draws Zarr and NetCDF cubes)
_QUICKLOOK_SUFFIXES = frozenset({".zarr", ".nc"})


def _job_summary(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "status": row["status"],
        "message": row["message"] or "",
        "created": row["created"],
        "started": row["started"],
        "finished": row["finished"],
        "status_url": f"/api/jobs/{row['id']}",
    }


def _result(job: str, r: sqlite3.Row) -> dict[str, Any]:
    out: dict[str, Any] = {
        "job": job,
        "identifier": r["identifier"],
        "kind": r["kind"],
        "status": r["status"],
        "message": r["message"],
        "progress": r["progress"],
        "started": r["started"],
        "finished": r["finished"],
        "bytes": r["bytes"],
        "cube": None,
        "quicklook": None,
    }
    name = r["name"]
    if name and r["status"] in ("completed", "skipped"):
        out["cube"] = f"/cubes/{job}/{name}"
        if PurePosixPath(name).suffix in _QUICKLOOK_SUFFIXES:  # not native-grid folders
            out["quicklook"] = f"/cubes/{job}/{PurePosixPath(name).stem}.png"
    return out


_DONE = (Status.COMPLETED, Status.SKIPPED)


def _size_on_disk(path: str) -> int | None:
    """Bytes of a local cube (a Zarr folder or one file); None for remote storage."""
    if not os.path.isabs(path) or not os.path.exists(path):
        return None
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for folder, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
    return total


def storage_root(config: Config) -> str | None:
    """The local folder of the cubes (served read-only), or None for remote storage."""
    store = config.store(STORAGE_STORE)
    root = store.store_params.get("root")
    if store.store_id != "file" or not isinstance(root, str):
        return None
    return os.path.realpath(root)
