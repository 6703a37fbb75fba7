"""A quick-look PNG per cube: each variable's first plane, decimated to a small image."""

from __future__ import annotations

import io
import math
import os
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
import xarray as xr

from .grid import xy_names
from .netcdf import engine_for_path
from .storage import StorageTarget, zarr_store

MAX_PIXELS = 600  # longest side of each panel


def quicklook_path(target: StorageTarget) -> str:
    return target.path.rsplit(".", 1)[0] + ".png"


def write_quicklook(target: StorageTarget, compute: Callable[[Any], Any]) -> str:
    """Render the cube written at ``target`` and store ``<cube>.png`` beside it.

    Draws on its own Agg canvas, not through pyplot: switching the process-wide backend
    (``matplotlib.use``) would stop a notebook's inline plots for the rest of the session.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fs = target.fs
    if target.path.endswith(".zarr"):
        ds = xr.open_zarr(zarr_store(target), consolidated=None)
    else:
        with tempfile.TemporaryDirectory(prefix="multistore-") as tmp:
            local = os.path.join(tmp, "cube.nc")
            fs.get_file(target.path, local)
            ds = xr.open_dataset(local, engine=engine_for_path(local)).load()
    x, y = xy_names(ds)
    names = [n for n in ds.data_vars if x in ds[n].dims and y in ds[n].dims][:6]
    step = max(1, math.ceil(max(ds.sizes[x], ds.sizes[y]) / MAX_PIXELS))
    panels = []
    for name in names:
        da = ds[name]
        da = da.isel({d: 0 for d in da.dims if d not in (x, y)})
        panels.append((name, da.isel({x: slice(None, None, step), y: slice(None, None, step)})))
    values = compute([p[1].data for p in panels])
    cols = min(3, len(panels)) or 1
    rows = math.ceil(len(panels) / cols) or 1
    fig = Figure(figsize=(4.2 * cols, 3.6 * rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (name, da), data in zip(axes.flat, panels, values, strict=False):
        data = np.asarray(data, dtype="float64")
        fill = ds[name].encoding.get("_FillValue")
        if fill is not None and not np.isnan(fill):
            data[data == fill] = np.nan
        xs, ys = da[x].values, da[y].values
        extent = (xs.min(), xs.max(), ys.min(), ys.max())
        im = ax.imshow(
            data,
            extent=extent,
            origin="upper" if ys[0] > ys[-1] else "lower",
            interpolation="nearest",
            cmap="viridis",
        )
        ax.set_axis_on()
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(ds.attrs.get("multistore_dataset", target.output), fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    path = quicklook_path(target)
    part = f"{path}.part"  # a kill mid-write must not leave a truncated PNG under the real name
    with fs.open(part, "wb") as f:
        f.write(buf.getvalue())
    fs.mv(part, path)
    return path
