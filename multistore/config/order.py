"""The order cubes must be generated in: a dataset after the dataset whose grid it borrows.

The one dependency ordering of the product: ``plan.build_plan`` and ``generation_order``
both use ``dependency_levels``. (``checks`` reports cycles with their config locations
before a ``Config`` exists.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..errors import ConfigError, Problem
from .model import Config, DatasetConfig


def grid_source(config: Config, dataset: DatasetConfig) -> DatasetConfig | None:
    """The dataset whose written cube defines ``dataset``'s grid, if any.

    A ``grid_mappings`` identifier wins over a dataset identifier of the same name.
    """
    name = dataset.grid_mapping
    if name is None or config.grid_mapping(name) is not None:
        return None
    return config.dataset(name)


def grid_dependencies(config: Config) -> dict[str, tuple[str, ...]]:
    """Per dataset identifier: the datasets it must wait for (the one whose grid it borrows)."""
    deps = {}
    for ds in config.datasets:
        source = grid_source(config, ds)
        deps[ds.identifier] = (source.identifier,) if source is not None else ()
    return deps


def dependency_levels(deps: Mapping[str, tuple[str, ...]], order: Sequence[str]) -> list[list[str]]:
    """``deps``' keys in levels: each level depends only on earlier ones; ``order`` within one."""
    remaining = dict(deps)
    done: set[str] = set()
    levels: list[list[str]] = []
    while remaining:
        ready = [i for i in order if i in remaining and set(remaining[i]) <= done]
        if not ready:
            cycle = " -> ".join(sorted(remaining))
            raise ConfigError(
                [Problem("datasets", f"grid_mapping dependencies form a cycle: {cycle}")]
            )
        levels.append(ready)
        done.update(ready)
        for i in ready:
            del remaining[i]
    return levels


def generation_order(config: Config) -> tuple[tuple[DatasetConfig, ...], ...]:
    """Datasets in waves: each wave depends only on earlier waves; config order within a wave."""
    order = [d.identifier for d in config.datasets]
    levels = dependency_levels(grid_dependencies(config), order)
    return tuple(tuple(config.dataset(i) for i in level) for level in levels)
