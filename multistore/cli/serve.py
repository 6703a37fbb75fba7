"""``multistore serve``: the HTTP service (see docs/service.md)."""

from __future__ import annotations

import os
import secrets
import sys
from contextlib import ExitStack
from pathlib import Path

import click

from .common import EXIT_BAD_INPUT, echo_error, load_or_exit, setup_logging

SWITCH_INTERVAL_S = float(os.environ.get("MULTISTORE_SERVE_SWITCH_INTERVAL", "0.001"))
DEMO_CONFIGS = (Path("configs/demo.yml"), Path("configs/demo-zenodo.yml"))


def read_token(token_file: Path | None, demo: bool) -> str:
    """The bearer token: ``--token-file``, else ``MULTISTORE_TOKEN``; a fresh one for ``--demo``."""
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise click.UsageError(
                f"--token-file: cannot read {token_file}: {e.strerror}"
            ) from None
    else:
        token = os.environ.get("MULTISTORE_TOKEN", "").strip()
    if not token and demo:
        token = secrets.token_urlsafe(24)
        click.echo(f"demo token (give it to the page once): {token}")
    if not token:
        echo_error("error: set MULTISTORE_TOKEN or --token-file (every API call needs the token)")
        raise SystemExit(EXIT_BAD_INPUT)
    if len(token) < 16:
        echo_error("error: the token must have at least 16 characters")
        raise SystemExit(EXIT_BAD_INPUT)
    return token


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option(
    "--state",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".multistore-serve"),
    show_default=True,
    help="Folder of the job database and submitted configs.",
)
@click.option("--max-jobs", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--allow-root",
    "allow_roots",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Local folder configs sent over HTTP may use (repeatable; default: the working folder).",
)
@click.option(
    "--allow-hooks", is_flag=True, help="Let configs sent over HTTP run custom_processing hooks."
)
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--demo", is_flag=True, help="Queue the demo configs (run from the repository root).")
def serve(
    host: str,
    port: int,
    state: Path,
    max_jobs: int,
    allow_roots: tuple[Path, ...],
    allow_hooks: bool,
    token_file: Path | None,
    demo: bool,
) -> None:
    """Serve the API and the live page: submit configs, follow builds, read cubes over HTTP."""
    import uvicorn

    from ..service.app import create_app
    from ..service.jobs import Runner, ServiceSettings
    from ..service.jobstore import JobStore

    setup_logging(0)
    token = read_token(token_file, demo)
    roots = tuple(r.resolve() for r in allow_roots) or (Path.cwd().resolve(),)
    for root in roots:
        if not root.is_dir():
            raise click.BadParameter(f"{root} is not a folder", param_hint="--allow-root")
    with ExitStack() as stack:
        if demo:  # first: its servers' addresses are in the environment configs may read
            from ..demo.run import demo_environment

            for path in DEMO_CONFIGS:
                if not path.exists():
                    raise click.BadParameter(
                        f"{path} does not exist (run from the repository root)"
                    )
            stack.enter_context(demo_environment(DEMO_CONFIGS[0].resolve().parent))
        settings = ServiceSettings(
            state=state.resolve(), allow_roots=roots, allow_hooks=allow_hooks, max_jobs=max_jobs
        )
        store = JobStore(settings.state)
        runner = Runner(store, settings)
        if demo:
            for path in DEMO_CONFIGS:  # trusted: the server's own files, hooks included
                config = load_or_exit(path)
                store.create(
                    name=path.name,
                    text=path.read_text(encoding="utf-8"),
                    config=config,
                    datasets=None,
                    force=False,
                    trusted=True,
                    source=path.resolve(),
                )
        app = create_app(settings, token, runner)
        # builds run in threads of this process: hand the GIL over more often, so the event
        # loop answers status requests between their Python steps (docs/performance.md)
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        click.echo(f"multistore serve: http://{host}:{port}/ (state in {settings.state})")
        uvicorn.run(app, host=host, port=port, log_level="warning")
