"""Earth Engine client setup: credentials, initialisation, connection pool, request limiter.

The ``ee`` client keeps its state (credentials, endpoint, HTTP session) per
process, so this module keeps the matching per-process state: which
configuration the client is initialised with, and the one bounded limiter
every pixel request of the process goes through (no nested pools: dask
threads, retries and split tiles all share it). ``SessionParams`` is small
and picklable, so a dask worker process initialises itself lazily on its
first request.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from ...errors import FetchError, StoreError
from .rest import PixelClient

LOG = logging.getLogger(__name__)

HIGH_VOLUME_URL = "https://earthengine-highvolume.googleapis.com"
DEFAULT_CONCURRENCY = 16
MAX_CONCURRENCY = 39  # Earth Engine allows 40 concurrent requests per project


@dataclass(frozen=True)
class SessionParams:
    """How to reach Earth Engine. ``credentials`` is never shown (``repr=False``)."""

    project: str | None = None
    url: str = HIGH_VOLUME_URL
    credentials: str = field(default="persistent", repr=False)
    max_concurrency: int = DEFAULT_CONCURRENCY
    max_retries: int = 6
    deadline_s: float = 120.0

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise StoreError(
                f"earthengine: max_concurrency must be >= 1, got {self.max_concurrency}"
            )
        if self.max_concurrency > MAX_CONCURRENCY:
            LOG.warning(
                "earthengine: max_concurrency %d capped at %d (the project quota is 40 concurrent requests)",
                self.max_concurrency,
                MAX_CONCURRENCY,
            )
            object.__setattr__(self, "max_concurrency", MAX_CONCURRENCY)

    @property
    def key(self) -> str:
        """Identifies the client configuration without holding the secret in clear."""
        raw = json.dumps([self.project, self.url, self.credentials, self.deadline_s])
        return hashlib.sha256(raw.encode()).hexdigest()


class Limiter:
    """A counting limiter whose capacity can change; counts in-flight requests."""

    def __init__(self, capacity: int):
        self._capacity = capacity
        self._in_use = 0
        self._cond = threading.Condition()

    def set_capacity(self, capacity: int) -> None:
        with self._cond:
            self._capacity = capacity
            self._cond.notify_all()

    @property
    def capacity(self) -> int:
        return self._capacity

    def __enter__(self) -> Limiter:
        with self._cond:
            while self._in_use >= self._capacity:
                self._cond.wait()
            self._in_use += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        with self._cond:
            self._in_use -= 1
            self._cond.notify()


class _ProcessState:
    """The ``ee`` client's configuration in this process (the client's state is per process)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.key: str | None = None
        self.limiter = Limiter(DEFAULT_CONCURRENCY)
        self.pixels: PixelClient | None = None


_PROCESS = _ProcessState()


def limiter() -> Limiter:
    """The process-wide limiter all pixel requests go through."""
    return _PROCESS.limiter


def request_slot() -> AbstractContextManager[None]:
    """One of ``max_concurrency`` request slots: cluster-wide on dask.distributed, else
    of this process. Named by the client configuration (endpoint, project), whose quota it is."""
    from ...quota import concurrency_slot

    state = _PROCESS
    name = f"earthengine:{(state.key or 'uninitialised')[:16]}"
    return concurrency_slot(name, state.limiter.capacity, state.limiter)


def pixel_client() -> PixelClient:
    """The process's computePixels client; call ``ensure_initialized`` first."""
    pixels = _PROCESS.pixels
    if pixels is None:
        raise StoreError("earthengine: the client is not initialised in this process")
    return pixels


def ensure_initialized(params: SessionParams) -> None:
    """Initialise the ``ee`` client for ``params`` once per process (again if params change)."""
    state = _PROCESS
    if state.key == params.key:
        state.limiter.set_capacity(params.max_concurrency)
        return
    with state.lock:
        if state.key != params.key:
            _initialize(params, reset=state.key is not None)
            # Built after the session and deadline are set up: it uses both.
            state.pixels = PixelClient()
            state.key = params.key
        state.limiter.set_capacity(params.max_concurrency)


def _initialize(params: SessionParams, reset: bool) -> None:
    import ee
    import requests.adapters
    import requests.utils
    from ee import _state

    from .fetch import EE_RETRY_POLICY, FetchCounters, call_with_retries  # fetch imports us

    if reset:  # ee.Initialize keeps old credentials when given None: start clean
        ee.Reset()
    credentials = resolve_credentials(params.credentials)
    LOG.info("earthengine: initialising client for %s (project %s)", params.url, params.project)
    # Our retries own every call (classified, counted), Initialize's algorithm listing
    # too: the client's would multiply them, and after a reset they would be off.
    ee.data.setMaxRetries(0)
    policy = dataclasses.replace(EE_RETRY_POLICY, max_retries=params.max_retries)
    try:
        call_with_retries(
            lambda: ee.Initialize(credentials=credentials, url=params.url, project=params.project),
            policy,
            FetchCounters(),
            f"initialising the client for {params.url}",
        )
    except FetchError as e:
        raise StoreError(str(e)) from None
    except ee.EEException as e:
        raise StoreError(
            f"earthengine: cannot initialise the client for {params.url}: {e}"
        ) from None
    except OSError as e:
        raise StoreError(f"earthengine: cannot reach {params.url}: {type(e).__name__}") from None
    ee.data.setMaxRetries(0)
    ee.data.setDeadline(params.deadline_s * 1000)
    # urllib3's default pool keeps 10 connections: more threads would reconnect per request.
    session = _state.get_state().requests_session
    adapter = requests.adapters.HTTPAdapter(
        pool_connections=4, pool_maxsize=params.max_concurrency + 4, max_retries=0
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    # requests re-reads proxy and CA settings from the environment on every request
    # (~2.5 ms of CPU each, a limit at 40 requests in flight): read them once instead.
    session.proxies.update(requests.utils.get_environ_proxies(params.url))
    ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if ca_bundle:
        session.verify = ca_bundle
    session.trust_env = False


def resolve_credentials(spec: str) -> Any:
    """``none`` -> no auth header; ``persistent`` -> the user's stored credentials;
    a JSON key (e.g. from ``${ENV}``) or a key file path -> service-account credentials."""
    if spec == "none":
        return None
    if spec == "persistent":
        import ee

        try:
            return ee.data.get_persistent_credentials()
        except ee.EEException as e:
            raise StoreError(f"earthengine: no stored credentials: {e}") from None
    text = spec.strip()
    if not text.startswith("{"):
        if not os.path.isfile(text):
            raise StoreError(
                "earthengine: credentials must be 'persistent', 'none', a service-account key "
                "file path or the key JSON; the given value is none of these"
            )
        with open(text, encoding="utf-8") as f:
            text = f.read()
    try:
        info = json.loads(text)
        import ee
        from google.oauth2 import service_account

        return service_account.Credentials.from_service_account_info(info, scopes=ee.oauth.SCOPES)
    except (ValueError, KeyError, TypeError):
        # The message names no key content: the key must not leak into logs.
        raise StoreError("earthengine: credentials are not a valid service-account key") from None
