from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from ..errors import ConfigError
from .common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    config_argument,
    console,
    load_api,
    load_or_exit,
    report_config_error,
)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


@click.command()
@config_argument
@click.option(
    "--dataset", "-d", "datasets", multiple=True, help="Only these datasets (repeatable)."
)
def plan(config_path: Path, datasets: tuple[str, ...]) -> None:
    """Show each cube's grid, sources and size without fetching pixels."""
    MultiSourceDataStore = load_api()

    msds = MultiSourceDataStore(load_or_exit(config_path))
    try:
        summaries = msds.describe_plan(datasets or None)
    except ConfigError as e:
        report_config_error(e)
        raise SystemExit(EXIT_BAD_INPUT) from None
    out = console()
    table = Table(title=f"plan: {config_path.name}", show_lines=True)
    for col in ("cube", "target grid", "sources", "dims / chunks", "variables", "size"):
        table.add_column(col, overflow="fold")
    for s in summaries:
        if s.error:
            table.add_row(
                s.identifier, "[red]cannot plan[/]", "\n".join(s.sources), "", "", s.error
            )
            continue
        dims = " x ".join(f"{d}={n}" for d, n in s.dims.items())
        chunks = " x ".join(f"{d}={n}" for d, n in s.chunks.items())
        variables = "\n".join(f"{n} ({t})" for n, t in s.variables.items())
        size = f"{_size(s.raw_bytes)} uncompressed\n{s.n_chunks} chunks"
        if s.requests:
            size += f"\n{s.requests}"
        table.add_row(
            f"{s.identifier}\n→ {s.output}",
            s.grid,
            "\n".join(s.sources),
            f"{dims}\nchunks {chunks}",
            variables,
            size,
        )
    out.print(table)
    if any(s.error for s in summaries):
        raise SystemExit(EXIT_FAILED)
