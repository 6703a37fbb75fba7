"""The CLI as a user runs it: subprocesses, exit codes, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from multistore.demo import data


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "multistore", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def with_cube(config: dict, **extra) -> dict:
    config["datasets"].append(
        {
            "identifier": "lc",
            "store": "local",
            "data_id": data.LANDCOVER,
            "grid_mapping": "gm",
            **extra,
        }
    )
    return config


def test_schema_prints_the_json_schema():
    result = run("schema")
    assert result.returncode == 0
    assert json.loads(result.stdout)["type"] == "object"


def test_validate_ok_and_broken(project, tmp_path):
    ok = run("validate", str(project(with_cube(project.base_config()))))
    assert ok.returncode == 0, ok.stderr
    assert "valid" in ok.stdout

    broken = with_cube(project.base_config())
    broken["datasets"][0]["grid_mapping"] = "gm_eu"
    result = run("validate", str(project(broken, "broken.yml")))
    assert result.returncode == 2
    assert "datasets[0].grid_mapping: 'gm_eu' is not defined (defined: gm" in result.stderr
    assert "Traceback" not in result.stderr

    garbage = tmp_path / "garbage.yml"
    garbage.write_text("datasets: [\n")
    result = run("validate", str(garbage))
    assert result.returncode == 2 and "Traceback" not in result.stderr

    missing = run("validate", str(tmp_path / "nope.yml"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


def test_plan_generate_status_cycle(project):
    path = project(with_cube(project.base_config()))
    plan = run("plan", str(path))
    assert plan.returncode == 0, plan.stderr + plan.stdout
    assert "250x175 px" in plan.stdout and "EPSG:4326" in plan.stdout
    assert "uncompressed" in plan.stdout
    assert not (project.root / "out" / "lc.zarr").exists()  # plan writes nothing

    first = run("generate", str(path), "--log-format", "log")
    assert first.returncode == 0, first.stderr
    assert "lc: completed" in first.stderr

    second = run("generate", str(path), "--log-format", "json")
    assert second.returncode == 0
    summary = json.loads(second.stdout.splitlines()[-1])
    assert summary["results"][0]["status"] == "skipped"

    status = run("status", str(path))
    assert status.returncode == 0 and "complete" in status.stdout


def test_generate_exit_code_1_when_a_dataset_fails(project):
    config = with_cube(project.base_config())
    config["datasets"].append({"identifier": "bad", "store": "local", "data_id": "missing.tif"})
    result = run(
        "generate",
        str(project(config)),
        "--log-format",
        "json",
        "--dataset",
        "bad",
        "--dataset",
        "lc",
    )
    assert result.returncode == 1
    final = {r["dataset"]: r for r in json.loads(result.stdout.splitlines()[-1])["results"]}
    assert final["lc"]["status"] == "completed"
    assert final["bad"]["status"] == "failed" and "missing.tif" in final["bad"]["message"]
    assert "Traceback" not in result.stderr


def test_generate_unknown_dataset_is_a_usage_error(project):
    result = run("generate", str(project(with_cube(project.base_config()))), "--dataset", "nope")
    assert result.returncode == 2 and "'nope' is not defined" in result.stderr


def test_secrets_never_printed(project, monkeypatch):
    config = with_cube(project.base_config())
    config["data_stores"][2]["store_params"]["storage_options"]["secret"] = "${DEMO_TOP_SECRET}"
    path = project(config)
    env_secret = "s3cr3t-value-123"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from multistore import MultiSourceDataStore as M; print(M({str(path)!r}).config_yaml())",
        ],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "DEMO_TOP_SECRET": env_secret},
    )
    assert result.returncode == 0, result.stderr
    assert env_secret not in result.stdout and "***" in result.stdout
    assert (
        yaml.safe_load(result.stdout)["data_stores"][2]["store_params"]["storage_options"]["secret"]
        == "***"
    )


def test_describe_lists_and_describes_store_data(project):
    path = str(project(with_cube(project.base_config())))
    listing = run("describe", path, "local")
    assert listing.returncode == 0, listing.stderr
    assert data.LANDCOVER in listing.stdout.split()
    described = run("describe", path, "local", data.TEMPERATURE)
    assert described.returncode == 0, described.stderr
    assert "temperature" in json.loads(described.stdout)["data_vars"]
    unknown = run("describe", path, "nope")
    assert unknown.returncode == 2 and "no data store 'nope'" in unknown.stderr
