"""Safe unpacking: traversal, absolute paths, links, bombs, corrupt archives, atomic replace."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from multistore.errors import PreloadError, UnsafeArchiveError
from multistore.preload.archive import ArchiveLimits, archive_stem, unpack_archive


def write_zip(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def write_tar(path: Path, members: list[tarfile.TarInfo], contents: dict[str, bytes], mode="w"):
    with tarfile.open(path, mode) as tf:
        for info in members:
            data = contents.get(info.name)
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def only_in(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("france.zip", "france"),
        ("cube.tar.gz", "cube"),
        ("cube.TGZ", "cube"),
        ("a.b.tar.bz2", "a.b"),
        ("x.tar", "x"),
        ("map.tif", None),
        ("data.gz", None),
        (".zip", None),
    ],
)
def test_archive_stem(name, stem):
    assert archive_stem(name) == stem


def test_zip_unpacks_and_strips_a_top_folder_named_like_the_archive(tmp_path):
    archive = write_zip(tmp_path / "france.zip", {"france/a.tif": b"A", "france/sub/b.tif": b"BB"})
    files = unpack_archive(archive, tmp_path / "out" / "france", strip_top="france")
    assert files == ["a.tif", "sub/b.tif"]
    assert (tmp_path / "out/france/sub/b.tif").read_bytes() == b"BB"
    assert only_in(tmp_path / "out") == {"france", "france/a.tif", "france/sub", "france/sub/b.tif"}


def test_other_top_folder_is_kept(tmp_path):
    archive = write_zip(tmp_path / "france.zip", {"data/a.tif": b"A"})
    assert unpack_archive(archive, tmp_path / "france", strip_top="france") == ["data/a.tif"]


@pytest.mark.parametrize(
    "evil", ["../evil.tif", "ok/../../evil.tif", "/tmp/evil.tif", "C:/evil.tif"]
)
def test_zip_members_escaping_are_rejected(tmp_path, evil):
    archive = write_zip(tmp_path / "bad.zip", {"good.tif": b"G", evil: b"EVIL"})
    target = tmp_path / "cache" / "bad"
    with pytest.raises(UnsafeArchiveError, match="bad.zip"):
        unpack_archive(archive, target)
    assert not target.exists()
    assert only_in(tmp_path / "cache") == set()  # no staging leftovers
    assert not (tmp_path / "evil.tif").exists()


def test_zip_symlink_pointing_out_is_rejected(tmp_path):
    archive = write_zip(tmp_path / "link.zip", {"a.tif": b"A"}, symlinks={"sub/ln": "../../../etc"})
    with pytest.raises(UnsafeArchiveError, match="symlink 'sub/ln' points outside"):
        unpack_archive(archive, tmp_path / "cache" / "link")
    assert only_in(tmp_path / "cache") == set()


def test_zip_symlink_inside_is_kept(tmp_path):
    archive = write_zip(tmp_path / "link.zip", {"a.tif": b"A"}, symlinks={"sub/ln": "../a.tif"})
    files = unpack_archive(archive, tmp_path / "link")
    assert files == ["a.tif", "sub/ln"]
    assert (tmp_path / "link/sub/ln").read_bytes() == b"A"


def _tar_member(name: str, kind=tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_tar_member("../evil.tif"), "outside the target"),
        (_tar_member("/abs/evil.tif"), "absolute path"),
        (_tar_member("ln", tarfile.SYMTYPE, "/etc/passwd"), "absolute path"),
        (_tar_member("d/ln", tarfile.SYMTYPE, "../../x"), "points outside"),
        (_tar_member("hard", tarfile.LNKTYPE, "../outside"), "outside the target"),
        (_tar_member("dev", tarfile.CHRTYPE), "special file"),
    ],
)
def test_tar_unsafe_members_are_rejected(tmp_path, member, message):
    contents = {"good.tif": b"G", "../evil.tif": b"E", "/abs/evil.tif": b"E"}
    archive = write_tar(
        tmp_path / "bad.tar.gz", [_tar_member("good.tif"), member], contents, "w:gz"
    )
    with pytest.raises(UnsafeArchiveError, match=message):
        unpack_archive(archive, tmp_path / "cache" / "bad")
    assert only_in(tmp_path / "cache") == set()
    assert not (tmp_path / "evil.tif").exists()


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w"])
def test_tar_archives_unpack(tmp_path, mode):
    members = [_tar_member("cube"), _tar_member("cube/x.tif"), _tar_member("cube/y.nc")]
    members[0].type = tarfile.DIRTYPE
    archive = write_tar(
        tmp_path / "cube.tar", members, {"cube/x.tif": b"X", "cube/y.nc": b"Y"}, mode
    )
    assert unpack_archive(archive, tmp_path / "out" / "cube", strip_top="cube") == ["x.tif", "y.nc"]
    assert (tmp_path / "out/cube/y.nc").read_bytes() == b"Y"


def test_zip_bomb_is_rejected_before_writing(tmp_path):
    archive = write_zip(tmp_path / "bomb.zip", {"zeros.bin": bytes(20_000_000)})
    assert archive.stat().st_size < 100_000  # tiny on disk, 20 MB unpacked
    with pytest.raises(UnsafeArchiveError, match="decompression bomb"):
        unpack_archive(
            archive, tmp_path / "cache" / "bomb", limits=ArchiveLimits(max_total_bytes=1_000_000)
        )
    assert only_in(tmp_path / "cache") == set()


def test_tar_bomb_is_rejected(tmp_path):
    archive = write_tar(
        tmp_path / "bomb.tar.gz",
        [_tar_member("zeros.bin")],
        {"zeros.bin": bytes(5_000_000)},
        "w:gz",
    )
    with pytest.raises(UnsafeArchiveError, match="limit max_unpacked_bytes=1000000"):
        unpack_archive(
            archive, tmp_path / "cache" / "bomb", limits=ArchiveLimits(max_total_bytes=1_000_000)
        )


def test_member_count_is_bounded(tmp_path):
    archive = write_zip(tmp_path / "many.zip", {f"f{i}.txt": b"x" for i in range(30)})
    with pytest.raises(UnsafeArchiveError, match="more than 10 members"):
        unpack_archive(archive, tmp_path / "many", limits=ArchiveLimits(max_members=10))


def test_corrupt_archive_is_a_clear_error_and_keeps_the_old_content(tmp_path):
    good = write_zip(tmp_path / "good.zip", {"a.tif": b"A" * 1000})
    target = tmp_path / "cache" / "data"
    unpack_archive(good, target)
    broken = tmp_path / "broken.zip"
    data = good.read_bytes()
    broken.write_bytes(data[:40] + bytes(200) + data[240:])  # damage the member data
    with pytest.raises(PreloadError, match="broken.zip") as info:
        unpack_archive(broken, target)
    assert not isinstance(info.value, UnsafeArchiveError)
    assert (target / "a.tif").read_bytes() == b"A" * 1000
    assert only_in(tmp_path / "cache") == {"data", "data/a.tif"}


def test_not_an_archive(tmp_path):
    path = tmp_path / "x.zip"
    path.write_bytes(b"<html>not found</html>")
    with pytest.raises(PreloadError, match="not a zip or tar archive"):
        unpack_archive(path, tmp_path / "x")
