"""Options and error handling shared by the commands."""

from __future__ import annotations

import gc
import json
import logging
import sys
import threading
import warnings
from pathlib import Path
from types import TracebackType
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
_JSON_LOGS_KEY = "multistore.json_logs"

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
    """Every problem on stderr: one line each, or one JSON object each under ``--log-format json``."""
    if json_logs_enabled():
        for problem in error.problems:
            record = {
                "level": "ERROR",
                "logger": "multistore.config",
                "message": str(problem),
                "source": error.source,
                "location": problem.location,
            }
            click.echo(json.dumps(record), err=True)
        return
    source = f" in {error.source}" if error.source else ""
    click.echo(f"error: {len(error.problems)} problem(s){source}:", err=True)
    for problem in error.problems:
        click.echo(f"  {problem}", err=True)


def echo_error(message: str) -> None:
    """A message on stderr for the user, as JSON when the logs are JSON."""
    if json_logs_enabled():
        message = json.dumps({"level": "ERROR", "logger": "multistore", "message": message})
    click.echo(message, err=True)


def json_logs_enabled() -> bool:
    """Whether this command invocation writes JSON logs (kept in click's context, not a global)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().meta.get(_JSON_LOGS_KEY))


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


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record: tracebacks and stacks become fields, never extra lines."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str)


def setup_logging(verbose: int, json_logs: bool = False) -> None:
    """Log to stderr; with ``json_logs`` every stderr line the process writes is JSON.

    Warnings go through logging (``captureWarnings``), and uncaught exceptions of the
    main thread, of other threads and of ``__del__`` methods are logged as records
    instead of printed as raw tracebacks.
    """
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    if json_logs:
        handler.setFormatter(JsonLogFormatter())
        _route_uncaught_to_logging()
        ctx = click.get_current_context(silent=True)
        if ctx is not None:
            ctx.find_root().meta[_JSON_LOGS_KEY] = True
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.captureWarnings(True)
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


def _route_uncaught_to_logging() -> None:
    """Tracebacks Python would print itself are logged instead (so they are JSON too)."""
    log = logging.getLogger("multistore")

    def excepthook(kind: type[BaseException], error: BaseException, tb: TracebackType | None):
        log.critical("uncaught %s: %s", kind.__name__, error, exc_info=(kind, error, tb))

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread else "?"
        log.error(
            "uncaught %s in thread %s: %s",
            args.exc_type.__name__,
            name,
            args.exc_value,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )

    def unraisablehook(unraisable: sys.UnraisableHookArgs) -> None:
        error = unraisable.exc_value
        log.warning(
            "%s in %r",
            unraisable.err_msg or "Exception ignored",
            unraisable.object,
            exc_info=(unraisable.exc_type, error, unraisable.exc_traceback) if error else None,
        )

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook
    sys.unraisablehook = unraisablehook
