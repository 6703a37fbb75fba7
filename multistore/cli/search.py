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


def _bbox(value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        numbers = [float(v) for v in value.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) != 4 or numbers[0] > numbers[2] or numbers[1] > numbers[3]:
        raise click.BadParameter(f"{value!r} is not W,S,E,N in degrees", param_hint="--bbox")
    return numbers


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
@click.option("--text", help="Catalog search: all these words in id, title, keywords, ...")
@click.option(
    "--bbox",
    callback=lambda ctx, param, v: _bbox(v),
    metavar="W,S,E,N",
    help="Catalog search: datasets whose extent intersects this lon/lat box.",
)
@click.option(
    "--time-range",
    nargs=2,
    metavar="START END",
    default=None,
    help="Catalog search: datasets with data in [START, END) (ISO dates; '' for open).",
)
def search(
    config_path: Path,
    store: str,
    pairs: tuple[str, ...],
    as_json: bool,
    text: str | None,
    bbox: list[float] | None,
    time_range: tuple[str, str] | None,
) -> None:
    """Search STORE (xcube's search_data), e.g. the images of an Earth Engine query.

    With --text, --bbox or --time-range, search the store's dataset catalog instead
    (Earth Engine: the public catalog): one line per dataset with id, title, provider,
    cadence and time extent.
    """
    MultiSourceDataStore = load_api()

    catalog_search = text is not None or bbox is not None or time_range is not None
    if catalog_search and pairs:
        raise click.UsageError("--param cannot be combined with --text/--bbox/--time-range")
    params = _parse_params(pairs)
    msds = MultiSourceDataStore(load_or_exit(config_path))
    if store not in msds.stores:
        click.echo(f"error: no data store {store!r} (defined: {', '.join(msds.stores)})", err=True)
        raise SystemExit(EXIT_BAD_INPUT)
    data_store = msds.stores[store]
    if catalog_search:
        from ..stores.contract import catalog_searcher

        searcher = catalog_searcher(data_store)
        if searcher is None:
            click.echo(f"error: store {store!r} has no catalog to search", err=True)
            raise SystemExit(EXIT_BAD_INPUT)
        try:
            entries = searcher.search_catalog(
                text, bbox, [t or None for t in time_range] if time_range else None
            )
        except Exception as e:
            raise click.ClickException(f"{type(e).__name__}: {e}") from None
        for entry in entries:
            if as_json:
                click.echo(json.dumps(entry.to_dict(), default=str))
        if not as_json:
            from ..stores.earthengine.catalog import format_entries

            for line in format_entries(entries):
                click.echo(line)
        return
    try:
        results = list(data_store.search_data(**params))
    except NotImplementedError:  # search_data is part of every xcube store, not always built
        click.echo(f"error: store {store!r} cannot search", err=True)
        raise SystemExit(EXIT_BAD_INPUT) from None
    except Exception as e:
        raise click.ClickException(f"{type(e).__name__}: {e}") from None
    for descriptor in results:
        if as_json:
            click.echo(json.dumps(descriptor.to_dict(), default=str))
        else:
            time_range = getattr(descriptor, "time_range", None) or ("", "")
            click.echo(f"{descriptor.data_id}\t{time_range[0] or ''}")
