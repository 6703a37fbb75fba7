"""Safe unpacking of zip and tar archives.

Archives come from the internet: a member must never land outside the target
folder (``../``, absolute paths, links pointing out), and a decompression bomb
must be refused before it fills the disk. Unpacking happens in a temporary
sibling folder that is renamed into place only when complete, so a killed run
never leaves a half-unpacked folder that looks finished.

Links are judged by where they really lead on disk, never by their text: a
chain of links that each look harmless (``l0 -> .``, ``l1 -> l0/..``) climbs
out of the folder. So every member is written only below real directories
(never through a link), every link is resolved with ``os.path.realpath``
right after it is created, and the whole tree is checked again at the end.
"""

from __future__ import annotations

import lzma
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

from ..diskspace import explain, storage_os_error
from ..errors import PreloadError, UnsafeArchiveError

# Longest first: ".tar.gz" must win over ".gz".
ARCHIVE_SUFFIXES = (".tar.bz2", ".tar.gz", ".tar.xz", ".tbz2", ".tgz", ".txz", ".tar", ".zip")

_COPY_BUFFER = 1 << 20


DEFAULT_MAX_UNPACKED_BYTES = 200 * 2**30
DEFAULT_MAX_UNPACK_RATIO = 1000.0


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds that make a decompression bomb fail early with a clear error.

    Field names in messages are the Zenodo store params that set them:
    ``max_total_bytes`` is ``max_unpacked_bytes`` (absolute cap),
    ``max_ratio`` is ``max_unpack_ratio`` (cap relative to the compressed
    size: deflate alone never exceeds ~1030:1, so real data stays far below
    1000) and ``max_members`` is ``max_archive_members``. Free disk space is
    a third cap, checked where the bytes are written.
    """

    max_total_bytes: int = DEFAULT_MAX_UNPACKED_BYTES
    max_members: int = 200_000
    max_ratio: float = DEFAULT_MAX_UNPACK_RATIO

    def byte_limit(self, compressed_size: int) -> tuple[int, str]:
        """The number of bytes ``compressed_size`` bytes may expand to, and the param that says so."""
        by_ratio = int(self.max_ratio * max(compressed_size, 1))
        if by_ratio < self.max_total_bytes:
            return by_ratio, (
                f"max_unpack_ratio={self.max_ratio:g} times the {compressed_size} bytes of the compressed file"
            )
        return self.max_total_bytes, f"max_unpacked_bytes={self.max_total_bytes}"


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
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as e:
            if isinstance(e, tarfile.FilterError):
                raise UnsafeArchiveError(f"{archive.name}: unsafe member: {e}") from e
            raise PreloadError(f"{archive.name}: corrupt archive: {e}") from e
        except OSError as e:
            if isinstance(e, PreloadError):
                raise
            storage = storage_os_error(e)
            if storage is not None:
                raise PreloadError(
                    f"{archive.name}: unpacking failed: {explain(storage, str(target.parent))}"
                ) from e
            raise PreloadError(f"{archive.name}: unpacking failed: {e}") from e
        root = staging
        if strip_top is not None:
            entries = list(staging.iterdir())
            if (
                len(entries) == 1
                and entries[0].name == strip_top
                and entries[0].is_dir()
                and not entries[0].is_symlink()
            ):
                root = entries[0]
        # Links are checked against the folder that is kept: "top/x -> .." is out once
        # "top" is stripped.
        _Tree(archive, root).check_all_links()
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
    tree = _Tree(archive, dest)
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        _check_count(archive, len(infos), limits)
        budget = _Budget(archive, dest, limits)
        budget.check(sum(i.file_size for i in infos), declared=True)
        written = 0
        for n, info in enumerate(infos, start=1):
            rel = _safe_member_path(archive, info.filename)
            if info.flag_bits & 0x1:
                raise PreloadError(f"{archive.name}: member {info.filename!r} is encrypted")
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if stat.S_ISLNK(mode):
                tree.symlink(rel, _read_link_text(archive, zf, info))
            elif info.is_dir() or stat.S_ISDIR(mode):
                tree.mkdir(rel)
            elif kind and not stat.S_ISREG(mode):
                raise _special(archive, info.filename)
            else:
                out = tree.new_file(rel)
                with zf.open(info) as src, _create(out) as dst:
                    # Declared sizes can lie; count what is really written.
                    while chunk := src.read(_COPY_BUFFER):
                        written += len(chunk)
                        budget.check(written, declared=False)
                        dst.write(chunk)
            if progress:
                progress(n, len(infos))


def _unpack_tar(
    archive: Path, dest: Path, limits: ArchiveLimits, progress: ArchiveProgress | None
) -> None:
    tree = _Tree(archive, dest)
    budget = _Budget(archive, dest, limits)
    declared = written = 0
    with tarfile.open(archive) as tf:
        # One pass: a compressed tar has no index, so check each header before extracting.
        for n, member in enumerate(tf, start=1):
            _check_count(archive, n, limits)
            rel = _safe_member_path(archive, member.name)
            if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
                raise _special(archive, member.name)
            if member.issym():
                tree.symlink(rel, member.linkname)
            elif member.islnk():
                tree.hardlink(rel, _safe_member_path(archive, member.linkname))
            elif member.isdir():
                tree.mkdir(rel)
            else:
                declared += member.size
                budget.check(declared, declared=True)
                src = tf.extractfile(member)
                out = tree.new_file(rel)
                with _create(out) as dst:
                    if src is not None:
                        while chunk := src.read(_COPY_BUFFER):
                            written += len(chunk)
                            budget.check(written, declared=False)
                            dst.write(chunk)
            # PEP 706's "data" filter as a second opinion; the extraction itself is ours.
            tarfile.data_filter(member, str(dest))
            if progress:
                progress(n, None)


_MAX_LINK_TEXT = 4096


def _read_link_text(archive: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    """A zip symlink's target text, read with a bound (the member could be a bomb)."""
    with zf.open(info) as src:
        raw = src.read(_MAX_LINK_TEXT + 1)
    if len(raw) > _MAX_LINK_TEXT:
        raise UnsafeArchiveError(
            f"{archive.name}: symlink {info.filename!r} has a target longer than "
            f"{_MAX_LINK_TEXT} bytes"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UnsafeArchiveError(
            f"{archive.name}: symlink {info.filename!r} has a target that is not UTF-8"
        ) from e


def _create(path: Path):
    """Open a new file for writing without following a link that might sit at ``path``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    return os.fdopen(os.open(path, flags, 0o644), "wb")


def _special(archive: Path, name: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(
        f"{archive.name}: member {name!r} is a device, fifo or other special file"
    )


class _Tree:
    """The folder an archive unpacks into, judged by real paths on disk, never by link text."""

    def __init__(self, archive: Path, root: Path):
        self.archive = archive
        self.root = Path(os.path.realpath(root))

    def _fail(self, message: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"{self.archive.name}: {message}")

    def _parent(self, rel: PurePosixPath, *, create: bool = True) -> Path:
        """``rel``'s folder, made of real directories only: a member never passes a link."""
        current = self.root
        for part in rel.parts[:-1]:
            current = current / part
            if current.is_symlink():
                raise self._fail(
                    f"member {rel.as_posix()!r} would be written through the symlink "
                    f"{current.relative_to(self.root).as_posix()!r}"
                )
            if not current.exists():
                if not create:
                    break
                current.mkdir()
            elif not current.is_dir():
                raise self._fail(
                    f"member {rel.as_posix()!r} needs "
                    f"{current.relative_to(self.root).as_posix()!r} as a folder, but it is a file"
                )
        return self.root.joinpath(*rel.parts[:-1])

    def mkdir(self, rel: PurePosixPath) -> None:
        if not rel.parts:
            return
        out = self._parent(rel) / rel.name
        if out.is_symlink() or (out.exists() and not out.is_dir()):
            raise self._fail(f"folder {rel.as_posix()!r} would replace a file or symlink")
        out.mkdir(exist_ok=True)

    def new_file(self, rel: PurePosixPath) -> Path:
        """Where the regular file ``rel`` goes; a duplicate member replaces an earlier file."""
        if not rel.parts:
            raise self._fail("a file member has an empty name")
        out = self._parent(rel) / rel.name
        if out.is_symlink():
            raise self._fail(f"member {rel.as_posix()!r} would be written through a symlink")
        if out.is_dir():
            raise self._fail(f"member {rel.as_posix()!r} is both a folder and a file")
        out.unlink(missing_ok=True)
        return out

    def symlink(self, rel: PurePosixPath, text: str) -> None:
        """Create the link, then check where it really leads (after every earlier link)."""
        target = text.replace("\\", "/")
        if target.startswith("/") or (len(target) > 1 and target[1] == ":"):
            raise self._fail(f"symlink {rel.as_posix()!r} points to the absolute path {text!r}")
        if not rel.parts:
            raise self._fail(f"symlink with an empty name points to {text!r}")
        out = self._parent(rel) / rel.name
        if os.path.lexists(out):
            raise self._fail(f"symlink {rel.as_posix()!r} would replace an earlier member")
        os.symlink(text, out)
        self.check_link(out, text)

    def hardlink(self, rel: PurePosixPath, target: PurePosixPath) -> None:
        """A hard link to an earlier regular file of the archive, reached without links."""
        source = self._parent(target, create=False) / target.name if target.parts else self.root
        if source.is_symlink() or not source.is_file():
            raise self._fail(
                f"hard link {rel.as_posix()!r} must point to an earlier regular file of the "
                f"archive, not {target.as_posix()!r}"
            )
        os.link(source, self.new_file(rel), follow_symlinks=False)

    def check_link(self, link: Path, text: str | None = None) -> None:
        real = os.path.realpath(link)
        if not _is_within(real, self.root):
            link.unlink()
            rel = link.relative_to(self.root).as_posix()
            shown = text if text is not None else os.readlink(link)
            raise self._fail(
                f"symlink {rel!r} points outside the archive ({shown!r} resolves to {real!r})"
            )

    def check_all_links(self) -> None:
        """Every link in the final tree resolves inside it (later links can redirect earlier ones)."""
        for folder, dirs, files in os.walk(self.root):
            for name in dirs + files:
                path = Path(folder) / name
                if path.is_symlink():
                    self.check_link(path, os.readlink(path))


def _is_within(real: str, root: Path) -> bool:
    root_text = str(root)
    return real == root_text or real.startswith(root_text.rstrip(os.sep) + os.sep)


class _Budget:
    """The bytes an archive may unpack to: ratio, absolute and free-space caps."""

    def __init__(self, archive: Path, dest: Path, limits: ArchiveLimits):
        self.archive = archive
        self.limit, self.why = limits.byte_limit(archive.stat().st_size)
        self.free = shutil.disk_usage(dest).free
        self.dest = dest

    def check(self, size: int, *, declared: bool) -> None:
        if size > self.limit:
            what = "declares" if declared else "unpacks to"
            raise UnsafeArchiveError(
                f"{self.archive.name}: {what} more than {self.limit} bytes (limit {self.why}; "
                "a decompression bomb?); refusing to unpack. Raise the Zenodo store param "
                "named in the limit if the archive is trusted"
            )
        if size > self.free:
            raise PreloadError(
                f"{self.archive.name}: unpacking needs at least {size} bytes but only "
                f"{self.free} are free on the disk of {self.dest.parent}"
            )


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


def _check_count(archive: Path, count: int, limits: ArchiveLimits) -> None:
    if count > limits.max_members:
        raise UnsafeArchiveError(
            f"{archive.name}: more than {limits.max_members} members (limit "
            "max_archive_members); refusing to unpack"
        )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
