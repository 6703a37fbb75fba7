"""Classified retries for every Earth Engine call; one pixel request and the size-error fallback.

Errors are sorted into three kinds before anything is retried:
transient (429, 5xx, timeouts, dropped connections: retried with exponential
backoff and full jitter, honouring ``Retry-After``), permanent (400, 403, 404
and anything else: raised at once, retrying cannot help), and too large (a
size error: the planner got it wrong, so the window is split in four and each
part fetched; logged as a WARNING since it costs a round trip). Waiting
between attempts happens outside the limiter, so a backing-off request does
not hold a slot.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

import numpy as np
from affine import Affine

from ...errors import FetchError
from ...grid import Window
from ...retry import RetryPolicy
from .planner import quarter
from .session import pixel_client, request_slot

LOG = logging.getLogger(__name__)
T = TypeVar("T")

# Earth Engine's pixel and metadata calls: short backoffs, Retry-After honoured (see delay()).
EE_RETRY_POLICY = RetryPolicy(backoff_s=0.5, max_backoff_s=30.0)

_SIZE_ERRORS = ("Total request size", "Pixel grid dimensions")


class ErrorKind(Enum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    TOO_LARGE = "too_large"


@dataclass(frozen=True)
class Classified:
    kind: ErrorKind
    status: int | None
    message: str
    retry_after_s: float | None = None


def classify(exc: BaseException) -> Classified | None:
    """How to react to ``exc`` from the ``ee`` client; ``None`` for errors that are not its."""
    import ee
    import googleapiclient.errors

    if isinstance(exc, TimeoutError):
        return Classified(ErrorKind.TRANSIENT, None, "request timed out")
    if isinstance(exc, ConnectionError):
        return Classified(ErrorKind.TRANSIENT, None, f"connection failed ({type(exc).__name__})")
    if not isinstance(exc, ee.EEException):
        return None
    message = str(exc)
    if message.startswith(_SIZE_ERRORS):
        return Classified(ErrorKind.TOO_LARGE, 400, message)
    http_error = exc.__cause__ or exc.__context__
    if isinstance(http_error, googleapiclient.errors.HttpError):
        status = int(http_error.resp.status)
        retry_after = _retry_after(http_error.resp)
        if status == 429 or status >= 500:
            return Classified(ErrorKind.TRANSIENT, status, message, retry_after)
        return Classified(ErrorKind.PERMANENT, status, message)
    return Classified(ErrorKind.PERMANENT, None, message)


def _retry_after(resp: Mapping[str, Any]) -> float | None:
    value = resp.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: rare from Google front ends; use our backoff
        return None


@dataclass
class FetchCounters:
    """What fetching cost in this process (thread-safe)."""

    requests: int = 0  # pixel requests sent
    retries: int = 0  # retries of any call: pixel requests and metadata calls
    size_splits: int = 0
    failures: int = 0  # calls given up (permanent error or retries exhausted)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)

    def __getstate__(self) -> dict[str, int]:
        return {"requests": 0, "retries": 0, "size_splits": 0, "failures": 0}

    def __setstate__(self, state: dict[str, int]) -> None:
        self.__dict__.update(state)
        self.lock = threading.Lock()


@dataclass(frozen=True)
class PixelGrid:
    """The request CRS (``crsCode`` or ``crsWkt``) and the whole grid's affine."""

    crs_field: str  # "crsCode" or "crsWkt"
    crs_value: str
    transform: tuple[float, float, float, float, float, float]

    def request_grid(self, window: Window) -> dict[str, Any]:
        t = Affine(*self.transform) @ Affine.translation(window.col_off, window.row_off)
        return {
            "dimensions": {"width": window.width, "height": window.height},
            "affineTransform": {
                "scaleX": t.a,
                "shearX": t.b,
                "translateX": t.c,
                "shearY": t.d,
                "scaleY": t.e,
                "translateY": t.f,
            },
            self.crs_field: self.crs_value,
        }


def call_with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy,
    counters: FetchCounters,
    what: str,
    on_too_large: Callable[[Classified], T] | None = None,
) -> T:
    """``fn()`` with classified retries: the one retry loop of every Earth Engine call.

    Pixel requests, listing (``getInfo``), asset metadata and export start and
    polling all go through it, so a 429 or 5xx storm is survived the same way
    everywhere. Transient errors are retried with backoff, at most
    ``policy.max_retries`` times; permanent ones raise ``FetchError`` at once,
    naming ``what`` and the HTTP status. A size error goes to ``on_too_large``
    (pixel requests split the window); without it, it is permanent. Errors that
    are not the client's (``classify`` gives ``None``) propagate unchanged.
    """
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            c = classify(exc)
            if c is None:
                raise
        if c.kind is ErrorKind.TOO_LARGE and on_too_large is not None:
            return on_too_large(c)
        if c.kind is not ErrorKind.TRANSIENT or attempt >= policy.max_retries:
            counters.add(failures=1)
            tried = f" after {attempt + 1} attempts" if c.kind is ErrorKind.TRANSIENT else ""
            status = f"HTTP {c.status}: " if c.status else ""
            raise FetchError(
                f"earthengine: {what} failed{tried}: {status}{c.message}",
                status=c.status,
                permanent=c.kind is not ErrorKind.TRANSIENT,
            ) from None
        delay = policy.delay(attempt, c.retry_after_s)
        LOG.debug("earthengine: %s: %s; retry %d in %.2fs", what, c.message, attempt + 1, delay)
        counters.add(retries=1)
        time.sleep(delay)
        attempt += 1


def fetch_window(
    expression: Callable[[], Any],
    grid: PixelGrid,
    window: Window,
    bands: tuple[str, ...],
    dtypes: tuple[str, ...],
    policy: RetryPolicy,
    counters: FetchCounters,
    what: str,
) -> np.ndarray:
    """The structured array (one field per band) of ``window``; split on size errors.

    ``expression`` returns the image already serialised by ``ee.serializer.encode``.
    Waiting between attempts happens outside the limiter (``call_with_retries``
    sleeps after ``request`` has released its slot).
    """

    def request() -> np.ndarray:
        with request_slot():
            counters.add(requests=1)
            arr = pixel_client().compute_pixels(expression(), grid.request_grid(window), bands)
        return _checked(arr, window, bands, dtypes, what)

    def split(c: Classified) -> np.ndarray:
        LOG.warning(
            "earthengine: %s %s rejected as too large (%s); splitting in four",
            what,
            window,
            c.message,
        )
        counters.add(size_splits=1)
        return _assemble(
            window,
            [
                (part, fetch_window(expression, grid, part, bands, dtypes, policy, counters, what))
                for part in quarter(window)
            ],
            bands,
            dtypes,
        )

    return call_with_retries(
        request, policy, counters, f"fetching {what} window {_describe(window)}", split
    )


def _describe(w: Window) -> str:
    return f"[col {w.col_off}, row {w.row_off}, {w.width}x{w.height}]"


def _checked(
    arr: Any, window: Window, bands: tuple[str, ...], dtypes: tuple[str, ...], what: str
) -> np.ndarray:
    if not isinstance(arr, np.ndarray) or arr.dtype.names is None:
        raise FetchError(f"earthengine: {what}: the server sent no NPY structured array")
    if arr.shape != (window.height, window.width) or tuple(arr.dtype.names) != bands:
        raise FetchError(
            f"earthengine: {what}: expected {window.height}x{window.width} pixels of bands {list(bands)}, "
            f"got {arr.shape} of {list(arr.dtype.names)}"
        )
    for band, dt in zip(bands, dtypes, strict=True):
        if arr.dtype[band] != np.dtype(dt):
            raise FetchError(
                f"earthengine: {what}: band {band} arrived as {arr.dtype[band]}, expected {dt}"
            )
    return arr


def _assemble(
    window: Window,
    parts: list[tuple[Window, np.ndarray]],
    bands: tuple[str, ...],
    dtypes: tuple[str, ...],
) -> np.ndarray:
    out = np.zeros((window.height, window.width), dtype=list(zip(bands, dtypes, strict=True)))
    for part, arr in parts:
        r, c = part.row_off - window.row_off, part.col_off - window.col_off
        out[r : r + part.height, c : c + part.width] = arr
    return out
