from __future__ import annotations

import json
from pathlib import Path

import click

from .common import EXIT_BAD_INPUT, config_argument, load_api, load_or_exit


@click.command()
@config_argument
@click.argument("store")
@click.argument("data_id", required=False)
@click.option(
    "--catalog",
    is_flag=True,
    help="Describe DATA_ID from the store's dataset catalog (Earth Engine: title, provider, "
    "cadence, bands with scales, license) instead of opening it.",
)
def describe(config_path: Path, store: str, data_id: str | None, catalog: bool) -> None:
    """List the data ids of STORE, or describe DATA_ID in it."""
    MultiSourceDataStore = load_api()

    msds = MultiSourceDataStore(load_or_exit(config_path))
    if store not in msds.stores:
        click.echo(f"error: no data store {store!r} (defined: {', '.join(msds.stores)})", err=True)
        raise SystemExit(EXIT_BAD_INPUT)
    data_store = msds.stores[store]
    if data_id is None:
        for ident in data_store.get_data_ids():
            click.echo(ident)
        return
    if catalog:
        from ..stores.contract import catalog as store_catalog

        entries = store_catalog(data_store)
        if entries is None:
            click.echo(f"error: store {store!r} has no catalog", err=True)
            raise SystemExit(EXIT_BAD_INPUT)
        try:
            entry = entries.catalog_entry(data_id)
        except Exception as e:
            raise click.ClickException(f"{type(e).__name__}: {e}") from None
        click.echo(json.dumps(entry.to_dict(), indent=2, default=str))
        return
    # describing a GeoTIFF opens it with GDAL: give it the store's settings (S3 endpoint, ...)
    from ..gdalenv import general_settings

    general = general_settings(msds.config.general.gdal_http_params)
    with msds.stores.gdal_settings(store, general).env():
        descriptor = data_store.describe_data(data_id)
    click.echo(json.dumps(descriptor.to_dict(), indent=2, default=str))
