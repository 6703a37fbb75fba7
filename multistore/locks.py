"""One writer per cube: a lease in the storage store, so two runs never rewrite the same cube.

The lease is ``<root>/.multistore/locks/<output>.lock``, a small JSON object
naming its owner (host, pid, a random token) and when it expires. Preload
caches use the same leases (``LeaseLock``) per preloaded file.

- Local storage: the lease file is written in full under a temporary name,
  locked with ``flock`` and then hard-linked into place (``link`` fails if the
  name exists, like ``O_EXCL``, but the lease never appears half-written). The
  kernel drops the ``flock`` when its process dies, even by ``kill -9``, so a
  lease whose file can be ``flock``-ed by someone else is stale and is removed
  at once: a crashed run never blocks the next one.
- Object stores (s3 and other fsspec filesystems): the lease is created with a
  conditional put (``If-None-Match: *`` on S3, atomic) or, where a filesystem
  has none, written and read back after a pause (best effort). The holder
  renews the expiry every third of ``ttl_s``; a lease is stale when it expired
  or when its owner ran on this host and that process is gone.

A second run waits while the lease is live and tells who holds it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from .errors import WriteError
from .storage import MARKER_DIR, StorageTarget

log = logging.getLogger(__name__)

LEASE_TTL_S = 120.0  # object stores: a lease not renewed for this long is stale
POLL_S = 1.0
_WRITE_VERIFY_PAUSE_S = 0.5  # filesystems without a conditional put


@dataclass(frozen=True)
class Lease:
    """Who holds a cube's lock and until when (seconds since the epoch)."""

    owner: str
    host: str
    pid: int
    acquired: float
    expires: float

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Lease | None:
        try:
            raw = json.loads(data)
            return cls(
                owner=str(raw["owner"]),
                host=str(raw["host"]),
                pid=int(raw["pid"]),
                acquired=float(raw["acquired"]),
                expires=float(raw["expires"]),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        since = time.strftime("%H:%M:%S", time.localtime(self.acquired))
        return f"process {self.pid} on {self.host} (since {since})"


class CubeLockError(WriteError):
    """The lock of a cube could not be taken (storage error or waiting timed out)."""


WaitCallback = Callable[[Lease | None, str], None]  # (holder if known, lock path)


class LeaseLock:
    """An exclusive lease on ``path`` in the filesystem ``fs``; ``name`` says what it guards."""

    def __init__(
        self,
        fs: Any,
        path: str,
        name: str,
        *,
        ttl_s: float = LEASE_TTL_S,
        poll_s: float = POLL_S,
    ):
        self.fs = fs
        self.path = path
        self.name = name
        self.ttl_s = ttl_s
        self.poll_s = poll_s
        self.local = _is_local(fs)
        # S3 has an atomic conditional put; memory is one process: no read-back pause needed
        self.atomic_create = bool({"s3", "s3a", "memory"} & set(_protocols(fs)))
        self._fd: int | None = None
        self._lease: Lease | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _new_lease(self) -> Lease:
        now = time.time()
        host, pid = socket.gethostname(), os.getpid()
        owner = f"{host}:{pid}:{uuid.uuid4().hex[:12]}"
        return Lease(owner, host, pid, now, now + self.ttl_s)

    # -- public -------------------------------------------------------------------------

    def acquire(self, on_wait: WaitCallback | None = None, wait_s: float | None = None) -> None:
        """Take the lease, waiting while another live run holds it.

        ``on_wait`` is called when waiting starts and then every minute;
        ``wait_s`` bounds the wait (None: as long as the holder is alive).
        """
        if self._lease is not None:
            raise CubeLockError(f"{self.name}: this lock is already held")
        start = time.monotonic()
        last_report = None
        while True:
            try:
                holder = self._try_acquire_local() if self.local else self._try_acquire_remote()
            except OSError as e:
                raise CubeLockError(f"{self.name}: cannot take the lock {self.path}: {e}") from e
            if self._lease is not None:
                return  # ours
            if holder is None:
                time.sleep(0.01)  # a stale lease was removed or the lease just released
                continue
            waited = time.monotonic() - start
            if wait_s is not None and waited >= wait_s:
                who = holder.describe()
                raise CubeLockError(
                    f"{self.name} is being written by {who}; gave up after "
                    f"{waited:.0f} s. If no other run is active, delete {self.path}"
                )
            if on_wait is not None and (last_report is None or waited - last_report >= 60):
                last_report = waited
                on_wait(holder, self.path)
            time.sleep(self.poll_s)

    def release(self) -> None:
        """Give the lease up (only our own: a lease taken over after expiry is left alone)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        try:
            if self.local:
                self._release_local()
            elif self._lease is not None:
                current = self._read_remote()
                if current is not None and current.owner == self._lease.owner:
                    self.fs.rm(self.path)
        except OSError as e:
            log.warning("could not remove the lock %s: %s", self.path, e)
        finally:
            self._lease = None

    def __enter__(self) -> CubeLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # -- local: flock + hard link ----------------------------------------------------------

    def _try_acquire_local(self) -> Lease | None:
        """One attempt: sets ``self._lease`` when taken, else returns the live holder
        (or None when the next attempt may succeed at once)."""
        import fcntl

        path = self.path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        lease = self._new_lease()
        tmp = f"{path}.{uuid.uuid4().hex[:12]}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh file: never blocks
            os.write(fd, lease.to_bytes())
            os.fsync(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                os.close(fd)
                fd = -1
                return self._check_local_holder(path)
            self._fd, fd = fd, -1
            self._lease = lease
            return None
        finally:
            if fd >= 0:
                os.close(fd)
            os.unlink(tmp)

    def _check_local_holder(self, path: str) -> Lease | None:
        """The live holder of ``path``; a stale lease (its process died) is removed."""
        import fcntl

        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return None  # just released: the caller's next attempt may win
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                with open(path, "rb") as f:
                    return Lease.from_bytes(f.read()) or _unreadable_lease(self.fs, path)
            # Nobody holds the flock: the owner is gone. Remove the lease if it is still
            # the same file (the owner may have released it and a new one taken its name).
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    stale = Lease.from_bytes(_read_fd(fd))
                    log.warning(
                        "%s: removing the stale lock of %s, which is no longer running",
                        self.name,
                        stale.describe() if stale else "a run",
                    )
                    os.unlink(path)
            except FileNotFoundError:
                pass
            return None
        finally:
            os.close(fd)

    def _release_local(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                os.unlink(self.path)  # while still holding the flock: no one can take it over
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)

    # -- object stores: conditional put + renewal ------------------------------------------------

    def _read_remote(self) -> Lease | None:
        self.fs.invalidate_cache(self.path)
        try:
            data = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None
        return Lease.from_bytes(data) or _unreadable_lease(self.fs, self.path)

    def _try_acquire_remote(self) -> Lease | None:
        """One attempt, as ``_try_acquire_local``."""
        parent = self.path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        lease = self._new_lease()
        if self._create_remote(lease):
            self._lease = lease
            self._stop.clear()
            self._renewer = threading.Thread(
                target=self._renew, name=f"lease-{self.name}", daemon=True
            )
            self._renewer.start()
            return None
        holder = self._read_remote()
        if holder is None:
            return None  # released meanwhile: try again at once
        if _is_stale(holder):
            log.warning(
                "%s: removing the stale lock of %s (expired or no longer running)",
                self.name,
                holder.describe(),
            )
            # Re-read just before removing, so a lease renewed or replaced meanwhile stays.
            if self._read_remote() == holder:
                self.fs.rm(self.path)
            return None
        return holder

    def _create_remote(self, lease: Lease) -> bool:
        data = lease.to_bytes()
        try:
            self.fs.pipe_file(self.path, data, mode="create")
        except FileExistsError:  # s3fs turns S3's 412 PreconditionFailed into this
            return False
        if not self.atomic_create:
            # No atomic create: a racing writer may have overwritten ours. Read back.
            time.sleep(_WRITE_VERIFY_PAUSE_S)
        current = self._read_remote()
        return current is not None and current.owner == lease.owner

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            lease = self._lease
            if lease is None:
                return
            try:
                current = self._read_remote()
                if current is None or current.owner != lease.owner:
                    log.error(
                        "%s: the lock %s was taken over by %s; another run may be writing "
                        "this cube",
                        self.name,
                        self.path,
                        current.describe() if current else "nobody",
                    )
                    return
                renewed = Lease(
                    lease.owner, lease.host, lease.pid, lease.acquired, time.time() + self.ttl_s
                )
                self.fs.pipe_file(self.path, renewed.to_bytes())
                self._lease = renewed
            except Exception as e:  # keep trying: the lease is still valid for a while
                log.warning("%s: renewing the lock failed: %s", self.name, e)


class CubeLock(LeaseLock):
    """The lease on one cube's output in the storage store."""

    def __init__(
        self, target: StorageTarget, *, ttl_s: float = LEASE_TTL_S, poll_s: float = POLL_S
    ):
        super().__init__(target.fs, lock_path(target), target.output, ttl_s=ttl_s, poll_s=poll_s)


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _is_local(fs: Any) -> bool:
    return bool({"file", "local"} & set(_protocols(fs)))


def lock_path(target: StorageTarget) -> str:
    base = f"{target.root}/{MARKER_DIR}" if target.root else MARKER_DIR
    return f"{base}/locks/{target.output}.lock"


def read_lock(target: StorageTarget) -> Lease | None:
    """The lease on ``target`` if one exists and is live (for ``status``)."""
    fs = target.fs
    path = lock_path(target)
    try:
        fs.invalidate_cache(path)
        data = fs.cat_file(path)
    except (FileNotFoundError, OSError):
        return None
    lease = Lease.from_bytes(data) or _unreadable_lease(fs, path)
    if _is_local(fs):
        return lease if _flock_held(path) else None
    return None if _is_stale(lease) else lease


def _flock_held(path: str) -> bool:
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _read_fd(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _unreadable_lease(fs: Any, path: str) -> Lease:
    """A lease that is not ours to parse (foreign or damaged): live for a TTL after its mtime."""
    try:
        modified = fs.modified(path).timestamp()
    except (OSError, NotImplementedError):
        modified = time.time()
    return Lease("unknown", "unknown host", -1, modified, modified + LEASE_TTL_S)


def _is_stale(lease: Lease) -> bool:
    if lease.expires < time.time():
        return True
    return lease.host == socket.gethostname() and lease.pid > 0 and not _pid_alive(lease.pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
