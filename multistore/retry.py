"""Retries with exponential backoff and jitter: one policy for every client.

``RetryPolicy`` is how hard a client tries (HTTP sessions through urllib3's
``Retry``, Earth Engine calls, downloads); ``with_retries`` is the classifying
loop the pipeline uses around opening sources and writing cubes.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from urllib3.util.retry import Retry

from .config.model import RetryConfig
from .diskspace import storage_os_error

T = TypeVar("T")
log = logging.getLogger(__name__)

RETRY_STATUSES = (429, 500, 502, 503, 504)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. ``max_retries`` applies to statuses, connections and broken bodies."""

    max_retries: int = 6
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    checksum_attempts: int = 3  # full downloads tried before a checksum mismatch is final

    def backoff(self, failures: int) -> float:
        """Exponential backoff for the ``failures``-th consecutive failure (no jitter)."""
        return min(self.max_backoff_s, self.backoff_s * 2 ** max(0, failures - 1))

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Full-jitter backoff before retry ``attempt + 1``; ``Retry-After`` wins when longer."""
        backoff = random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2**attempt))
        return max(backoff, retry_after_s or 0.0)


def urllib3_retry(policy: RetryPolicy, raise_on_status: bool = True) -> Retry:
    """The policy as urllib3's ``Retry`` for a requests session (GET and HEAD only)."""
    return Retry(
        total=policy.max_retries,
        connect=policy.max_retries,
        read=policy.max_retries,
        status=policy.max_retries,
        other=0,
        backoff_factor=policy.backoff_s,
        backoff_max=policy.max_backoff_s,
        backoff_jitter=policy.backoff_s / 2,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "HEAD"}),
        respect_retry_after_header=True,
        raise_on_status=raise_on_status,
    )


# OSErrors that retrying cannot fix.
_PERMANENT_OS_ERRORS = (
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    FileExistsError,
)


def is_transient(error: BaseException) -> bool:
    """Connection problems, timeouts and other I/O hiccups; never bad input or missing files."""
    if isinstance(error, _PERMANENT_OS_ERRORS):
        return False
    if storage_os_error(error) is not None:  # full disk, read-only storage: waiting won't help
        return False
    if isinstance(error, ConnectionError | TimeoutError):
        return True
    name = type(error).__name__
    # aiohttp/botocore/requests errors that do not subclass the builtins
    if name in {
        "ClientConnectorError",
        "ServerDisconnectedError",
        "ReadTimeoutError",
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ChunkedEncodingError",
    }:
        return True
    return isinstance(error, OSError) and type(error) is OSError


def with_retries(
    fn: Callable[[], T],
    config: RetryConfig | RetryPolicy,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
    classify: Callable[[BaseException], BaseException] = lambda e: e,
) -> T:
    """Call ``fn``; on a transient error wait ``backoff * 2**n`` (with jitter) and try again."""
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as e:
            if attempt >= config.max_retries or not is_transient(classify(e)):
                raise
            delay = min(config.max_backoff_s, config.backoff_s * 2**attempt)
            delay *= 0.5 + random.random() / 2
            attempt += 1
            log.warning(
                "%s failed (%s); retry %d/%d in %.1f s", what, e, attempt, config.max_retries, delay
            )
            sleep(delay)
