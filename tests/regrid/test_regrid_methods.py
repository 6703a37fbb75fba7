"""Method names, xcube-multistore aliases and defaults."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from multistore.errors import RegridError
from multistore.regrid import SUPPORTED_METHODS, resolve_methods
from multistore.regrid.methods import gdal_resampling, parse_params

DTYPES = {"classes": np.uint8, "dem": np.int16, "temp": np.float32, "mask": np.bool_}


def test_defaults_follow_dtype_and_direction():
    assert resolve_methods(DTYPES, None, coarser=False) == {
        "classes": "nearest",
        "dem": "nearest",
        "temp": "bilinear",
        "mask": "nearest",
    }
    assert resolve_methods(DTYPES, {}, coarser=True) == {
        "classes": "mode",
        "dem": "mode",
        "temp": "average",
        "mask": "mode",
    }


def test_method_wins_over_xcube_names_and_per_variable_dicts():
    params = {
        "method": {"dem": "cubic"},
        "interp_methods": {"temp": "triangular", "dem": "nearest"},
        "agg_methods": "mean",
    }
    assert resolve_methods(DTYPES, params, coarser=False) == {
        "classes": "nearest",
        "dem": "cubic",
        "temp": "bilinear",
        "mask": "nearest",
    }
    assert resolve_methods(DTYPES, params, coarser=True) == {
        "classes": "average",
        "dem": "cubic",
        "temp": "average",
        "mask": "average",
    }


@pytest.mark.parametrize(
    "agg,expected",
    [("center", "nearest"), ("first", "nearest"), ("mean", "average"), ("median", "median"),
     ("mode", "mode"), ("min", "min"), ("max", "max"), ("sum", "sum")],
)  # fmt: skip
def test_xcube_agg_names(agg, expected):
    assert resolve_methods({"v": np.float32}, {"agg_methods": agg}, coarser=True) == {"v": expected}


def test_accepts_a_dataset():
    ds = xr.Dataset({"a": ("x", np.zeros(2, "uint16")), "b": ("x", np.zeros(2))})
    assert resolve_methods(ds, {"method": "max"}, coarser=False) == {"a": "max", "b": "max"}


def test_every_supported_method_is_a_gdal_kernel():
    for name in SUPPORTED_METHODS:
        assert gdal_resampling(name).name == {"median": "med"}.get(name, name)


@pytest.mark.parametrize(
    "params,match",
    [
        ({"method": "gauss"}, "method"),
        ({"interp_methods": "cubic"}, "interp_methods"),
        ({"agg_methods": {"v": "geomean"}}, r"agg_methods\.v"),
        ({"interp_methods": 2}, "interp_methods"),
        ({"interp_methods": True}, "interp_methods"),
        ({"dtypes": {"v": "uint9"}}, r"dtypes\.v"),
        ({"fill_values": "zero"}, "fill_values"),
        ({"wat": 1}, "unknown key"),
        (["nearest"], "mapping"),
    ],
)
def test_bad_params_name_the_key(params, match):
    with pytest.raises(RegridError, match=match):
        parse_params(params)


def test_ignored_xcube_keys_are_accepted():
    p = parse_params({"recover_nans": True, "tile_size": 512, "variables": "v"})
    assert p.variables == ("v",)
