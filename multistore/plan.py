"""Turn a config into an ordered, inspectable build plan (no pixels are read here)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config.model import Config, DatasetConfig
from .config.order import dependency_levels, grid_dependencies
from .config.redact import Masker
from .errors import ConfigError, Problem, UnknownNameError
from .grid import TargetGrid

# Bump when the bytes multistore writes for an unchanged config change.
OUTPUT_FORMAT_VERSION = 1


@dataclass(frozen=True)
class CubePlan:
    """One cube to build: what, where, on which grid, after which other cubes."""

    dataset: DatasetConfig
    output: str  # path inside the storage store
    fingerprint: str
    grid: TargetGrid | None  # from a grid_mappings entry; None = native or borrowed grid
    grid_from: str | None  # identifier of the dataset whose cube defines the grid
    depends_on: tuple[str, ...]
    # sha256 of each hook file as hashed into the fingerprint; the build runs exactly these
    hook_hashes: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def identifier(self) -> str:
        return self.dataset.identifier


@dataclass(frozen=True)
class Plan:
    cubes: tuple[CubePlan, ...]  # in build order
    levels: tuple[tuple[str, ...], ...]  # cubes in one level do not depend on each other

    def cube(self, identifier: str) -> CubePlan:
        for cube in self.cubes:
            if cube.identifier == identifier:
                return cube
        raise UnknownNameError("cube", identifier, self.identifiers)

    @property
    def identifiers(self) -> tuple[str, ...]:
        return tuple(c.identifier for c in self.cubes)


def build_plan(config: Config, datasets: Iterable[str] | None = None) -> Plan:
    """Order the selected datasets (plus the cubes whose grids they borrow) by dependency."""
    known = {d.identifier: d for d in config.datasets}
    selected = list(datasets) if datasets else list(known)
    unknown = [d for d in selected if d not in known]
    if unknown:
        raise ConfigError(
            [
                Problem("--dataset", f"{d!r} is not defined (defined: {', '.join(known)})")
                for d in unknown
            ]
        )
    deps = grid_dependencies(config)
    wanted: list[str] = []
    stack = list(selected)
    while stack:
        ident = stack.pop()
        if ident not in wanted:
            wanted.append(ident)
            stack.extend(deps[ident])
    levels = dependency_levels({i: deps[i] for i in wanted}, order=list(known))
    fingerprints: dict[str, str] = {}
    cubes: list[CubePlan] = []
    for level in levels:
        for ident in level:
            ds = known[ident]
            gm = config.grid_mapping(ds.grid_mapping) if ds.grid_mapping else None
            grid = (
                TargetGrid.from_bbox(gm.bbox, gm.crs, gm.spatial_res, gm.tile_size) if gm else None
            )
            hook_hashes = {str(p): _file_hash(p) for p in _hook_paths(ds)}
            fingerprints[ident] = fingerprint(
                config, ds, grid, [fingerprints[d] for d in deps[ident]], hook_hashes
            )
            cubes.append(
                CubePlan(
                    dataset=ds,
                    output=ds.file_name,
                    fingerprint=fingerprints[ident],
                    grid=grid,
                    grid_from=deps[ident][0] if deps[ident] else None,
                    depends_on=deps[ident],
                    hook_hashes=hook_hashes,
                )
            )
    return Plan(cubes=tuple(cubes), levels=tuple(tuple(level) for level in levels))


def fingerprint(
    config: Config,
    dataset: DatasetConfig,
    grid: TargetGrid | None,
    dep_fingerprints: list[str],
    hook_hashes: Mapping[str, str] | None = None,
) -> str:
    """A hash of everything that determines a cube's bytes: sources, stores, grid, hooks.

    Secrets are masked before hashing, so rotating a key does not rebuild cubes.
    """
    stores = {s.store for s in dataset.sources}
    payload = {
        "format": OUTPUT_FORMAT_VERSION,
        "dataset": _plain(dataclasses.asdict(dataset)),
        "stores": {
            s.identifier: {"store_id": s.store_id, "params": _plain(s.store_params)}
            for s in config.data_stores
            if s.identifier in stores
        },
        "grid": grid.to_dict() if grid else None,
        "depends_on": dep_fingerprints,
        "hooks": (
            dict(hook_hashes)
            if hook_hashes is not None
            else {str(p): _file_hash(p) for p in _hook_paths(dataset)}
        ),
        "zarr_format": config.general.zarr_format,
    }
    text = Masker(config.secret_values)(json.dumps(payload, sort_keys=True, default=str))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _hook_paths(ds: DatasetConfig) -> list[Path]:
    hooks = [s.custom_processing for s in ds.sources] + [ds.custom_processing]
    paths = {h.module_path for h in hooks if h is not None}
    for s in ds.sources:  # Earth Engine's server-side hooks (made absolute by the loader)
        hook = s.open_params.get("image_hook")
        if isinstance(hook, Mapping) and isinstance(hook.get("module_path"), str):
            paths.add(Path(hook["module_path"]))
    return sorted(paths)


def _file_hash(path: Path) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "missing"


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj
