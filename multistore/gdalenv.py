"""GDAL settings for a run, applied as environment variables and restored afterwards.

GDAL reads its config options from the environment in every thread, which is
what dask worker threads need (``rasterio.Env`` would only cover one thread).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

# xcube-multistore's defaults for `general.gdal_http_params`
DEFAULT_GDAL_HTTP = {"gdal_http_max_retry": 10, "gdal_http_retry_delay": 5}


@contextmanager
def scoped_env(**values: str) -> Iterator[None]:
    """Set environment variables for the duration of a block, then restore them."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def gdal_environment(params: Mapping[str, Any]) -> Any:
    """``{gdal_http_max_retry: 3}`` → ``GDAL_HTTP_MAX_RETRY=3`` while the block runs."""
    merged = {**DEFAULT_GDAL_HTTP, **params}
    return scoped_env(**{k.upper(): str(v) for k, v in merged.items()})
