from __future__ import annotations

import json
from pathlib import Path

import click

from ..config.yamlsource import parse_yaml
from .common import EXIT_BAD_INPUT, config_argument, load_api, load_or_exit


def _parse_params(pairs: tuple[str, ...]) -> dict:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--param")
        parsed = parse_yaml(value, f"--param {key}")  # read like a config: dates stay strings
        if parsed.problems:
            raise click.BadParameter(
                f"{pair!r}: {parsed.problems[0].message}", param_hint="--param"
            )
        params[key] = parsed.data
    return params


@click.command()
@config_argument
@click.argument("store")
@click.option(
    "--param",
    "-p",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="A search parameter, VALUE in YAML (e.g. -p data_id=COPERNICUS/S2 "
    "-p 'time_range=[2024-01-01, 2024-02-01]').",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per result.")
def search(config_path: Path, store: str, pairs: tuple[str, ...], as_json: bool) -> None:
    """Search STORE (xcube's search_data), e.g. the images of an Earth Engine query."""
    MultiSourceDataStore = load_api()

    params = _parse_params(pairs)
    msds = MultiSourceDataStore(load_or_exit(config_path))
    if store not in msds.stores:
        click.echo(f"error: no data store {store!r} (defined: {', '.join(msds.stores)})", err=True)
        raise SystemExit(EXIT_BAD_INPUT)
    data_store = msds.stores[store]
    if not hasattr(data_store, "search_data"):
        click.echo(f"error: store {store!r} cannot search", err=True)
        raise SystemExit(EXIT_BAD_INPUT)
    try:
        results = list(data_store.search_data(**params))
    except Exception as e:
        raise click.ClickException(f"{type(e).__name__}: {e}") from None
    for descriptor in results:
        if as_json:
            click.echo(json.dumps(descriptor.to_dict(), default=str))
        else:
            time_range = getattr(descriptor, "time_range", None) or ("", "")
            click.echo(f"{descriptor.data_id}\t{time_range[0] or ''}")
