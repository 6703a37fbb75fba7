"""Process-wide settings of the console command."""

from __future__ import annotations

import platform
import subprocess
import sys


def test_glibc_accepts_every_malloc_setting():
    """True where glibc takes every setting, False (untouched defaults) elsewhere."""
    # in a child process: the settings are process-wide and the test process keeps its own
    code = "from multistore.cli.process import keep_freed_memory; print(keep_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(platform.libc_ver()[0] == "glibc")


def test_library_import_leaves_the_process_alone():
    code = "import gc, multistore.api; print(gc.isenabled(), gc.get_freeze_count() == 0)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_the_command_defers_what_xcube_imports_but_never_uses():
    """scipy.stats loads on first use, IPython is not imported, and both still work."""
    code = """
import sys
from multistore.cli.process import defer_unused_imports
print(defer_unused_imports())
import xcube.core.store, xcube.core.subsampling
print("scipy.stats._stats_py" in sys.modules, "IPython" in sys.modules)
import numpy as np
from scipy import stats
print(int(stats.mode(np.array([3, 1, 3])).mode), "scipy.stats._stats_py" in sys.modules)
import IPython
print(IPython.get_ipython())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "['scipy.stats', 'IPython']",
        "False False",
        "3 True",
        "None",
    ]


def test_formatters_are_still_registered_where_ipython_runs():
    code = """
import sys, IPython
from multistore.cli.process import defer_unused_imports
calls = []
IPython.get_ipython = lambda: calls.append("asked")  # no shell here; count the questions
defer_unused_imports()
import xcube.util.jsonschema
print(bool(calls))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True"]


def test_the_deferred_module_is_imported_once_whichever_threads_ask_first():
    """xcube's mode runs in dask's worker threads: all of them get the real function."""
    code = """
import sys, threading
from multistore.cli.process import defer_unused_imports
defer_unused_imports()
import numpy as np
from xcube.core import subsampling
results, barrier = [], threading.Barrier(8)
def use():
    barrier.wait()
    results.append(int(subsampling.stats.mode(np.array([2, 5, 5])).mode))
threads = [threading.Thread(target=use) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(results, sys.modules["scipy.stats"].mode is subsampling.stats.mode)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("]")[0] == "[" + ", ".join(["5"] * 8)
    assert out.stdout.strip().endswith("True")
