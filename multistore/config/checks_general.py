"""Checks of the ``general`` section the schema cannot express: the dask scheduler and
cluster keys that go together, retries, GDAL options."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .checker import Checker

# xcube-multistore's dask_scheduler names -> multistore's dask.scheduler names
DASK_SCHEDULER_ALIASES = {
    "threads": "threads",
    "processes": "processes",
    "single-threaded": "synchronous",
    "sync": "synchronous",
    "synchronous": "synchronous",
    "distributed": "distributed",
}


def check_general(checker: Checker) -> None:
    general = checker.data.get("general")
    if not isinstance(general, Mapping) or not checker.clean(("general",)):
        return
    dask = general.get("dask", {})
    legacy = general.get("dask_scheduler")
    if (
        legacy is not None
        and "scheduler" in dask
        and DASK_SCHEDULER_ALIASES[legacy] != dask["scheduler"]
    ):
        checker.add(
            ("general", "dask_scheduler"),
            f"{legacy!r} contradicts general.dask.scheduler {dask['scheduler']!r}; "
            "remove dask_scheduler",
        )
    scheduler = effective_scheduler(general)
    if "address" in dask and "n_workers" in dask:
        checker.add(
            ("general", "dask"),
            "give either address (a running scheduler) or n_workers (a local cluster), not both",
        )
    _check_batch_cluster(checker, dask)
    distributed_only = [
        k for k in ("address", "n_workers", "threads_per_worker", "cluster") if k in dask
    ]
    if scheduler != "distributed" and distributed_only:
        checker.add(
            ("general", "dask", distributed_only[0]),
            f"only applies to the distributed scheduler (scheduler is {scheduler!r})",
        )
    if scheduler == "distributed" and "num_workers" in dask:
        checker.add(
            ("general", "dask", "num_workers"),
            "does not apply to the distributed scheduler: use n_workers/threads_per_worker",
        )
    retries = general.get("retries", {})
    if retries.get("max_backoff_s", math.inf) < retries.get("backoff_s", 0):
        checker.add(("general", "retries", "max_backoff_s"), "must be >= backoff_s")
    _check_gdal_params(checker, general.get("gdal_http_params", {}))


def _check_gdal_params(checker: Checker, params: Any) -> None:
    from ..gdalenv import cache_max_bytes

    if not isinstance(params, Mapping):
        return
    for key, value in params.items():
        if str(key).upper() == "GDAL_CACHEMAX":
            try:
                cache_max_bytes(value)
            except ValueError as e:
                checker.add(("general", "gdal_http_params", key), str(e))


BATCH_CLUSTER_KEYS = (
    "cores",
    "memory",
    "walltime",
    "queue",
    "account",
    "job_extra_directives",
    "adapt",
)


def _check_batch_cluster(checker: Checker, dask: Mapping[str, Any]) -> None:
    """A batch cluster needs cores and memory per job; its keys mean nothing without it."""
    if "cluster" not in dask:
        for key in BATCH_CLUSTER_KEYS:
            if key in dask:
                checker.add(
                    ("general", "dask", key),
                    "only applies to a batch cluster: set general.dask.cluster (slurm, pbs, sge)",
                )
        return
    for key in ("cores", "memory"):
        if key not in dask:
            checker.add(
                ("general", "dask"),
                f"cluster {dask['cluster']!r} needs {key!r} (per batch job)",
            )
    if "address" in dask:
        checker.add(
            ("general", "dask", "address"),
            "give either address (a running scheduler) or cluster (a batch cluster), not both",
        )
    if "threads_per_worker" in dask:
        checker.add(
            ("general", "dask", "threads_per_worker"),
            "does not apply to a batch cluster: a job's worker has 'cores' threads",
        )
    adapt = dask.get("adapt")
    if isinstance(adapt, Mapping) and "n_workers" in dask:
        checker.add(
            ("general", "dask", "adapt"),
            "give either adapt (a varying number of jobs) or n_workers (a fixed one), not both",
        )
    if (
        isinstance(adapt, Mapping)
        and isinstance(adapt.get("maximum"), int)
        and isinstance(adapt.get("minimum", 0), int)
        and adapt.get("minimum", 0) > adapt["maximum"]
    ):
        checker.add(("general", "dask", "adapt", "minimum"), "must be <= adapt.maximum")


def effective_scheduler(general: Mapping[str, Any]) -> str:
    """dask.scheduler, else the legacy dask_scheduler, else distributed if an address is given."""
    dask = general.get("dask", {})
    return (
        dask.get("scheduler")
        or DASK_SCHEDULER_ALIASES.get(general.get("dask_scheduler"))
        or ("distributed" if "address" in dask or "cluster" in dask else "threads")
    )
