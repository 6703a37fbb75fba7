"""The order cubes must be generated in: a dataset after the dataset whose grid it borrows."""

from __future__ import annotations

from .model import Config, DatasetConfig


def grid_source(config: Config, dataset: DatasetConfig) -> DatasetConfig | None:
    """The dataset whose written cube defines ``dataset``'s grid, if any.

    A ``grid_mappings`` identifier wins over a dataset identifier of the same name.
    """
    name = dataset.grid_mapping
    if name is None or config.grid_mapping(name) is not None:
        return None
    return config.dataset(name)


def generation_order(config: Config) -> tuple[tuple[DatasetConfig, ...], ...]:
    """Datasets in waves: each wave depends only on earlier waves; config order within a wave.

    ``load_config`` has rejected cycles, so every dataset lands in some wave.
    """
    level: dict[str, int] = {}

    def depth(ds: DatasetConfig) -> int:
        if ds.identifier not in level:
            source = grid_source(config, ds)
            level[ds.identifier] = 0 if source is None else depth(source) + 1
        return level[ds.identifier]

    waves: dict[int, list[DatasetConfig]] = {}
    for ds in config.datasets:
        waves.setdefault(depth(ds), []).append(ds)
    return tuple(tuple(waves[i]) for i in sorted(waves))
