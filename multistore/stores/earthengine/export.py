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

import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import ConfigError, FetchError, Problem
from ...retry import RetryPolicy
from ..contract import open_progress
from .fetch import EE_RETRY_POLICY, FetchCounters, PixelGrid, call_with_retries
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


def export_settings(params: Mapping[str, Any]) -> ExportSettings:
    """Where ``export_via`` sends exports; the keys each destination needs."""
    via = params["export_via"]
    required = {"asset": ["export_asset_root"], "gcs": ["export_bucket"], "drive": []}[via]
    missing = [
        Problem(f"open_params.{name}", f"required with export_via: {via}")
        for name in required
        if not params.get(name)
    ]
    if missing:
        raise ConfigError(missing)
    root = params.get("export_asset_root") if via == "asset" else None
    return ExportSettings(
        via=via,
        root=root or params.get("export_prefix", "multistore"),
        bucket=params.get("export_bucket"),
        poll_s=float(params.get("export_poll_s", 10.0)),
        timeout_s=params.get("export_timeout_s"),
        file_dimensions=params.get("export_file_dimensions"),
        storage_options=tuple(sorted((params.get("export_storage_options") or {}).items())),
    )


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
    policy = policy or EE_RETRY_POLICY
    counters = counters or FetchCounters()
    running: dict[str, Any] = {}
    try:
        submitted = _submit(
            recipe, steps, grid, width, height, settings, data_id, policy, counters, running
        )
        _wait(running, len(submitted), settings, data_id, progress, policy, counters)
    except BaseException:
        _cancel(running)
        raise
    return [name for name, _ in submitted]


def submit_steps(
    recipe: Recipe,
    steps: Sequence[Step],
    grid: PixelGrid,
    width: int,
    height: int,
    settings: ExportSettings,
    data_id: str,
    policy: RetryPolicy,
    counters: FetchCounters,
) -> list[tuple[str, str]]:
    """Start the exports of every step and return at once (``generate --submit-only``):
    ``(export name, state)`` per step, state ``done`` (finished before), ``running``
    (an earlier submission still runs) or ``started``. A later run adopts the running
    tasks and reads the finished exports."""
    return _submit(recipe, steps, grid, width, height, settings, data_id, policy, counters, {})


def _submit(
    recipe: Recipe,
    steps: Sequence[Step],
    grid: PixelGrid,
    width: int,
    height: int,
    settings: ExportSettings,
    data_id: str,
    policy: RetryPolicy,
    counters: FetchCounters,
    running: dict[str, Any],
) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    active: dict[str, str] | None = None  # description key -> task id, listed once if needed
    for i, step in enumerate(steps):
        key = tile_key(
            [recipe.describe(step), grid.crs_value, grid.transform, width, height, settings.via]
        )
        name = export_name(settings, data_id, key)
        if _done_before(settings, name, policy, counters):
            LOG.info("earthengine: export of %s step %d already done (%s)", data_id, i, name)
            out.append((name, "done"))
            continue
        if active is None:
            active = _active_tasks(policy, counters)
        if key[:_KEY_CHARS] in active:
            LOG.info("earthengine: adopting the running export of %s step %d", data_id, i)
            running[name] = _Adopted(active[key[:_KEY_CHARS]])
            out.append((name, "running"))
            continue
        what = f"{data_id} step {i}"
        task = _task(settings, recipe, step, name, grid, width, height, what, key)
        call_with_retries(task.start, policy, counters, f"starting the export to {name}")
        running[name] = task
        out.append((name, "started"))
    LOG.info("earthengine: %d export task(s) started for %s", len(running), data_id)
    return out


_KEY_CHARS = 16
_KEY_IN_DESCRIPTION = re.compile(r"\[([0-9a-f]{16})\]$")
_ACTIVE = ("READY", "RUNNING")


def task_description(what: str, key: str) -> str:
    """``multistore <what> [<key>]`` within Earth Engine's 100 characters: the key names
    the pixels, so a later run can find a task an earlier one submitted."""
    tail = f" [{key[:_KEY_CHARS]}]"
    return f"multistore {what}"[: 100 - len(tail)] + tail


def _active_tasks(policy: RetryPolicy, counters: FetchCounters) -> dict[str, str]:
    """Running or queued export tasks of this project submitted by multistore, by key."""

    tasks = call_with_retries(task_list, policy, counters, "listing export tasks")
    found = {}
    for t in tasks:
        m = _KEY_IN_DESCRIPTION.search(t.get("description") or "")
        if m and t.get("state") in _ACTIVE:
            found[m.group(1)] = t["id"]
    return found


class _Adopted:
    """A task submitted by an earlier run, waited for (and cancelled) like our own."""

    def __init__(self, task_id: str):
        self.id = task_id

    def status(self) -> dict[str, Any]:
        return task_status(self.id)

    def cancel(self) -> None:
        cancel_task(self.id)


# The task API through operations (ee.data's getTaskList/getTaskStatus/cancelTask are
# deprecated); tasks keep the legacy form: id, state (READY, RUNNING, COMPLETED, ...).


def operation_name(task: str) -> str:
    """``projects/<p>/operations/<id>`` of a task id (or the name itself)."""
    import ee

    if task.startswith("projects/"):
        return task
    project = ee.data._get_state().cloud_api_user_project
    return f"projects/{project}/operations/{task}"


def task_list() -> list[dict[str, Any]]:
    import ee
    from ee import _cloud_api_utils

    return [_cloud_api_utils.convert_operation_to_task(op) for op in ee.data.listOperations()]


def task_status(task: str) -> dict[str, Any]:
    import ee
    from ee import _cloud_api_utils

    return _cloud_api_utils.convert_operation_to_task(ee.data.getOperation(operation_name(task)))


def cancel_task(task: str) -> None:
    import ee

    ee.data.cancelOperation(operation_name(task))


def _task(
    settings: ExportSettings,
    recipe: Recipe,
    step: Step,
    name: str,
    grid: PixelGrid,
    width: int,
    height: int,
    what: str,
    key: str,
) -> Any:
    import ee

    image = recipe.image(step)
    common: dict[str, Any] = dict(
        description=task_description(what, key),
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


def delete_exports(
    settings: ExportSettings, names: Sequence[str], policy: RetryPolicy, counters: FetchCounters
) -> int:
    """Delete what the exports wrote (assets, or Cloud Storage objects); the number deleted.
    Drive files cannot be reached and stay."""
    import ee

    deleted = 0
    if settings.via == "asset":
        for name in names:
            if _exists(name, policy, counters):
                call_with_retries(
                    lambda n=name: ee.data.deleteAsset(n), policy, counters, f"deleting {name}"
                )
                deleted += 1
    elif settings.via == "gcs":
        from .gcs import delete_exported_files

        for name in names:
            deleted += delete_exported_files(
                settings.bucket or "", name, dict(settings.storage_options)
            )
    return deleted


def _cancel(running: dict[str, Any]) -> None:
    for asset_id, task in running.items():
        try:
            task.cancel()
            LOG.warning("earthengine: cancelled export task for %s", asset_id)
        except Exception as exc:  # noqa: BLE001 - cancelling is best effort while unwinding
            LOG.warning("earthengine: could not cancel the export to %s: %s", asset_id, exc)


def pipeline_progress(data_id: str) -> Callable[[int, int], None] | None:
    """Export progress for the pipeline's status table, when a dataset is being generated."""
    report = open_progress()
    if report is None:
        return None
    return lambda done, total: report(done, total, f"earthengine export {data_id}: {done}/{total}")


def exports_key(data_id: str, params: Mapping[str, Any]) -> str:
    """Identifies an opened source among the exports to release; tile caches do not
    change what was exported."""
    keep = {k: v for k, v in params.items() if not k.startswith("tile_cache")}
    return json.dumps([data_id, keep], sort_keys=True, default=str)
