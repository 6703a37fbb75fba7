"""What a downloaded file becomes in the cache: unpacked members, converted Zarr, or itself.

Generic over the source: a store downloads a file, calls ``process_file`` in
a local work folder, then commits the returned entry into its cache under
the same name. Data ids follow the layout xcube-multistore configs use:
``<archive stem>/<member path>`` and ``<archive stem>/<member stem>.zarr``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..netcdf import is_netcdf
from .archive import ArchiveLimits, archive_stem, unpack_archive
from .convert import is_raster, netcdf_to_zarr, raster_to_zarr, zarr_name
from .manifest import PreloadOutput

# (phase, files done, files total)
StepProgress = Callable[[str, int, int | None], None]

_ZARR_MARKERS = (".zgroup", ".zarray", "zarr.json")


@dataclass(frozen=True)
class PreloadOptions:
    """Per-preload choices (the store's ``preload_params``)."""

    convert_rasters: bool = True
    convert_netcdf: bool = False
    chunk_size: int = 1024
    zarr_format: int = 2
    limits: ArchiveLimits = field(default_factory=ArchiveLimits)


@dataclass(frozen=True)
class Entry:
    """A file or folder in the work folder, to be stored in the cache as ``name``."""

    local: Path
    name: str


@dataclass(frozen=True)
class ProcessedFile:
    entries: tuple[Entry, ...]
    outputs: tuple[PreloadOutput, ...]


def file_format(name: str) -> str:
    """The format of a data id as xcube names it (``zarr``, ``geotiff``, ``netcdf``) or its suffix."""
    lower = name.lower().rstrip("/")
    if lower.endswith(".zarr"):
        return "zarr"
    if is_raster(lower):
        return "geotiff"
    if is_netcdf(lower):
        return "netcdf"
    if archive_stem(name) is not None:
        return "zip" if lower.endswith(".zip") else "tar"
    return lower.rpartition(".")[2] if "." in lower else "unknown"


def comes_from(data_id: str, key: str) -> bool:
    """Whether preloading the file ``key`` gives ``data_id``: the file itself, its Zarr
    conversion, or anything unpacked from it (``france.zip`` -> ``france/...``, ``france``)."""
    stem = archive_stem(key)
    if stem is not None:
        return data_id == stem or data_id.startswith(f"{stem}/")
    return data_id in (key, zarr_name(key))


def process_file(
    local: Path,
    key: str,
    workdir: Path,
    options: PreloadOptions,
    progress: StepProgress | None = None,
) -> ProcessedFile:
    """Unpack and/or convert the downloaded ``local`` copy of ``key`` inside ``workdir``."""
    stem = archive_stem(key)
    if stem is not None:
        return _process_archive(local, key, stem, workdir, options, progress)
    entries = [Entry(local, key)]
    outputs = [PreloadOutput(data_id=key, format=file_format(key), source=key)]
    if _convertible(key, options):
        if progress:
            progress("convert", 0, 1)
        target = workdir / zarr_name(key)
        _convert(local, target, options)
        entries.append(Entry(target, zarr_name(key)))
        outputs.append(PreloadOutput(zarr_name(key), "zarr", key, file_format(key)))
        if progress:
            progress("convert", 1, 1)
    return ProcessedFile(entries=tuple(entries), outputs=tuple(outputs))


def _process_archive(
    local: Path,
    key: str,
    stem: str,
    workdir: Path,
    options: PreloadOptions,
    progress: StepProgress | None,
) -> ProcessedFile:
    folder = workdir / stem
    on_unpack = (lambda done, total: progress("unpack", done, total)) if progress else None
    files = unpack_archive(local, folder, limits=options.limits, strip_top=stem, progress=on_unpack)
    local.unlink()  # the archive itself is not kept: its content is

    zarr_roots = _zarr_roots(folder, files)
    outputs: list[PreloadOutput] = []
    for root in zarr_roots:
        data_id = f"{stem}/{root}" if root else stem
        outputs.append(PreloadOutput(data_id, "zarr", f"{key}:{root or '/'}"))
    plain = [f for f in files if not any(_inside(f, r) for r in zarr_roots)]
    to_convert = [f for f in plain if _convertible(f, options)]
    for member in plain:
        outputs.append(PreloadOutput(f"{stem}/{member}", file_format(member), f"{key}:{member}"))
    for n, member in enumerate(to_convert, start=1):
        if progress:
            progress("convert", n - 1, len(to_convert))
        _convert(folder / member, folder / zarr_name(member), options)
        outputs.append(
            PreloadOutput(
                f"{stem}/{zarr_name(member)}", "zarr", f"{key}:{member}", file_format(member)
            )
        )
        if progress:
            progress("convert", n, len(to_convert))
    return ProcessedFile(entries=(Entry(folder, stem),), outputs=tuple(outputs))


def _convertible(name: str, options: PreloadOptions) -> bool:
    return (options.convert_rasters and is_raster(name)) or (
        options.convert_netcdf and is_netcdf(name)
    )


def _convert(src: Path, dest: Path, options: PreloadOptions) -> None:
    convert = raster_to_zarr if is_raster(src.name) else netcdf_to_zarr
    convert(
        src,
        dest,
        chunk_size=options.chunk_size,
        zarr_format=options.zarr_format,
        limits=options.limits,
    )


def _zarr_roots(folder: Path, files: list[str]) -> list[str]:
    """Folders (relative, "" for ``folder`` itself) that are Zarr groups or arrays, outermost only."""
    roots: list[str] = []
    for f in files:
        parent, _, name = f.rpartition("/")
        if name in _ZARR_MARKERS and not any(_inside(parent, r) for r in roots):
            roots = [r for r in roots if not _inside(r, parent)]
            roots.append(parent)
    return sorted(roots)


def _inside(path: str, root: str) -> bool:
    return root == "" or path == root or path.startswith(f"{root}/")
