"""Batch exports: let Earth Engine compute each time step into an asset or a file, then read it.

For composites too expensive for interactive requests (computation timeouts,
"User memory limit exceeded"), an export task computes the step once on
Earth Engine's batch workers; the finished asset is then downloaded in the
usual planned tiles, which are cheap because nothing is left to compute.

Asset names hash what determines the pixels, so a rerun reuses exports that
already finished (resume at export level). Tasks are polled until done;
on any interruption (Ctrl-C, a failed sibling, a timeout) the tasks still
running are cancelled, so nothing keeps spending the project's quota.
Destinations: ``asset`` (read back through getPixels in planned tiles),
``gcs`` (GeoTIFF files on the target grid, read back from Cloud Storage, see
``gcs.py``) and ``drive`` (waited for, but not readable without Drive
credentials: the caller must fail, naming where the files landed).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import FetchError
from .fetch import FetchCounters, PixelGrid, RetryPolicy, call_with_retries
from .query import EE_TYPE, Recipe, Step
from .resume import tile_key

LOG = logging.getLogger(__name__)

_DONE = "COMPLETED"
_FAILED = ("FAILED", "CANCELLED", "CANCEL_REQUESTED")

Progress = Callable[[int, int], None]  # (finished, total)


EXPORT_DESTINATIONS = ("asset", "gcs", "drive")


@dataclass(frozen=True)
class ExportSettings:
    via: str  # one of EXPORT_DESTINATIONS
    root: str  # asset folder (projects/<p>/assets/<dir>), object prefix (gcs) or Drive folder
    bucket: str | None = None  # gcs only
    poll_s: float = 10.0
    timeout_s: float | None = None
    file_dimensions: int | None = None  # gcs/drive: split the GeoTIFF into files of this size
    # gcs: gcsfs options (sorted items); may hold a token, so never in a repr
    storage_options: tuple[tuple[str, Any], ...] = field(default=(), repr=False)


def export_asset_id(root: str, data_id: str, key: str) -> str:
    return f"{root.rstrip('/')}/{export_file_name(data_id, key)}"


def export_file_name(data_id: str, key: str) -> str:
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', data_id)}_{key[:20]}"


def export_name(settings: ExportSettings, data_id: str, key: str) -> str:
    """Where a step's export lands: the asset id, the GCS object prefix (no bucket)
    or the Drive file name prefix."""
    if settings.via == "asset":
        return export_asset_id(settings.root, data_id, key)
    if settings.via == "gcs":
        prefix = settings.root.strip("/")
        name = export_file_name(data_id, key)
        return f"{prefix}/{name}" if prefix else name
    return export_file_name(data_id, key)


def export_steps(
    recipe: Recipe,
    steps: Sequence[Step],
    grid: PixelGrid,
    width: int,
    height: int,
    settings: ExportSettings,
    data_id: str,
    progress: Progress | None = None,
    policy: RetryPolicy | None = None,
    counters: FetchCounters | None = None,
) -> list[str]:
    """Export every step on ``grid``; where each landed (``export_name``), in step order.

    File exports (gcs, drive) need one pixel type for all bands: mixed types are
    cast server-side to their common type (exact for every value, incl. the sentinels);
    the reader casts back. Starting, checking and polling go through the classified
    retries of ``call_with_retries`` (a start is idempotent: the task keeps its request id).
    """
    policy = policy or RetryPolicy()
    counters = counters or FetchCounters()
    names: list[str] = []
    running: dict[str, Any] = {}
    try:
        for i, step in enumerate(steps):
            key = tile_key(
                [recipe.describe(step), grid.crs_value, grid.transform, width, height, settings.via]
            )
            name = export_name(settings, data_id, key)
            names.append(name)
            if _done_before(settings, name, policy, counters):
                LOG.info("earthengine: export of %s step %d already done (%s)", data_id, i, name)
                continue
            task = _task(settings, recipe, step, name, grid, width, height, f"{data_id} step {i}")
            call_with_retries(task.start, policy, counters, f"starting the export to {name}")
            running[name] = task
        LOG.info("earthengine: %d export task(s) started for %s", len(running), data_id)
        _wait(running, len(names), settings, data_id, progress, policy, counters)
    except BaseException:
        _cancel(running)
        raise
    return names


def _task(
    settings: ExportSettings,
    recipe: Recipe,
    step: Step,
    name: str,
    grid: PixelGrid,
    width: int,
    height: int,
    what: str,
) -> Any:
    import ee

    image = recipe.image(step)
    common: dict[str, Any] = dict(
        description=f"multistore {what}"[:100],
        crs=grid.crs_value,
        crsTransform=list(grid.transform),
        dimensions=f"{width}x{height}",
        maxPixels=int(1e13),
    )
    if settings.via == "asset":
        return ee.batch.Export.image.toAsset(image=image, assetId=name, **common)
    dtypes = {g.ee_type for g in recipe.groups}
    if len(dtypes) > 1:
        by_ee = {v: k for k, v in EE_TYPE.items()}
        target = np.result_type(*(by_ee[t] for t in dtypes)).name
        image = image.cast({b: EE_TYPE[target] for b in recipe.bands})
    files: dict[str, Any] = dict(fileFormat="GeoTIFF", **common)
    if settings.file_dimensions:
        files["fileDimensions"] = int(settings.file_dimensions)
    if settings.via == "gcs":
        return ee.batch.Export.image.toCloudStorage(
            image=image, bucket=settings.bucket, fileNamePrefix=name, **files
        )
    return ee.batch.Export.image.toDrive(
        image=image, folder=settings.root, fileNamePrefix=name, **files
    )


def _done_before(
    settings: ExportSettings, name: str, policy: RetryPolicy, counters: FetchCounters
) -> bool:
    """A finished export of the same pixels (resume); Drive cannot be checked."""
    if settings.via == "asset":
        return _exists(name, policy, counters)
    if settings.via == "gcs":
        from .gcs import exported_files

        return bool(exported_files(settings.bucket or "", name, dict(settings.storage_options)))
    return False


def _exists(asset_id: str, policy: RetryPolicy, counters: FetchCounters) -> bool:
    """Whether the asset exists: 404 says no; transient errors are retried, others raised."""
    import ee

    try:
        call_with_retries(
            lambda: ee.data.getAsset(asset_id), policy, counters, f"checking asset {asset_id}"
        )
    except FetchError as e:
        if e.status == 404:
            return False
        raise
    return True


def _wait(
    running: dict[str, Any],
    total: int,
    settings: ExportSettings,
    data_id: str,
    progress: Progress | None,
    policy: RetryPolicy,
    counters: FetchCounters,
) -> None:
    start = time.monotonic()
    pending = dict(running)
    while pending:
        for asset_id, task in list(pending.items()):
            status = call_with_retries(
                task.status, policy, counters, f"polling the export to {asset_id}"
            )
            state = status.get("state")
            if state == _DONE:
                del pending[asset_id]
                running.pop(asset_id, None)
            elif state in _FAILED:
                del pending[asset_id]
                running.pop(asset_id, None)
                raise FetchError(
                    f"earthengine: export of {data_id} to {asset_id} ended {state}: "
                    f"{status.get('error_message', 'no message')}",
                    permanent=True,
                )
        finished = total - len(pending)
        LOG.info("earthengine: exports of %s: %d/%d finished", data_id, finished, total)
        if progress is not None:
            progress(finished, total)
        if not pending:
            return
        if settings.timeout_s is not None and time.monotonic() - start > settings.timeout_s:
            raise FetchError(
                f"earthengine: exports of {data_id} not finished after {settings.timeout_s} s"
            )
        time.sleep(settings.poll_s)


def _cancel(running: dict[str, Any]) -> None:
    for asset_id, task in running.items():
        try:
            task.cancel()
            LOG.warning("earthengine: cancelled export task for %s", asset_id)
        except Exception as exc:  # noqa: BLE001 - cancelling is best effort while unwinding
            LOG.warning("earthengine: could not cancel the export to %s: %s", asset_id, exc)
