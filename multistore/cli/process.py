"""Process-wide settings of the ``multistore`` command (never of the library).

Memory: a build allocates and frees tens of megabytes per tile in every worker thread
(source windows, gathered planes). glibc returns such blocks to the kernel
(``munmap``, heap trimming) and the next tile faults the same pages in again,
zeroed: about 10 µs per 4 KiB page on a virtual machine. Keeping freed memory
inside the process removes most of those faults (docs/performance.md); peak
memory is unchanged because the next tile reuses the same blocks.

Start-up: ``import xcube.core.store`` pulls in two modules that a command never
uses, about 1 s of its start (docs/performance.md); see :func:`defer_unused_imports`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import importlib.util
import logging
import sys
import threading
import types
from typing import Any

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


def defer_unused_imports() -> list[str]:
    """Keeps ``scipy.stats`` and IPython out of the command's start-up; returns what it deferred.

    - xcube imports ``scipy.stats`` at the top of its subsampling module for one
      function (``mode``). It is imported on its first attribute access instead, by
      xcube or anyone else (:class:`_DeferredModule`).
    - xcube registers notebook formatters at import time, importing IPython to ask
      whether a shell is running. In a process that has not imported IPython no
      shell is running, and the registration does nothing; it is skipped there.
      IPython itself stays importable.

    Call it before anything imports xcube; what is already imported is left alone.
    """
    deferred = []
    if "scipy.stats" not in sys.modules and _lazy_module("scipy.stats"):
        deferred.append("scipy.stats")
    if "xcube.util.jsonschema" not in sys.modules and _register_formatters_in_shells_only():
        deferred.append("IPython")
    return deferred


def _lazy_module(name: str) -> bool:
    try:
        found = importlib.util.find_spec(name) is not None
    except ImportError:
        return False
    if found:
        sys.modules[name] = _DeferredModule(name)
        parent, _, child = name.rpartition(".")
        setattr(sys.modules[parent], child, sys.modules[name])
    return found


class _DeferredModule(types.ModuleType):
    """Stands in for a module until an attribute is asked for, then imports it, once.

    Not ``importlib.util.LazyLoader``: on Python 3.11 a second thread that asks
    while the first one executes the module sees it empty, and xcube's ``mode`` runs
    in dask's worker threads. The real module replaces this one in ``sys.modules``;
    whoever holds this one has the attributes forwarded.
    """

    def __init__(self, name: str):
        super().__init__(name)
        self._lock = threading.RLock()
        self._module: types.ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        with self._lock:  # reentrant: the import itself may ask this stand-in again
            if self._module is None:
                parent, _, child = self.__name__.rpartition(".")
                if sys.modules.get(self.__name__) is self:
                    del sys.modules[self.__name__]
                if getattr(sys.modules[parent], child, None) is self:
                    delattr(sys.modules[parent], child)
                self._module = importlib.import_module(self.__name__)
                setattr(sys.modules[parent], child, self._module)
        return getattr(self._module, attr)


def _register_formatters_in_shells_only() -> bool:
    try:
        from xcube.util import ipython
    except ImportError:
        return False
    register = getattr(ipython, "register_json_formatter", None)
    if register is None:
        return False

    def register_in_shell(cls: type, *args: Any, **kwargs: Any) -> None:
        if "IPython" in sys.modules:
            register(cls, *args, **kwargs)

    ipython.register_json_formatter = register_in_shell
    return True
