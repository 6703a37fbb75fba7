"""Native-grid downloads: one cube per alignment group, and a run manifest.

A collection without a grid mapping whose images lie on several native grids
(UTM zones, tile origins) is written as ``<dataset>/<group>.zarr``, one cube per
alignment group on its exact native pixels, plus ``<dataset>/manifest.json``:
per image its id, group, time, uncompressed bytes and status, and per group
the retries its fetches needed. Each group cube has its own completion marker
(fingerprint of the dataset config and the group), so a rerun skips complete
groups and rebuilds the others.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from ...cube import open_params_for
from ...errors import ConfigError, Problem
from ...storage import CubeState, StorageTarget, cube_state
from ...writer import write_zarr
from ..contract import alignment_grouper


def download_groups(
    msds: Any, dataset_id: str, compute: Callable[[Any], Any], force: bool = False
) -> dict[str, Any]:
    """Write every alignment group of ``dataset_id``; the manifest (also written)."""
    config = msds.config
    [cube] = [c for c in msds.plan([dataset_id]).cubes if c.identifier == dataset_id]
    ds_config = cube.dataset
    where = ds_config.location or dataset_id
    if ds_config.multi or cube.grid is not None or cube.grid_from is not None:
        raise ConfigError(
            [Problem(where, "native-grid downloads need one source and no grid_mapping")]
        )
    source = ds_config.sources[0]
    store = msds.stores[source.store]
    grouper = alignment_grouper(store)
    if grouper is None:
        raise ConfigError([Problem(f"{where}.store", "not an earthengine store")])
    params = open_params_for(source, store, None)
    query = {k: params[k] for k in ("time_range", "filters") if k in params}
    groups = grouper.alignment_groups(source.data_id, **query)
    storage = msds.stores.storage
    images: list[dict[str, Any]] = []
    group_rows: dict[str, dict[str, Any]] = {}
    for name, ids in sorted(groups.items()):
        target = StorageTarget(storage, f"{dataset_id}/{name}.zarr")
        fingerprint = hashlib.sha256(f"{cube.fingerprint}:{name}".encode()).hexdigest()[:16]
        retries_before = store.counters.retries
        status, error = "written", None
        if not force and cube_state(target, fingerprint) is CubeState.COMPLETE:
            status = "skipped"
            ds = None
        else:
            try:
                ds = store.open_data(source.data_id, **{**params, "alignment_group": name})
                write_zarr(ds, target, fingerprint, compute, config.general.zarr_format)
            except Exception as e:  # one group failing does not stop the others
                status, error, ds = "failed", f"{type(e).__name__}: {e}", None
        group_rows[name] = {
            "output": target.output,
            "status": status,
            "images": len(ids),
            "retries": store.counters.retries - retries_before,
            **({"error": error} if error else {}),
        }
        per_image = _bytes_per_step(ds) if ds is not None else None
        times = list(ds["time"].values) if ds is not None and "time" in ds.dims else []
        for k, image_id in enumerate(ids):
            row: dict[str, Any] = {"id": image_id, "group": name, "status": status}
            if per_image is not None:
                row["bytes"] = per_image
            if k < len(times):
                row["time"] = pd.Timestamp(times[k]).isoformat()
            images.append(row)
    manifest = {"dataset": dataset_id, "data_id": source.data_id, "groups": group_rows,
                "images": images}  # fmt: skip
    target = StorageTarget(storage, f"{dataset_id}/manifest.json")
    target.fs.makedirs(target.path.rpartition("/")[0], exist_ok=True)
    with target.fs.open(target.path, "w") as f:
        json.dump(manifest, f, indent=2)
    return manifest


def _bytes_per_step(ds: Any) -> int:
    """Uncompressed bytes of one time step (one image, for raw temporal resolution)."""
    total = 0
    for var in ds.data_vars.values():
        n = int(np.prod([size for dim, size in var.sizes.items() if dim != "time"]))
        total += n * var.dtype.itemsize
    return total
