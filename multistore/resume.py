"""Chunk-level resume of an interrupted Zarr write (v2 or v3).

Local storage: beside the completion marker, ``<cube>.chunks.jsonl`` gets one line
per stored chunk (its key, size and CRC-32), appended right after the chunk's bytes
are written. A rerun of the same build (same header: config fingerprint and source
digest) keeps every chunk whose file still has the journalled size and CRC and
computes only the rest. A chunk whose line is missing (in flight at the kill) is
simply recomputed.

Object stores (S3, GCS, Azure) cannot append, but a PUT is atomic: an object is
there whole or not at all. The journal there holds only the header line, written
before the first chunk; a rerun of the same build keeps every chunk object listed
under the cube. All-fill chunks are not stored, so they are computed again.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

JOURNAL_VERSION = 1


@dataclass(frozen=True)
class ChunkJournal:
    """Appends chunk records to a local file; picklable, so process workers can use it."""

    path: str
    root: str  # the cube's folder; keys are recorded relative to it

    def record(self, key: str, data: bytes | None) -> None:
        """``data`` = the stored bytes, or None for an all-fill chunk that is not stored."""
        rel = key[len(self.root) + 1 :] if key.startswith(self.root + "/") else key
        entry: dict[str, Any] = {"k": rel}
        if data is None:
            entry["empty"] = True
        else:
            entry.update(crc32=zlib.crc32(data), size=len(data))
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        # O_APPEND: concurrent small appends from threads or processes do not interleave
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def _header_line(header: dict[str, Any]) -> str:
    return json.dumps({"journal": JOURNAL_VERSION, **header}, sort_keys=True) + "\n"


def start_journal(path: str, root: str, header: dict[str, Any]) -> ChunkJournal:
    """A new, empty journal for a build described by ``header``."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write(_header_line(header))
    return ChunkJournal(path, root)


def start_object_journal(fs: Any, path: str, header: dict[str, Any]) -> None:
    """The header of a build on an object store (one PUT, before the first chunk)."""
    fs.pipe_file(path, _header_line(header).encode())


def stored_objects(fs: Any, path: str, root: str, header: dict[str, Any]) -> frozenset[str] | None:
    """Keys (relative to ``root``) of the chunk objects of this build on an object store.

    None when there is no header or it names another build. Metadata objects
    (``.zarray``, ``.zattrs``, ...) are left out; keeping them does no harm either.
    """
    try:
        head = json.loads(fs.cat_file(path).decode().splitlines()[0])
    except (FileNotFoundError, ValueError, IndexError, UnicodeDecodeError):
        return None
    if head != {"journal": JOURNAL_VERSION, **header}:
        return None
    fs.invalidate_cache(root)
    prefix = root.rstrip("/") + "/"
    keys = (p[len(prefix) :] for p in fs.find(root) if p.startswith(prefix))
    return frozenset(k for k in keys if not k.rpartition("/")[2].startswith("."))


def verified_chunks(path: str, root: str, header: dict[str, Any]) -> frozenset[str] | None:
    """Keys (relative to ``root``) of journalled chunks whose files check out.

    None when there is no journal or it belongs to another build (then nothing is kept).
    """
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None
    if not lines:
        return None
    try:
        head = json.loads(lines[0])
    except ValueError:
        return None
    if head != {"journal": JOURNAL_VERSION, **header}:
        return None
    done: set[str] = set()
    bad = 0
    for line in lines[1:]:
        try:
            entry = json.loads(line)
            key = entry["k"]
        except (ValueError, KeyError, TypeError):
            continue  # a line torn by the kill
        if entry.get("empty"):
            if not os.path.exists(os.path.join(root, key)):
                done.add(key)
            continue
        try:
            with open(os.path.join(root, key), "rb") as f:
                data = f.read()
        except OSError:
            bad += 1
            continue
        if len(data) == entry.get("size") and zlib.crc32(data) == entry.get("crc32"):
            done.add(key)
        else:
            bad += 1
    if bad:
        log.warning("%s: %d journalled chunk(s) failed verification; recomputing them", root, bad)
    return frozenset(done)
