"""Relative paths in a config mean "next to the config file", never the working directory."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FILE_STORE_ID = "file"


def is_url(value: str) -> bool:
    """A URL (``s3://b/k``, ``https://h/p``, ``file:///p``), not a local path."""
    return "://" in value


def resolve_path(value: str, base_dir: Path) -> Path:
    """``~`` expanded; relative paths joined to ``base_dir``; ``..`` normalised."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    return Path(os.path.normpath(path))


def module_path_candidates(module_path: str, base_dir: Path) -> list[Path]:
    """Files a ``custom_processing.module_path`` may mean, most literal first.

    xcube-multistore configs name modules (``scs4_modify_dataset``, ``pkg.hooks``)
    rather than files, so those spellings are tried as ``.py`` files too.
    """
    literal = resolve_path(module_path, base_dir)
    candidates = [literal]
    if literal.suffix != ".py":
        candidates.append(literal.with_name(literal.name + ".py"))
        candidates.append(literal / "__init__.py")
        if "." in module_path and "/" not in module_path and "\\" not in module_path:
            candidates.append(resolve_path(module_path.replace(".", "/") + ".py", base_dir))
    return list(dict.fromkeys(candidates))


def find_module_file(module_path: str, base_dir: Path) -> Path | None:
    return next((p for p in module_path_candidates(module_path, base_dir) if p.is_file()), None)


def resolve_store_params(
    store_id: str, store_params: Mapping[str, Any], base_dir: Path
) -> dict[str, Any]:
    """A copy of ``store_params`` with local roots made absolute.

    ``root`` of ``file`` stores, and ``cache_store_params.root`` when the cache
    store is ``file`` (xcube's default when ``cache_store_id`` is absent).
    """
    params = copy.deepcopy(dict(store_params))
    if store_id == FILE_STORE_ID:
        root = params.get("root", "")
        if isinstance(root, str) and not is_url(root):
            params["root"] = str(resolve_path(root, base_dir))
    cache_params = params.get("cache_store_params")
    if params.get("cache_store_id", FILE_STORE_ID) == FILE_STORE_ID and isinstance(
        cache_params, Mapping
    ):
        root = cache_params.get("root")
        if isinstance(root, str) and not is_url(root):
            params["cache_store_params"] = {
                **cache_params,
                "root": str(resolve_path(root, base_dir)),
            }
    return params
