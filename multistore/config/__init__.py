"""Config loading: YAML + ``${VAR}`` interpolation + JSON Schema + cross-checks -> ``Config``."""

from .loader import load_config
from .model import (
    STORAGE_STORE,
    Config,
    CustomProcessing,
    DaskConfig,
    DatasetConfig,
    GeneralConfig,
    GridMappingConfig,
    PreloadConfig,
    RetryConfig,
    SourceConfig,
    StoreConfig,
)
from .order import generation_order, grid_source
from .redact import redact, redact_text
from .validate import config_schema

__all__ = [
    "STORAGE_STORE",
    "Config",
    "CustomProcessing",
    "DaskConfig",
    "DatasetConfig",
    "GeneralConfig",
    "GridMappingConfig",
    "PreloadConfig",
    "RetryConfig",
    "SourceConfig",
    "StoreConfig",
    "config_schema",
    "generation_order",
    "grid_source",
    "load_config",
    "redact",
    "redact_text",
]
