"""Native-grid downloads: one output per alignment group, and a run manifest.

A source without a grid mapping whose images lie on several native grids (UTM
zones, tile origins) cannot be one cube. Its store groups the images by native
grid (``AlignmentGrouper``) and opens one group at a time on its exact native
pixels (open param ``alignment_group``). Each group is written as
``<dataset>/<group>.zarr`` (``format_id: zarr``) or as one GeoTIFF per image,
``<dataset>/<group>/<image>.tif`` (``format_id: geotiff``), next to
``<dataset>/manifest.json``: per image its id, group, time, bytes and status,
per group its output, status and the retries its fetches needed.

Each group has its own completion marker (fingerprint of the dataset config and
the group), so a rerun skips complete groups and rewrites the others whole; the
dataset gets its marker once every group is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .config.model import Config
from .cube import open_params_for
from .errors import ConfigError, Problem, WriteError
from .grid import xy_names
from .plan import CubePlan
from .storage import CubeState, StorageTarget, clear, cube_state, write_marker
from .stores.contract import AlignmentGrouper, alignment_grouper
from .stores.pool import StorePool
from .writer import write_zarr

LOG = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# open param through which a grouper's open_data returns one group
ALIGNMENT_GROUP = "alignment_group"


@dataclass
class NativeRun:
    """What a native-grid download wrote: the manifest's content."""

    dataset: str
    data_id: str
    output: str
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    images: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [name for name, row in self.groups.items() if row["status"] == "failed"]

    def manifest(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "data_id": self.data_id, "output": self.output,
                "groups": self.groups, "images": self.images}  # fmt: skip

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for row in self.groups.values():
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        states = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        return f"{len(self.groups)} group(s) ({states}), {len(self.images)} image(s)"


def native_groups(
    cube: CubePlan, stores: StorePool
) -> tuple[AlignmentGrouper, dict[str, list[str]]]:
    """The store that groups the images of ``cube``, and its groups for the cube's query
    (``time_range``, ``filters``); a located ConfigError when there can be none."""
    where = cube.dataset.location or cube.identifier
    if cube.dataset.multi or cube.grid is not None or cube.grid_from is not None:
        raise ConfigError(
            [Problem(where, "native-grid downloads need one source and no grid_mapping")]
        )
    source = cube.dataset.sources[0]
    store = stores[source.store]
    grouper = alignment_grouper(store)
    if grouper is None:
        raise ConfigError(
            [Problem(f"{where}.store", "its store cannot group images by native grid")]
        )
    params = open_params_for(source, store, None)
    query = {k: params[k] for k in ("time_range", "filters") if k in params}
    return grouper, grouper.alignment_groups(source.data_id, **query)


def download_groups(
    config: Config,
    stores: StorePool,
    cube: CubePlan,
    compute: Callable[[Any], Any],
    force: bool = False,
    progress: Callable[[float], None] | None = None,
) -> NativeRun:
    """Write every alignment group of ``cube``'s source and the manifest."""
    grouper, groups = native_groups(cube, stores)
    source = cube.dataset.sources[0]
    store = stores[source.store]
    params = open_params_for(source, store, None)
    storage = stores.storage
    ident = cube.identifier
    geotiff = cube.dataset.format_id == "geotiff"
    run = NativeRun(ident, source.data_id, cube.output)
    manifest_target = StorageTarget(storage, f"{ident}/{MANIFEST}")
    previous = _previous_rows(manifest_target)
    for done, (name, ids) in enumerate(sorted(groups.items())):
        output = f"{ident}/{name}" if geotiff else f"{ident}/{name}.zarr"
        target = StorageTarget(storage, output)
        fingerprint = hashlib.sha256(f"{cube.fingerprint}:{name}".encode()).hexdigest()[:16]
        retries_before = grouper.fetch_retries()
        status, error, rows = "written", None, None
        if not force and cube_state(target, fingerprint) is CubeState.COMPLETE:
            status = "skipped"
            # what the run that wrote the group recorded (files, bytes, times)
            rows = [previous.get((name, image_id), {}) for image_id in ids]
        else:
            try:
                ds = store.open_data(source.data_id, **{**params, ALIGNMENT_GROUP: name})
                _check_steps(ds, ids, name)
                if geotiff:
                    rows = write_geotiffs(ds, target, ids, source.data_id, compute)
                    write_marker(target, fingerprint, ds)
                else:
                    write_zarr(ds, target, fingerprint, compute, config.general.zarr_format)
                    rows = _zarr_rows(ds, ids)
            except Exception as e:  # one group failing does not stop the others
                LOG.warning("%s: group %s failed", ident, name, exc_info=e)
                status, error = "failed", f"{type(e).__name__}: {e}"
        run.groups[name] = {
            "output": target.output,
            "status": status,
            "images": len(ids),
            "retries": grouper.fetch_retries() - retries_before,
            **({"error": error} if error else {}),
        }
        for k, image_id in enumerate(ids):
            row = {"id": image_id, "group": name, "status": status}
            if rows is not None:
                row.update(rows[k])
            run.images.append(row)
        if progress is not None:
            progress((done + 1) / max(1, len(groups)))
    _write_manifest(manifest_target, run)
    return run


def _previous_rows(target: StorageTarget) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (group, image id): the file, bytes and time the last manifest recorded."""
    try:
        with target.fs.open(target.path) as f:
            images = json.load(f).get("images", [])
    except (FileNotFoundError, ValueError, AttributeError):
        return {}
    keep = ("file", "bytes", "time")
    return {
        (row["group"], row["id"]): {k: row[k] for k in keep if k in row}
        for row in images
        if isinstance(row, dict) and "group" in row and "id" in row
    }


def _check_steps(ds: xr.Dataset, ids: Sequence[str], group: str) -> None:
    steps = ds.sizes.get("time", 1)
    if steps != len(ids):
        raise WriteError(
            f"group {group}: {len(ids)} image(s) but {steps} time step(s); native-grid "
            "downloads need temporal_resolution: raw (one time step per image)"
        )


def _zarr_rows(ds: xr.Dataset, ids: Sequence[str]) -> list[dict[str, Any]]:
    per_image = _bytes_per_step(ds)
    times = _times(ds)
    return [{"bytes": per_image, **({"time": times[k]} if times else {})} for k in range(len(ids))]


def _times(ds: xr.Dataset) -> list[str]:
    if "time" not in ds.dims:
        return []
    return [pd.Timestamp(t).isoformat() for t in ds["time"].values]


def _bytes_per_step(ds: xr.Dataset) -> int:
    """Uncompressed bytes of one time step (one image, for raw temporal resolution)."""
    total = 0
    for var in ds.data_vars.values():
        n = int(np.prod([size for dim, size in var.sizes.items() if dim != "time"]))
        total += n * var.dtype.itemsize
    return total


def image_file_name(image_id: str, data_id: str) -> str:
    """``COLL/ID/20240301T1000_T32TQM`` of collection ``COLL/ID`` -> ``20240301T1000_T32TQM.tif``;
    ids from elsewhere keep their whole id (``/`` -> ``_``)."""
    prefix = data_id.rstrip("/") + "/"
    name = image_id[len(prefix) :] if image_id.startswith(prefix) else image_id
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) + ".tif"


def write_geotiffs(
    ds: xr.Dataset,
    target: StorageTarget,
    ids: Sequence[str],
    data_id: str,
    compute: Callable[[Any], Any],
) -> list[dict[str, Any]]:
    """One tiled GeoTIFF per time step (image) of ``ds``, bands in variable order;
    each file appears complete or not at all. Per image: file name, bytes, time."""
    clear(target)
    names = [n for n in ds.data_vars if len(ds[n].dims) >= 2]
    dtype = np.result_type(*(ds[n].dtype for n in names))
    nodata = _nodata(ds, names, dtype)
    times = _times(ds)
    target.fs.makedirs(target.path, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="multistore-") as tmp:
        for k, image_id in enumerate(ids):
            step = ds.isel(time=k) if "time" in ds.dims else ds
            bands = compute([step[n].data for n in names])
            file_name = image_file_name(image_id, data_id)
            local = os.path.join(tmp, file_name)
            tags = {"image_id": image_id, **({"time": times[k]} if times else {})}
            _write_tif(local, step, names, bands, dtype, nodata, tags)
            size = os.path.getsize(local)
            final = f"{target.path}/{file_name}"
            partial = f"{target.path}/.{file_name}.partial"
            target.fs.put_file(local, partial)
            target.fs.mv(partial, final)
            os.remove(local)
            rows.append({"file": f"{target.output}/{file_name}", "bytes": size,
                         **({"time": times[k]} if times else {})})  # fmt: skip
    return rows


def _nodata(ds: xr.Dataset, names: Sequence[str], dtype: np.dtype) -> float | None:
    """The bands' shared fill value, when they have one that ``dtype`` can hold."""
    fills = {ds[n].encoding.get("_FillValue", ds[n].attrs.get("_FillValue")) for n in names}
    if len(fills) != 1 or None in fills:
        return None
    fill = fills.pop()
    if np.isnan(fill):
        return float("nan") if np.issubdtype(dtype, np.floating) else None
    return float(fill) if np.can_cast(np.min_scalar_type(fill), dtype) else None


def _write_tif(
    path: str,
    step: xr.Dataset,
    names: Sequence[str],
    bands: Sequence[np.ndarray],
    dtype: np.dtype,
    nodata: float | None,
    tags: Mapping[str, str],
) -> None:
    import rasterio
    from rasterio.transform import Affine

    x, y = xy_names(step)
    xs, ys = step[x].values, step[y].values
    res_x = float(xs[1] - xs[0]) if xs.size > 1 else 1.0
    res_y = float(ys[1] - ys[0]) if ys.size > 1 else -1.0
    # coordinates are pixel centres
    transform = Affine(res_x, 0.0, float(xs[0]) - res_x / 2, 0.0, res_y, float(ys[0]) - res_y / 2)
    crs = step["spatial_ref"].attrs.get("crs_wkt") if "spatial_ref" in step.coords else None
    height, width = bands[0].shape
    block = 256 if min(height, width) >= 256 else None
    profile = dict(driver="GTiff", width=width, height=height, count=len(names), dtype=dtype,
                   crs=crs, transform=transform, nodata=nodata, compress="deflate",
                   **({"tiled": True, "blockxsize": block, "blockysize": block} if block else {}))  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        for i, (name, band) in enumerate(zip(names, bands, strict=True), start=1):
            dst.write(np.asarray(band, dtype=dtype), i)
            dst.set_band_description(i, str(name))
        dst.update_tags(**tags)


def _write_manifest(target: StorageTarget, run: NativeRun) -> None:
    target.fs.makedirs(target.path.rpartition("/")[0], exist_ok=True)
    with target.fs.open(target.path, "w") as f:
        json.dump(run.manifest(), f, indent=2)
