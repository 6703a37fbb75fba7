"""``MultiSourceDataStore``: the notebook/Python face of multistore.

Mirrors xcube-multistore's API (``generate``, ``display_config``,
``stores.storage.open_data``) and adds ``plan``, ``status`` and real results:
``generate`` returns a ``RunReport`` with one result per dataset.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xarray as xr
import yaml

from .config import Config, config_schema, load_config, redact
from .config.redact import Masker
from .cube import build_cube, open_params_for
from .display import live_display
from .gdalenv import apply_cache_max
from .generate import Generator, RunReport
from .grid import TargetGrid
from .lock import (
    LockMismatchError,
    SourceResolver,
    build_lock,
    compare_locks,
    content_digest,
    lock_path_for,
    read_lock_file,
    resolve_lock,
    sources_digest,
    version_changes,
    write_lock,
)
from .locks import read_lock
from .native import NativeRun, download_groups, native_groups
from .plan import CubePlan, Plan, build_plan
from .scheduler import dask_runner
from .scrub import ScrubbingFilter
from .status import StatusBoard
from .storage import CubeState, StorageTarget, cube_state, read_marker
from .stores.contract import request_planner
from .stores.pool import StorePool


@dataclass(frozen=True)
class CubeSummary:
    """What ``plan`` knows about a cube before any pixel is fetched."""

    identifier: str
    output: str
    grid: str
    sources: tuple[str, ...]
    dims: Mapping[str, int]
    variables: Mapping[str, str]  # name -> dtype
    chunks: Mapping[str, int]
    n_chunks: int
    raw_bytes: int  # uncompressed: an upper bound of the size on disk
    requests: str = ""  # for stores that plan their own requests (e.g. earthengine)
    error: str | None = None


@dataclass(frozen=True)
class CubeStatus:
    identifier: str
    output: str
    state: CubeState
    fingerprint: str
    completed: str | None = None
    writing: str | None = None  # the run holding the cube's lock, e.g. "process 12 on host"
    reason: str | None = None  # why stale, e.g. "source changed: local:dem.tif"


@dataclass(frozen=True)
class LockCheck:
    """``lock --check``: what differs from the lockfile (versions are reported apart)."""

    path: str
    differences: tuple[str, ...]
    version_changes: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.differences


class MultiSourceDataStore:
    """Build the cubes of one config: ``MultiSourceDataStore("config.yml").generate()``."""

    def __init__(self, config: Config | str | os.PathLike | Mapping[str, Any]):
        self.config: Config = config if isinstance(config, Config) else load_config(config)
        self.stores = StorePool(self.config.data_stores, self.config.base_dir)
        self._scrub = Masker(self.config.secret_values)

    # -- planning ----------------------------------------------------------------------

    def plan(self, datasets: Iterable[str] | None = None) -> Plan:
        return build_plan(self.config, datasets)

    def describe_plan(self, datasets: Iterable[str] | None = None) -> list[CubeSummary]:
        """Open every source lazily (metadata only) and measure the cubes to be written."""
        plan = self.plan(datasets)
        grids: dict[str, TargetGrid | None] = {}
        summaries = []
        for cube in plan.cubes:
            sources = tuple(self._scrub(f"{s.store}:{s.data_id}") for s in cube.dataset.sources)
            try:
                if cube.dataset.format_id == "geotiff":
                    summaries.append(self._native_summary(cube, sources))
                    continue
                grid = self._planned_grid(cube, grids)
                grids[cube.identifier] = grid
                ds = build_cube(cube, self.config, self.stores, grid)
                if grid is None:
                    grids[cube.identifier] = _native_grid(ds)
                summaries.append(_summarise(cube, grid, sources, ds, self._requests(cube, grid)))
            except Exception as e:
                grids.setdefault(cube.identifier, None)
                summaries.append(
                    CubeSummary(
                        cube.identifier,
                        cube.output,
                        "?",
                        sources,
                        {},
                        {},
                        {},
                        0,
                        0,
                        error=self._scrub(f"{type(e).__name__}: {e}"),
                    )
                )
        return summaries

    def _native_summary(self, cube: CubePlan, sources: tuple[str, ...]) -> CubeSummary:
        _, groups = native_groups(cube, self.stores)
        images = sum(len(ids) for ids in groups.values())
        grid = f"native: {len(groups)} alignment group(s), {images} image(s), one GeoTIFF each"
        return CubeSummary(cube.identifier, cube.output, grid, sources, {}, {}, {}, 0, 0)

    def _planned_grid(
        self, cube: CubePlan, grids: dict[str, TargetGrid | None]
    ) -> TargetGrid | None:
        if cube.grid is not None or cube.grid_from is None:
            return cube.grid
        grid = grids.get(cube.grid_from)
        if grid is None:
            raise ValueError(f"the grid of {cube.grid_from!r} is unknown (it failed to plan)")
        return grid

    def _requests(self, cube: CubePlan, grid: TargetGrid | None) -> str:
        """Request counts of stores that plan their own downloads (``plan_requests``)."""
        parts = []
        for source in cube.dataset.sources:
            store = self.stores[source.store]
            planner = request_planner(store)
            if planner is not None:
                params = open_params_for(source, store, grid)
                parts.append(
                    f"{source.identifier}: {planner.plan_requests(source.data_id, **params)}"
                )
        return "; ".join(parts)

    # -- generation ----------------------------------------------------------------------

    def generate(
        self,
        datasets: Iterable[str] | None = None,
        *,
        force: bool = False,
        display: str | None = None,
        locked: bool = False,
        board: StatusBoard | None = None,
    ) -> RunReport:
        """Build the selected cubes (all by default); complete, unchanged cubes are skipped.

        Writes the lock of the sources used next to the config. ``locked``: first check
        the sources against that lock and raise ``LockMismatchError`` on any difference.
        ``board``: a caller's board to follow the run on (the service streams its changes).
        """
        plan = self.plan(datasets)
        resolver = SourceResolver(self.config, self.stores)
        if locked:
            self._check_locked(plan, resolver)
        apply_cache_max(self.config.general.gdal_http_params)
        board = board if board is not None else StatusBoard()
        mode = display or self.config.general.display
        with (
            self._scrubbed_logs(),
            live_display(board, mode, title=self._title()),
            dask_runner(self.config.general.dask) as runner,
        ):
            generator = Generator(
                self.config, self.stores, board, runner, force=force, resolver=resolver
            )
            report = generator.run(plan)
        resolver.hashes.save()
        if self.config.path is not None and generator.identities:
            write_lock(self.config, build_lock(self.config, plan, generator.identities))
        return report

    def download_native(self, dataset: str, *, force: bool = False) -> NativeRun:
        """Native-grid download of ``dataset`` (one source, no grid mapping): one output per
        alignment group, ``<dataset>/<group>.zarr`` or (``format_id: geotiff``) one GeoTIFF
        per image, and ``<dataset>/manifest.json``. Complete groups are skipped unless
        ``force``. ``generate`` does the same for ``format_id: geotiff`` datasets."""
        [cube] = [c for c in self.plan([dataset]).cubes if c.identifier == dataset]
        with self._scrubbed_logs(), dask_runner(self.config.general.dask) as runner:
            return download_groups(self.config, self.stores, cube, runner.compute, force)

    def _check_locked(self, plan: Plan, resolver: SourceResolver) -> None:
        path = lock_path_for(self.config)
        locked = read_lock_file(path)
        if locked is None:
            raise LockMismatchError([f"no lockfile {path.name}; run `multistore lock`"], path)
        identities = {c.identifier: resolver.cube_identities(c) for c in plan.cubes}
        current = build_lock(self.config, plan, identities)
        differences = compare_locks(locked, current)
        if differences:
            raise LockMismatchError([self._scrub(d) for d in differences], path)
        for change in version_changes(locked, current):
            logging.getLogger(__name__).warning("locked build with another version: %s", change)

    def lock(self, datasets: Iterable[str] | None = None, *, write: bool = True) -> dict[str, Any]:
        """Resolve every source (no pixels read); write ``<config stem>.lock.json``."""
        plan = self.plan(datasets)
        lock = resolve_lock(self.config, self.stores, plan)
        if write:
            write_lock(self.config, lock, merge=datasets is not None)
        return lock

    def check_lock(self, datasets: Iterable[str] | None = None) -> LockCheck:
        """Compare the sources now with the lockfile, without building or writing anything."""
        path = lock_path_for(self.config)
        locked = read_lock_file(path)
        if locked is None:
            raise LockMismatchError([f"no lockfile {path.name}; run `multistore lock`"], path)
        current = self.lock(datasets, write=False)
        return LockCheck(
            str(path),
            tuple(self._scrub(d) for d in compare_locks(locked, current)),
            tuple(version_changes(locked, current)),
        )

    def status(self) -> list[CubeStatus]:
        """Which cubes in ``storage`` are complete, stale (config changed), incomplete or missing."""
        rows = []
        resolver = SourceResolver(self.config, self.stores)
        for cube in self.plan().cubes:
            target = StorageTarget(self.stores.storage, cube.output)
            marker = read_marker(target) or {}
            lease = read_lock(target)
            state = cube_state(target, cube.fingerprint)
            reason = None
            if state is CubeState.STALE:
                reason = "config changed"
            elif state is CubeState.COMPLETE and marker.get("sources_digest"):
                identities = resolver.cube_identities(cube)
                if sources_digest(identities) != marker["sources_digest"]:
                    state = CubeState.STALE
                    recorded = marker.get("sources") or {}
                    changed = [
                        k for k, v in identities.items() if recorded.get(k) != content_digest(v)
                    ]
                    reason = f"source changed: {', '.join(changed) or 'unknown'}"
            rows.append(
                CubeStatus(
                    cube.identifier,
                    target.path,
                    state,
                    cube.fingerprint,
                    marker.get("completed"),
                    lease.describe() if lease else None,
                    reason,
                )
            )
        resolver.hashes.save()
        return rows

    def open_cube(self, identifier: str) -> xr.Dataset:
        dataset = self.config.dataset(identifier)
        if dataset is None:
            raise KeyError(f"no dataset {identifier!r}")
        return self.stores.storage.open_data(dataset.file_name)

    # -- exploring -----------------------------------------------------------------------

    def config_yaml(self) -> str:
        return yaml.safe_dump(
            redact(dict(self.config.raw), self.config.secret_values), sort_keys=False
        )

    def display_config(self) -> None:
        """xcube-multistore's per-dataset table (HTML in Jupyter, text otherwise); secrets
        redacted. ``config_yaml()`` gives the whole config."""
        from .display import in_notebook
        from .display.overview import config_rows, table_html, table_text

        rows = config_rows(self.config)
        if in_notebook():
            from IPython.display import HTML, display

            display(HTML(table_html(rows)))
        else:
            print(table_text(rows))

    def display_geolocations(self, png_path: str | os.PathLike | None = None) -> Any:
        """Every cube's extent: an interactive map in Jupyter (folium, else ipyleaflet), else a
        PNG (written to ``png_path`` if given). Returns the map object or the PNG bytes."""
        from .display import in_notebook
        from .display.overview import extents, interactive_map, png_map

        boxes = extents(self.config, self.open_cube)
        if in_notebook() and png_path is None:
            m = interactive_map(boxes)
            if m is not None:
                return m
        png = png_map(boxes)
        if png_path is not None:
            Path(png_path).write_bytes(png)
        elif in_notebook():
            from IPython.display import Image, display

            display(Image(png))
        return png

    @staticmethod
    def get_config_schema() -> dict[str, Any]:
        return config_schema()

    def _title(self) -> str:
        return f"multistore: {self.config.path.name}" if self.config.path else "multistore"

    @contextmanager
    def _scrubbed_logs(self) -> Iterator[None]:
        names = ["multistore"] + [
            n for n in logging.root.manager.loggerDict if n.startswith("multistore.")
        ]
        filt = ScrubbingFilter(self._scrub)
        loggers = [logging.getLogger(n) for n in names]
        # handlers of the root logger see every record, also of loggers created later
        handlers = list(logging.getLogger().handlers)
        for target in (*loggers, *handlers):
            target.addFilter(filt)
        try:
            yield
        finally:
            for target in (*loggers, *handlers):
                target.removeFilter(filt)


def _native_grid(ds: xr.Dataset) -> TargetGrid | None:
    try:
        return TargetGrid.from_dataset(ds)
    except Exception:
        return None


def _summarise(
    cube: CubePlan, grid: TargetGrid | None, sources: tuple[str, ...], ds: xr.Dataset, requests: str
) -> CubeSummary:
    chunks = {str(d): int(c[0]) for d, c in ds.chunks.items()} if ds.chunks else {}
    n_chunks = 0
    for var in ds.data_vars.values():
        if var.chunks:
            count = 1
            for c in var.chunks:
                count *= len(c)
            n_chunks += count
    return CubeSummary(
        identifier=cube.identifier,
        output=cube.output,
        grid=grid.describe() if grid else "native grid of the source",
        sources=sources,
        dims={str(k): int(v) for k, v in ds.sizes.items()},
        variables={str(n): str(v.dtype) for n, v in ds.data_vars.items()},
        chunks=chunks,
        n_chunks=n_chunks,
        raw_bytes=int(sum(v.nbytes for v in ds.data_vars.values())),
        requests=requests,
    )
