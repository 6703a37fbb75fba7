"""Resampling method names, ``spatial_resample_params`` parsing and per-variable defaults.

Names follow GDAL/rasterio so that users can look them up in GDAL's docs.
xcube-multistore's ``interp_methods``/``agg_methods`` are accepted and mapped
onto them, so existing configs keep working. As there, a mapping may be keyed by
variable name or by dtype name (``{float32: bilinear, uint8: nearest}``): the
variable's own key wins, then its dtype's, then the default (``lookup``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr
from rasterio.enums import Resampling

from ..errors import RegridError

SUPPORTED_METHODS: tuple[str, ...] = (
    "nearest",
    "bilinear",
    "cubic",
    "cubic_spline",
    "lanczos",
    "average",
    "mode",
    "min",
    "max",
    "median",
    "q1",
    "q3",
    "sum",
    "rms",
)

# xcube-multistore aggregations GDAL has no kernel for: computed by binning the source
# pixels into the target pixel their centre falls in (regrid/kernel.py, window_aggregate).
WINDOW_METHODS = frozenset({"count", "last", "prod", "std", "var"})

# Methods that combine every source pixel under a target pixel (GDAL "aggregating" kernels).
AGGREGATING_METHODS = (
    frozenset({"average", "mode", "min", "max", "median", "q1", "q3", "sum", "rms"})
    | WINDOW_METHODS
)

# Kernel radius in source pixels at scale 1: how much context a target pixel needs.
KERNEL_RADIUS: Mapping[str, int] = {
    "nearest": 1,
    "bilinear": 1,
    "cubic": 2,
    "cubic_spline": 2,
    "lanczos": 3,
}

# xcube-multistore names -> GDAL names.
_INTERP_ALIASES: Mapping[str | int, str] = {
    "nearest": "nearest",
    "triangular": "bilinear",
    "bilinear": "bilinear",
    0: "nearest",  # xcube-resampling's spline orders
    1: "bilinear",
}
_AGG_ALIASES: Mapping[str, str] = {
    "center": "nearest",
    "first": "nearest",
    "mean": "average",
    "median": "median",
    "mode": "mode",
    "min": "min",
    "max": "max",
    "sum": "sum",
    "count": "count",
    "last": "last",
    "prod": "prod",
    "std": "std",
    "var": "var",
}

# GDAL's names where rasterio's enum spells them differently.
_RASTERIO_NAMES: Mapping[str, str] = {"median": "med"}

_KNOWN_KEYS = frozenset(
    {
        "method",
        "fill_values",
        "dtypes",
        "variables",
        "interp_methods",
        "agg_methods",
        "recover_nans",
        "tile_size",
    }
)


def gdal_resampling(method: str) -> Resampling:
    """The rasterio enum for a supported method name (window methods do not use GDAL)."""
    if method in WINDOW_METHODS:
        return Resampling.nearest
    return Resampling[_RASTERIO_NAMES.get(method, method)]


@dataclass(frozen=True)
class ResampleParams:
    """``spatial_resample_params`` after validation; per-variable values or one for all."""

    method: str | Mapping[str, str] | None = None
    interp_methods: str | Mapping[str, str] | None = None
    agg_methods: str | Mapping[str, str] | None = None
    fill_values: float | Mapping[str, float] | None = None
    dtypes: str | Mapping[str, str] | None = None
    variables: tuple[str, ...] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def fill_value_for(self, var: str, dtype: np.dtype | str | None = None) -> float | None:
        """The user's fill value for ``var`` (of source ``dtype``), by name, then by dtype."""
        return lookup(self.fill_values, var, dtype)

    def dtype_for(self, var: str) -> np.dtype | None:
        name = _per_var(self.dtypes, var)
        return None if name is None else np.dtype(name)


def parse_params(params: Mapping[str, Any] | None) -> ResampleParams:
    """Validate the raw config dict; every problem is named with its key."""
    if params is None:
        return ResampleParams()
    if not isinstance(params, Mapping):
        raise RegridError(f"spatial_resample_params must be a mapping, got {type(params).__name__}")
    unknown = sorted(set(params) - _KNOWN_KEYS)
    if unknown:
        raise RegridError(
            f"spatial_resample_params: unknown key(s) {unknown}; known: {sorted(_KNOWN_KEYS)}"
        )
    method = _check_names(params.get("method"), "method", {m: m for m in SUPPORTED_METHODS})
    interp = _check_names(params.get("interp_methods"), "interp_methods", _INTERP_ALIASES)
    agg = _check_names(params.get("agg_methods"), "agg_methods", _AGG_ALIASES)
    dtypes = params.get("dtypes")
    for var, name in _items(dtypes):
        try:
            np.dtype(name)
        except TypeError as exc:
            raise RegridError(
                f"spatial_resample_params.dtypes{var}: unknown dtype {name!r}"
            ) from exc
    fill_values = params.get("fill_values")
    for var, value in _items(fill_values):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise RegridError(
                f"spatial_resample_params.fill_values{var}: expected a number, got {value!r}"
            )
    variables = params.get("variables")
    if variables is not None:
        if isinstance(variables, str):
            variables = [variables]
        if not all(isinstance(v, str) for v in variables):
            raise RegridError("spatial_resample_params.variables must be a list of names")
        variables = tuple(variables)
    return ResampleParams(
        method=method,
        interp_methods=interp,
        agg_methods=agg,
        fill_values=fill_values,
        dtypes=dtypes,
        variables=variables,
        extra={k: params[k] for k in ("recover_nans", "tile_size") if k in params},
    )


def default_method(dtype: np.dtype, coarser: bool) -> str:
    """Categorical-safe defaults: integers never get invented in-between values."""
    if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        return "mode" if coarser else "nearest"
    return "average" if coarser else "bilinear"


def resolve_methods(
    variables: xr.Dataset | Mapping[str, Any],
    params: Mapping[str, Any] | ResampleParams | None,
    coarser: bool,
) -> dict[str, str]:
    """The GDAL method name for every variable.

    ``variables`` is a dataset or a mapping ``name -> dtype``; ``coarser`` says
    whether the target pixels are larger than the source pixels (then the
    aggregation settings apply, else the interpolation ones). Precedence:
    ``method`` > ``agg_methods``/``interp_methods`` > defaults by dtype; within a
    mapping, the variable's name > its dtype's name.
    """
    p = params if isinstance(params, ResampleParams) else parse_params(params)
    if isinstance(variables, xr.Dataset):
        dtypes = {str(n): v.dtype for n, v in variables.data_vars.items()}
    else:
        dtypes = {
            str(n): d.dtype if isinstance(d, xr.DataArray | np.ndarray) else np.dtype(d)
            for n, d in variables.items()
        }
    out = {}
    for name, dtype in dtypes.items():
        chosen = lookup(p.method, name, dtype)
        if chosen is None:
            chosen = lookup(p.agg_methods if coarser else p.interp_methods, name, dtype)
        out[name] = chosen or default_method(np.dtype(dtype), coarser)
    return out


def lookup(value: Any, var: str, dtype: np.dtype | str | None) -> Any:
    """``value`` itself, or from a mapping: ``var``'s own key, else the key naming its dtype
    (numpy's canonical name, e.g. ``float32``, ``uint8``: exact keys only, so a variable
    called ``b`` is never read as a dtype code), else ``None``."""
    if not isinstance(value, Mapping):
        return value
    if var in value:
        return value[var]
    if dtype is None:
        return None
    return value.get(np.dtype(dtype).name)


def _check_names(
    value: Any, key: str, aliases: Mapping[str | int, str]
) -> str | dict[str, str] | None:
    if value is None:
        return None
    if isinstance(value, str | int) and not isinstance(value, bool):
        return _alias(value, key, aliases)
    if isinstance(value, Mapping):
        return {str(var): _alias(name, f"{key}.{var}", aliases) for var, name in value.items()}
    raise RegridError(f"spatial_resample_params.{key}: expected a name or a mapping, got {value!r}")


def _alias(name: Any, key: str, aliases: Mapping[str | int, str]) -> str:
    if not isinstance(name, str | int) or isinstance(name, bool) or name not in aliases:
        raise RegridError(
            f"spatial_resample_params.{key}: unsupported method {name!r}; "
            f"choose one of {sorted(map(str, aliases))}"
        )
    return aliases[name]


def _per_var(value: Any, var: str) -> Any:
    if isinstance(value, Mapping):
        return value.get(var)
    return value


def _items(value: Any) -> list[tuple[str, Any]]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [(f".{k}", v) for k, v in value.items()]
    return [("", value)]
