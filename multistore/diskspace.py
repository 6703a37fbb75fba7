"""Recognise "the disk is full" and "the storage is read-only" and say what to do about it.

These errors never go away by waiting, so they are not retried, and their
message says how much space is free and how much the failed step needed.
"""

from __future__ import annotations

import errno
import os
import shutil

# The storage cannot take the bytes: full disk, quota, file size limit (RLIMIT_FSIZE).
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# The storage refuses writes altogether.
READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
PERMANENT_ERRNOS = NO_SPACE_ERRNOS | READ_ONLY_ERRNOS


def storage_os_error(error: BaseException | None) -> OSError | None:
    """The first OSError in ``error``'s cause/context chain whose errno retrying cannot fix."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in PERMANENT_ERRNOS:
            return error
        error = error.__cause__ or error.__context__
    return None


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Free bytes on the disk holding ``path`` (its nearest existing ancestor); None if unknown."""
    current = os.path.abspath(os.fspath(path))
    while True:
        try:
            return shutil.disk_usage(current).free
        except OSError:
            parent = os.path.dirname(current)
            if parent == current:
                return None
            current = parent


def explain(error: OSError, where: str, needed: int | None = None) -> str:
    """``disk full at <where>: N bytes free, about M needed`` or ``<where> is read-only``."""
    reason = os.strerror(error.errno) if error.errno else str(error)
    if error.errno in NO_SPACE_ERRNOS:
        free = free_bytes(where) if "://" not in where else None
        parts = [f"no space to write at {where} ({reason})"]
        if free is not None:
            parts.append(f"{_size(free)} free")
        if needed is not None:
            parts.append(f"about {_size(needed)} needed")
        return "; ".join(parts)
    return f"cannot write at {where} ({reason}): the storage is read-only or not writable"


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit} ({n} bytes)"
    return f"{value / 1024:.1f} TiB ({n} bytes)"
