import numpy as np
import pandas as pd
import pytest
import xarray as xr

from multistore.errors import ProcessingError
from multistore.temporal import resample_in_time


def stack(dtype: str, fill) -> xr.Dataset:
    time = pd.date_range("2024-01-01", periods=6, freq="MS")
    values = np.array([1, 2, 3, 10, 20, 30], dtype=dtype)[:, None, None] * np.ones((1, 2, 2), dtype)
    values[1, 0, 0] = fill
    da = xr.DataArray(values, dims=("time", "y", "x"), coords={"time": time})
    da.encoding["_FillValue"] = fill
    return xr.Dataset({"v": da})


def test_mean_ignores_nodata_and_uses_float32_for_integers():
    out = resample_in_time(stack("uint8", 255), {"frequency": "QS", "method": "mean"})
    assert out["v"].dtype == np.float32
    np.testing.assert_allclose(
        out["v"].values[:, 0, 0], [2.0, 20.0]
    )  # (1 + 3) / 2: 255 never counted
    np.testing.assert_allclose(out["v"].values[:, 1, 1], [2.0, 20.0])


def test_max_keeps_the_source_dtype_and_fill():
    ds = stack("int16", -32768)
    ds["v"][0:3, 0, 0] = -32768
    out = resample_in_time(ds, {"frequency": "QS", "agg_methods": {"v": "max"}})
    assert out["v"].dtype == np.int16
    assert out["v"].values[0, 0, 0] == -32768  # all nodata stays nodata
    assert out["v"].values[1, 0, 0] == 30


def test_errors_are_clear():
    with pytest.raises(ProcessingError, match="no 'time' dimension"):
        resample_in_time(xr.Dataset({"v": ("x", [1])}), {"frequency": "MS"})
    with pytest.raises(ProcessingError, match="unknown temporal aggregation 'mode'"):
        resample_in_time(stack("uint8", 255), {"frequency": "QS", "method": "mode"})
