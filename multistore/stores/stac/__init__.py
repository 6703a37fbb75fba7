"""STAC data store: catalogs and APIs mosaicked into cubes with odc-stac.

``store`` (the xcube ``DataStore``), ``query`` (item queries and filters),
``crawl`` and ``io`` (static catalogs over HTTP or files), ``index`` (the
stac-geoparquet item index), ``bands`` (asset dtypes and nodata from headers).
"""

from .store import StacDataStore

__all__ = ["StacDataStore"]
