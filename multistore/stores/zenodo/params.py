"""The ``zenodo`` store's params: store, preload and (GeoTIFF) open params schemas."""

from __future__ import annotations

from xcube.util.jsonschema import (
    JsonBooleanSchema,
    JsonComplexSchema,
    JsonIntegerSchema,
    JsonNumberSchema,
    JsonObjectSchema,
    JsonStringSchema,
)

from ...preload.download import DEFAULT_SPLIT_BYTES
from .api import DEFAULT_BASE_URL, ROOT_PATTERN

RANGE_SPLIT_SCHEMA = JsonIntegerSchema(
    minimum=1,
    nullable=True,
    default=DEFAULT_SPLIT_BYTES,
    title="Files larger than this download in parallel HTTP ranges (null: never)",
)


def raster_params_schema(base: JsonObjectSchema | None = None) -> JsonObjectSchema:
    """xcube's GeoTIFF open params (``tile_size``, ``band_as_variable``, ``overview_level``)."""
    from xcube.core.store.fs.impl.rasterio import RASTERIO_OPEN_DATA_PARAMS_SCHEMA

    if base is None:
        return RASTERIO_OPEN_DATA_PARAMS_SCHEMA
    properties = dict(base.properties)
    properties["tile_size"] = RASTERIO_OPEN_DATA_PARAMS_SCHEMA.properties["tile_size"]
    properties["band_as_variable"] = JsonBooleanSchema(
        default=False,
        description="Split the converted raster's 'band' dimension into variables band_1...",
    )
    return JsonObjectSchema(properties=properties, additional_properties=False)


def store_params_schema() -> JsonObjectSchema:
    return JsonObjectSchema(
        properties=dict(
            root=JsonComplexSchema(
                one_of=[
                    JsonStringSchema(
                        min_length=1,
                        pattern=ROOT_PATTERN,
                        title="a record id, DOI (10.5281/zenodo.<id>) or record URL",
                    ),
                    JsonIntegerSchema(minimum=1),
                ],
                title="Record id, DOI (10.5281/zenodo.<id>) or record URL; without it, "
                "data ids are '<record>/<file>'",
            ),
            base_url=JsonStringSchema(default=DEFAULT_BASE_URL, title="Zenodo server"),
            access_token=JsonStringSchema(
                nullable=True, title="Personal access token, for restricted records"
            ),
            cache_store_id=JsonStringSchema(default="file"),
            cache_store_params=JsonObjectSchema(
                additional_properties=True,
                title="Params of the cache store (default root ~/.cache/multistore/zenodo/<id>)",
            ),
            max_concurrency=JsonIntegerSchema(minimum=1, default=4),
            max_retries=JsonIntegerSchema(minimum=0, default=6),
            backoff_s=JsonNumberSchema(minimum=0, default=1.0),
            timeout=JsonNumberSchema(exclusive_minimum=0, default=60.0),
            requests_per_minute=JsonIntegerSchema(
                minimum=1, nullable=True, title="Default: 60 as guest, 100 with a token"
            ),
            staging_dir=JsonStringSchema(
                nullable=True, title="Local folder for downloads (resumable partial files)"
            ),
            max_unpacked_bytes=JsonIntegerSchema(minimum=1, nullable=True),
            max_archive_members=JsonIntegerSchema(minimum=1, nullable=True),
            max_unpack_ratio=JsonNumberSchema(
                minimum=1,
                nullable=True,
                title="Unpacked or converted bytes per byte of archive or file (default 1000)",
            ),
            range_split_bytes=RANGE_SPLIT_SCHEMA,
        ),
        additional_properties=False,
    )


def preload_params_schema() -> JsonObjectSchema:
    return JsonObjectSchema(
        properties=dict(
            force=JsonBooleanSchema(default=False, title="Redo even if already preloaded"),
            convert_rasters=JsonBooleanSchema(
                default=True, title="Also write each GeoTIFF as <stem>.zarr"
            ),
            convert_netcdf=JsonBooleanSchema(
                default=False, title="Also write each NetCDF file as <stem>.zarr"
            ),
            chunk_size=JsonIntegerSchema(minimum=16, default=1024),
            zarr_format=JsonIntegerSchema(enum=[2, 3], default=2),
            range_split_bytes=RANGE_SPLIT_SCHEMA,
            silent=JsonBooleanSchema(default=True, title="No xcube preload tables on stdout"),
        ),
        additional_properties=False,
    )
