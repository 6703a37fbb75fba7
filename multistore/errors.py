"""One error root for multistore, with specific subclasses.

Like rasterio, classes also inherit the matching builtin where one exists, so
callers can catch either ``MultistoreError`` or e.g. ``OSError``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class MultistoreError(Exception):
    """Root of every error multistore raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One problem in a config file, with the place it was found."""

    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class ConfigError(MultistoreError, ValueError):
    """A config file is invalid. Carries every problem found, not only the first."""

    def __init__(self, problems: Iterable[Problem], source: str | None = None):
        self.problems: tuple[Problem, ...] = tuple(problems)
        self.source = source
        head = f"invalid config {source}" if source else "invalid config"
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{head} ({len(self.problems)} problem(s)):\n{lines}")


class DatasetError(MultistoreError):
    """Generating one dataset failed; the others carry on."""


class SourceOpenError(DatasetError, OSError):
    """A source could not be opened from its data store."""


class ProcessingError(DatasetError):
    """A user's custom_processing hook raised or returned something unusable."""


class RegridError(DatasetError, ValueError):
    """A source cannot be put onto the target grid."""


class NoOverlapError(RegridError):
    """The source does not overlap the target grid at all."""


class SourceGridError(RegridError):
    """The source's spatial reference (CRS, coordinates) cannot be understood."""


class WriteError(DatasetError, OSError):
    """Writing a cube into the storage store failed."""


class StoreError(MultistoreError, OSError):
    """A data store failed to list, describe, open or preload data."""


class PreloadError(StoreError):
    """Preloading (download, verify, unpack, convert) failed."""


class ChecksumError(PreloadError):
    """A downloaded file does not match its published checksum."""


class UnsafeArchiveError(PreloadError):
    """An archive tries to write outside its folder or is a decompression bomb."""


class FilterError(DatasetError, ValueError):
    """A search constraint (bbox, time range, property filter) cannot be understood."""


class FetchError(SourceOpenError):
    """Pixels could not be fetched from a remote service (after retries, or a permanent error)."""

    def __init__(self, message: str, status: int | None = None, permanent: bool = False):
        super().__init__(message)
        self.status = status
        self.permanent = permanent


class NoItemsError(SourceOpenError):
    """A catalog search found no items for a dataset's query (no empty cube is written)."""


class UnknownNameError(MultistoreError, KeyError):
    """A lookup by identifier (dataset, cube, store) found nothing; names the known ones."""

    def __init__(self, what: str, name: str, known: Iterable[str]):
        self.what = what
        self.name = name
        self.known: tuple[str, ...] = tuple(known)
        listed = ", ".join(repr(k) for k in self.known) or "none"
        super().__init__(f"no {what} {name!r} (known: {listed})")

    def __str__(self) -> str:  # KeyError would repr() the message, quotes and all
        return str(self.args[0])

    def __reduce__(self):  # picklable (e.g. raised in a dask worker) despite the signature
        return type(self), (self.what, self.name, self.known)
