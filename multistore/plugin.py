"""xcube plugin: registers multistore's data stores (entry point group ``xcube_plugins``).

Registration is lazy (module paths as strings), so importing xcube does not
import the stores' dependencies.
"""

from __future__ import annotations

from xcube.constants import EXTENSION_POINT_DATA_STORES
from xcube.util import extension

# store_id -> (module:class, description)
STORES: dict[str, tuple[str, str]] = {}


def init_plugin(ext_registry: extension.ExtensionRegistry) -> None:
    for store_id, (component, description) in STORES.items():
        ext_registry.add_extension(
            loader=extension.import_component(component),
            point=EXTENSION_POINT_DATA_STORES,
            name=store_id,
            description=description,
        )
