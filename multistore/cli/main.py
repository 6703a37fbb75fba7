"""The click group; commands live in their own modules."""

from __future__ import annotations

import gc

import click

from .. import __version__
from .demo import demo
from .describe import describe
from .ee import ee
from .generate import generate
from .lock import lock
from .plan import plan
from .process import defer_unused_imports, keep_freed_memory
from .schema import schema
from .search import search
from .serve import serve
from .status import status
from .validate import validate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="multistore")
def main() -> None:
    """Build analysis-ready datacubes from many sources, driven by one YAML config."""


for command in (validate, plan, generate, lock, status, schema, describe, search, demo, ee, serve):
    main.add_command(command)

try:  # the STAC commands need the stac store's optional pieces
    from .stac import stac
except ImportError:  # pragma: no cover
    pass
else:
    main.add_command(stac)


def run() -> None:
    """The ``multistore`` console command: ``main`` with process-wide settings.

    Freed memory stays in the process and two unused imports of xcube's are
    deferred (see ``process.py``), and at the end
    everything still alive is frozen for the GC, since the process exit frees it
    anyway: that spares the interpreter's teardown collections (0.5 s after a build,
    docs/performance.md).
    """
    keep_freed_memory()
    defer_unused_imports()
    try:
        main()
    finally:
        gc.freeze()
