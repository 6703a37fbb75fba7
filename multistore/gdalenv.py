"""GDAL settings for a run, applied as environment variables and restored afterwards.

GDAL reads its config options from the environment in every thread, which is
what dask worker threads need (``rasterio.Env`` would only cover one thread).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

# Defaults of `general.gdal_http_params`: xcube-multistore's HTTP retries, and a
# block cache of 128 MB instead of GDAL's 5% of RAM, since tiles are read window by
# window and a large cache only adds resident memory per worker.
DEFAULTS = {"gdal_http_max_retry": 10, "gdal_http_retry_delay": 5, "gdal_cachemax": 128}


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
    """``{gdal_http_max_retry: 3}`` → ``GDAL_HTTP_MAX_RETRY=3`` while the block runs.

    A default never overrides a variable the user already set in the environment.
    """
    values = {k.upper(): str(v) for k, v in DEFAULTS.items() if k.upper() not in os.environ}
    values.update({k.upper(): str(v) for k, v in params.items()})
    return scoped_env(**values)
