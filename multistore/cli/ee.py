"""``multistore ee ...``: Earth Engine batch tasks, detached from a build (list, wait, cancel),
and ``generate --submit-only`` (start the exports of a config and return)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
import pandas as pd

from .common import EXIT_BAD_INPUT, EXIT_FAILED, config_argument, load_api, load_or_exit

_STATES = ("READY", "RUNNING", "COMPLETED", "FAILED", "CANCEL_REQUESTED", "CANCELLED")


def _ee_store(msds: Any, store: str | None) -> Any:
    """The named Earth Engine store, or the config's only one."""
    from ..stores.earthengine.store import EarthEngineDataStore

    ids = [s.identifier for s in msds.config.data_stores if s.store_id == "earthengine"]
    if store is None:
        if len(ids) != 1:
            found = ", ".join(ids) if ids else "none"
            click.echo(f"error: give --store (earthengine stores: {found})", err=True)
            raise SystemExit(EXIT_BAD_INPUT)
        store = ids[0]
    if store not in ids:
        click.echo(
            f"error: {store!r} is not an earthengine store (those: {', '.join(ids)})", err=True
        )
        raise SystemExit(EXIT_BAD_INPUT)
    data_store = msds.stores[store]
    assert isinstance(data_store, EarthEngineDataStore)
    return data_store


def _line(task: dict[str, Any]) -> str:
    created = task.get("creation_timestamp_ms")
    when = pd.Timestamp(created, unit="ms").strftime("%Y-%m-%dT%H:%M:%SZ") if created else ""
    parts = [task.get("id", ""), task.get("state", ""), when, task.get("description", "")]
    if task.get("error_message"):
        parts.append(task["error_message"])
    return "\t".join(parts)


def _store_option(f: Any) -> Any:
    return click.option(
        "--store", "-s", default=None, help="The earthengine store (default: the only one)."
    )(f)


@click.group()
def ee() -> None:
    """Earth Engine batch tasks: list, wait for and cancel exports."""


@ee.command()
@config_argument
@_store_option
@click.option("--state", type=click.Choice(_STATES, case_sensitive=False), help="Only this state.")
@click.option("--recent", type=click.IntRange(min=1), help="Only the N newest tasks.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per task.")
def tasks(
    config_path: Path, store: str | None, state: str | None, recent: int | None, as_json: bool
) -> None:
    """List the project's batch tasks, newest first: id, state, created, description."""
    data_store = _ee_store(load_api()(load_or_exit(config_path)), store)
    try:
        found = data_store.list_tasks(state, recent)
    except Exception as e:
        raise click.ClickException(f"{type(e).__name__}: {e}") from None
    for task in found:
        click.echo(json.dumps(task, default=str) if as_json else _line(task))


@ee.command()
@config_argument
@click.argument("task_ids", nargs=-1, required=True)
@_store_option
@click.option("--poll", "poll_s", type=float, default=10.0, show_default=True, help="Seconds.")
@click.option("--timeout", "timeout_s", type=float, default=None, help="Give up after seconds.")
def wait(
    config_path: Path,
    task_ids: tuple[str, ...],
    store: str | None,
    poll_s: float,
    timeout_s: float | None,
) -> None:
    """Wait until the tasks have ended; exit 1 unless all COMPLETED."""
    data_store = _ee_store(load_api()(load_or_exit(config_path)), store)
    try:
        final = data_store.wait_tasks(
            task_ids, poll_s, timeout_s, report=lambda t: click.echo(_line(t))
        )
    except Exception as e:
        raise click.ClickException(f"{type(e).__name__}: {e}") from None
    if any(t.get("state") != "COMPLETED" for t in final):
        raise SystemExit(EXIT_FAILED)


@ee.command()
@config_argument
@click.argument("task_ids", nargs=-1, required=True)
@_store_option
def cancel(config_path: Path, task_ids: tuple[str, ...], store: str | None) -> None:
    """Cancel the tasks (finished tasks are left as they are)."""
    data_store = _ee_store(load_api()(load_or_exit(config_path)), store)
    try:
        data_store.cancel_tasks(task_ids)
    except Exception as e:
        raise click.ClickException(f"{type(e).__name__}: {e}") from None
    for task in data_store.task_states(task_ids):
        click.echo(_line(task))


@ee.command()
@config_argument
@click.argument("data_id")
@_store_option
@click.option(
    "--param",
    "-p",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="time_range or filters of the query, VALUE in YAML (as for `search`).",
)
def groups(config_path: Path, data_id: str, store: str | None, pairs: tuple[str, ...]) -> None:
    """The native grids (alignment groups) of DATA_ID's images: group, image count, ids.
    Open one with the open param alignment_group (no grid mapping)."""
    from .search import _parse_params

    data_store = _ee_store(load_api()(load_or_exit(config_path)), store)
    try:
        found = data_store.alignment_groups(data_id, **_parse_params(pairs))
    except Exception as e:
        raise click.ClickException(f"{type(e).__name__}: {e}") from None
    for name, ids in sorted(found.items()):
        click.echo(f"{name}\t{len(ids)}\t{' '.join(ids)}")


@ee.command()
@config_argument
@click.option("--dataset", "-d", "datasets", multiple=True, required=True, help="Repeatable.")
@click.option("--force", is_flag=True, help="Rewrite complete group cubes too.")
def download(config_path: Path, datasets: tuple[str, ...], force: bool) -> None:
    """Native-grid download: per alignment group <dataset>/<group>.zarr (or, with
    format_id: geotiff, one GeoTIFF per image in <dataset>/<group>/), and
    <dataset>/manifest.json (per image: id, group, bytes, status). Exit 1 if a group failed."""
    from ..errors import ConfigError
    from .common import report_config_error

    msds = load_api()(load_or_exit(config_path))
    failed = False
    for ident in datasets:
        try:
            run = msds.download_native(ident, force=force)
        except ConfigError as e:
            report_config_error(e)
            raise SystemExit(EXIT_BAD_INPUT) from None
        except Exception as e:
            raise click.ClickException(f"{type(e).__name__}: {e}") from None
        for name, row in run.groups.items():
            failed |= row["status"] == "failed"
            note = f"\t{row['error']}" if row.get("error") else ""
            click.echo(f"{ident}\t{name}\t{row['images']}\t{row['status']}{note}")
    if failed:
        raise SystemExit(EXIT_FAILED)


def submit_exports(msds: Any, datasets: Iterable[str] | None) -> int:
    """``generate --submit-only``: start the exports of every Earth Engine source with
    ``export_via`` and print one line per time step; the exit code."""
    from ..cube import open_params_for
    from ..stores.contract import export_submitter

    failed = False
    for cube in msds.plan(datasets).cubes:
        for source in cube.dataset.sources:
            store = msds.stores[source.store]
            if export_submitter(store) is None or not source.open_params.get("export_via"):
                continue
            if cube.grid is None and cube.grid_from is not None:
                click.echo(
                    f"{cube.identifier}\t{source.identifier}\t-\tskipped: its grid comes from "
                    f"{cube.grid_from!r}, known only once that cube is built",
                    err=True,
                )
                continue
            try:
                steps = store.submit_exports(
                    source.data_id, **open_params_for(source, store, cube.grid)
                )
            except Exception as e:
                failed = True
                click.echo(f"{cube.identifier}\t{source.identifier}\tfailed: {e}", err=True)
                continue
            for name, state in steps:
                click.echo(f"{cube.identifier}\t{source.identifier}\t{name}\t{state}")
    return EXIT_FAILED if failed else 0
