from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..errors import ConfigError
from .common import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    config_argument,
    echo_error,
    load_api,
    load_or_exit,
    report_config_error,
    setup_logging,
)


@click.command()
@config_argument
@click.option(
    "--dataset", "-d", "datasets", multiple=True, help="Only these datasets (repeatable)."
)
@click.option("--force", is_flag=True, help="Rebuild cubes even when complete and unchanged.")
@click.option(
    "--locked",
    is_flag=True,
    help="Build only if every source still matches <config stem>.lock.json "
    "(exit code 2 naming each difference).",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "rich", "log", "json", "none"]),
    default=None,
    help="Status display (default: general.display of the config, else auto).",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option(
    "--submit-only",
    is_flag=True,
    help="Only start the Earth Engine export tasks (export_via) and return; a later "
    "generate reads the finished exports (see `multistore ee tasks/wait`).",
)
def generate(
    config_path: Path,
    datasets: tuple[str, ...],
    force: bool,
    locked: bool,
    log_format: str | None,
    verbose: int,
    submit_only: bool,
) -> None:
    """Generate the cubes of CONFIG into its storage store. Exit code 1 if any dataset failed."""
    setup_logging(verbose, json_logs=log_format == "json")  # first: imports may warn
    MultiSourceDataStore = load_api()
    from ..lock import LockMismatchError

    msds = MultiSourceDataStore(load_or_exit(config_path))
    if submit_only:
        from .ee import submit_exports

        try:
            raise SystemExit(submit_exports(msds, datasets or None))
        except ConfigError as e:
            report_config_error(e)
            raise SystemExit(EXIT_BAD_INPUT) from None
    try:
        report = msds.generate(datasets or None, force=force, display=log_format, locked=locked)
    except ConfigError as e:
        report_config_error(e)
        raise SystemExit(EXIT_BAD_INPUT) from None
    except LockMismatchError as e:
        click.echo(f"error: sources differ from {e.lock_path.name}:", err=True)
        for line in e.differences:
            click.echo(f"  {line}", err=True)
        raise SystemExit(EXIT_BAD_INPUT) from None
    except KeyboardInterrupt:
        echo_error("interrupted: unfinished cubes will be rebuilt by the next run")
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)  # worker threads may still be inside GDAL; do not wait
    raise SystemExit(report.exit_code)
