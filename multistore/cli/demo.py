from __future__ import annotations

from pathlib import Path

import click

from .common import load_api, setup_logging


@click.command()
@click.argument(
    "config_paths",
    metavar="[CONFIG]...",
    nargs=-1,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
)
@click.option("--force", is_flag=True, help="Rebuild cubes even when complete.")
@click.option(
    "--log-format", type=click.Choice(["auto", "rich", "log", "json", "none"]), default=None
)
def demo(config_paths: tuple[Path, ...], force: bool, log_format: str | None) -> None:
    """Run demo configs fully offline (default: configs/demo.yml).

    Writes deterministic sample sources next to the config, serves one of them
    from a local S3 server (moto) and Zenodo records from a local emulator,
    then generates the cubes and a quick-look PNG per cube.
    """
    MultiSourceDataStore = load_api()
    from ..demo.run import demo_environment
    from .common import load_or_exit

    setup_logging(0)
    paths = config_paths or (Path("configs/demo.yml"),)
    exit_code = 0
    for path in paths:
        if not path.exists():
            raise click.BadParameter(f"{path} does not exist (run from the repository root)")
        with demo_environment(path.resolve().parent):
            msds = MultiSourceDataStore(load_or_exit(path))
            report = msds.generate(force=force, display=log_format)
        storage = msds.stores.storage
        click.echo(f"\n{path}: cubes in {getattr(storage, 'root', 'storage')}")
        for result in report.datasets:
            click.echo(f"  {result.identifier}: {result.status} {result.output or ''}")
        exit_code = max(exit_code, report.exit_code)
    raise SystemExit(exit_code)
