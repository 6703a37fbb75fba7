"""xcube plugin: registers multistore's data stores (entry point group ``xcube_plugins``).

Registration is lazy (module paths as strings), so importing xcube does not
import the stores' dependencies.
"""

from __future__ import annotations

from xcube.constants import EXTENSION_POINT_DATA_STORES
from xcube.util import extension

# store_id -> (module:class, description)
STORES: dict[str, tuple[str, str]] = {
    "earthengine": (
        "multistore.stores.earthengine.store:EarthEngineDataStore",
        "Google Earth Engine images and collections, downloaded in planned tiles",
    ),
    "stac": (
        "multistore.stores.stac:StacDataStore",
        "STAC catalogs and APIs mosaicked into cubes (odc-stac)",
    ),
    "zenodo": (
        "multistore.stores.zenodo:ZenodoDataStore",
        "Zenodo records (files and archives), with verified preload",
    ),
}


def init_plugin(ext_registry: extension.ExtensionRegistry) -> None:
    for store_id, (component, description) in STORES.items():
        ext_registry.add_extension(
            loader=extension.import_component(component),
            point=EXTENSION_POINT_DATA_STORES,
            name=store_id,
            description=description,
        )
