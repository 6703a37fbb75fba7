"""The ``earthengine`` store's params: store and open params schemas, their checks."""

from __future__ import annotations

from xcube.util.jsonschema import (
    JsonArraySchema,
    JsonBooleanSchema,
    JsonComplexSchema,
    JsonIntegerSchema,
    JsonNumberSchema,
    JsonObjectSchema,
    JsonStringSchema,
)

from .catalog import CATALOG_TTL_S, CATALOG_URL
from .export import (
    EXPORT_DESTINATIONS,
)
from .planner import DEFAULT_REQUEST_BYTE_LIMIT
from .query import (
    REDUCERS,
    RESAMPLING,
    TEMPORAL_RESOLUTIONS,
)
from .session import DEFAULT_CONCURRENCY, HIGH_VOLUME_URL

DEFAULT_TILE_SIZE = 1024


def store_params_schema() -> JsonObjectSchema:
    return JsonObjectSchema(
        properties=dict(
            project=JsonStringSchema(title="Google Cloud project used for quota and billing"),
            url=JsonStringSchema(default=HIGH_VOLUME_URL, title="Earth Engine API base URL"),
            credentials=JsonStringSchema(
                default="persistent",
                title="'persistent', 'none', a service-account key file path or the key JSON",
            ),
            max_concurrency=JsonIntegerSchema(minimum=1, default=DEFAULT_CONCURRENCY),
            request_byte_limit=JsonIntegerSchema(minimum=1024, default=DEFAULT_REQUEST_BYTE_LIMIT),
            max_retries=JsonIntegerSchema(minimum=0, maximum=50, default=6),
            deadline_s=JsonNumberSchema(exclusive_minimum=0, default=120.0),
            backoff_s=JsonNumberSchema(minimum=0, default=0.5),
            catalog_url=JsonStringSchema(
                default=CATALOG_URL, title="root of the STAC catalog for search/describe"
            ),
            catalog_cache=JsonStringSchema(
                title="folder caching the catalog (default ~/.cache/multistore/earthengine)"
            ),
            catalog_ttl_s=JsonNumberSchema(minimum=0, default=CATALOG_TTL_S),
        ),
        additional_properties=False,
    )


def open_params_schema() -> JsonObjectSchema:
    mask_rule = JsonObjectSchema(
        properties=dict(
            band=JsonStringSchema(min_length=1),
            values=JsonArraySchema(items=JsonNumberSchema(), min_items=1),
            bits=JsonArraySchema(items=JsonIntegerSchema(minimum=0, maximum=62), min_items=1),
        ),
        required=["band"],
        additional_properties=False,
    )
    number_or_pair = JsonComplexSchema(
        one_of=[
            JsonNumberSchema(),
            JsonArraySchema(items=JsonNumberSchema(), min_items=2, max_items=2),
        ]
    )
    return JsonObjectSchema(
        properties=dict(
            time_range=JsonArraySchema(items=JsonStringSchema(), min_items=2, max_items=2),
            mask=JsonComplexSchema(one_of=[mask_rule, JsonArraySchema(items=mask_rule)]),
            expressions=JsonObjectSchema(
                additional_properties=JsonStringSchema(min_length=1),
                title="{band name: ee.Image.expression text}, evaluated per image",
            ),
            resampling=JsonStringSchema(enum=list(RESAMPLING)),
            image_hook=JsonObjectSchema(
                properties=dict(
                    module_path=JsonStringSchema(min_length=1),
                    function_name=JsonStringSchema(min_length=1),
                ),
                required=["module_path", "function_name"],
                additional_properties=False,
            ),
            bands=JsonComplexSchema(
                one_of=[
                    JsonArraySchema(items=JsonStringSchema(), min_items=1),
                    JsonObjectSchema(
                        properties=dict(
                            include=JsonArraySchema(items=JsonStringSchema(), min_items=1),
                            exclude=JsonArraySchema(items=JsonStringSchema()),
                        ),
                        additional_properties=False,
                    ),
                ]
            ),
            filters=JsonArraySchema(items=JsonStringSchema()),
            temporal_resolution=JsonStringSchema(enum=TEMPORAL_RESOLUTIONS, default="raw"),
            reducer=JsonStringSchema(enum=REDUCERS, default="mosaic"),
            rename_map=JsonObjectSchema(additional_properties=JsonStringSchema()),
            scale_map=JsonObjectSchema(additional_properties=number_or_pair),
            fill_value=JsonNumberSchema(nullable=True),
            fill_values=JsonObjectSchema(additional_properties=JsonNumberSchema(nullable=True)),
            target_grid=JsonObjectSchema(additional_properties=True),
            crs=JsonStringSchema(),
            scale=number_or_pair,
            bbox=JsonArraySchema(items=JsonNumberSchema(), min_items=4, max_items=4),
            tile_size=JsonComplexSchema(
                one_of=[
                    JsonIntegerSchema(minimum=1),
                    JsonArraySchema(items=JsonIntegerSchema(minimum=1), min_items=2, max_items=2),
                ]
            ),
            tile_cache=JsonStringSchema(
                title="folder or fsspec URL keeping fetched tiles (resume)"
            ),
            tile_cache_storage_options=JsonObjectSchema(additional_properties=True),
            with_time=JsonBooleanSchema(title="keep a time dimension for a single image"),
            export_via=JsonStringSchema(
                enum=list(EXPORT_DESTINATIONS),
                title="compute each time step in a batch export task first",
            ),
            export_asset_root=JsonStringSchema(
                title="folder for exported assets: projects/<p>/assets/<dir>"
            ),
            export_bucket=JsonStringSchema(title="Cloud Storage bucket (export_via: gcs)"),
            export_prefix=JsonStringSchema(
                default="multistore", title="object name prefix (gcs) or Drive folder (drive)"
            ),
            export_file_dimensions=JsonIntegerSchema(
                minimum=1,
                title="split exported GeoTIFFs into files of this many pixels per side "
                "(Earth Engine wants a multiple of 256)",
            ),
            export_storage_options=JsonObjectSchema(
                additional_properties=True,
                title="gcsfs options for reading gcs exports (token, endpoint_url, ...)",
            ),
            export_poll_s=JsonNumberSchema(exclusive_minimum=0, default=10.0),
            alignment_group=JsonStringSchema(
                min_length=1,
                title="without a grid: only the images on this native grid (see alignment_groups)",
            ),
            keep_exports=JsonBooleanSchema(
                default=False,
                title="keep exported assets / Cloud Storage files after the cube is complete",
            ),
            export_timeout_s=JsonNumberSchema(exclusive_minimum=0),
        ),
        additional_properties=False,
    )
