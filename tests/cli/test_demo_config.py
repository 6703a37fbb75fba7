"""configs/demo.yml on its own: a newcomer validates and plans it without setting anything."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from multistore.demo import data

REPO = Path(__file__).resolve().parents[2]
DEFAULT_S3_PORT = 5000  # the config's ${MULTISTORE_DEMO_S3_ENDPOINT:-http://127.0.0.1:5000}


def clean_env() -> dict[str, str]:
    """The caller's environment without anything the demo or AWS tooling would read."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MULTISTORE_", "AWS_")) or k == "AWS_EC2_METADATA_DISABLED"
    }


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "multistore", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_env(),
        timeout=300,
    )


@pytest.fixture
def demo_copy(tmp_path: Path) -> Path:
    """configs/demo.yml and its hooks, copied as a newcomer would find them."""
    shutil.copy(REPO / "configs" / "demo.yml", tmp_path / "demo.yml")
    shutil.copytree(REPO / "configs" / "hooks", tmp_path / "hooks")
    return tmp_path


def test_validate_demo_config_with_a_clean_environment(demo_copy: Path):
    result = cli("validate", "demo.yml", cwd=demo_copy)
    assert result.returncode == 0, result.stderr
    assert "valid (3 stores, 1 grid mappings, 2 datasets)" in result.stdout
    assert "not set" not in result.stderr


@pytest.fixture
def s3_on_default_port() -> Iterator[str]:
    """moto on the config's default endpoint (skips if something else holds the port)."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", DEFAULT_S3_PORT)) == 0:
            pytest.skip(f"127.0.0.1:{DEFAULT_S3_PORT} is in use")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=DEFAULT_S3_PORT, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{DEFAULT_S3_PORT}"
    finally:
        server.stop()


def test_plan_demo_config_with_a_clean_environment(demo_copy: Path, s3_on_default_port: str):
    from multistore.demo.run import DATA_FOLDER, DEMO_BUCKET
    from multistore.demo.servers import s3_filesystem

    data.write_local_sources(demo_copy / DATA_FOLDER)
    fs = s3_filesystem(s3_on_default_port)
    if not fs.exists(DEMO_BUCKET):
        fs.mkdir(DEMO_BUCKET)
    data.elevation_dataset().to_zarr(
        fs.get_mapper(f"{DEMO_BUCKET}/{data.ELEVATION}"), mode="w", consolidated=True,
        zarr_format=2,
    )  # fmt: skip

    result = cli("plan", "demo.yml", cwd=demo_copy)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "cannot plan" not in result.stdout
    assert "landscape" in result.stdout and "climate" in result.stdout
    assert "500x350 px" in result.stdout  # 1.0° x 0.7° at 0.002°
    assert "Traceback" not in result.stderr
