"""Archive attacks: nothing outside the unpack folder may be created or modified (issue 12.1).

Each test plants a victim folder next to the cache, unpacks a hostile zip or
tar, and compares a byte-level snapshot of everything outside the cache
(taken with ``os.walk``, independent of the code under test) before and after.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from multistore.errors import UnsafeArchiveError
from multistore.preload.archive import ArchiveLimits, unpack_archive

# Duplicate member names are part of the attacks.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning"),
    pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning"),
]


def snapshot(top: Path, skip: Path) -> dict[str, tuple[str, bytes | str]]:
    """Every path under ``top`` except ``skip``: kind and content (file bytes or link text)."""
    state: dict[str, tuple[str, bytes | str]] = {}
    for folder, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if Path(folder, d) != skip]
        for name in dirs + files:
            path = Path(folder, name)
            rel = path.relative_to(top).as_posix()
            if path.is_symlink():
                state[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                state[rel] = ("dir", b"")
            else:
                state[rel] = ("file", path.read_bytes())
    return state


def zip_archive(path: Path, members: list[tuple[str, str, bytes]]) -> Path:
    """``members``: (kind, name, data) with kind ``file``, ``dir``, ``link`` (data = target) or ``chr``."""
    modes = {"file": stat.S_IFREG | 0o644, "dir": stat.S_IFDIR | 0o755}
    modes |= {"link": stat.S_IFLNK | 0o777, "chr": stat.S_IFCHR | 0o644}
    with zipfile.ZipFile(path, "w") as zf:
        for kind, name, data in members:
            info = zipfile.ZipInfo(name + ("/" if kind == "dir" else ""))
            info.external_attr = modes[kind] << 16
            zf.writestr(info, data)
    return path


def tar_archive(path: Path, members: list[tuple[str, str, bytes]]) -> Path:
    """Like ``zip_archive``; kinds also ``hard`` (data = link target), ``blk``, ``fifo``."""
    types = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "link": tarfile.SYMTYPE}
    types |= {"hard": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE}
    types["fifo"] = tarfile.FIFOTYPE
    with tarfile.open(path, "w:gz") as tf:
        for kind, name, data in members:
            info = tarfile.TarInfo(name)
            info.type = types[kind]
            if kind in ("link", "hard"):
                info.linkname = data.decode()
                tf.addfile(info)
            elif kind == "file":
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return path


def build(tmp_path: Path, fmt: str, members: list[tuple[str, str, bytes]]) -> Path:
    maker = zip_archive if fmt == "zip" else tar_archive
    return maker(tmp_path / f"evil.{'zip' if fmt == 'zip' else 'tar.gz'}", members)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "precious.txt").write_bytes(b"keep me")
    (tmp_path / "cache").mkdir()
    return folder


def assert_refused(tmp_path: Path, archive: Path, match: str | None = None, **kwargs) -> None:
    """The unpack fails, nothing outside the cache changed and the cache holds nothing."""
    cache = tmp_path / "cache"
    before = snapshot(tmp_path, cache)
    with pytest.raises(UnsafeArchiveError, match=match):
        unpack_archive(archive, cache / "record", **kwargs)
    assert snapshot(tmp_path, cache) == before
    assert list(cache.iterdir()) == []  # neither content nor links nor staging remain


def chain(depth: int) -> list[tuple[str, str, bytes]]:
    """``l0 -> .``, ``l1 -> l0/..``, ...: each link's text stays inside, the chain climbs out."""
    links = [("link", "l0", b".")]
    links += [("link", f"l{i}", f"l{i - 1}/..".encode()) for i in range(1, depth + 1)]
    return links


@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_symlink_chain_with_a_member_written_through_it(tmp_path, victim, fmt):
    # The staging folder is cache/.record.unpacking-xxx: two levels climb to tmp_path.
    members = [("file", "ok.tif", b"fine"), *chain(2), ("file", "l2/victim/planted", b"x")]
    assert_refused(tmp_path, build(tmp_path, fmt, members))
    assert not (victim / "planted").exists()


@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_chain_to_the_filesystem_root_then_an_absolute_looking_member(tmp_path, victim, fmt):
    staging_depth = len((tmp_path / "cache" / ".record.unpacking-x").parts) - 1
    inside = (victim / "planted").relative_to("/").as_posix()
    members = [*chain(staging_depth + 1), ("file", f"l{staging_depth + 1}/{inside}", b"x")]
    assert_refused(tmp_path, build(tmp_path, fmt, members))
    assert not (victim / "planted").exists()


@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_planted_link_does_not_overwrite_an_existing_file(tmp_path, victim, fmt):
    # "l1" resolves to the victim's file through "l0 -> ."; then "l1" is written as a file.
    members = [
        ("link", "l0", b"."),
        ("link", "l1", b"l0/../../victim/precious.txt"),
        ("file", "l1", b"overwritten"),
    ]
    assert_refused(tmp_path, build(tmp_path, fmt, members))
    assert (victim / "precious.txt").read_bytes() == b"keep me"


@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_link_created_after_the_files_it_shadows(tmp_path, victim, fmt):
    members = [
        ("file", "data/a.tif", b"A"),
        ("link", "data/a.tif", b"../../../victim/precious.txt"),
        ("file", "data/a.tif", b"overwritten"),
    ]
    assert_refused(tmp_path, build(tmp_path, fmt, members))
    assert (victim / "precious.txt").read_bytes() == b"keep me"


@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_folder_replaced_by_a_link_after_its_files(tmp_path, victim, fmt):
    members = [
        ("file", "data/a.tif", b"A"),
        ("link", "data", b"../../victim"),
        ("file", "data/b.tif", b"B"),
    ]
    assert_refused(tmp_path, build(tmp_path, fmt, members))
    assert sorted(p.name for p in victim.iterdir()) == ["precious.txt"]


@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_member_through_an_inside_link_is_refused(tmp_path, victim, fmt):
    # Even a link that stays inside is never written through: its meaning can change later.
    members = [("dir", "sub", b""), ("link", "here", b"sub"), ("file", "here/x.tif", b"x")]
    assert_refused(tmp_path, build(tmp_path, fmt, members), match="through the symlink 'here'")


@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_dangling_link_redirected_by_a_later_link(tmp_path, victim, fmt):
    # "a -> b/precious.txt" is inside while "b" does not exist; "b" then climbs out.
    members = [
        ("link", "l0", b"."),
        ("link", "a", b"b/precious.txt"),
        ("link", "b", b"l0/../../victim"),
    ]
    assert_refused(tmp_path, build(tmp_path, fmt, members))


def test_link_out_of_the_stripped_top_folder(tmp_path, victim):
    # Inside the staging folder, "record/up -> .." stays in; once "record" is stripped it is out.
    members = [("file", "record/a.tif", b"A"), ("link", "record/up", b"..")]
    archive = zip_archive(tmp_path / "record.zip", members)
    assert_refused(tmp_path, archive, match="points outside", strip_top="record")


@pytest.mark.parametrize("fmt", ["zip", "tar"])
@pytest.mark.parametrize(
    "name", ["../victim/planted", "a/../../victim/planted", "/victim/planted", "..\\planted"]
)
def test_absolute_and_parent_members(tmp_path, victim, fmt, name):
    if fmt == "tar" and name.startswith("/"):
        name = str(victim / "planted")  # tar keeps the absolute name as written
    assert_refused(
        tmp_path, build(tmp_path, fmt, [("file", "ok.tif", b"ok"), ("file", name, b"x")])
    )
    assert not (victim / "planted").exists()
    assert not (tmp_path / "planted").exists()


@pytest.mark.parametrize("fmt", ["zip", "tar"])
@pytest.mark.parametrize("text", ["/etc/passwd", "../../victim/precious.txt", "../../../../../.."])
def test_links_pointing_out(tmp_path, victim, fmt, text):
    assert_refused(tmp_path, build(tmp_path, fmt, [("link", "sub/ln", text.encode())]))


@pytest.mark.parametrize(
    "target", ["../victim/precious.txt", "l0/../../victim/precious.txt", "via/a.tif", "missing"]
)
def test_tar_hard_links(tmp_path, victim, target):
    members = [
        ("link", "l0", b"."),
        ("dir", "real", b""),
        ("file", "real/a.tif", b"A"),
        ("link", "via", b"real"),
        ("hard", "h", target.encode()),
        ("file", "h", b"overwritten"),
    ]
    assert_refused(tmp_path, build(tmp_path, "tar", members))
    assert (victim / "precious.txt").read_bytes() == b"keep me"
    assert (victim / "precious.txt").stat().st_nlink == 1


def test_tar_hard_link_to_an_earlier_member_is_kept(tmp_path):
    members = [("file", "a.tif", b"A"), ("hard", "b.tif", b"a.tif")]
    files = unpack_archive(build(tmp_path, "tar", members), tmp_path / "out")
    assert files == ["a.tif", "b.tif"]
    assert (tmp_path / "out/b.tif").read_bytes() == b"A"


@pytest.mark.parametrize(
    ("fmt", "kind"), [("tar", "chr"), ("tar", "blk"), ("tar", "fifo"), ("zip", "chr")]
)
def test_device_files(tmp_path, victim, fmt, kind):
    archive = build(tmp_path, fmt, [("file", "ok.tif", b"ok"), (kind, "dev", b"")])
    assert_refused(tmp_path, archive, match="special file")


def test_links_inside_survive(tmp_path):
    members = [
        ("file", "data/a.tif", b"A"),
        ("link", "l0", b"."),
        ("link", "alias.tif", b"l0/data/a.tif"),
        ("link", "latest", b"data"),
    ]
    files = unpack_archive(zip_archive(tmp_path / "ok.zip", members), tmp_path / "out")
    assert files == ["alias.tif", "data/a.tif", "l0", "latest"]
    assert (tmp_path / "out/alias.tif").read_bytes() == b"A"
    assert (tmp_path / "out/latest/a.tif").read_bytes() == b"A"


# -- decompression bombs (issue 12.2) ------------------------------------------------


def zeros_tar_bz2(path: Path, size: int) -> Path:
    with tarfile.open(path, "w:bz2") as tf:
        info = tarfile.TarInfo("zeros.bin")
        info.size = size
        tf.addfile(info, io.BytesIO(bytes(size)))
    return path


def test_default_limits_refuse_a_bzip2_bomb_by_ratio(tmp_path):
    archive = zeros_tar_bz2(tmp_path / "bomb.tar.bz2", 64 << 20)
    ratio = (64 << 20) / archive.stat().st_size
    assert ratio > 10_000  # the reference: bytes declared by the header over bytes on disk
    (tmp_path / "cache").mkdir()
    with pytest.raises(
        UnsafeArchiveError, match=r"limit max_unpack_ratio=1000 times the \d+ bytes"
    ):
        unpack_archive(archive, tmp_path / "cache" / "bomb")
    assert list((tmp_path / "cache").iterdir()) == []


def test_zip_bomb_is_refused_from_its_declared_sizes_before_writing(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_BZIP2) as zf:
        zf.writestr("zeros.bin", bytes(32 << 20))
    with pytest.raises(UnsafeArchiveError, match="declares more than .*max_unpack_ratio"):
        unpack_archive(archive, tmp_path / "cache" / "bomb")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []


def test_explicit_limits_win_over_the_ratio(tmp_path):
    archive = zeros_tar_bz2(tmp_path / "zeros.tar.bz2", 4 << 20)
    files = unpack_archive(archive, tmp_path / "out", limits=ArchiveLimits(max_ratio=1e9))
    assert files == ["zeros.bin"]
    assert (tmp_path / "out/zeros.bin").stat().st_size == 4 << 20


def sparse_geotiff(path: Path, size: int) -> Path:
    """A size x size uint8 GeoTIFF with no tile written: a few KB on disk (GDAL SPARSE_OK)."""
    import rasterio

    profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="uint8", tiled=True)
    profile |= dict(blockxsize=1024, blockysize=1024, compress="deflate", sparse_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile):
            pass
    return path


@pytest.mark.parametrize("zipped", [True, False])
def test_sparse_raster_bomb_is_not_converted(tmp_path, zipped):
    import time

    import rasterio

    from multistore.preload.process import PreloadOptions, process_file

    tif = sparse_geotiff(tmp_path / "sparse.tif", 200_000)
    with rasterio.open(tif) as src:  # the reference: GDAL's own idea of the pixels
        expected = src.width * src.height * src.count * np.dtype(src.dtypes[0]).itemsize
    assert expected == 40_000_000_000
    local, key = tif, "sparse.tif"
    if zipped:
        local, key = tmp_path / "sparse.zip", "sparse.zip"
        with zipfile.ZipFile(local, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.write(tif, "sparse.tif")
        tif.unlink()
    work = tmp_path / "work"
    work.mkdir()
    start = time.monotonic()
    with pytest.raises(UnsafeArchiveError, match=rf"means {expected} bytes.*max_unpack_ratio"):
        process_file(local, key, work, PreloadOptions())
    assert time.monotonic() - start < 20
    assert not list(work.rglob("*.zarr"))
