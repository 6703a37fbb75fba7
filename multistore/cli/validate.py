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
    from ..plugin import STORES
    from ..storeids import providers

    for store_id in sorted({s.store_id for s in config.data_stores} & set(STORES)):
        note = providers(store_id).note()
        if note:
            click.echo(f"note: {note}")
