"""Every store of multistore runs the shared conformance suite (``tests/stores/conformance.py``)
against its local server: the Zenodo and Earth Engine emulators, a static STAC catalog."""

from __future__ import annotations

import pytest
from xcube.core.store import new_data_store

from multistore.grid import TargetGrid
from multistore.stores.stac import StacDataStore
from tests.servers.earthengine import store_params
from tests.servers.stac_catalog import TINY_COLLECTION
from tests.stores.conformance import Case, StoreConformance
from tests.stores.test_zenodo import RID, new_store, record  # noqa: F401 (fixture)


class TestZenodoConformance(StoreConformance):
    @pytest.fixture
    def store(self, record, tmp_path):  # noqa: F811
        return new_store(record, tmp_path)

    @pytest.fixture
    def case(self) -> Case:
        return Case(
            data_id="planet_canopy_height_30m_v0.1.tif",
            unknown_data_id="nope.tif",
            capabilities=frozenset({"MonitoredPreloader", "SourceIdentifier"}),
            preload=(("france.zip",), {}),
        )


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:odc.*")
class TestStacConformance(StoreConformance):
    @pytest.fixture
    def store(self, tiny_catalog):
        return StacDataStore(str(tiny_catalog.catalog_path))

    @pytest.fixture
    def case(self) -> Case:
        return Case(
            data_id=TINY_COLLECTION,
            unknown_data_id="no-such-collection",
            capabilities=frozenset({"SourceIdentifier", "OpenParamsChecker"}),
            open_params={"asset_names": ["B04"]},
            grid=TargetGrid.from_bbox(
                [11.982, 47.992, 12.018, 48.012], "EPSG:4326", 0.0002, (64, 48)
            ),
            opens_native=False,
        )


class TestEarthEngineConformance(StoreConformance):
    @pytest.fixture
    def store(self, ee_emulator):
        return new_data_store("earthengine", **store_params(ee_emulator))

    @pytest.fixture
    def case(self) -> Case:
        return Case(
            data_id="TEST/LANDCOVER",
            unknown_data_id="TEST/NOPE",
            capabilities=frozenset(
                {
                    "RequestPlanner",
                    "SourceIdentifier",
                    "ExportReleaser",
                    "Catalog",
                    "CatalogSearcher",
                    "ExportSubmitter",
                    "AlignmentGrouper",
                }
            ),
            open_params={"bbox": [10.095, 45.095, 10.125, 45.125]},
            grid=TargetGrid.from_bbox(
                [10.0005, 45.0005, 10.1005, 45.0705], "EPSG:4326", 0.001, tile_size=16
            ),
        )
