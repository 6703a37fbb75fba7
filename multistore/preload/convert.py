"""Raster (GeoTIFF) and NetCDF files to chunked Zarr, keeping dtype, nodata and CRS.

A uint8 GeoTIFF stays uint8: values are copied as stored (no masking, no
scaling), nodata becomes the variable's ``_FillValue`` and identity
``scale_factor``/``add_offset`` attributes are dropped (they would make every
reader decode to float64). Output is written next to its destination and
renamed into place when complete.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import xarray as xr

from ..errors import PreloadError, UnsafeArchiveError
from ..netcdf import engine_for_path
from .archive import ArchiveLimits

RASTER_SUFFIXES = (".tif", ".tiff", ".geotiff", ".gtiff")
RASTER_VARIABLE = "band_data"  # the name xarray's rasterio backend uses


def is_raster(name: str) -> bool:
    return name.lower().endswith(RASTER_SUFFIXES)


def zarr_name(name: str) -> str:
    """``a/b.tif`` -> ``a/b.zarr``."""
    stem, dot, _suffix = name.rpartition(".")
    return f"{stem if dot else name}.zarr"


def open_raster(path: str | Path, chunk_size: int = 1024, **open_kwargs) -> xr.Dataset:
    """A GeoTIFF as a dataset with one variable ``band_data`` (``band, y, x``; 2-D for one band).

    Values are kept as stored; nodata is in the ``_FillValue`` attribute, like
    xcube's GeoTIFF opener with ``band_as_variable: false``.
    """
    import rioxarray

    array = rioxarray.open_rasterio(
        path,
        chunks={"band": 1, "y": chunk_size, "x": chunk_size},
        mask_and_scale=False,
        **open_kwargs,
    )
    attrs = dict(array.attrs)
    if attrs.get("scale_factor") == 1.0 and attrs.get("add_offset") == 0.0:
        attrs.pop("scale_factor")
        attrs.pop("add_offset")
    descriptions = attrs.pop("long_name", None)
    if isinstance(descriptions, tuple | list):
        if any(descriptions):
            attrs["band_descriptions"] = [d or "" for d in descriptions]
    elif descriptions:
        attrs["long_name"] = descriptions
    array.attrs = attrs
    array.encoding = {}
    if array.sizes["band"] == 1:
        array = array.squeeze("band", drop=True)
    ds = array.to_dataset(name=RASTER_VARIABLE)
    ds[RASTER_VARIABLE].attrs["grid_mapping"] = "spatial_ref"
    return ds


def check_expansion(ds: xr.Dataset, src: Path, limits: ArchiveLimits | None) -> None:
    """Refuse to convert data whose pixels x bytes exceed the unpack limits for ``src``'s size.

    A sparse 200,000 x 200,000 GeoTIFF is a few KB on disk; converting it would
    burn minutes of CPU and write 40 GB of chunks. The same caps as for
    archives apply, relative to the file's size on disk.
    """
    if limits is None:
        return
    size = Path(src).stat().st_size
    limit, why = limits.byte_limit(size)
    nbytes = sum(v.size * v.dtype.itemsize for v in ds.data_vars.values())
    if nbytes > limit:
        shapes = ", ".join(
            f"{name} {' x '.join(map(str, v.shape))} x {v.dtype.itemsize} B"
            for name, v in ds.data_vars.items()
        )
        raise UnsafeArchiveError(
            f"{Path(src).name}: converting to Zarr means {nbytes} bytes of values ({shapes}), "
            f"more than {limit} (limit {why}; a decompression bomb?); refusing to convert. "
            "Raise the Zenodo store param named in the limit if the file is trusted"
        )


def raster_to_zarr(
    src: Path,
    dest: Path,
    *,
    chunk_size: int = 1024,
    zarr_format: int = 2,
    limits: ArchiveLimits | None = None,
) -> Path:
    """Convert the GeoTIFF ``src`` into the Zarr folder ``dest`` (replaced if it exists)."""
    try:
        ds = open_raster(src, chunk_size)
    except Exception as e:
        raise PreloadError(f"{Path(src).name}: cannot read raster: {e}") from e
    try:
        check_expansion(ds, src, limits)
    except UnsafeArchiveError:
        ds.close()
        raise
    variable = ds[RASTER_VARIABLE]
    fill = variable.attrs.pop("_FillValue", None)
    encoding = {
        RASTER_VARIABLE: {
            "chunks": tuple(chunk_size if d in ("x", "y") else 1 for d in variable.dims),
            "_FillValue": fill,
        }
    }
    return _write(ds, dest, encoding, zarr_format, src)


def netcdf_to_zarr(
    src: Path,
    dest: Path,
    *,
    chunk_size: int = 1024,
    zarr_format: int = 2,
    limits: ArchiveLimits | None = None,
) -> Path:
    """Convert a NetCDF file into Zarr, keeping its encoding (dtype, fill values, scaling)."""
    try:
        ds = xr.open_dataset(src, chunks={}, decode_cf=False, engine=engine_for_path(src))
    except Exception as e:
        raise PreloadError(f"{Path(src).name}: cannot read NetCDF: {e}") from e
    try:
        check_expansion(ds, src, limits)
    except UnsafeArchiveError:
        ds.close()
        raise
    encoding = {}
    for name, var in ds.variables.items():
        chunks = tuple(min(chunk_size, n) for n in var.shape)
        encoding[name] = {"chunks": chunks} if var.ndim else {}
    ds = ds.chunk({d: min(chunk_size, n) for d, n in ds.sizes.items()})
    return _write(ds, dest, encoding, zarr_format, src)


def _write(ds: xr.Dataset, dest: Path, encoding: dict, zarr_format: int, src: Path) -> Path:
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.writing-{uuid.uuid4().hex[:8]}"
    try:
        ds.to_zarr(staging, mode="w", encoding=encoding, zarr_format=zarr_format, consolidated=True)
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    except Exception as e:
        raise PreloadError(f"{Path(src).name}: conversion to Zarr failed: {e}") from e
    finally:
        ds.close()
        if staging.exists():
            shutil.rmtree(staging)
    return dest
