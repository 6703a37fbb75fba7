"""Chunk-level resume of an interrupted Zarr v2 write: a journal of written chunks.

Beside the completion marker, ``<cube>.chunks.jsonl`` gets one line per stored chunk
(its key, size and CRC-32), appended right after the chunk's bytes are written. A
rerun of the same build (same header: config fingerprint and source digest) keeps
every chunk whose file still has the journalled size and CRC and computes only the
rest. A chunk whose line is missing (in flight at the kill) is simply recomputed.
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


def start_journal(path: str, root: str, header: dict[str, Any]) -> ChunkJournal:
    """A new, empty journal for a build described by ``header``."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write(json.dumps({"journal": JOURNAL_VERSION, **header}, sort_keys=True) + "\n")
    return ChunkJournal(path, root)


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
