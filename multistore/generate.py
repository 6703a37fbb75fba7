"""Execute a plan: preload, then build cube after cube, each failing alone.

Cubes of one dependency level run concurrently (``general.max_parallel_datasets``
orchestrating threads); their pixel work all goes through the one dask runner.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import xarray as xr

from .config.model import STORAGE_STORE, Config, PreloadConfig
from .config.redact import Masker
from .cube import Scratch, build_cube, open_params_for
from .diskspace import explain, storage_os_error
from .errors import DatasetError, SourceOpenError, UnknownNameError, WriteError
from .grid import TargetGrid
from .lock import SourceResolver, content_digest, sources_digest
from .locks import CubeLock, Lease
from .native import download_groups
from .plan import CubePlan, Plan
from .preload.process import comes_from
from .quicklook import quicklook_path, write_quicklook
from .retry import with_retries
from .scheduler import DaskRunner
from .status import DatasetResult, Status, StatusBoard
from .storage import (
    CubeState,
    StorageTarget,
    cube_state,
    remove_partial_cube,
    remove_scratch,
    write_marker,
)
from .stores.contract import export_releaser, monitored_preloader, reporting_progress
from .stores.pool import StorePool
from .writer import write_levels, write_netcdf, write_zarr

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunReport:
    """The outcome of ``generate``: one result per dataset (and per preload job)."""

    results: tuple[DatasetResult, ...]

    @property
    def datasets(self) -> tuple[DatasetResult, ...]:
        return tuple(r for r in self.results if r.kind == "dataset")

    @property
    def failed(self) -> tuple[DatasetResult, ...]:
        return tuple(r for r in self.results if r.status is Status.FAILED)

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def __getitem__(self, identifier: str) -> DatasetResult:
        for result in self.results:
            if result.identifier == identifier:
                return result
        raise UnknownNameError("result", identifier, (r.identifier for r in self.results))

    def _repr_html_(self) -> str:
        from .display.notebook import results_html

        return results_html(list(self.results), "multistore run")


def preload_label(preload: PreloadConfig) -> str:
    return f"preload {preload.store}: {', '.join(preload.data_ids)}"


class Generator:
    def __init__(
        self,
        config: Config,
        stores: StorePool,
        board: StatusBoard,
        runner: DaskRunner,
        force: bool = False,
        resolver: SourceResolver | None = None,
    ):
        self.config = config
        self.stores = stores
        self.board = board
        self.runner = runner
        self.force = force
        self.resolver = resolver or SourceResolver(config, stores)
        # cube identifier -> the identities of the sources it was built from (or skipped as)
        self.identities: dict[str, dict[str, dict]] = {}
        # cubes that failed in this run: the engine's state, the board only displays it
        self.failed: set[str] = set()
        self._scrub = Masker(config.secret_values)
        # store identifier -> (failed preload job, its scrubbed reason), for cubes that need them
        self._failed_preloads: dict[str, list[tuple[PreloadConfig, str]]] = {}

    # -- preload ---------------------------------------------------------------------

    def preload(self) -> None:
        for preload in self.config.preload_datasets:
            label = preload_label(preload)
            self.board.update(label, status=Status.PRELOADING, kind="preload")
            try:
                self._preload_one(preload, label)
            except Exception as e:
                self._fail(label, e)
                reason = self.board.get(label).message or type(e).__name__
                self._failed_preloads.setdefault(preload.store, []).append((preload, reason))
            else:
                self.board.update(label, status=Status.COMPLETED, message="preloaded")

    def _preload_one(self, preload: PreloadConfig, label: str) -> None:
        store = self.stores[preload.store]
        params = dict(preload.preload_params)
        if monitored_preloader(store) is not None:

            def progress(event) -> None:
                total = getattr(event, "bytes_total", None)
                done = getattr(event, "bytes_done", None)
                share = done / total if total and done is not None else None
                phase = getattr(event, "phase", "")
                message = f"{phase} {getattr(event, 'data_id', '')}".strip()
                self.board.update(label, progress=share, message=message)

            params["progress"] = progress
            if self.config.general.force_preload:
                params.setdefault("force", True)
        store.preload_data(*preload.data_ids, **params)

    # -- cubes -----------------------------------------------------------------------

    def run(self, plan: Plan) -> RunReport:
        for preload in self.config.preload_datasets:
            self.board.add(preload_label(preload), kind="preload")
        for cube in plan.cubes:
            self.board.add(cube.identifier)
        self.preload()
        workers = max(1, self.config.general.max_parallel_datasets)
        pool = ThreadPoolExecutor(workers, thread_name_prefix="multistore-cube")
        try:
            for level in plan.levels:
                list(pool.map(self._run_one, [plan.cube(i) for i in level]))
        except KeyboardInterrupt:
            # Unfinished cubes keep no completion marker, so the next run rebuilds them.
            for result in self.board.results():
                if not result.status.is_final:
                    self.board.update(
                        result.identifier, status=Status.FAILED, message="interrupted"
                    )
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        return RunReport(tuple(self.board.results()))

    def _run_one(self, cube: CubePlan) -> None:
        """Build ``cube`` holding its lock, so a second run on this storage waits its turn."""
        ident = cube.identifier

        def waiting(holder: Lease | None, path: str) -> None:
            who = holder.describe() if holder else "another run"
            message = f"waiting: {cube.output} is being written by {who} (lock {path})"
            log.warning("%s: %s", ident, message)
            self.board.update(ident, message=message)

        try:
            lock = CubeLock(StorageTarget(self.stores.storage, cube.output))
            lock.acquire(on_wait=waiting)
        except Exception as e:
            self._fail(ident, e)
            return
        try:
            self._run_locked(cube)
        finally:
            lock.release()

    def _run_locked(self, cube: CubePlan) -> None:
        ident = cube.identifier
        for dep in cube.depends_on:
            if dep in self.failed:
                self.board.update(
                    ident, status=Status.FAILED, message=f"grid source {dep!r} failed"
                )
                return
        writing = False
        try:
            target = StorageTarget(self.stores.storage, cube.output)
            state = cube_state(target, cube.fingerprint)
            identities = None
            if state is CubeState.COMPLETE and not self.force:
                # complete for this config: still the same sources?
                identities = self._identities(cube)
                state = cube_state(target, cube.fingerprint, sources_digest(identities))
            if state is CubeState.COMPLETE and not self.force:
                message = f"complete for this config ({cube.fingerprint})"
                message += self._missing_quicklook(ident, target)
                self.board.update(ident, status=Status.SKIPPED, output=target.path, message=message)
                return
            if cube.dataset.format_id == "geotiff":
                self._download_native(cube, target, identities)
                return
            grid = cube.grid or self._borrowed_grid(cube)
            scratch = self._scratch(target)

            def opening(done: float, total: float, message: str | None = None) -> None:
                changes: dict[str, object] = {"progress": done / total if total else None}
                if message:
                    changes["message"] = message
                self.board.update(ident, **changes)

            with reporting_progress(opening):
                ds = build_cube(
                    cube,
                    self.config,
                    self.stores,
                    grid,
                    step=lambda s: self.board.update(ident, status=Status(s)),
                    scratch=scratch,
                )
            # after opening, so a source that cannot be opened fails with the open's error
            identities = identities or self._identities(cube)
            ds.attrs["multistore_sources_digest"] = sources_digest(identities)
            self.board.update(
                ident,
                status=Status.WRITING,
                progress=0.0,
                output=target.path,
                message=_describe(ds),
            )
            writing = True
            self._write(cube, ds, target, {k: content_digest(v) for k, v in identities.items()})
            remove_scratch(target)
        except (Exception, SystemExit) as e:  # sys.exit() in hook code fails this cube only
            error = self._drop_partial_cube(target, ds, e) if writing else e
            self._fail(ident, self._blame_failed_preload(cube, error))
            return
        message = _describe(ds)
        released = self._release_exports(cube, grid, scratch)
        if released:
            message += f"; {released}"
        if self.config.general.quicklook:
            try:
                write_quicklook(target, self.runner.compute)
            except Exception as e:  # the cube itself is complete; say so, do not fail it
                log.warning("quick-look of %s failed", ident, exc_info=e)
                message += f"; quick-look failed: {type(e).__name__}: {e}"
        self.board.update(ident, status=Status.COMPLETED, progress=None, message=message)

    def _download_native(
        self, cube: CubePlan, target: StorageTarget, identities: dict[str, dict] | None
    ) -> None:
        """``format_id: geotiff``: one GeoTIFF per image, per alignment group (native.py)."""
        ident = cube.identifier
        self.board.update(ident, status=Status.WRITING, progress=0.0, output=target.path,
                          message="native-grid download")  # fmt: skip
        run = download_groups(
            self.config, self.stores, cube, self.runner.compute, self.force,
            progress=lambda share: self.board.update(ident, progress=share),
        )  # fmt: skip
        if run.failed:
            reasons = "; ".join(f"{g}: {run.groups[g].get('error')}" for g in run.failed)
            raise WriteError(f"{len(run.failed)} of {len(run.groups)} group(s) failed: {reasons}")
        identities = identities or self._identities(cube)
        marker = xr.Dataset(attrs={"multistore_sources_digest": sources_digest(identities)})
        sources = {k: content_digest(v) for k, v in identities.items()}
        write_marker(target, cube.fingerprint, marker, sources)
        self.board.update(ident, status=Status.COMPLETED, progress=None, message=run.summary())

    def _identities(self, cube: CubePlan) -> dict[str, dict]:
        identities = self.resolver.cube_identities(cube)
        self.identities[cube.identifier] = identities
        return identities

    def _blame_failed_preload(self, cube: CubePlan, error: Exception) -> Exception:
        """A cube that cannot open data whose preload failed says so, not "preload it first"."""
        if not isinstance(error, SourceOpenError):
            return error
        for source in cube.dataset.sources:
            for preload, reason in self._failed_preloads.get(source.store, []):
                key = next((k for k in preload.data_ids if comes_from(source.data_id, k)), None)
                if key is None:
                    continue
                blamed = SourceOpenError(
                    f"{source.location or source.identifier}: {source.data_id!r} comes from "
                    f"the preload of {key!r} in store {source.store!r}, which failed: {reason}"
                )
                blamed.__cause__ = error
                return blamed
        return error

    def _drop_partial_cube(
        self, target: StorageTarget, ds: xr.Dataset, error: Exception
    ) -> Exception:
        """Remove what a failed write left (it is rebuilt from scratch anyway, and would keep
        a full disk full); say how much space the cube needs when the storage was the cause.

        The scratch folder (resumable downloads of stores) is kept for the next run.
        """
        try:
            remove_partial_cube(target)
        except Exception as cleanup:  # report the write error, not the cleanup's
            log.warning("could not remove the partial cube %s: %s", target.path, cleanup)
        cause = storage_os_error(error)
        if cause is None:
            return error
        needed = sum(int(v.nbytes) for v in ds.data_vars.values())
        message = explain(cause, target.path, needed)
        explained = WriteError(
            f"writing {target.output} failed: {message} (uncompressed size, an upper bound); "
            "the partial cube was removed"
        )
        explained.__cause__ = error
        return explained

    def _missing_quicklook(self, ident: str, target: StorageTarget) -> str:
        """Draw the quick-look of a complete cube that lacks one (a run killed after the
        completion marker, or ``quicklook`` switched on later); a note for the message."""
        if not self.config.general.quicklook or target.fs.exists(quicklook_path(target)):
            return ""
        try:
            write_quicklook(target, self.runner.compute)
        except Exception as e:
            log.warning("quick-look of %s failed", ident, exc_info=e)
            return f"; quick-look failed: {type(e).__name__}: {e}"
        return "; missing quick-look drawn"

    def _release_exports(self, cube: CubePlan, grid: TargetGrid | None, scratch: Scratch) -> str:
        """Let stores that exported data for the cube (Earth Engine batch exports) delete it,
        now that the cube is complete. Best effort: the cube stays complete on failure."""
        notes = []
        for source in cube.dataset.sources:
            store = self.stores[source.store]
            releaser = export_releaser(store)
            if releaser is None:
                continue
            try:
                params = open_params_for(source, store, grid, scratch)
                deleted = releaser.release_exports(source.data_id, **params)
            except Exception as e:
                log.warning("cleaning up the exports of %s failed", source.data_id, exc_info=e)
                notes.append(f"exports of {source.identifier} not deleted: {type(e).__name__}")
                continue
            if deleted:
                notes.append(f"{deleted} export(s) of {source.identifier} deleted")
        return "; ".join(notes)

    def _scratch(self, target: StorageTarget) -> Scratch:
        protocol = target.fs.protocol
        protocol = protocol if isinstance(protocol, str) else protocol[0]
        if protocol in ("file", "local"):
            return Scratch(target.scratch_path)
        options = self.config.store(STORAGE_STORE).store_params.get("storage_options")
        return Scratch(f"{protocol}://{target.scratch_path}", options)

    def _borrowed_grid(self, cube: CubePlan) -> TargetGrid | None:
        if cube.grid_from is None:
            return None
        source = self.config.dataset(cube.grid_from)
        if source.format_id == "levels":  # level 0 is the cube at full resolution
            ds = self.stores.storage.open_data(source.file_name, data_type="dataset")
        else:
            ds = self.stores.storage.open_data(source.file_name)
        return TargetGrid.from_dataset(ds)

    def _write(
        self, cube: CubePlan, ds: xr.Dataset, target: StorageTarget, sources: dict[str, str]
    ) -> None:
        def progress(share: float) -> None:
            self.board.update(cube.identifier, progress=share)

        def compute(obj):
            return self.runner.compute(obj, progress=progress)

        def compute_writes(writes):
            return self.runner.compute_in_waves(writes, progress=progress)

        def write() -> None:
            if cube.dataset.format_id == "netcdf":
                write_netcdf(ds, target, cube.fingerprint, compute, sources)
            elif cube.dataset.format_id == "levels":
                write_levels(ds, target, cube.fingerprint, compute, sources)
            else:
                write_zarr(
                    ds, target, cube.fingerprint, compute, self.config.general.zarr_format,
                    sources, compute_writes,
                )  # fmt: skip

        # A retry rewrites the cube from scratch, so a transient failure leaves nothing half-done.
        with_retries(write, self.config.general.retries, f"writing {cube.output}", classify=_cause)

    def _fail(self, ident: str, error: BaseException) -> None:
        log.debug("%s failed", ident, exc_info=error)
        message = (
            str(error) if isinstance(error, DatasetError) else f"{type(error).__name__}: {error}"
        )
        message = self._scrub(" ".join(message.split()))
        self.failed.add(ident)
        self.board.update(ident, status=Status.FAILED, message=message, error=error)


def _cause(error: BaseException) -> BaseException:
    """WriteError wraps the I/O error that decides whether a retry can help."""
    return error.__cause__ if isinstance(error, WriteError) and error.__cause__ else error


def _describe(ds: xr.Dataset) -> str:
    first = next(iter(ds.data_vars.values()), None)
    dims = tuple(first.dims) if first is not None else tuple(ds.dims)
    shape = "x".join(str(ds.sizes[d]) for d in dims)
    mb = sum(v.nbytes for v in ds.data_vars.values()) / 1e6
    return f"{len(ds.data_vars)} var(s), {shape} ({', '.join(map(str, dims))}), {mb:.1f} MB raw"
