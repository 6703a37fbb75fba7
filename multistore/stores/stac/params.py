"""The ``stac`` store's open params: the schema and its validation."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from xcube.util.jsonschema import (
    JsonArraySchema,
    JsonComplexSchema,
    JsonIntegerSchema,
    JsonNumberSchema,
    JsonObjectSchema,
    JsonStringSchema,
)

from ..validation import check_params

LOG = logging.getLogger(__name__)

GROUPBY = ("solar_day", "time", "id")
RESAMPLING = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode", "min", "max", "med", "q1", "q3")  # fmt: skip
ON_MISSING_ASSET = ("fail", "skip")
DEFAULT_MAX_RETRIES = 3


def open_params_schema() -> JsonObjectSchema:
    """Open params; ``target_grid`` tells the pipeline to pass its grid (read straight onto it)."""
    return JsonObjectSchema(
        properties=dict(
            collections=JsonArraySchema(items=JsonStringSchema(min_length=1), min_items=1),
            bbox=JsonArraySchema(
                items=[JsonNumberSchema()] * 4, title="west, south, east, north in crs"
            ),
            crs=JsonStringSchema(
                default="EPSG:4326", title="CRS of bbox (and of the output with spatial_res)"
            ),
            spatial_res=JsonNumberSchema(
                exclusive_minimum=0, title="output resolution without a target grid"
            ),
            time_range=JsonArraySchema(
                items=[JsonStringSchema(nullable=True), JsonStringSchema(nullable=True)]
            ),
            query=JsonObjectSchema(
                additional_properties=True, title='e.g. {"eo:cloud_cover": {"lt": 20}}'
            ),
            filter=JsonComplexSchema(
                any_of=[
                    JsonStringSchema(min_length=1),
                    JsonArraySchema(items=JsonStringSchema(min_length=1)),
                    JsonObjectSchema(additional_properties=True),
                ],
                title="'prop op value' or CQL2 text string(s) (ANDed), or CQL2-JSON",
            ),
            asset_names=JsonArraySchema(items=JsonStringSchema(min_length=1), min_items=1),
            groupby=JsonStringSchema(enum=list(GROUPBY), default="solar_day"),
            resampling=JsonStringSchema(enum=list(RESAMPLING), default="nearest"),
            mask=JsonObjectSchema(
                properties=dict(
                    asset=JsonStringSchema(min_length=1),
                    values=JsonArraySchema(items=JsonNumberSchema(), min_items=1),
                ),
                required=["asset", "values"],
                additional_properties=False,
            ),
            max_items=JsonIntegerSchema(minimum=1),
            chunks=JsonObjectSchema(additional_properties=JsonIntegerSchema(minimum=1)),
            target_grid=JsonObjectSchema(additional_properties=True),
        ),
        additional_properties=False,
    )


def validate(params: Mapping[str, Any]) -> None:
    check_params(open_params_schema(), params, "open_params")


def store_params_schema() -> JsonObjectSchema:
    return JsonObjectSchema(
        properties=dict(
            url=JsonStringSchema(
                min_length=1,
                title="STAC API root or static catalog/collection JSON (path, http(s), s3)",
            ),
            storage_options=JsonObjectSchema(
                additional_properties=True,
                title="fsspec options (anon, key, secret, endpoint_url, client_kwargs, headers); "
                "also applied to GDAL for asset reads",
            ),
            index=JsonStringSchema(
                title="item index (stac-geoparquet) built by 'multistore stac index'"
            ),
            max_concurrency=JsonIntegerSchema(minimum=1, default=16),
            on_missing_asset=JsonStringSchema(enum=list(ON_MISSING_ASSET), default="fail"),
            max_retries=JsonIntegerSchema(minimum=0, default=DEFAULT_MAX_RETRIES),
            retries=JsonIntegerSchema(minimum=0, title="older name of max_retries"),
        ),
        required=["url"],
        additional_properties=False,
    )


def resolve_max_retries(max_retries: int | None, retries: int | None) -> int:
    """``max_retries``, as the other stores spell it; ``retries`` is its older name."""
    if max_retries is not None and retries is not None:
        raise ValueError("stac: give max_retries (retries is its older name), not both")
    if retries is not None:
        LOG.warning("stac: the store param 'retries' is now called 'max_retries'")
        return int(retries)
    return DEFAULT_MAX_RETRIES if max_retries is None else int(max_retries)
