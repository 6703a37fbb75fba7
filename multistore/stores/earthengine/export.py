"""Batch exports: let Earth Engine compute each time step into an image asset, then read it back.

For composites too expensive for interactive requests (computation timeouts,
"User memory limit exceeded"), an export task computes the step once on
Earth Engine's batch workers; the finished asset is then downloaded in the
usual planned tiles, which are cheap because nothing is left to compute.

Asset names hash what determines the pixels, so a rerun reuses exports that
already finished (resume at export level). Tasks are polled until done;
on any interruption (Ctrl-C, a failed sibling, a timeout) the tasks still
running are cancelled, so nothing keeps spending the project's quota.
Only ``asset`` destinations are read back; Cloud Storage and Drive exports
are not supported.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import FetchError
from .fetch import ErrorKind, PixelGrid, classify
from .query import Recipe, Step
from .resume import tile_key

LOG = logging.getLogger(__name__)

_DONE = "COMPLETED"
_FAILED = ("FAILED", "CANCELLED", "CANCEL_REQUESTED")

Progress = Callable[[int, int], None]  # (finished, total)


@dataclass(frozen=True)
class ExportSettings:
    asset_root: str  # e.g. projects/<project>/assets/multistore-tmp
    poll_s: float = 10.0
    timeout_s: float | None = None


def export_asset_id(root: str, data_id: str, key: str) -> str:
    return f"{root.rstrip('/')}/{re.sub(r'[^A-Za-z0-9_-]', '_', data_id)}_{key[:20]}"


def export_steps(
    recipe: Recipe,
    steps: Sequence[Step],
    grid: PixelGrid,
    width: int,
    height: int,
    settings: ExportSettings,
    data_id: str,
    progress: Progress | None = None,
) -> list[str]:
    """Export every step to an image asset on ``grid``; the asset ids, in step order."""
    import ee

    asset_ids: list[str] = []
    running: dict[str, Any] = {}
    try:
        for i, step in enumerate(steps):
            key = tile_key([recipe.describe(step), grid.crs_value, grid.transform, width, height])
            asset_id = export_asset_id(settings.asset_root, data_id, key)
            asset_ids.append(asset_id)
            if _exists(asset_id):
                LOG.info(
                    "earthengine: export of %s step %d already done (%s)", data_id, i, asset_id
                )
                continue
            task = ee.batch.Export.image.toAsset(
                image=recipe.image(step),
                description=f"multistore {data_id} step {i}"[:100],
                assetId=asset_id,
                crs=grid.crs_value,
                crsTransform=list(grid.transform),
                dimensions=f"{width}x{height}",
                maxPixels=int(1e13),
            )
            task.start()
            running[asset_id] = task
        LOG.info("earthengine: %d export task(s) started for %s", len(running), data_id)
        _wait(running, len(asset_ids), settings, data_id, progress)
    except BaseException:
        _cancel(running)
        raise
    return asset_ids


def _exists(asset_id: str) -> bool:
    import ee

    try:
        ee.data.getAsset(asset_id)
    except ee.EEException:
        return False
    return True


def _wait(
    running: dict[str, Any],
    total: int,
    settings: ExportSettings,
    data_id: str,
    progress: Progress | None,
) -> None:
    start = time.monotonic()
    pending = dict(running)
    while pending:
        for asset_id, task in list(pending.items()):
            status = _status(task)
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


def _status(task: Any) -> dict[str, Any]:
    """The task's status; a transient failure to ask counts as 'still running'."""
    try:
        return task.status()
    except Exception as exc:
        c = classify(exc)
        if c is None or c.kind is not ErrorKind.TRANSIENT:
            raise
        LOG.debug("earthengine: task status unavailable (%s); polling again", c.message)
        return {"state": "RUNNING"}


def _cancel(running: dict[str, Any]) -> None:
    for asset_id, task in running.items():
        try:
            task.cancel()
            LOG.warning("earthengine: cancelled export task for %s", asset_id)
        except Exception as exc:  # noqa: BLE001 - cancelling is best effort while unwinding
            LOG.warning("earthengine: could not cancel the export to %s: %s", asset_id, exc)
