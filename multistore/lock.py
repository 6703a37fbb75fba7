"""Source identities and the project lockfile (``<config stem>.lock.json``).

A source's *identity* says which content a cube was built from without reading
pixels: a local file's size and sha256, an object's ETag or version id, a Zenodo
record version and file md5, STAC item ids with their ``updated`` stamps, Earth
Engine image ids with ``system:version``. Only the ``content`` part of an identity
is compared (an mtime or Last-Modified alone changes without the bytes changing);
the ``info`` part is kept for people reading the lock.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from . import __version__
from .config.model import Config, SourceConfig
from .config.redact import Masker
from .cube import open_params_for
from .errors import MultistoreError
from .plan import CubePlan, Plan
from .stores.contract import file_path, file_store, source_identifier
from .stores.pool import CACHE_FOLDER, StorePool

log = logging.getLogger(__name__)

LOCK_VERSION = 1
HASH_BLOCK = 4 * 1024 * 1024  # streamed: memory stays flat whatever the file size
# name in the lock -> distribution names (xcube is published as xcube-core on PyPI)
_PACKAGES = {
    "xcube": ("xcube-core", "xcube"),
    "numpy": ("numpy",),
    "dask": ("dask",),
    "zarr": ("zarr",),
    "xarray": ("xarray",),
}
# fsspec ``info`` keys that identify a remote object's content, by the name used in the lock
_REMOTE_CONTENT = {
    "etag": ("ETag", "etag", "Etag"),
    "version_id": ("VersionId", "version_id"),
    "size": ("size",),
}
_REMOTE_INFO = {"last_modified": ("LastModified", "last_modified", "Last-Modified")}


class LockMismatchError(MultistoreError):
    """``generate --locked``: the sources (or config) no longer match the lockfile."""

    def __init__(self, differences: list[str], lock_path: Path):
        self.differences = differences
        self.lock_path = lock_path
        lines = "\n".join(f"  {d}" for d in differences)
        super().__init__(f"{len(differences)} difference(s) from {lock_path}:\n{lines}")


def lock_path_for(config: Config) -> Path:
    """``<config folder>/<config stem>.lock.json``."""
    if config.path is None:
        raise MultistoreError("a config given as a dict has no file to put a lock next to")
    return config.path.with_name(f"{config.path.stem}.lock.json")


def source_key(source: SourceConfig) -> str:
    return f"{source.store}:{source.data_id}"


def digest(obj: Any) -> str:
    """A stable hash of JSON-able data (sorted keys)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def content_digest(identity: Mapping[str, Any]) -> str:
    return digest(identity.get("content", identity))


def sources_digest(identities: Mapping[str, Mapping[str, Any]]) -> str:
    """The digest of a cube's source identities (cube attrs and completion marker)."""
    return digest({k: content_digest(v) for k, v in sorted(identities.items())})


class HashCache:
    """sha256 of local files, reused while a file's size and mtime stay the same.

    Kept in ``.multistore-cache/hashes.json`` next to the config; one instance per run.
    """

    def __init__(self, path: Path | None):
        self._path = path
        self._lock = threading.Lock()
        self._entries: dict[str, list[Any]] = {}
        self._dirty = False
        if path is not None and path.is_file():
            try:
                self._entries = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                log.warning("ignoring unreadable hash cache %s: %s", path, e)

    def sha256(self, path: str, size: int, mtime_ns: int) -> str:
        key = os.path.abspath(path)
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None and hit[0] == size and hit[1] == mtime_ns:
            return hit[2]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(HASH_BLOCK):
                h.update(block)
        value = h.hexdigest()
        with self._lock:
            self._entries[key] = [size, mtime_ns, value]
            self._dirty = True
        return value

    def save(self) -> None:
        if self._path is None or not self._dirty:
            return
        with self._lock:
            text = json.dumps(self._entries, sort_keys=True)
            self._dirty = False
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(text)
            os.replace(tmp, self._path)
        except OSError as e:  # a cache: losing it costs time, not correctness
            log.warning("could not save the hash cache %s: %s", self._path, e)


@dataclass
class SourceResolver:
    """Resolves source identities of one config, each source once per instance."""

    config: Config
    stores: StorePool

    def __post_init__(self) -> None:
        self.hashes = HashCache(self.config.base_dir / CACHE_FOLDER / "hashes.json")
        self._done: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def identity(self, source: SourceConfig, cube: CubePlan | None = None) -> dict[str, Any]:
        """The identity of ``source``; a failure is recorded (``error``), not raised,
        so the build itself reports why the source cannot be read."""
        params = dict(source.open_params)
        key = (source.store, source.data_id, digest(params))
        with self._lock:
            if key in self._done:
                return self._done[key]
        try:
            identity = self._resolve(source, cube)
        except Exception as e:
            identity = {"content": {"error": f"{type(e).__name__}: {e}"}}
        identity = {"store": source.store, "data_id": source.data_id, **identity}
        with self._lock:
            self._done[key] = identity
        return identity

    def cube_identities(self, cube: CubePlan) -> dict[str, dict[str, Any]]:
        return {source_key(s): self.identity(s, cube) for s in cube.dataset.sources}

    def _resolve(self, source: SourceConfig, cube: CubePlan | None) -> dict[str, Any]:
        store = self.stores[source.store]
        identifier = source_identifier(store)
        if identifier is not None:
            grid = cube.grid if cube is not None else None
            params = open_params_for(source, store, grid)
            return identifier.source_identity(source.data_id, **params)
        files = file_store(store)
        if files is None or files.fs is None:
            store_id = self.config.store(source.store).store_id
            return {"content": {"unresolved": f"no identity for store_id {store_id!r}"}}
        return path_identity(files.fs, file_path(files, source.data_id), self.hashes)


def path_identity(fs: Any, path: str, hashes: HashCache) -> dict[str, Any]:
    """Identity of a file or a folder (e.g. a Zarr) on an fsspec filesystem."""
    info = fs.info(path)
    if info.get("type") != "directory":
        return _file_identity(fs, path, info, hashes)
    files = fs.find(path, detail=True)
    members = {
        name[len(path.rstrip("/")) + 1 :]: _file_identity(fs, name, detail, hashes)
        for name, detail in sorted(files.items())
    }
    return {
        "content": {
            "files": len(members),
            "size": sum(int(m["content"].get("size") or 0) for m in members.values()),
            "members_digest": digest({k: m["content"] for k, m in members.items()}),
        }
    }


def _is_local(fs: Any) -> bool:
    protocol = fs.protocol
    protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol)
    return "file" in protocols or "local" in protocols


def _file_identity(fs: Any, path: str, info: Mapping[str, Any], hashes: HashCache) -> dict:
    if _is_local(fs):
        stat = os.stat(path)
        sha = hashes.sha256(path, stat.st_size, stat.st_mtime_ns)
        return {
            "content": {"size": stat.st_size, "sha256": sha},
            "info": {"mtime_ns": stat.st_mtime_ns},
        }
    content = _pick(info, _REMOTE_CONTENT)
    extra = _pick(info, _REMOTE_INFO)
    if "etag" not in content and "version_id" not in content:
        content.update(extra)  # nothing better identifies the content
    return {"content": content, "info": extra}


def _pick(info: Mapping[str, Any], keys: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
    picked: dict[str, Any] = {}
    for name, candidates in keys.items():
        value = next((info[c] for c in candidates if info.get(c) not in (None, "")), None)
        if value is not None:
            picked[name] = value if isinstance(value, int | float) else str(value)
    return picked


def library_versions() -> dict[str, str]:
    versions = {"multistore": __version__}
    for name, distributions in _PACKAGES.items():
        versions[name] = "not installed"
        for dist in distributions:
            try:
                versions[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    try:
        import rasterio

        versions["gdal"] = rasterio.__gdal_version__
    except ImportError:  # pragma: no cover
        versions["gdal"] = "not installed"
    return versions


def hook_hashes(config: Config, cubes: Iterable[CubePlan]) -> dict[str, str]:
    paths = set()
    for cube in cubes:
        hooks = [s.custom_processing for s in cube.dataset.sources]
        hooks.append(cube.dataset.custom_processing)
        paths.update(h.module_path for h in hooks if h is not None)
    out = {}
    for p in sorted(paths):
        try:
            value = hashlib.sha256(Path(p).read_bytes()).hexdigest()
        except OSError:
            value = "missing"
        out[_relative(p, config.base_dir)] = value
    return out


def _relative(path: Path, base: Path) -> str:
    try:
        return str(Path(path).relative_to(base))
    except ValueError:
        return str(path)


def config_fingerprint(config: Config) -> str:
    from .config import redact

    return digest(redact(dict(config.raw), config.secret_values))


def build_lock(
    config: Config,
    plan: Plan,
    identities: Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> dict[str, Any]:
    """The lock document for ``plan`` given each cube's source identities."""
    datasets = {}
    for cube in plan.cubes:
        ids = identities.get(cube.identifier)
        if ids is None:
            continue
        datasets[cube.identifier] = {
            "fingerprint": cube.fingerprint,
            "sources_digest": sources_digest(ids),
            "sources": {k: dict(v) for k, v in sorted(ids.items())},
        }
    return {
        "lock_version": LOCK_VERSION,
        "config": config.path.name if config.path else None,
        "config_fingerprint": config_fingerprint(config),
        "hooks": hook_hashes(config, plan.cubes),
        "versions": library_versions(),
        "datasets": datasets,
    }


def resolve_lock(config: Config, stores: StorePool, plan: Plan) -> dict[str, Any]:
    """Resolve every source of ``plan`` (no pixels read) into a lock document."""
    resolver = SourceResolver(config, stores)
    try:
        identities = {c.identifier: resolver.cube_identities(c) for c in plan.cubes}
    finally:
        resolver.hashes.save()
    return build_lock(config, plan, identities)


def lock_text(lock: Mapping[str, Any], secrets: Iterable[str] = ()) -> str:
    """Stable, diff-friendly JSON (sorted keys, one field a line); secrets masked."""
    text = json.dumps(lock, sort_keys=True, indent=1, default=str) + "\n"
    # the config's credentials in every form, and secret-named query values (?token=, ?sig=)
    return Masker(secrets)(text)


def write_lock(config: Config, lock: Mapping[str, Any], merge: bool = True) -> Path:
    """Write the lock next to the config; datasets not in ``lock`` keep their old entries."""
    path = lock_path_for(config)
    lock = dict(lock)
    if merge:
        old = read_lock_file(path)
        if old is not None:
            lock["datasets"] = {**old.get("datasets", {}), **lock.get("datasets", {})}
            lock["hooks"] = {**old.get("hooks", {}), **lock.get("hooks", {})}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(lock_text(lock, config.secret_values))
    os.replace(tmp, path)
    return path


def read_lock_file(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise MultistoreError(f"unreadable lockfile {path}: {e}") from e


def compare_locks(locked: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Each difference that changes what a build reads, one line each (versions excluded)."""
    out: list[str] = []
    old_sets = locked.get("datasets") or {}
    for ident, now in (current.get("datasets") or {}).items():
        was = old_sets.get(ident)
        if was is None:
            out.append(f"{ident}: not in the lock")
            continue
        if was.get("fingerprint") != now.get("fingerprint"):
            out.append(
                f"{ident}: config changed (fingerprint {was.get('fingerprint')} -> "
                f"{now.get('fingerprint')})"
            )
        old_sources = was.get("sources") or {}
        for key, identity in (now.get("sources") or {}).items():
            before = old_sources.get(key)
            if before is None:
                out.append(f"{ident}: source {key} not in the lock")
                continue
            for change in _content_changes(before.get("content"), identity.get("content")):
                out.append(f"{ident}: source {key} changed: {change}")
        for key in old_sources:
            if key not in (now.get("sources") or {}):
                out.append(f"{ident}: locked source {key} is no longer used")
    old_hooks = locked.get("hooks") or {}
    for path, value in (current.get("hooks") or {}).items():
        if path in old_hooks and old_hooks[path] != value:
            out.append(f"hook {path} changed (sha256 {old_hooks[path][:12]} -> {value[:12]})")
    return out


def version_changes(locked: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    old = locked.get("versions") or {}
    now = current.get("versions") or {}
    return [
        f"{name} {old.get(name)} -> {now.get(name)}"
        for name in sorted(set(old) | set(now))
        if old.get(name) != now.get(name)
    ]


def _content_changes(before: Any, after: Any) -> list[str]:
    if before == after:
        return []
    if not isinstance(before, Mapping) or not isinstance(after, Mapping):
        return [f"{_short(before)} -> {_short(after)}"]
    changes = []
    for field in sorted(set(before) | set(after)):
        a, b = before.get(field), after.get(field)
        if a == b:
            continue
        if field in ("items", "images") and isinstance(a, list) and isinstance(b, list):
            changes.extend(_list_changes(field, a, b))
        else:
            changes.append(f"{field} {_short(a)} -> {_short(b)}")
    return changes


def _list_changes(field: str, before: list, after: list) -> list[str]:
    """Items/images by id: which are new, gone, or changed."""
    old = {e.get("id"): e for e in before if isinstance(e, Mapping)}
    new = {e.get("id"): e for e in after if isinstance(e, Mapping)}
    changes = [f"{field}: new {i}" for i in new if i not in old]
    changes += [f"{field}: gone {i}" for i in old if i not in new]
    changes += [
        f"{field}: {i} changed ({', '.join(_content_changes(old[i], new[i]))})"
        for i in new
        if i in old and old[i] != new[i]
    ]
    return changes or [f"{field} changed"]


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
