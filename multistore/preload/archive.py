"""Safe unpacking of zip and tar archives.

Archives come from the internet: a member must never land outside the target
folder (``../``, absolute paths, links pointing out), and a decompression bomb
must be refused before it fills the disk. Unpacking happens in a temporary
sibling folder that is renamed into place only when complete, so a killed run
never leaves a half-unpacked folder that looks finished.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import uuid
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import PreloadError, UnsafeArchiveError

# Longest first: ".tar.gz" must win over ".gz".
ARCHIVE_SUFFIXES = (".tar.bz2", ".tar.gz", ".tar.xz", ".tbz2", ".tgz", ".txz", ".tar", ".zip")

_COPY_BUFFER = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds that make a decompression bomb fail early with a clear error."""

    max_total_bytes: int = 200 * 2**30
    max_members: int = 200_000


ArchiveProgress = Callable[[int, int | None], None]  # (members done, members total or None)


def archive_stem(name: str) -> str | None:
    """``france.zip`` -> ``france``; ``None`` when ``name`` is not an archive we unpack."""
    lower = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def unpack_archive(
    archive: Path,
    target: Path,
    *,
    limits: ArchiveLimits = ArchiveLimits(),
    strip_top: str | None = None,
    progress: ArchiveProgress | None = None,
) -> list[str]:
    """Unpack ``archive`` into the new folder ``target``; return the regular files' paths.

    Paths are POSIX and relative to ``target``. When every member lies in one
    top folder named ``strip_top``, that folder is dropped so the content is
    not nested twice (``france.zip`` holding ``france/x.tif`` gives ``x.tif``).
    An existing ``target`` is replaced only after the new content is complete.
    """
    archive = Path(archive)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.unpacking-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        try:
            if zipfile.is_zipfile(archive):
                _unpack_zip(archive, staging, limits, progress)
            elif tarfile.is_tarfile(archive):
                _unpack_tar(archive, staging, limits, progress)
            else:
                raise PreloadError(f"{archive.name}: not a zip or tar archive (corrupt download?)")
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as e:
            if isinstance(e, tarfile.FilterError):
                raise UnsafeArchiveError(f"{archive.name}: unsafe member: {e}") from e
            raise PreloadError(f"{archive.name}: corrupt archive: {e}") from e
        except OSError as e:
            if isinstance(e, PreloadError):
                raise
            raise PreloadError(f"{archive.name}: unpacking failed: {e}") from e
        root = staging
        if strip_top is not None:
            entries = list(staging.iterdir())
            if len(entries) == 1 and entries[0].name == strip_top and entries[0].is_dir():
                root = entries[0]
        files = sorted(
            p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()
        )
        if target.exists():
            _remove(target)
        os.replace(root, target)
        return files
    finally:
        if staging.exists():
            _remove(staging)


def _unpack_zip(
    archive: Path, dest: Path, limits: ArchiveLimits, progress: ArchiveProgress | None
) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        _check_count(archive, len(infos), limits)
        declared = sum(i.file_size for i in infos)
        _check_total(archive, declared, limits, declared=True)
        free = shutil.disk_usage(dest).free
        if declared > free:
            raise PreloadError(
                f"{archive.name}: unpacking needs {declared} bytes but only {free} are free"
            )
        written = 0
        for n, info in enumerate(infos, start=1):
            rel = _safe_member_path(archive, info.filename)
            if info.flag_bits & 0x1:
                raise PreloadError(f"{archive.name}: member {info.filename!r} is encrypted")
            mode = info.external_attr >> 16
            out = dest.joinpath(*rel.parts) if rel.parts else dest
            if stat.S_ISLNK(mode):
                link_target = zf.read(info).decode("utf-8")
                _check_link(archive, rel, link_target)
                out.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(link_target, out)
            elif info.is_dir():
                out.mkdir(parents=True, exist_ok=True)
            else:
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(out, "wb") as dst:
                    # Declared sizes can lie; count what is really written.
                    while chunk := src.read(_COPY_BUFFER):
                        written += len(chunk)
                        _check_total(archive, written, limits, declared=False)
                        dst.write(chunk)
            if progress:
                progress(n, len(infos))


def _unpack_tar(
    archive: Path, dest: Path, limits: ArchiveLimits, progress: ArchiveProgress | None
) -> None:
    total = 0
    with tarfile.open(archive) as tf:
        # One pass: a compressed tar has no index, so check each header before extracting.
        for n, member in enumerate(tf, start=1):
            _check_count(archive, n, limits)
            rel = _safe_member_path(archive, member.name)
            if member.issym():
                _check_link(archive, rel, member.linkname)
            elif member.islnk():
                _safe_member_path(archive, member.linkname)
            elif not (member.isreg() or member.isdir()):
                raise UnsafeArchiveError(
                    f"{archive.name}: member {member.name!r} is a device, fifo or other "
                    "special file"
                )
            total += member.size if member.isreg() else 0
            _check_total(archive, total, limits, declared=True)
            # The "data" filter (PEP 706) is a second line of defence.
            tf.extract(member, dest, filter="data")
            if progress:
                progress(n, None)


def _safe_member_path(archive: Path, name: str) -> PurePosixPath:
    """The member's path relative to the target, or UnsafeArchiveError."""
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":"):
        raise UnsafeArchiveError(f"{archive.name}: member {name!r} has an absolute path")
    parts = [p for p in normalized.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(
            f"{archive.name}: member {name!r} would be written outside the target folder"
        )
    return PurePosixPath(*parts)


def _check_link(archive: Path, rel: PurePosixPath, link_target: str) -> None:
    target = link_target.replace("\\", "/")
    if target.startswith("/") or (len(target) > 1 and target[1] == ":"):
        raise UnsafeArchiveError(
            f"{archive.name}: symlink {rel.as_posix()!r} points to the absolute path "
            f"{link_target!r}"
        )
    depth = len(rel.parts) - 1  # folders above the link inside the archive
    for part in target.split("/"):
        if part == "..":
            depth -= 1
        elif part not in ("", "."):
            depth += 1
        if depth < 0:
            raise UnsafeArchiveError(
                f"{archive.name}: symlink {rel.as_posix()!r} points outside the archive "
                f"({link_target!r})"
            )


def _check_count(archive: Path, count: int, limits: ArchiveLimits) -> None:
    if count > limits.max_members:
        raise UnsafeArchiveError(
            f"{archive.name}: more than {limits.max_members} members (limit max_members); "
            "refusing to unpack"
        )


def _check_total(archive: Path, size: int, limits: ArchiveLimits, *, declared: bool) -> None:
    if size > limits.max_total_bytes:
        what = "declares" if declared else "unpacks to"
        raise UnsafeArchiveError(
            f"{archive.name}: {what} more than {limits.max_total_bytes} bytes "
            "(limit max_total_bytes; a decompression bomb?); refusing to unpack"
        )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
