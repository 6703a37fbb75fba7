"""Zenodo data store: a record's files, archives and verified preloads.

``store`` (the xcube ``DataStore``), ``records`` (the store without a record:
data ids ``<record>/<file>``), ``api`` (the REST client), ``params`` (schemas),
``remote`` (lazy opening over HTTP ranges), ``preload`` (download, verify,
unpack, convert into the cache).
"""

from .store import ZenodoDataStore

__all__ = ["ZenodoDataStore"]
