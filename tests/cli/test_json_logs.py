"""``--log-format json`` (issue 12.6): every line on stderr parses as JSON.

Warnings, debug tracebacks of failed datasets, exceptions raised in threads and in
``__del__`` (which Python prints itself) and config errors all become JSON objects.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from multistore.demo import data

NOISY_HOOK = """
import threading
import warnings


class _Leaky:
    def __del__(self):
        raise RuntimeError("raised in __del__")


def noisy(ds):
    warnings.warn("a warning from the hook", UserWarning)
    thread = threading.Thread(target=lambda: 1 / 0, name="hook-thread")
    thread.start()
    thread.join()
    _Leaky()
    return ds
"""


def _config(root: Path) -> Path:
    data.write_local_sources(root / "data")
    (root / "noisy.py").write_text(NOISY_HOOK)
    config = {
        "data_stores": [
            {"identifier": "storage", "store_id": "file", "store_params": {"root": "out"}},
            {"identifier": "local", "store_id": "file", "store_params": {"root": "data"}},
        ],
        "grid_mappings": [
            {
                "identifier": "gm",
                "bbox": [11.2, 47.6, 11.6, 47.9],
                "spatial_res": 0.01,
                "tile_size": 64,
            }
        ],
        "datasets": [
            {
                "identifier": "noisy",
                "store": "local",
                "data_id": data.LANDCOVER,
                "grid_mapping": "gm",
                "custom_processing": {"module_path": "noisy.py", "function_name": "noisy"},
            },
            {
                "identifier": "missing",
                "store": "local",
                "data_id": "does_not_exist.tif",
                "grid_mapping": "gm",
            },
        ],
    }
    path = root / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _generate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "multistore", "generate", *args, "--log-format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _records(stderr: str) -> list[dict]:
    records = []
    for line in stderr.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise AssertionError(f"not JSON: {line!r}\n--- stderr ---\n{stderr}") from e
    return records


def test_every_stderr_line_is_json(tmp_path: Path) -> None:
    result = _generate(str(_config(tmp_path)), "-vv")
    assert result.returncode == 1, result.stderr  # the missing source fails
    records = _records(result.stderr)
    messages = [r["message"] for r in records]
    # (the hook's warning is not asserted here: libraries' catch_warnings() in other
    # threads may swallow it; test_warnings_and_uncaught_errors_are_json covers warnings)
    assert any("ZeroDivisionError" in m and "hook-thread" in m for m in messages), messages
    assert any("Exception ignored" in m for m in messages), messages
    tracebacks = [r["exception"] for r in records if "exception" in r]
    assert any("does_not_exist.tif" in t for t in tracebacks), tracebacks
    assert any("raised in __del__" in t for t in tracebacks), tracebacks
    for line in result.stdout.splitlines():  # the status display is JSON lines too
        json.loads(line)


def test_config_errors_are_json(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("datasets: [\n")
    result = _generate(str(path))
    assert result.returncode == 2
    records = _records(result.stderr)
    assert records and all(r["level"] == "ERROR" for r in records)
    assert records[0]["location"] == f"{path}: line 2, column 1"


SCRIPT = """
import logging, threading, warnings
import click
from multistore.cli.common import setup_logging

@click.command()
def main():
    setup_logging(2, json_logs=True)
    warnings.warn("plain warning", UserWarning)
    logging.getLogger("multistore.x").debug("multi\\nline message")
    t = threading.Thread(target=lambda: 1 / 0, name="worker")
    t.start()
    t.join()
    raise KeyError("uncaught at the end")

main()
"""


def test_warnings_and_uncaught_errors_are_json() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    records = _records(result.stderr)
    messages = [r["message"] for r in records]
    assert any("plain warning" in m for m in messages), messages
    assert "multi\nline message" in messages
    assert any("worker" in m and "ZeroDivisionError" in m for m in messages), messages
    assert any("KeyError" in r.get("exception", "") for r in records), records
