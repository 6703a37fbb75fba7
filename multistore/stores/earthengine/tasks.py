"""Earth Engine batch tasks of a project: list, read, wait for and cancel them, with
the store's retries (``multistore ee tasks | wait | cancel``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from ...errors import FetchError
from ...retry import RetryPolicy
from .export import cancel_task, task_list, task_status
from .fetch import FetchCounters, call_with_retries

_ENDED = ("COMPLETED", "FAILED", "CANCELLED", "UNKNOWN")


def list_tasks(
    policy: RetryPolicy, counters: FetchCounters, state: str | None, recent: int | None
) -> list[dict]:
    """Newest first; only ``state`` (e.g. RUNNING) if given, at most ``recent``."""
    found = call_with_retries(task_list, policy, counters, "listing tasks")
    if state:
        found = [t for t in found if t.get("state") == state.upper()]
    found = sorted(found, key=lambda t: t.get("creation_timestamp_ms") or 0, reverse=True)
    return found[:recent] if recent else found


def task_states(
    task_ids: Sequence[str], policy: RetryPolicy, counters: FetchCounters
) -> list[dict]:
    return [
        call_with_retries(lambda i=i: task_status(i), policy, counters, f"reading task {i}")
        for i in task_ids
    ]


def wait_tasks(
    task_ids: Sequence[str],
    policy: RetryPolicy,
    counters: FetchCounters,
    poll_s: float,
    timeout_s: float | None,
    report: Callable[[dict], None] | None,
) -> list[dict]:
    start = time.monotonic()
    pending = list(task_ids)
    final: dict[str, dict] = {}
    while pending:
        for status in task_states(pending, policy, counters):
            if status.get("state") in _ENDED:
                final[status["id"]] = status
                if report is not None:
                    report(status)
        pending = [i for i in pending if _task_id(i) not in final]
        if not pending:
            break
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise FetchError(f"earthengine: tasks {pending} not finished after {timeout_s} s")
        time.sleep(poll_s)
    return [final[_task_id(i)] for i in task_ids]


def cancel_tasks(task_ids: Sequence[str], policy: RetryPolicy, counters: FetchCounters) -> None:
    for i in task_ids:
        call_with_retries(lambda i=i: cancel_task(i), policy, counters, f"cancelling task {i}")


def _task_id(name: str) -> str:
    """A task id from an id or an operation name (``projects/p/operations/<id>``)."""
    return name.rsplit("/", 1)[-1]
