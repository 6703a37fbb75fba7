from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from .common import config_argument, console, load_api, load_or_exit

_STYLE = {
    "complete": "green",
    "stale": "yellow",
    "incomplete": "red",
    "missing": "dim",
}


@click.command()
@config_argument
def status(config_path: Path) -> None:
    """Which cubes in storage are complete, stale (config or a source changed), incomplete
    or missing."""
    MultiSourceDataStore = load_api()

    msds = MultiSourceDataStore(load_or_exit(config_path))
    table = Table(title=f"cubes of {config_path.name}")
    for col in ("cube", "state", "path", "fingerprint", "completed"):
        table.add_column(col)
    for row in msds.status():
        table.add_row(
            row.identifier,
            f"[{_STYLE[str(row.state)]}]{row.state}[/]"
            + (f" ({row.reason})" if row.reason and row.reason != "config changed" else "")
            + (f" (being written by {row.writing})" if row.writing else ""),
            row.output,
            row.fingerprint,
            row.completed or "",
        )
    console().print(table)
