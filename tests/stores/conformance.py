"""One suite every multistore data store runs (issue 13), as zarr ships its store test base.

A store's test module subclasses ``StoreConformance`` (the class name must start
with ``Test`` to be collected) and provides the fixtures ``store`` and ``case``.
The suite checks the xcube surface (params schemas), the store contract of
``multistore.stores.contract`` (declared capabilities match the store's methods
and schema), opening with and without the pipeline's grid, clear errors for
unknown data ids and preload progress where the store preloads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import xarray as xr
from xcube.util.jsonschema import JsonObjectSchema
from xcube.util.undefined import UNDEFINED

from multistore.grid import TargetGrid, xy_names
from multistore.stores import contract

#: The protocols of ``contract``, by name: what each store says it can do.
PROTOCOLS = {
    "RequestPlanner": contract.RequestPlanner,
    "MonitoredPreloader": contract.MonitoredPreloader,
    "SourceIdentifier": contract.SourceIdentifier,
    "ExportReleaser": contract.ExportReleaser,
    "Catalog": contract.Catalog,
    "CatalogSearcher": contract.CatalogSearcher,
    "ExportSubmitter": contract.ExportSubmitter,
    "AlignmentGrouper": contract.AlignmentGrouper,
    "OpenParamsChecker": contract.OpenParamsChecker,
}


@dataclass(frozen=True)
class Case:
    """What a store's conformance run opens and expects."""

    data_id: str
    unknown_data_id: str
    capabilities: frozenset[str]
    #: open params for every open (bands, ...), besides the grid
    open_params: dict[str, Any] = field(default_factory=dict)
    #: a grid the data covers, for stores that declare ``target_grid``
    grid: TargetGrid | None = None
    #: whether the data id opens on its native grid without further params
    opens_native: bool = True
    #: preload ids and params, for stores that preload
    preload: tuple[tuple[str, ...], dict[str, Any]] | None = None


def _assert_defaults_valid(schema: JsonObjectSchema) -> None:
    """Every declared default passes its own property's schema (a wrong default only
    shows when a user omits the param)."""
    assert isinstance(schema, JsonObjectSchema)
    for name, prop in (schema.properties or {}).items():
        default = getattr(prop, "default", UNDEFINED)
        if default not in (UNDEFINED, None):
            try:
                prop.validate_instance(default)
            except Exception as e:
                raise AssertionError(f"default of {name!r} is invalid: {e}") from e


class StoreConformance:
    """The shared suite; subclasses provide ``store`` and ``case`` fixtures."""

    @pytest.fixture
    def store(self) -> Any:
        raise NotImplementedError("a conformance subclass provides the store fixture")

    @pytest.fixture
    def case(self) -> Case:
        raise NotImplementedError("a conformance subclass provides the case fixture")

    def test_declared_capabilities(self, store: Any, case: Case) -> None:
        declared = {name for name, proto in PROTOCOLS.items() if isinstance(store, proto)}
        if "MonitoredPreloader" in declared and contract.monitored_preloader(store) is None:
            declared.discard("MonitoredPreloader")
        assert declared == set(case.capabilities)
        checker = contract.open_params_checker(type(store))
        assert (checker is not None) == ("OpenParamsChecker" in case.capabilities)

    def test_store_params_schema_validates_its_defaults(self, store: Any) -> None:
        _assert_defaults_valid(type(store).get_data_store_params_schema())

    def test_open_params_schema_validates_its_defaults(self, store: Any, case: Case) -> None:
        schema = store.get_open_data_params_schema(case.data_id)
        _assert_defaults_valid(schema)
        schema.validate_instance(case.open_params)

    def test_open_without_grid(self, store: Any, case: Case) -> None:
        if not case.opens_native:
            pytest.skip("this data id needs a grid or a box to open")
        ds = _dataset(store.open_data(case.data_id, **case.open_params))
        assert ds.data_vars, "opened without variables"

    def test_open_with_grid_when_declared(self, store: Any, case: Case) -> None:
        declared = contract.declared_open_params(store, case.data_id)
        if not contract.accepts_target_grid(declared):
            assert case.grid is None, "a grid is given but the store does not declare target_grid"
            pytest.skip("the store does not read onto a grid")
        assert case.grid is not None, "the store declares target_grid: give a grid"
        ds = _dataset(
            store.open_data(case.data_id, **case.open_params, target_grid=case.grid.to_dict())
        )
        x, y = xy_names(ds)
        assert (ds.sizes[y], ds.sizes[x]) == (case.grid.height, case.grid.width)

    def test_unknown_data_id_is_a_clear_error(self, store: Any, case: Case) -> None:
        with pytest.raises(Exception) as info:
            store.open_data(case.unknown_data_id, **case.open_params)
        assert case.unknown_data_id in str(info.value)
        assert not isinstance(info.value, (AttributeError, TypeError, AssertionError))

    def test_preload_progress(self, store: Any, case: Case) -> None:
        preloader = contract.monitored_preloader(store)
        if preloader is None:
            assert case.preload is None
            pytest.skip("the store does not preload with progress")
        assert case.preload is not None, "the store preloads: give ids to preload"
        ids, params = case.preload
        events: list[Any] = []
        preloader.preload_data(*ids, progress=events.append, **params)
        assert events, "no progress reported"
        assert {getattr(e, "data_id", None) for e in events} >= set(ids)


def _dataset(data: Any) -> xr.Dataset:
    data = getattr(data, "base_dataset", data)  # xcube MultiLevelDataset
    assert isinstance(data, xr.Dataset), f"open_data returned {type(data).__name__}"
    return data
