"""Retries with exponential backoff and jitter for transient I/O errors."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from .config.model import RetryConfig
from .diskspace import storage_os_error

T = TypeVar("T")
log = logging.getLogger(__name__)

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
    config: RetryConfig,
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
