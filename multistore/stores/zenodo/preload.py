"""Preload one file of a record: download (resumable, verified), unpack, convert, commit
to the cache, with progress events and a cross-process lock per file."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from xcube.core.store import PreloadHandle, PreloadState, PreloadStatus

from ...errors import PreloadError
from ...locks import Lease
from ...preload.cache import PreloadCache
from ...preload.download import RemoteFile, download_file, remove_partial
from ...preload.events import Phase, PreloadEvent, ProgressCallback
from ...preload.manifest import PreloadRecord
from ...preload.process import PreloadOptions, process_file
from ...retry import RetryPolicy
from .api import ZenodoClient, ZenodoFile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransferSettings:
    """How one ``preload_data`` call downloads: its shared transfer pool and range split size."""

    executor: Executor
    split_bytes: int | None


@dataclass(frozen=True)
class RecordPreloader:
    """Preloads the files of one record into its cache (one ``preload_file`` call per file,
    run by xcube's preload handle)."""

    source: str
    record_id: str
    client: ZenodoClient
    cache: PreloadCache
    policy: RetryPolicy
    timeout: float

    def preload_file(
        self,
        handle: PreloadHandle,
        key: str,
        *,
        files: dict[str, ZenodoFile],
        force: bool,
        options: PreloadOptions,
        progress: ProgressCallback | None,
        failures: dict[str, BaseException],
        transfer: TransferSettings,
        started: threading.Event,
    ) -> None:
        started.wait()
        emit = functools.partial(self._emit, handle, progress, key)
        try:
            with self._file_lock(key, emit):
                self._steps(handle, files[key], force, options, emit, transfer)
        except BaseException as e:
            failures[key] = e
            emit("failed", message=str(e))
            handle.notify(PreloadState(key, status=PreloadStatus.failed, exception=e))
            raise
        handle.notify(PreloadState(key, status=PreloadStatus.completed))

    @contextmanager
    def _file_lock(self, key: str, emit: functools.partial) -> Iterator[None]:
        """Held while one file is preloaded: another run preloading it waits, saying so."""
        lock = self.cache.lock(f"{self.source}/{key}")

        def waiting(holder: Lease | None, path: str) -> None:
            who = holder.describe() if holder else "another run"
            emit("waiting", message=f"being preloaded by {who} (lock {path})")

        lock.acquire(on_wait=waiting)
        try:
            yield
        finally:
            lock.release()

    def _steps(
        self,
        handle: PreloadHandle,
        file: ZenodoFile,
        force: bool,
        options: PreloadOptions,
        emit: functools.partial,
        transfer: TransferSettings,
    ) -> None:
        key = file.key
        label = f"Zenodo record {self.record_id}, file {key!r}"
        manifest = self.cache.manifest
        if not force and manifest.current(self.source, key, file.checksum) is not None:
            emit("skipped", message="already preloaded")
            return
        remote = RemoteFile(
            url=self.client.download_url(self.record_id, key),
            key=key,
            label=label,
            size=file.size,
            md5=file.md5,
        )
        manifest.remove(key)
        if force:
            remove_partial(self.cache.partial_dir, remote)
        with self.cache.workdir() as work:
            local = download_file(
                self.client.session,
                remote,
                work / key,
                partial_dir=self.cache.partial_dir,
                policy=self.policy,
                timeout=self.timeout,
                progress=lambda done, total: emit("download", bytes_done=done, bytes_total=total),
                cancelled=lambda: handle.cancelled,
                on_verify=lambda: emit("verify", message="checking md5"),
                split_bytes=transfer.split_bytes,
                executor=transfer.executor,
            )
            try:
                processed = process_file(
                    local,
                    key,
                    work,
                    options,
                    progress=lambda phase, done, total: emit(
                        phase, files_done=done, files_total=total
                    ),
                )
            except PreloadError as e:
                raise type(e)(f"Zenodo record {self.record_id}, {e}") from e
            for entry in processed.entries:
                self.cache.commit(entry.local, entry.name)
        manifest.put(PreloadRecord(self.source, key, file.checksum, file.size, processed.outputs))
        emit("done", message=f"{len(processed.outputs)} data id(s)")

    def _emit(
        self,
        handle: PreloadHandle,
        progress: ProgressCallback | None,
        key: str,
        phase: Phase,
        **fields: Any,
    ) -> None:
        event = PreloadEvent(store=self.source, data_id=key, phase=phase, **fields)
        if progress is not None:
            try:
                progress(event)
            except Exception:  # a broken display must not break the preload
                log.exception("preload progress callback failed")
        if phase not in ("done", "failed"):  # xcube's handle sets the final status itself
            message = f"{phase}: {event.message}" if event.message else phase
            handle.notify(PreloadState(key, progress=event.fraction, message=message))
