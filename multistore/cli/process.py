"""Process-wide memory settings of the ``multistore`` command (never of the library).

A build allocates and frees tens of megabytes per tile in every worker thread
(source windows, gathered planes). glibc returns such blocks to the kernel
(``munmap``, heap trimming) and the next tile faults the same pages in again,
zeroed: about 10 µs per 4 KiB page on a virtual machine. Keeping freed memory
inside the process removes most of those faults (docs/performance.md); peak
memory is unchanged because the next tile reuses the same blocks.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

# mallopt(3) parameters
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

# Allocations below this come from the heap and are reused; 32 MiB is glibc's maximum.
MMAP_THRESHOLD = 32 * 2**20
# Free memory at the top of a heap is kept up to this much before it is returned.
TRIM_THRESHOLD = 256 * 2**20
TOP_PAD = 64 * 2**20


def keep_freed_memory() -> bool:
    """Apply the settings above through glibc's ``mallopt``; False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: keep their defaults
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = all(
        mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (_M_TOP_PAD, TOP_PAD),
        )
    )
    if not ok:
        log.debug("mallopt refused a setting; glibc defaults stay partly in place")
    return ok
