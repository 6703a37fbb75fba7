"""custom_processing hooks of the Zenodo demo."""

import pandas as pd
import xarray as xr

FIRST_YEAR = 1985  # band 1 of the forest disturbance atlas


def band_to_time(ds: xr.Dataset) -> xr.Dataset:
    """The atlas stores one band per year: make ``band`` a ``time`` dimension (1 January)."""
    years = ds["band"].values.astype(int) + FIRST_YEAR - 1
    ds = ds.rename({"band": "time"})
    return ds.assign_coords(time=pd.to_datetime([f"{y}-01-01" for y in years]))
