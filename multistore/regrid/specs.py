"""What each regridded variable becomes: output dtype, fill value, attributes, encoding.

The warp kernels work on a ``VarSpec``; this module derives it from the source
variable (its dtype and nodata) and the ``spatial_resample_params``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import xarray as xr

from ..errors import RegridError
from .kernel import VarSpec
from .methods import WINDOW_METHODS, ResampleParams, gdal_resampling
from .source import source_nodata

LOG = logging.getLogger(__name__)

# Attributes that describe the source's storage, replaced by the output's encoding.
_STORAGE_ATTRS = ("_FillValue", "missing_value", "nodata", "grid_mapping", "coordinates")

# GDAL's warper has no kernels for these; they are warped in a wider type.
_WORK_DTYPES = {np.dtype("bool"): np.dtype("uint8"), np.dtype("float16"): np.dtype("float32")}


def var_spec(var: xr.DataArray, p: ResampleParams, method: str) -> VarSpec:
    name = str(var.name)
    src_dtype = np.dtype(var.dtype)
    out_dtype = p.dtype_for(name) or src_dtype
    nodata = source_nodata(var)
    if nodata is not None and not np.issubdtype(src_dtype, np.floating):
        if isinstance(nodata, float) and math.isnan(nodata):
            nodata = None
        elif not _representable(nodata, src_dtype):
            LOG.warning("variable %r: nodata %r does not fit %s; ignored", name, nodata, src_dtype)
            nodata = None
    if method in WINDOW_METHODS:
        return _window_spec(p, name, method, src_dtype, nodata)
    out_fill = _out_fill(p.fill_value_for(name, src_dtype), nodata, src_dtype, out_dtype, name)
    work_dtype = _WORK_DTYPES.get(src_dtype, src_dtype)
    if np.issubdtype(out_dtype, np.floating) and not np.issubdtype(work_dtype, np.floating):
        work_dtype = out_dtype if out_dtype != np.float16 else np.dtype("float32")
    if np.issubdtype(work_dtype, np.floating):
        if np.issubdtype(src_dtype, np.floating):
            work_nodata = nodata if nodata is not None else math.nan
        else:
            work_nodata = math.nan
        work_fill = out_fill if work_dtype == out_dtype else math.nan
    else:
        work_nodata = nodata
        work_fill = out_fill if work_dtype == out_dtype else _extreme(work_dtype, nodata)
    return VarSpec(
        resampling=gdal_resampling(method),
        src_dtype=src_dtype,
        work_dtype=np.dtype(work_dtype),
        out_dtype=np.dtype(out_dtype),
        src_nodata=nodata,
        work_nodata=work_nodata,
        work_fill=work_fill,
        out_fill=out_fill,
    )


def _window_spec(
    p: ResampleParams, name: str, method: str, src: np.dtype, nodata: float | int | None
) -> VarSpec:
    """Binned aggregations work in float64 with NaN as nodata. count is int32 (0 where
    nothing falls), std/var float32 (float64 sources stay float64), prod float64, last
    the source dtype; a ``dtypes`` entry overrides."""
    default = {
        "count": np.dtype("int32"),
        "std": np.dtype("float64" if src == np.float64 else "float32"),
        "var": np.dtype("float64" if src == np.float64 else "float32"),
        "prod": np.dtype("float64"),
        "last": src,
    }[method]
    out = p.dtype_for(name) or default
    user = p.fill_value_for(name, src)
    if method == "count" and user is None:
        out_fill: float | int = 0
    else:
        out_fill = _out_fill(user, nodata if method == "last" else None, src, out, name)
    return VarSpec(
        resampling=gdal_resampling(method),
        src_dtype=src,
        work_dtype=np.dtype("float64"),
        out_dtype=np.dtype(out),
        src_nodata=nodata,
        work_nodata=math.nan,
        work_fill=math.nan,
        out_fill=out_fill,
        window_method=method,
    )


def _out_fill(
    user: float | None, nodata: float | int | None, src: np.dtype, out: np.dtype, name: str
) -> float | int:
    if user is not None:
        if not _representable(user, out):
            raise RegridError(f"fill value {user!r} for variable {name!r} does not fit {out}")
        return _cast_scalar(user, out)
    if np.issubdtype(out, np.floating):
        if nodata is not None and np.issubdtype(src, np.floating):
            return float(nodata)
        return math.nan
    if nodata is not None and _representable(nodata, out):
        return _cast_scalar(nodata, out)
    return _extreme(out, None)


def _extreme(dtype: np.dtype, nodata: float | int | None) -> int | bool:
    """No nodata in an integer source: the dtype's max (unsigned) or min (signed) marks 'outside'."""
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        return int(nodata)
    if dtype == np.bool_:
        return False
    info = np.iinfo(dtype)
    return int(info.max if info.min == 0 else info.min)


def _representable(value: float | int, dtype: np.dtype) -> bool:
    if np.issubdtype(dtype, np.floating):
        return True
    if dtype == np.bool_:
        return value in (0, 1)
    if isinstance(value, float) and (math.isnan(value) or not value.is_integer()):
        return False
    info = np.iinfo(dtype)
    return info.min <= value <= info.max


def _cast_scalar(value: float | int, dtype: np.dtype) -> float | int:
    return float(value) if np.issubdtype(dtype, np.floating) else int(value)


def out_attrs(var: xr.DataArray) -> dict[str, Any]:
    attrs = {k: v for k, v in var.attrs.items() if k not in _STORAGE_ATTRS}
    # rioxarray writes identity scale/offset on every band; they would make readers decode to float.
    if attrs.get("scale_factor") == 1.0 and attrs.get("add_offset", 0.0) == 0.0:
        attrs.pop("scale_factor")
        attrs.pop("add_offset", None)
    attrs["grid_mapping"] = "spatial_ref"
    return attrs


def with_encoding(out: xr.DataArray, var: xr.DataArray, spec: VarSpec) -> xr.DataArray:
    enc = var.encoding
    decoded = "dtype" in enc and np.dtype(enc["dtype"]) != var.dtype and "_FillValue" in enc
    if decoded and spec.out_dtype == var.dtype:
        # Keep the source's packing (e.g. int16 + scale_factor): masked pixels are NaN in memory.
        out.encoding = {
            k: enc[k] for k in ("_FillValue", "scale_factor", "add_offset", "dtype") if k in enc
        }
    else:
        # a count of 0 is a value, not "no data"
        fill = None if spec.window_method == "count" and spec.out_fill == 0 else spec.out_fill
        out.encoding = {"_FillValue": fill}
        if spec.window_method is not None:
            return out
        for k in ("scale_factor", "add_offset"):
            if k in enc and spec.out_dtype == var.dtype:
                out.encoding[k] = enc[k]
    return out
