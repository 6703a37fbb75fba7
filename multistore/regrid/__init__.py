"""Regridding engine: any source grid onto a ``TargetGrid``, tile by tile through dask.

Public API: ``regrid_dataset`` (lazy dataset on the target grid),
``resolve_methods`` (which GDAL method each variable gets) and
``SUPPORTED_METHODS``.
"""

from .engine import regrid_dataset
from .methods import SUPPORTED_METHODS, resolve_methods

__all__ = ["SUPPORTED_METHODS", "regrid_dataset", "resolve_methods"]
