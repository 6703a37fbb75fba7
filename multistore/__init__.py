"""multistore: analysis-ready datacubes from many sources, driven by one YAML config.

Heavy imports are lazy: xcube loads ``multistore.plugin`` while importing its
store framework, so this package must not import xcube at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .api import MultiSourceDataStore
    from .config import load_config
    from .generate import RunReport

_LAZY = {
    "MultiSourceDataStore": "multistore.api",
    "load_config": "multistore.config",
    "RunReport": "multistore.generate",
}

__all__ = ["MultiSourceDataStore", "RunReport", "load_config", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'multistore' has no attribute {name!r}")
