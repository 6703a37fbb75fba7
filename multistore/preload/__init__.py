"""Generic preload machinery: download, verify, unpack, convert, cache, record.

Store-independent, so any store that downloads files (Zenodo today) can
reuse it.
"""

from ..retry import RetryPolicy
from .archive import ArchiveLimits, archive_stem, unpack_archive
from .cache import PreloadCache
from .download import RemoteFile, download_file
from .events import PreloadEvent, ProgressCallback
from .http import new_session
from .manifest import Manifest, PreloadOutput, PreloadRecord
from .process import PreloadOptions, process_file

__all__ = [
    "ArchiveLimits",
    "Manifest",
    "PreloadCache",
    "PreloadEvent",
    "PreloadOptions",
    "PreloadOutput",
    "PreloadRecord",
    "ProgressCallback",
    "RemoteFile",
    "RetryPolicy",
    "archive_stem",
    "download_file",
    "new_session",
    "process_file",
    "unpack_archive",
]
