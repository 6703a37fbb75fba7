from __future__ import annotations

from pathlib import Path

import click

from .common import config_argument, load_or_exit


@click.command()
@config_argument
def validate(config_path: Path) -> None:
    """Check CONFIG against the schema and every cross-reference (exit code 2 on problems)."""
    config = load_or_exit(config_path)
    click.echo(
        f"{config_path}: valid ({len(config.data_stores)} stores, "
        f"{len(config.grid_mappings)} grid mappings, {len(config.datasets)} datasets)"
    )
