"""custom_processing hooks of the demo: each takes and returns an xarray.Dataset."""

import numpy as np
import xarray as xr

FOREST = 2  # land-cover class of the demo data


def kelvin_to_celsius(ds: xr.Dataset) -> xr.Dataset:
    temperature = ds["temperature"] - np.float32(273.15)
    temperature.attrs = {**ds["temperature"].attrs, "units": "degC"}
    return ds.assign(temperature=temperature)


def add_forest_mask(ds: xr.Dataset) -> xr.Dataset:
    """A derived uint8 layer: 1 where forest, 0 elsewhere, 255 where land cover is unknown."""
    fill = ds["land_cover"].encoding.get("_FillValue", 255)
    forest = xr.where(ds["land_cover"] == FOREST, np.uint8(1), np.uint8(0)).astype("uint8")
    forest = forest.where(ds["land_cover"] != fill, np.uint8(255))
    forest.attrs = {
        "long_name": "forest mask",
        "flag_values": [0, 1],
        "flag_meanings": "other forest",
    }
    forest.encoding["_FillValue"] = np.uint8(255)
    return ds.assign(forest=forest)
