"""GDAL settings scoped to each read, never written to ``os.environ``.

Two runs in one process (a notebook, a server) may need different GDAL
settings: other HTTP retries, other S3 endpoints and credentials. Process-wide
settings would race, so a run only builds an immutable ``GdalSettings`` and
every task that reads a source enters it with ``rasterio.Env``, which sets
GDAL config options thread-locally in worker threads (``scope_dataset``). The
settings travel inside the tasks, so they also reach process and distributed
workers. odc-stac's loader does the same per chunk read (see the STAC store).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import dask.array as da
import rasterio
import xarray as xr
from dask._task_spec import convert_legacy_graph
from dask.task_spec import GraphNode, Task, TaskRef
from rasterio.env import set_gdal_config
from rasterio.session import DummySession, Session

# Defaults of `general.gdal_http_params`: xcube-multistore's HTTP retries, and a
# block cache of 128 MB instead of GDAL's 5% of RAM, since tiles are read window by
# window and a large cache only adds resident memory per worker.
DEFAULTS = {"gdal_http_max_retry": 10, "gdal_http_retry_delay": 5, "gdal_cachemax": 128}

# GDAL options that hold secrets: never shown, and handed to GDAL as a rasterio session
# (rasterio refuses AWS credentials as plain options).
SECRET_OPTIONS = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"})


@dataclass(frozen=True)
class GdalSettings:
    """GDAL config options for reads, e.g. ``(("GDAL_HTTP_MAX_RETRY", "3"),)``.

    Immutable and picklable, so one instance can ride along in every task.
    """

    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> GdalSettings:
        return cls(tuple(sorted((str(k).upper(), _text(v)) for k, v in options.items())))

    def as_dict(self) -> dict[str, str]:
        return dict(self.options)

    def merged(self, other: GdalSettings) -> GdalSettings:
        """These settings with ``other``'s on top."""
        return GdalSettings.of({**self.as_dict(), **other.as_dict()})

    def __bool__(self) -> bool:
        return bool(self.options)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={'***' if k in SECRET_OPTIONS else v}" for k, v in self.options)
        return f"GdalSettings({shown})"

    @contextmanager
    def env(self) -> Iterator[None]:
        """The settings as a ``rasterio.Env`` (thread-local in worker threads)."""
        options = self.as_dict()
        secrets = {k: options.pop(k) for k in SECRET_OPTIONS if k in options}
        # DummySession: never let rasterio build a boto3 session per task from os.environ;
        # without explicit credentials GDAL follows its own lookup (environment, files).
        session: Session = _Credentials(secrets) if secrets else DummySession()
        with rasterio.Env(session=session, **options):
            yield


class _Credentials(Session):
    """Static AWS credentials as a rasterio session (no boto3 lookup per task)."""

    def __init__(self, credentials: Mapping[str, str]):
        self._credentials = dict(credentials)

    @classmethod
    def hascreds(cls, config: Mapping[str, Any]) -> bool:
        return "AWS_ACCESS_KEY_ID" in config and "AWS_SECRET_ACCESS_KEY" in config

    def get_credential_options(self) -> dict[str, str]:
        return dict(self._credentials)

    def __repr__(self) -> str:
        return "_Credentials(***)"


@contextmanager
def scoped_env(**values: str) -> Iterator[None]:
    """Set environment variables for a block, then restore them.

    Only for the demo's config variables (``${MULTISTORE_DEMO_...}``); GDAL
    settings never go through the environment (see the module docstring).
    """
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def general_settings(params: Mapping[str, Any]) -> GdalSettings:
    """``general.gdal_http_params`` (``{gdal_http_max_retry: 3}``) as per-read settings.

    A default never overrides a variable the user already set in the
    environment. ``gdal_cachemax`` is not among them: see ``apply_cache_max``.
    """
    values = _with_defaults(params)
    values.pop(_CACHEMAX, None)
    return GdalSettings.of(values)


def apply_cache_max(params: Mapping[str, Any]) -> int | None:
    """Size GDAL's block cache from ``gdal_cachemax`` (MB, as GDAL reads it; or ``"N%"`` of RAM).

    GDAL has one block cache per process, so this is the one process-wide
    setting (``GDALSetCacheMax64``, not the environment): the last run to start
    sets it. Returns the size in bytes, None when left to GDAL.
    """
    value = _with_defaults(params).get(_CACHEMAX)
    if value is None:
        return None
    size = cache_max_bytes(value)
    set_gdal_config(_CACHEMAX, size)
    return size


def cache_max_bytes(value: Any) -> int:
    """GDAL's reading of GDAL_CACHEMAX: below 100000 it is MB, above bytes; ``N%`` of RAM."""
    text = str(value).strip()
    try:
        if text.endswith("%"):
            ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            return int(ram * float(text[:-1]) / 100)
        number = int(float(text))
    except ValueError:
        raise ValueError(
            f"gdal_cachemax must be megabytes or a percentage, got {value!r}"
        ) from None
    if number <= 0:
        raise ValueError(f"gdal_cachemax must be positive, got {value!r}")
    return number * 2**20 if number < 100_000 else number


_CACHEMAX = "GDAL_CACHEMAX"


def _with_defaults(params: Mapping[str, Any]) -> dict[str, Any]:
    values = {k.upper(): v for k, v in DEFAULTS.items() if k.upper() not in os.environ}
    values.update({str(k).upper(): v for k, v in params.items()})
    return values


def s3_settings(storage_options: Mapping[str, Any] | None) -> GdalSettings:
    """s3fs ``storage_options`` as GDAL /vsis3/ options, for every s3fs spelling.

    ``endpoint_url`` (top level or in ``client_kwargs``; http or https),
    ``anon``, ``key``/``secret``/``token`` (or botocore's ``aws_*`` names in
    ``client_kwargs``), ``region_name`` (top level or in ``client_kwargs``),
    ``client_kwargs.verify`` (False, or a CA bundle path), ``use_ssl``,
    ``requester_pays`` and ``profile``.
    """
    so = dict(storage_options or {})
    client = dict(so.get("client_kwargs") or {})
    options: dict[str, str] = {}
    endpoint = so.get("endpoint_url") or client.get("endpoint_url")
    if endpoint:
        url = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ValueError(f"endpoint_url must be an http(s) URL, got {endpoint!r}")
        options["AWS_S3_ENDPOINT"] = url.netloc + url.path.rstrip("/")
        options["AWS_HTTPS"] = "YES" if url.scheme == "https" else "NO"
        # custom endpoints (MinIO, Ceph, moto, IP addresses) serve path-style URLs
        style = ((so.get("config_kwargs") or {}).get("s3") or {}).get("addressing_style")
        options["AWS_VIRTUAL_HOSTING"] = "TRUE" if style == "virtual" else "FALSE"
    if so.get("use_ssl") is False:
        options["AWS_HTTPS"] = "NO"
    verify = client.get("verify")
    if verify is False:
        options["GDAL_HTTP_UNSAFESSL"] = "YES"
    elif isinstance(verify, str):  # a private CA's certificate bundle
        options["GDAL_CURL_CA_BUNDLE"] = verify  # GDAL >= 3.7
        options["CURL_CA_BUNDLE"] = verify  # older GDAL
    key = so.get("key") or client.get("aws_access_key_id")
    secret = so.get("secret") or client.get("aws_secret_access_key")
    token = so.get("token") or client.get("aws_session_token")
    if so.get("anon"):
        options["AWS_NO_SIGN_REQUEST"] = "YES"
    elif key and secret:
        options["AWS_NO_SIGN_REQUEST"] = "NO"
        options["AWS_ACCESS_KEY_ID"] = str(key)
        options["AWS_SECRET_ACCESS_KEY"] = str(secret)
        if token:
            options["AWS_SESSION_TOKEN"] = str(token)
    region = so.get("region_name") or client.get("region_name")
    if region:
        options["AWS_REGION"] = str(region)
    if so.get("requester_pays"):
        options["AWS_REQUEST_PAYER"] = "requester"
    profile = so.get("profile")
    if profile and not (key and secret) and not so.get("anon"):
        options["AWS_PROFILE"] = str(profile)
    return GdalSettings.of(options)


def s3fs_options(storage_options: Mapping[str, Any]) -> dict[str, Any]:
    """``storage_options`` s3fs accepts: a top-level ``region_name`` moves to ``client_kwargs``.

    (s3fs hands unknown top-level keywords to its botocore session, which fails on it.)
    """
    so = dict(storage_options)
    if "region_name" in so:
        client = dict(so.get("client_kwargs") or {})
        client.setdefault("region_name", so.pop("region_name"))
        so["client_kwargs"] = client
    return so


# -- scoping the reads of a dataset ----------------------------------------------------------


def scope_dataset(ds: xr.Dataset, settings: GdalSettings) -> xr.Dataset:
    """``ds`` whose every dask task runs inside ``settings.env()``.

    The tasks compute what they did, under new keys, so the same file opened
    through two stores with different settings never shares a task; lazy reads
    done later on any worker see this source's settings, whatever other
    sources or runs use at the same time.
    """
    if not settings:
        return ds
    suffix = f"-gdal-{uuid.uuid4().hex[:12]}"  # one per call: nodes shared by variables stay shared
    changed = {
        name: var.copy(data=scope_array(var.data, settings, suffix))
        for name, var in ds.variables.items()
        if isinstance(var.data, da.Array)
    }
    coords = {n: v for n, v in changed.items() if n in ds.coords}
    data = {n: v for n, v in changed.items() if n not in ds.coords}
    return ds.assign_coords(coords).assign(data)


def scope_array(arr: da.Array, settings: GdalSettings, suffix: str) -> da.Array:
    """``arr`` whose tasks run inside ``settings.env()``, their key names ending in ``suffix``."""
    renamed: dict[Any, Any] = {}

    def rename(key: Any) -> Any:
        new = renamed.get(key)
        if new is None:
            new = (key[0] + suffix, *key[1:]) if isinstance(key, tuple) else f"{key}{suffix}"
            renamed[key] = new
        return new

    graph: dict[Any, Any] = {}
    # legacy tuple tasks name their inputs by key: as graph nodes, their inputs can be renamed
    for key, node in convert_legacy_graph(dict(arr.__dask_graph__())).items():
        new_key = rename(key)
        if isinstance(node, GraphNode):
            deps = tuple(node.dependencies)
            graph[new_key] = Task(
                new_key,
                _run_scoped,
                settings,
                _Deferred(node, deps),
                *[TaskRef(rename(d)) for d in deps],
                _data_producer=isinstance(node, Task) and node.data_producer,
            )
        else:  # a plain value
            graph[new_key] = node
    return da.Array(graph, rename(arr.name), arr.chunks, meta=arr._meta)


@dataclass(frozen=True, eq=False)
class _Deferred:
    """A graph node carried as a plain value; ``_run_scoped`` runs it on its inputs' values."""

    node: GraphNode
    dependencies: tuple[Any, ...]


def _run_scoped(settings: GdalSettings, deferred: _Deferred, *values: Any) -> Any:
    with settings.env():
        return deferred.node(dict(zip(deferred.dependencies, values, strict=True)))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "YES" if value else "NO"
    return str(value)
