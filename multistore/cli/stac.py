"""``multistore stac``: build a fast item index of a static catalog and search it.

``search`` prints one item id, asset href or JSON item per line, so its output
can be piped into bulk download tools.
"""

from __future__ import annotations

import json

import click

from ..errors import FilterError, MultistoreError


def _bbox(ctx, param, value):
    if value is None:
        return None
    try:
        parts = [float(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected w,s,e,n numbers, got {value!r}") from None
    if len(parts) != 4:
        raise click.BadParameter(f"expected 4 numbers w,s,e,n, got {len(parts)}")
    return parts


@click.group("stac")
def stac() -> None:
    """STAC tools: a fast item index for big static catalogs."""


@stac.command("index")
@click.argument("url")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False),
    help="stac-geoparquet file to write",
)
@click.option("--concurrency", default=16, show_default=True, type=click.IntRange(1, 256))
@click.option(
    "--resume/--no-resume",
    default=True,
    show_default=True,
    help="skip sub-catalogs finished by an interrupted run",
)
@click.option("--retries", default=3, show_default=True, type=click.IntRange(0, 20))
def index_command(url: str, out: str, concurrency: int, resume: bool, retries: int) -> None:
    """Crawl the static catalog URL once into an item index (OUT)."""
    from ..stores.stac.index import build_index

    try:
        stats = build_index(url, out, concurrency=concurrency, resume=resume, retries=retries)
    except MultistoreError as e:
        raise click.ClickException(str(e)) from None
    click.echo(
        f"indexed {stats.items} items from {stats.nodes_fetched} catalog(s) "
        f"({stats.nodes_resumed} resumed) in {stats.seconds:.1f} s -> {stats.path}",
        err=True,
    )


@stac.command("search")
@click.argument("index_or_url")
@click.option("--bbox", callback=_bbox, help="w,s,e,n in degrees")
@click.option("--datetime", "datetime_", help="start/end, e.g. 2024-01-01/2024-06-30 (.. for open)")
@click.option("--collection", "collections", multiple=True, help="repeatable")
@click.option(
    "--filter",
    "filters",
    multiple=True,
    help="'prop op value' (op in < <= > >= = !=) or CQL2 text, "
    "e.g. \"eo:cloud_cover < 20 AND platform = 'sentinel-2a'\" (repeatable: ANDed)",
)
@click.option("--assets", "assets", is_flag=True, help="print asset hrefs instead of items")
@click.option(
    "--asset", "asset_names", multiple=True, help="only these asset keys (implies --assets)"
)
@click.option("--limit", type=click.IntRange(1), default=None)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["ids", "hrefs", "json"]),
    default=None,
    help="default: ids (hrefs with --assets)",
)
def search_command(
    index_or_url, bbox, datetime_, collections, filters, assets, asset_names, limit, fmt
) -> None:
    """Search an item index (.parquet) or a static catalog / STAC API URL."""
    from ..stores.stac.index import asset_hrefs
    from ..stores.stac.query import ItemQuery

    try:
        query = ItemQuery.create(
            bbox=bbox,
            time_range=datetime_,
            collections=collections or None,
            filter=list(filters) or None,
        )
    except FilterError as e:
        raise click.UsageError(str(e)) from None
    try:
        items = _find(index_or_url, query, limit)
    except FilterError as e:
        raise click.UsageError(str(e)) from None
    except MultistoreError as e:
        raise click.ClickException(str(e)) from None
    fmt = fmt or ("hrefs" if assets or asset_names else "ids")
    if fmt == "hrefs":
        for href in asset_hrefs(items, list(asset_names) or None):
            click.echo(href)
    elif fmt == "json":
        for item in items:
            click.echo(json.dumps(item, separators=(",", ":")))
    else:
        for item in items:
            click.echo(item["id"])


def _find(index_or_url: str, query, limit):
    from ..stores.stac import StacDataStore
    from ..stores.stac.index import query_index

    if index_or_url.endswith(".parquet"):
        return query_index(index_or_url, query, limit=limit)
    return StacDataStore(index_or_url).find_items(query, max_items=limit)
