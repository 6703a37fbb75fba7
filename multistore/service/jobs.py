"""Jobs: checking the configs sent, and a runner that builds them through ``generate``
(state in ``jobstore.JobStore``)."""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..config import load_config
from ..config.model import Config
from ..config.redact import Masker
from ..errors import ConfigError, MultistoreError, Problem
from ..status import DatasetResult, Status, StatusBoard
from .jobstore import JobStore
from .security import config_problems, http_env

log = logging.getLogger(__name__)


class JobCancelled(MultistoreError):
    """Raised into a running build at its next status change once its job is cancelled."""


class JobRejected(MultistoreError):
    """A submitted config is invalid or not allowed; carries located problems."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = tuple(problems)
        super().__init__("; ".join(map(str, self.problems)))


@dataclass(frozen=True)
class ServiceSettings:
    state: Path
    allow_roots: tuple[Path, ...]
    allow_hooks: bool = False
    max_jobs: int = 2
    env: Mapping[str, str] = field(default_factory=http_env)


def load_request_config(text: str, settings: ServiceSettings) -> Config:
    """Parse and check a config sent over HTTP; ``JobRejected`` with located problems."""
    base = settings.allow_roots[0] if settings.allow_roots else settings.state
    with tempfile.TemporaryDirectory(prefix="multistore-serve-") as tmp:
        path = Path(tmp) / "config.yml"
        path.write_text(text, encoding="utf-8")
        try:
            config = load_config(path, base_dir=base, env=settings.env)
        except ConfigError as e:
            raise JobRejected(
                [Problem(p.location.replace(str(path), "config"), p.message) for p in e.problems]
            ) from None
    problems = config_problems(config, settings.allow_roots, settings.allow_hooks)
    if problems:
        raise JobRejected(problems)
    return _with_quicklooks(config, text)


def _with_quicklooks(config: Config, text: str) -> Config:
    """The page shows quick-looks: draw them unless the config says otherwise."""
    general = config.raw.get("general") if isinstance(config.raw, Mapping) else None
    if isinstance(general, Mapping) and "quicklook" in general:
        return config
    return replace(config, general=replace(config.general, quicklook=True))


class Runner:
    """Runs queued jobs, at most ``max_jobs`` at once, each through ``generate``."""

    def __init__(self, store: JobStore, settings: ServiceSettings):
        self.store = store
        self.settings = settings
        self._pool = ThreadPoolExecutor(
            max(1, settings.max_jobs), thread_name_prefix="multistore-job"
        )
        self._cancel: dict[str, threading.Event] = {}
        self._stopping = threading.Event()
        self._guard = threading.Lock()

    def start(self) -> None:
        self.store.requeue_interrupted()
        for job in self.store.queued():
            self.submit(job)

    def submit(self, job: str) -> None:
        with self._guard:
            self._cancel.setdefault(job, threading.Event())
        self._pool.submit(self._run, job)

    def cancel(self, job: str) -> bool:
        if self.store.cancel_queued(job):
            return True
        with self._guard:
            flag = self._cancel.get(job)
        row = self.store.row(job)
        if flag is None or row is None or row["status"] != "running":
            return False
        flag.set()
        self.store.log(job, "cancel requested")
        return True

    def stop(self) -> None:
        """Stop taking jobs; running ones stop at their next status change and stay
        ``running`` in the store, so the next start re-queues them."""
        self._stopping.set()
        with self._guard:
            for flag in self._cancel.values():
                flag.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self, job: str) -> None:
        if self._stopping.is_set() or not self.store.claim(job):
            return
        flag = self._cancel[job]
        try:
            self._build(job, flag)
        except Exception as e:  # never lose a job to an unexpected error: fail it, say why
            log.exception("job %s failed", job)
            if not self._stopping.is_set():
                self.store.set_status(job, "failed", f"{type(e).__name__}", finished=time.time())
        finally:
            with self._guard:
                self._cancel.pop(job, None)

    def _build(self, job: str, flag: threading.Event) -> None:
        from ..api import MultiSourceDataStore

        row = self.store.row(job)
        text = self.store.config_file(job).read_text(encoding="utf-8")
        mask = Masker()
        try:
            if row["trusted"]:
                config = load_config(row["source"])
                config = _with_quicklooks(config, text)
            else:
                # the lock of what the job used goes next to the job's own copy of the config
                config = replace(
                    load_request_config(text, self.settings), path=self.store.config_file(job)
                )
        except (JobRejected, ConfigError) as e:
            problems = getattr(e, "problems", ())
            self.store.set_status(
                job,
                "failed",
                "; ".join(map(str, problems)) or "invalid config",
                finished=time.time(),
            )
            return
        mask = Masker(config.secret_values)
        board = StatusBoard()
        board.subscribe(self._listener(job, flag, mask))
        datasets = json.loads(row["datasets"]) if row["datasets"] else None
        try:
            report = MultiSourceDataStore(config).generate(
                datasets, force=bool(row["force"]), display="none", board=board
            )
        except Exception as e:
            if self._stopping.is_set():
                return
            self.store.set_status(
                job, "failed", mask(f"{type(e).__name__}: {e}"), finished=time.time()
            )
            return
        if self._stopping.is_set():
            return  # left running: the next start resumes it
        if flag.is_set():
            self.store.set_status(job, "cancelled", finished=time.time())
        elif report.ok:
            self.store.set_status(job, "completed", finished=time.time())
        else:
            failed = ", ".join(r.identifier for r in report.failed)
            self.store.set_status(job, "failed", mask(f"failed: {failed}"), finished=time.time())

    def _listener(
        self, job: str, flag: threading.Event, mask: Masker
    ) -> Callable[[DatasetResult], None]:
        last: dict[str, tuple[str, str, float]] = {}

        def listen(result: DatasetResult) -> None:
            if flag.is_set() and not result.status.is_final:
                # fails the dataset where it is (generate catches it per dataset)
                raise JobCancelled("job cancelled")
            progress = round(result.progress or 0.0, 2)
            key = (str(result.status), result.message, progress)
            if last.get(result.identifier) == key:
                return  # progress finer than 1 %: not worth a write or an event
            last[result.identifier] = key
            self.store.result(job, result, mask)
            message = mask(result.message or "")
            self.store.event(
                job,
                {
                    "type": "dataset",
                    "identifier": result.identifier,
                    "kind": result.kind,
                    "status": str(result.status),
                    "message": message,
                    "progress": result.progress,
                },
            )
            if result.status is not Status.WRITING or result.progress in (None, 0.0):
                self.store.log(job, f"{result.identifier}: {result.status} {message}".rstrip())

        return listen
