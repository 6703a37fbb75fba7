"""Temporal resampling (``temporal_resample_params``) with nodata and dtypes kept sane.

Aggregation masks each variable's fill value first, so nodata never enters a
mean; order statistics (min, max, first, last, median of ints) go back to the
source dtype with the fill value restored; means of integers become float32
rather than float64.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from .errors import ProcessingError
from .regrid.methods import lookup
from .regrid.source import source_nodata

_KEEP_DTYPE = {"min", "max", "first", "last"}
_AGG = {"mean", "median", "min", "max", "sum", "first", "last", "std", "var", "count"}
_INTERP = {"nearest", "linear"}


def resample_in_time(ds: xr.Dataset, params: Mapping[str, Any]) -> xr.Dataset:
    """Aggregate (or interpolate) ``ds`` to ``params['frequency']`` along ``time``."""
    if "time" not in ds.dims:
        raise ProcessingError(
            f"temporal_resample_params given, but the data has no 'time' dimension (dims: {list(ds.dims)})"
        )
    frequency = params["frequency"]
    names = params.get("variables") or [n for n in ds.data_vars if "time" in ds[n].dims]
    agg = params.get("method", params.get("agg_methods"))
    interp = params.get("interp_methods")
    resample_kwargs = {"time": frequency}
    if params.get("offset"):
        resample_kwargs["offset"] = params["offset"]
    out = {}
    for name in names:
        if name not in ds.data_vars:
            raise ProcessingError(f"temporal_resample_params.variables: no variable {name!r}")
        da = ds[name]
        if agg is None and interp is not None:
            for key, method in _named(name, interp, da.dtype, "nearest"):
                out[key] = _interpolate(da, resample_kwargs, method, params)
        else:
            for key, method in _named(name, agg, da.dtype, "mean"):
                out[key] = _aggregate(da, resample_kwargs, method)
    rest = ds.drop_vars([n for n in ds.data_vars if "time" in ds[n].dims])
    return xr.Dataset(out, attrs=ds.attrs).merge(rest.drop_dims("time", errors="ignore"))


def _named(name: str, spec: Any, dtype: np.dtype, default: str) -> list[tuple[str, str]]:
    """(output name, method) pairs. A list of several methods (xcube-multistore's form)
    gives one variable per method, ``<name>_<method>``; a list of one keeps ``name``."""
    if isinstance(spec, list | tuple):
        if len(spec) == 1:
            return [(name, spec[0])]
        return [(f"{name}_{method}", method) for method in spec]
    return [(name, _pick(spec, name, dtype, default))]


def _pick(spec: Any, name: str, dtype: np.dtype, default: str) -> str:
    """One method for all, or from a mapping keyed by variable name, else by dtype name."""
    chosen = lookup(spec, name, dtype)
    return default if chosen is None else chosen


def _aggregate(da: xr.DataArray, kwargs: dict, method: str) -> xr.DataArray:
    if method not in _AGG:
        raise ProcessingError(
            f"unknown temporal aggregation {method!r} (use one of {sorted(_AGG)})"
        )
    fill = source_nodata(da)
    is_int = np.issubdtype(da.dtype, np.integer)
    masked = (
        da if fill is None or (isinstance(fill, float) and np.isnan(fill)) else da.where(da != fill)
    )
    grouped = masked.resample(**kwargs)
    if method in ("first", "last", "count"):
        result = getattr(grouped, method)()
    else:
        result = getattr(grouped, method)(skipna=True)
    if method == "count":
        result = result.astype("int32")
    elif is_int and method in _KEEP_DTYPE | {"median"}:
        result = result.fillna(fill if fill is not None else 0).astype(da.dtype)
    elif is_int and method == "sum":
        result = result.fillna(0).astype("int64")
    elif is_int or da.dtype == np.float32:
        result = result.astype("float32")
    result.attrs = dict(da.attrs)
    result.encoding = {
        k: v
        for k, v in da.encoding.items()
        if k in ("_FillValue", "scale_factor", "add_offset", "units")
    }
    if result.dtype.kind == "f" and is_int:
        result.encoding["_FillValue"] = np.float32(np.nan)
    return result


def _interpolate(da: xr.DataArray, kwargs: dict, method: str, params: Mapping) -> xr.DataArray:
    if method not in _INTERP:
        raise ProcessingError(
            f"unknown temporal interpolation {method!r} (use one of {sorted(_INTERP)})"
        )
    resampler = da.resample(**kwargs)
    if method == "nearest":
        result = resampler.nearest(tolerance=params.get("tolerance"))
    else:
        result = resampler.interpolate("linear")
        if np.issubdtype(da.dtype, np.integer):
            result = result.astype("float32")
    result.attrs = dict(da.attrs)
    return result
