"""``multistore demo``: prepare the sample sources, start local servers, build the demo cubes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from ..gdalenv import scoped_env
from . import data
from .servers import DEMO_KEY, DEMO_SECRET, local_s3, s3_filesystem

DEMO_BUCKET = "multistore-demo"
DATA_FOLDER = "demo_data"


@contextmanager
def demo_environment(config_dir: Path) -> Iterator[dict[str, str]]:
    """Sample files next to the config, a local S3 with the elevation Zarr, env vars set."""
    data.write_local_sources(config_dir / DATA_FOLDER)
    with ExitStack() as stack:
        endpoint = stack.enter_context(local_s3())
        fs = s3_filesystem(endpoint)
        if not fs.exists(DEMO_BUCKET):  # moto keeps buckets across servers of one process
            fs.mkdir(DEMO_BUCKET)
        data.elevation_dataset().to_zarr(
            fs.get_mapper(f"{DEMO_BUCKET}/{data.ELEVATION}"),
            mode="w",
            consolidated=True,
            zarr_format=2,
        )
        env = {
            "MULTISTORE_DEMO_S3_ENDPOINT": endpoint,
            "MULTISTORE_DEMO_S3_KEY": DEMO_KEY,
            "MULTISTORE_DEMO_S3_SECRET": DEMO_SECRET,
        }
        env.update(stack.enter_context(_zenodo_emulator()))
        stack.enter_context(scoped_env(**env))
        yield env


@contextmanager
def _zenodo_emulator() -> Iterator[dict[str, str]]:
    try:
        from ..testing.sample_zenodo import serve_sample_record
    except ImportError:
        yield {}
        return
    with serve_sample_record() as base_url:
        yield {"MULTISTORE_ZENODO_URL": base_url}
