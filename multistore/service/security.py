"""What the service refuses: wrong tokens, local paths outside ``--allow-root``, hooks, escapes.

The service runs configs sent by others, so every local path a config names (store
roots, data ids of local stores, hook files) must lie under an allowed root, hooks
(arbitrary code) run only with ``--allow-hooks``, and no request path leaves storage.
"""

from __future__ import annotations

import hmac
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config.model import Config, DaskConfig
from ..config.resolve import is_url
from ..errors import Problem

#: Only these environment variables are visible to configs sent over HTTP: a config
#: could otherwise copy any server credential (``${AWS_SECRET_ACCESS_KEY}``) into a
#: request to a server of its choice.
HTTP_ENV_PREFIXES = ("MULTISTORE_CONFIG_", "MULTISTORE_DEMO_")
TOKEN_ENV = "MULTISTORE_TOKEN"
LOCAL_STORE_IDS = frozenset({"file"})
# general.dask keys that start processes or jobs, or send tasks elsewhere
_DASK_PLACEMENT_KEYS = (
    "address", "n_workers", "threads_per_worker", "cluster", "cores", "memory", "walltime",
    "queue", "account", "job_extra_directives", "adapt",
)  # fmt: skip
# store_params keys (at any depth) that name a local folder or file
_PATH_KEY_SUFFIXES = ("root", "path", "dir", "directory", "folder")


class PathRefused(ValueError):
    """A request path that would leave storage (``..``, absolute, symlink)."""


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison: the time taken tells nothing about the token."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def http_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a config sent over HTTP may interpolate (never the token)."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if k.startswith(HTTP_ENV_PREFIXES) and k != TOKEN_ENV}


def _under(path: Path, roots: Sequence[Path]) -> bool:
    real = Path(os.path.realpath(path))
    return any(real == r or r in real.parents for r in roots)


def _path_params(params: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(params, Mapping):
        for key, value in params.items():
            here = f"{where}.{key}"
            if (
                isinstance(key, str)
                and isinstance(value, str)
                and key.lower().endswith(_PATH_KEY_SUFFIXES)
                and not is_url(value)
            ):
                yield here, value
            else:
                yield from _path_params(value, here)
    elif isinstance(params, list | tuple):
        for i, value in enumerate(params):
            yield from _path_params(value, f"{where}[{i}]")


def dask_problems(dask: DaskConfig, cores: int | None = None) -> list[Problem]:
    """A config sent over HTTP runs in the server's threads: it may not send its tasks (and
    the credentials in them) to a scheduler of its choice, start processes or batch jobs
    (``job_extra_directives`` are lines of a job script), nor ask for more threads than cores."""
    cores = cores or os.cpu_count() or 1
    where = "general.dask"
    problems = []
    if dask.scheduler not in ("threads", "synchronous"):
        problems.append(
            Problem(f"{where}.scheduler", "the service runs jobs in its own threads: "
                    "use threads or synchronous")
        )  # fmt: skip
    defaults = DaskConfig()
    for key in _DASK_PLACEMENT_KEYS:
        if getattr(dask, key) != getattr(defaults, key):
            problems.append(
                Problem(f"{where}.{key}", "a config sent to the service cannot choose where or "
                        "in which processes its tasks run")
            )  # fmt: skip
    if dask.num_workers is not None and dask.num_workers > cores:
        problems.append(Problem(f"{where}.num_workers", f"at most {cores} (the server's cores)"))
    return problems


def config_problems(
    config: Config, allow_roots: Sequence[Path], allow_hooks: bool
) -> list[Problem]:
    """Located reasons to refuse ``config`` from a request (empty: it may run)."""
    roots = [Path(os.path.realpath(r)) for r in allow_roots]
    shown = ", ".join(map(str, roots)) or "(none)"
    problems: list[Problem] = dask_problems(config.general.dask)
    file_roots: dict[str, Path] = {}
    for i, store in enumerate(config.data_stores):
        where = f"data_stores[{i}].store_params"
        for location, value in _path_params(store.store_params, where):
            path = Path(value)
            if not path.is_absolute():
                path = config.base_dir / path
            if not _under(path, roots):
                problems.append(
                    Problem(location, f"local path outside the allowed roots ({shown})")
                )
        if store.store_id in LOCAL_STORE_IDS:
            root = store.store_params.get("root")
            if not isinstance(root, str) or is_url(root):
                problems.append(Problem(f"{where}.root", "a local store needs a local root"))
            else:
                file_roots[store.identifier] = Path(os.path.realpath(root))
    for ds in config.datasets:
        hooks = [(f"{ds.location}.custom_processing", ds.custom_processing)]
        for source in ds.sources:
            hooks.append((f"{source.location}.custom_processing", source.custom_processing))
            image_hook = source.open_params.get("image_hook")
            if isinstance(image_hook, Mapping):
                hooks.append((f"{source.location}.open_params.image_hook", image_hook))
            root = file_roots.get(source.store)
            if root is not None:
                data_id = source.data_id
                target = Path(os.path.realpath(root / data_id))
                if Path(data_id).is_absolute() or not (target == root or root in target.parents):
                    problems.append(
                        Problem(f"{source.location}.data_id", "leaves the root of its store")
                    )
        for location, hook in hooks:
            if hook is None:
                continue
            if not allow_hooks:
                problems.append(
                    Problem(location, "hooks run arbitrary code: refused (serve --allow-hooks)")
                )
                continue
            module = hook.get("module_path") if isinstance(hook, Mapping) else hook.module_path
            if module is not None and not _under(Path(str(module)), roots):
                problems.append(
                    Problem(f"{location}.module_path", f"outside the allowed roots ({shown})")
                )
    return problems


def safe_file(root: Path, relative: str) -> Path:
    """``root/relative`` if it is a regular file reached without ``..``, absolute parts or
    symlinks; raise ``PathRefused`` (escape attempts) or ``FileNotFoundError``."""
    if not relative or relative.startswith("/") or "\\" in relative or "\x00" in relative:
        raise PathRefused(f"refused path {relative!r}")
    parts = relative.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise PathRefused(f"refused path {relative!r}")
    current = root
    for part in parts:
        current = current / part
        mode = os.lstat(current).st_mode  # FileNotFoundError when missing
        if stat.S_ISLNK(mode):
            raise PathRefused(f"refused path {relative!r}: symbolic link")
    if not stat.S_ISREG(mode):
        raise FileNotFoundError(relative)  # folders are never listed
    return current
