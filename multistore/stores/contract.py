"""The store contract: what the pipeline may ask of a data store beyond xcube's API.

Every store is an xcube ``DataStore``. Optional capabilities are ``typing.Protocol``s,
checked with ``isinstance`` in this module only (the helpers below); the rest of the
package never probes a store with ``hasattr``/``getattr``/``inspect.signature``.

Two capabilities are declared per data id through the open-params schema, as xcube does
for every open param: a *grid-aware opener* declares ``target_grid`` (the pipeline then
passes its grid, the store reads straight onto it) and a *resumable opener* declares
``tile_cache`` (the pipeline then passes a per-cube scratch folder for resumable work).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ClassVar, Protocol, runtime_checkable

from xcube.core.store import DATASET_TYPE, DataStore, DataStoreError

from ..errors import MultistoreError

log = logging.getLogger(__name__)

#: Open params through which stores declare the pipeline-offered capabilities.
TARGET_GRID = "target_grid"
TILE_CACHE = "tile_cache"
TILE_CACHE_OPTIONS = "tile_cache_storage_options"

#: Failures of ``get_open_data_params_schema`` that mean "cannot tell for this data id"
#: (unknown id, catalog unreachable); anything else is a bug and propagates.
_SCHEMA_ERRORS = (DataStoreError, MultistoreError, ValueError, KeyError, LookupError, OSError)


@runtime_checkable
class RequestPlanner(Protocol):
    """Plans its own requests: ``multistore plan`` reports them per source."""

    def plan_requests(self, data_id: str, **open_params: Any) -> Any: ...


@runtime_checkable
class MonitoredPreloader(Protocol):
    """Preloads with a progress monitor and ``force``: ``progress`` receives one event per
    step (``phase``, ``data_id``, ``bytes_done``, ``bytes_total``); xcube's plain
    ``preload_data`` (every ``DataStore`` has one) gets neither.

    ``preload_monitored`` is the explicit declaration: structural checks cannot see
    keyword names, and every xcube store has a ``preload_data``."""

    preload_monitored: ClassVar[bool]

    def preload_data(
        self,
        *data_ids: str,
        progress: Callable[[Any], None] | None = None,
        force: bool = False,
        **preload_params: Any,
    ) -> Any: ...


@runtime_checkable
class SourceIdentifier(Protocol):
    """Names the exact content a source resolves to (for lockfiles and staleness)."""

    def source_identity(self, data_id: str, **open_params: Any) -> dict[str, Any]: ...


@runtime_checkable
class ExportReleaser(Protocol):
    """Keeps exported data for a cube until the pipeline says the cube is complete."""

    def release_exports(self, data_id: str, **open_params: Any) -> int: ...


@runtime_checkable
class Catalog(Protocol):
    """Has a catalog describing its data ids (``multistore describe --catalog``)."""

    def catalog_entry(self, data_id: str) -> Any: ...


@runtime_checkable
class CatalogSearcher(Protocol):
    """Searches its catalog by words, lon/lat box and time (``multistore search --catalog``)."""

    def search_catalog(
        self, text: str | None = None, bbox: Any = None, time_range: Any = None
    ) -> list[Any]: ...


@runtime_checkable
class ExportSubmitter(Protocol):
    """Starts batch exports ahead of a build (``multistore ee submit``)."""

    def submit_exports(self, data_id: str, **open_params: Any) -> list[tuple[str, str]]: ...


@runtime_checkable
class AlignmentGrouper(Protocol):
    """Groups a query's images by native grid (native-grid downloads)."""

    def alignment_groups(self, data_id: str, **params: Any) -> dict[str, list[str]]: ...

    def fetch_retries(self) -> int:
        """Retries this store's fetches needed so far (the manifest reports them per group)."""
        ...


@runtime_checkable
class OpenParamsChecker(Protocol):
    """Finds open-param problems its schema cannot express, without connecting; a
    classmethod, so config validation asks the class."""

    @classmethod
    def open_params_problems(
        cls, params: Mapping[str, Any]
    ) -> list[tuple[tuple[str | int, ...], str]]: ...


@runtime_checkable
class FileStore(Protocol):
    """Backed by an fsspec filesystem: a data id is a path under ``root``."""

    fs: Any
    root: Any


# -- progress while a source opens ------------------------------------------------------

#: (done, total, message) -> None: where a store reports slow work while a source opens
#: (e.g. batch exports); set per dataset by the pipeline, context-local so parallel
#: datasets sharing one store instance each report to their own row.
ProgressReporter = Callable[[float, float, str | None], None]
_OPEN_PROGRESS: ContextVar[ProgressReporter | None] = ContextVar("open_progress", default=None)


def open_progress() -> ProgressReporter | None:
    """The reporter of the dataset whose sources are opening in this context, if any."""
    return _OPEN_PROGRESS.get()


@contextmanager
def reporting_progress(reporter: ProgressReporter) -> Iterator[None]:
    """Route ``open_progress()`` calls made while opening sources to ``reporter``."""
    token = _OPEN_PROGRESS.set(reporter)
    try:
        yield
    finally:
        _OPEN_PROGRESS.reset(token)


# -- the one place that checks capabilities ---------------------------------------------


def declared_open_params(store: DataStore, data_id: str) -> set[str]:
    """Names of the open params the store declares for ``data_id`` (empty if it cannot
    tell: logged at warning, because the store then gets neither grid nor scratch)."""
    try:
        schema = store.get_open_data_params_schema(data_id)
    except _SCHEMA_ERRORS as e:
        log.warning(
            "open params of %r not known (%s: %s): no grid or scratch is offered to it",
            data_id,
            type(e).__name__,
            e,
        )
        return set()
    return set(getattr(schema, "properties", None) or {})


def accepts_target_grid(declared: Iterable[str]) -> bool:
    """Grid-aware opener: reads straight onto the pipeline's grid."""
    return TARGET_GRID in declared


def accepts_scratch(declared: Iterable[str]) -> bool:
    """Resumable opener: keeps resumable work in a per-cube scratch folder."""
    return TILE_CACHE in declared


def request_planner(store: Any) -> RequestPlanner | None:
    return store if isinstance(store, RequestPlanner) else None


def monitored_preloader(store: Any) -> MonitoredPreloader | None:
    if isinstance(store, MonitoredPreloader) and store.preload_monitored:
        return store
    return None


def source_identifier(store: Any) -> SourceIdentifier | None:
    return store if isinstance(store, SourceIdentifier) else None


def export_releaser(store: Any) -> ExportReleaser | None:
    return store if isinstance(store, ExportReleaser) else None


def catalog(store: Any) -> Catalog | None:
    return store if isinstance(store, Catalog) else None


def catalog_searcher(store: Any) -> CatalogSearcher | None:
    return store if isinstance(store, CatalogSearcher) else None


def export_submitter(store: Any) -> ExportSubmitter | None:
    return store if isinstance(store, ExportSubmitter) else None


def alignment_grouper(store: Any) -> AlignmentGrouper | None:
    return store if isinstance(store, AlignmentGrouper) else None


def open_params_checker(store_class: type) -> OpenParamsChecker | None:
    """The store class, if it checks open params (the class object itself is checked:
    the capability is a classmethod, asked before any store is instantiated)."""
    return store_class if isinstance(store_class, OpenParamsChecker) else None


class DatasetsOnly:
    """The xcube ``DataStore`` type methods of a store that serves datasets only (all of
    multistore's); ``check_data_id`` raises for an id the store does not have."""

    @classmethod
    def get_data_types(cls) -> tuple[str, ...]:
        return (DATASET_TYPE.alias,)

    def get_data_types_for_data(self, data_id: str) -> tuple[str, ...]:
        self.check_data_id(data_id)
        return (DATASET_TYPE.alias,)

    def check_data_id(self, data_id: str) -> None:
        """Raise when ``data_id`` is not the store's; by default any id may be asked for."""


def file_store(store: Any) -> FileStore | None:
    """A filesystem-backed store (xcube's ``file``, ``s3``, ...): its data ids are paths."""
    return store if isinstance(store, FileStore) else None


def file_path(files: FileStore, data_id: str) -> str:
    """The path of ``data_id`` in the store's filesystem."""
    root = str(files.root or "").rstrip("/")
    return f"{root}/{data_id}" if root else data_id
