"""HTTP sessions that retry politely: backoff with jitter, ``Retry-After``, client-side rate limit.

Status retries (429, 5xx) and connection retries are urllib3's ``Retry``;
this module adds a sliding-window request limit (services such as Zenodo
allow guests 60 requests per minute) and turns "gave up" into clear errors.
"""

from __future__ import annotations

import collections
import re
import threading
import time

import requests
from requests.adapters import HTTPAdapter

from ..retry import RetryPolicy, urllib3_retry

_TOO_MANY = re.compile(r"too many (\d+) error responses")


class RateLimiter:
    """At most ``per_minute`` requests in any 60 s window, shared by all threads of a session.

    On a dask.distributed cluster (see ``multistore.quota``) the window is shared by
    every process of the cluster, keyed by ``name`` (the service endpoint).
    Picklable, so a session can travel to worker processes inside a dask graph.
    """

    def __init__(self, per_minute: int | None, window_s: float = 60.0, name: str = ""):
        self._per_minute = per_minute
        self._window_s = window_s
        self._name = name
        self._sent: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def __getstate__(self) -> tuple[int | None, float, str]:
        return (self._per_minute, self._window_s, self._name)

    def __setstate__(self, state: tuple[int | None, float, str]) -> None:
        self.__init__(*state)

    def acquire(self) -> None:
        if not self._per_minute:
            return
        from ..quota import take_rate_slot  # imports distributed: only when needed

        if take_rate_slot(self._name, self._per_minute, self._window_s):
            return
        while True:
            with self._lock:
                now = time.monotonic()
                while self._sent and now - self._sent[0] >= self._window_s:
                    self._sent.popleft()
                if len(self._sent) < self._per_minute:
                    self._sent.append(now)
                    return
                wait = self._window_s - (now - self._sent[0])
            time.sleep(max(wait, 0.01))


class _LimitedAdapter(HTTPAdapter):
    __attrs__ = [*HTTPAdapter.__attrs__, "_limiter"]  # kept when a session is pickled

    def __init__(self, limiter: RateLimiter, **kwargs):
        self._limiter = limiter
        super().__init__(**kwargs)

    def send(self, request, *args, **kwargs):
        self._limiter.acquire()
        return super().send(request, *args, **kwargs)


def new_session(
    policy: RetryPolicy,
    *,
    requests_per_minute: int | None = None,
    headers: dict[str, str] | None = None,
    pool_size: int = 10,
    rate_name: str = "",
    rate_window_s: float = 60.0,
) -> requests.Session:
    """A session for GET/HEAD with retries; ``headers`` (e.g. auth) are sent on every request.

    ``rate_name`` names the request budget (the service endpoint) that sessions in
    other processes of a dask.distributed cluster share."""
    retry = urllib3_retry(policy)
    adapter = _LimitedAdapter(
        RateLimiter(requests_per_minute, rate_window_s, rate_name),
        max_retries=retry,
        pool_connections=pool_size,
        pool_maxsize=pool_size,
    )
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if headers:
        session.headers.update(headers)
    return session


def describe_retry_error(error: requests.exceptions.RetryError, policy: RetryPolicy) -> str:
    """'rate-limited (HTTP 429) after 6 retries' rather than urllib3's long repr."""
    reason = getattr(error.args[0], "reason", None) if error.args else None
    # urllib3 keeps the last status only in this message ("too many 429 error responses").
    match = _TOO_MANY.search(str(reason or error))
    if match is None:
        return f"gave up after {policy.max_retries} retries"
    status = int(match.group(1))
    what = "rate-limited (HTTP 429)" if status == 429 else f"HTTP {status}"
    return f"{what} after {policy.max_retries} retries"
