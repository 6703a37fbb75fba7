from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from ..api import MultiSourceDataStore
from ..writer import CubeState
from .common import config_argument, console, load_or_exit

_STYLE = {
    CubeState.COMPLETE: "green",
    CubeState.STALE: "yellow",
    CubeState.INCOMPLETE: "red",
    CubeState.MISSING: "dim",
}


@click.command()
@config_argument
def status(config_path: Path) -> None:
    """Which cubes in storage are complete, stale (config changed), incomplete or missing."""
    msds = MultiSourceDataStore(load_or_exit(config_path))
    table = Table(title=f"cubes of {config_path.name}")
    for col in ("cube", "state", "path", "fingerprint", "completed"):
        table.add_column(col)
    for row in msds.status():
        table.add_row(
            row.identifier,
            f"[{_STYLE[row.state]}]{row.state}[/]",
            row.output,
            row.fingerprint,
            row.completed or "",
        )
    console().print(table)
