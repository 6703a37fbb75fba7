"""Options and error handling shared by the commands."""

from __future__ import annotations

import gc
import logging
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console

from ..config import Config, load_config
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..api import MultiSourceDataStore

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

config_argument = click.argument(
    "config_path", metavar="CONFIG", type=click.Path(dir_okay=False, path_type=Path)
)


def load_api() -> type[MultiSourceDataStore]:
    """Import the API and its scientific stack with the cyclic GC paused, then freeze it.

    Imported modules live until exit; left to the GC they are walked again by every full
    collection of the run and once more at interpreter teardown (about 1 s of a CLI run,
    docs/performance.md). Imported lazily so that ``multistore --help`` stays fast.
    """
    if "multistore.api" in sys.modules:  # freeze once per process, not per command
        from ..api import MultiSourceDataStore

        return MultiSourceDataStore
    gc.disable()
    try:
        from ..api import MultiSourceDataStore
    finally:
        gc.freeze()
        gc.enable()
    return MultiSourceDataStore


def report_config_error(error: ConfigError) -> None:
    source = f" in {error.source}" if error.source else ""
    click.echo(f"error: {len(error.problems)} problem(s){source}:", err=True)
    for problem in error.problems:
        click.echo(f"  {problem}", err=True)


def load_or_exit(path: Path) -> Config:
    """Load a config; on any problem print each with its location and exit with code 2."""
    try:
        return load_config(path)
    except ConfigError as e:
        report_config_error(e)
        sys.exit(EXIT_BAD_INPUT)


def quiet_known_warnings() -> None:
    """Upstream warnings users cannot act on (the library itself leaves warnings alone)."""
    # rasterio, from GDAL warps of plain arrays in worker threads (harmless)
    warnings.filterwarnings("ignore", message="Dataset has no geotransform")
    # rioxarray, called by xcube's GeoTIFF opener
    warnings.filterwarnings("ignore", message="Supplying chunks as dimension-order tuples")


def setup_logging(verbose: int, json_logs: bool = False) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    fmt = (
        '{"level": "%(levelname)s", "logger": "%(name)s", "message": %(message)r}'
        if json_logs
        else "%(levelname)s %(name)s: %(message)s"
    )
    handler.setFormatter(logging.Formatter(fmt))
    if verbose < 2:
        quiet_known_warnings()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("multistore").setLevel(level)
    for noisy in ("werkzeug", "botocore", "urllib3", "distributed", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)


def console() -> Console:
    """A rich console; wide when writing to a pipe so tables stay greppable."""
    return Console() if sys.stdout.isatty() else Console(width=200)
