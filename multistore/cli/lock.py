"""``multistore lock``: pin what every source is, or report drift from the pin."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ConfigError
from .common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    config_argument,
    load_api,
    load_or_exit,
    report_config_error,
)


@click.command()
@config_argument
@click.option(
    "--dataset", "-d", "datasets", multiple=True, help="Only these datasets (repeatable)."
)
@click.option(
    "--check",
    is_flag=True,
    help="Compare the sources with the lockfile and report drift; write nothing "
    "(exit code 1 on drift).",
)
def lock(config_path: Path, datasets: tuple[str, ...], check: bool) -> None:
    """Resolve every source of CONFIG (no pixels read) into <config stem>.lock.json."""
    from ..lock import LockMismatchError

    MultiSourceDataStore = load_api()
    msds = MultiSourceDataStore(load_or_exit(config_path))
    try:
        if check:
            result = msds.check_lock(datasets or None)
        else:
            msds.lock(datasets or None)
    except ConfigError as e:
        report_config_error(e)
        raise SystemExit(EXIT_BAD_INPUT) from None
    except LockMismatchError as e:  # no lockfile to check against
        for line in e.differences:
            click.echo(f"error: {line}", err=True)
        raise SystemExit(EXIT_BAD_INPUT) from None
    if not check:
        click.echo(f"wrote {config_path.with_name(config_path.stem + '.lock.json')}")
        return
    for change in result.version_changes:
        click.echo(f"note: version {change}")
    if result.ok:
        click.echo(f"{result.path}: sources match")
        return
    click.echo(f"{result.path}: {len(result.differences)} difference(s):")
    for line in result.differences:
        click.echo(f"  {line}")
    raise SystemExit(EXIT_FAILED)
