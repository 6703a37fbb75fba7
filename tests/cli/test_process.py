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
