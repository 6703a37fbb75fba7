"""Which package provides an xcube store id: install hints for known plugin ids that are
missing, and which registration wins when multistore and another plugin claim one id."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# store id -> PyPI/conda-forge package of xcube plugins that xcube-multistore configs use.
# Most are on conda-forge only.
KNOWN_PLUGIN_STORES: Mapping[str, str] = {
    "cciodp": "xcube-cci",
    "ccizarr": "xcube-cci",
    "esa-cci": "xcube-cci",
    "esa-cci-zarr": "xcube-cci",
    "esa-cci-kc": "xcube-cci",
    "cds": "xcube-cds",
    "clms": "xcube-clms",
    "cmems": "xcube-cmems",
    "icosdp": "xcube-icosdp",
    "sentinelhub": "xcube-sh",
    "sentinelhub-cdse": "xcube-sh",
    "smos": "xcube-smos",
    "stac-xcube": "xcube-stac",
    "stac-pc": "xcube-stac",
    "stac-pc-ardc": "xcube-stac",
    "stac-cdse": "xcube-stac",
    "stac-cdse-ardc": "xcube-stac",
}


def install_hint(store_id: str) -> str | None:
    """'provided by <package> ... install: ...' for a known plugin store id, else None."""
    package = KNOWN_PLUGIN_STORES.get(store_id)
    if package is None:
        return None
    return (
        f"store_id {store_id!r} is provided by the xcube plugin package {package!r}, which is "
        f"not installed; install it with `conda install -c conda-forge {package}` "
        f"(or `pip install {package}` where it is on PyPI)"
    )


@dataclass(frozen=True)
class Providers:
    """Packages registering one store id, and the one xcube will use."""

    store_id: str
    registrants: tuple[str, ...]
    used: str | None

    def note(self) -> str | None:
        """A sentence for ``validate`` when more than one package registers the id."""
        if len(self.registrants) < 2:
            return None
        used = self.used or "unknown"
        return (
            f"store_id {self.store_id!r} is registered by {', '.join(self.registrants)}; "
            f"xcube uses the one from {used}"
        )


def providers(store_id: str) -> Providers:
    """Every installed xcube plugin registering ``store_id`` (each plugin's init function is
    run on an empty registry, which registers lazily and imports no store), and the
    package of the class ``get_data_store_class`` returns."""
    from importlib.metadata import entry_points

    from xcube.constants import EXTENSION_POINT_DATA_STORES, PLUGIN_ENTRY_POINT_GROUP_NAME
    from xcube.util.extension import ExtensionRegistry

    registrants: list[str] = []
    for ep in entry_points(group=PLUGIN_ENTRY_POINT_GROUP_NAME):
        registry = ExtensionRegistry()
        try:
            ep.load()(registry)
        except Exception:  # a broken plugin is xcube's warning to give, not ours
            continue
        if registry.has_extension(EXTENSION_POINT_DATA_STORES, store_id):
            name = ep.dist.name if ep.dist is not None else ep.value.split(":")[0]
            if name not in registrants:
                registrants.append(name)
    return Providers(store_id, tuple(registrants), _used_package(store_id))


def _used_package(store_id: str) -> str | None:
    try:
        from importlib.metadata import packages_distributions

        from xcube.core.store import get_data_store_class

        top = get_data_store_class(store_id).__module__.split(".")[0]
    except Exception:
        return None
    names = packages_distributions().get(top)
    return names[0] if names else top
