from __future__ import annotations

import json

import click

from ..config import config_schema


@click.command()
def schema() -> None:
    """Print the config's JSON Schema (for editors and CI checks)."""
    click.echo(json.dumps(config_schema(), indent=2))
