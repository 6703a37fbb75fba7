"""Open a record's files: preloaded copies from the cache, others lazily over HTTP ranges."""

from __future__ import annotations

from typing import Any

import requests
import xarray as xr
from xcube.util.jsonencoder import to_json_value
from xcube.util.jsonschema import JsonObjectSchema

from ...errors import MultistoreError, StoreError
from ...netcdf import engine_for_store
from ...preload.cache import PreloadCache
from ...preload.convert import RASTER_VARIABLE
from ...preload.manifest import PreloadOutput
from ...preload.rangefile import ZIP_BLOCK_SIZE, open_range_file, range_opener
from ..validation import check_params
from .params import raster_params_schema

OPENABLE_FORMATS = ("zarr", "geotiff", "netcdf")
# xcube's Zarr open params that are not xarray.open_zarr's
_NOT_OPEN_ZARR_PARAMS = ("cache_size", "engine")


def open_zarr_zip(
    session: requests.Session,
    url: str,
    size: int,
    label: str,
    schema: JsonObjectSchema,
    open_params: dict[str, Any],
    timeout: float,
) -> xr.Dataset:
    """A zipped Zarr: the zip directory, metadata and chunks come by range reads.

    ``schema`` is the cache store's Zarr open params schema (the params a preloaded
    copy would take)."""
    from fsspec.implementations.zip import ZipFileSystem

    check_params({**schema.to_dict(), "additionalProperties": False}, open_params, "open_params")
    params = {k: v for k, v in open_params.items() if k not in _NOT_OPEN_ZARR_PARAMS}
    remote = open_range_file(session, url, size, timeout=timeout, block_size=ZIP_BLOCK_SIZE)
    try:
        zip_fs = ZipFileSystem(fo=remote, skip_instance_cache=True)  # one per file
        return xr.open_zarr(zip_fs.get_mapper(""), **params)
    except MultistoreError:
        raise
    except Exception as e:
        remote.close()
        raise StoreError(f"{label}: cannot open as a zipped Zarr over HTTP: {e}") from e


def open_raster(
    session: requests.Session,
    url: str,
    size: int,
    name: str,
    label: str,
    open_params: dict[str, Any],
    timeout: float,
) -> xr.Dataset:
    """A GeoTIFF through rioxarray, with xcube's GeoTIFF open params; ``name`` is its file name."""
    import rioxarray

    check_params(raster_params_schema(), open_params, "open_params")
    x_size, y_size = open_params.get("tile_size") or (1024, 1024)
    chunks = {"x": int(x_size), "y": int(y_size)}
    band_as_variable = open_params.get("band_as_variable", True)
    opener = range_opener(session, url, size, name=name, timeout=timeout)
    try:
        array = rioxarray.open_rasterio(
            name,
            opener=opener,
            overview_level=open_params.get("overview_level"),
            chunks=chunks,
            band_as_variable=band_as_variable,
        )
    except Exception as e:
        raise StoreError(f"{label}: cannot open over HTTP: {e}") from e
    if band_as_variable:
        dataset = array
    else:
        dataset = xr.Dataset({array.name or "data": array}).squeeze(drop=True)
    if "spatial_ref" in dataset.coords:
        for var in dataset.data_vars.values():
            var.attrs["grid_mapping"] = "spatial_ref"
    for var in dataset.variables.values():
        var.attrs.update(to_json_value(var.attrs))
    dataset.attrs.update(to_json_value(dataset.attrs))
    return dataset


def open_cached(
    cache: PreloadCache,
    output: PreloadOutput,
    opener_id: str | None,
    open_params: dict[str, Any],
    label: str,
) -> Any:
    """A preloaded file from the cache store; converted GeoTIFFs open as xcube opens GeoTIFFs."""
    fmt = output.format
    if opener_id is None and fmt in OPENABLE_FORMATS:
        opener_id = f"dataset:{fmt}:{cache.protocol}"
    band_as_variable = False
    tile_size = None
    if output.converted_from == "geotiff":
        # Like xcube's GeoTIFF opener: values as stored (a uint8 raster stays uint8).
        open_params.setdefault("mask_and_scale", False)
        band_as_variable = bool(open_params.pop("band_as_variable", False))
        tile_size = open_params.pop("tile_size", None)
    if fmt == "netcdf" and "engine" not in open_params:
        engine = engine_for_store(cache.store, output.data_id)
        if engine is not None:
            open_params["engine"] = engine
    try:
        data = cache.store.open_data(output.data_id, opener_id=opener_id, **open_params)
    except MultistoreError:
        raise
    except Exception as e:
        raise StoreError(f"{label}: cannot open preloaded {output.data_id!r}: {e}") from e
    if tile_size is not None:
        data = data.chunk({"x": int(tile_size[0]), "y": int(tile_size[1])})
    if band_as_variable:
        data = bands_as_variables(data)
    return data


def bands_as_variables(ds: xr.Dataset) -> xr.Dataset:
    """``band_data(band, y, x)`` -> ``band_1``, ``band_2``... as xcube's GeoTIFF opener names them."""
    if RASTER_VARIABLE not in ds or "band" not in ds[RASTER_VARIABLE].dims:
        return ds.rename({RASTER_VARIABLE: "band_1"}) if RASTER_VARIABLE in ds else ds
    variable = ds[RASTER_VARIABLE]
    bands = {f"band_{int(b)}": variable.sel(band=b, drop=True) for b in variable["band"].values}
    return ds.drop_vars([RASTER_VARIABLE, "band"]).assign(bands)
