"""After odc-stac's load: per-item masking before fusing, and the cube's final names,
coordinates and encodings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import odc.stac
import pystac
import xarray as xr

from ...grid import TargetGrid
from ...regrid.source import source_nodata


def _is_missing(da: xr.DataArray, nodata: Any) -> xr.DataArray:
    if nodata is None or (isinstance(nodata, float) and np.isnan(nodata)):
        return da.isnull()
    return da == nodata


def mask_and_fuse(
    ds: xr.Dataset, items: list[pystac.Item], mask: Mapping[str, Any], groupby: str
) -> xr.Dataset:
    """Drop masked pixels of each item, then fuse items per group (first valid wins).

    Masking before fusing keeps a cloud in one item from hiding a clear pixel of
    another item of the same day. Items arrive sorted by (datetime, id) with one
    time step each (``groupby="id"``), which is also odc-stac's fusing order.
    """
    ((mid_lon, _),) = ds.odc.geobox.extent.centroid.to_crs("epsg:4326").points
    bad = ds[mask["asset"]].isin(list(mask["values"]))
    keys = _group_keys(items, groupby, mid_lon)
    groups: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    order = sorted(groups.values(), key=lambda idx: (keys[idx[0]], idx[0]))
    times = [ds.time.values[idx[0]] for idx in order]
    fused_vars = {}
    for name, da in ds.data_vars.items():
        nodata = source_nodata(da)
        dtype = da.dtype if nodata is not None else np.result_type(da.dtype, np.float32)
        fill = nodata if nodata is not None else np.nan
        # the mask asset itself is fused unmasked, so it still shows the classes
        src = da if name == mask["asset"] else da.where(~bad, fill).astype(dtype)
        steps = []
        for idx in order:
            out = src.isel(time=idx[0])
            for i in idx[1:]:
                out = out.where(~_is_missing(out, nodata), src.isel(time=i))
            steps.append(out.drop_vars("time", errors="ignore").astype(dtype))
        fused_vars[name] = xr.concat(steps, dim="time").assign_attrs(da.attrs)
    fused = xr.Dataset(fused_vars, attrs=ds.attrs).assign_coords(time=("time", np.array(times)))
    if "spatial_ref" in ds.coords:
        fused = fused.assign_coords(spatial_ref=ds.coords["spatial_ref"])
    return fused


def _group_keys(items: list[pystac.Item], groupby: str, mid_lon: float) -> list[Any]:
    """odc-stac's group keys: solar day at the output's centre longitude, time, or item."""
    if groupby == "id":
        return list(range(len(items)))
    parsed = list(odc.stac.parse_items(items))
    if groupby == "time":
        return [p.nominal_datetime for p in parsed]
    return [p.solar_date_at(mid_lon).date() for p in parsed]


def finish_dataset(
    ds: xr.Dataset,
    grid: TargetGrid | None,
    asset_names: Sequence[str] | None,
    mask: Mapping[str, Any] | None,
    items: list[dict[str, Any]],
    collections: list[str],
) -> xr.Dataset:
    if mask and asset_names is not None and mask["asset"] not in asset_names:
        ds = ds.drop_vars(mask["asset"])
    renames = {k: v for k, v in (("longitude", "lon"), ("latitude", "lat")) if k in ds.dims}
    ds = ds.rename(renames)
    if grid is not None:
        ds = ds.rename(
            {
                old: new
                for old, new in zip(("x", "y"), (grid.x_name, grid.y_name), strict=True)
                if old in ds.dims and old != new
            }
        )
        ds = ds.drop_vars("spatial_ref", errors="ignore").assign_coords(grid.coords())
    elif "spatial_ref" in ds.coords:
        sr = ds["spatial_ref"]
        if "crs_wkt" not in sr.attrs and "spatial_ref" in sr.attrs:
            ds["spatial_ref"].attrs["crs_wkt"] = sr.attrs["spatial_ref"]
    for da in ds.data_vars.values():
        nodata = da.attrs.get("nodata")
        encoding = {"grid_mapping": "spatial_ref"}
        if nodata is not None:
            encoding["_FillValue"] = (
                np.array(nodata).astype(da.dtype).item() if da.dtype.kind in "iu" else nodata
            )
        da.encoding.update(encoding)
        da.attrs.pop("grid_mapping", None)
    ds.attrs.update(
        {
            "source": "STAC",
            "stac_collections": list(collections),
            "stac_item_count": len(items),
        }
    )
    return ds
