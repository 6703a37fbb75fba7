"""`multistore validate CONFIG` as users run it: exit code 2, one problem per line, no traceback."""

from __future__ import annotations

import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
from configtools import base_config, write_config

RUN_CLI = "import sys; from multistore.cli import main; sys.argv[0] = 'multistore'; main()"
SECRET = "tok-abcdef-123"

BROKEN = {
    "unknown-store": (
        ["datasets", 1, "variables", 0, "store"],
        "foo",
        "datasets[1].variables[0].store: 'foo' is not defined",
    ),
    "bad-bbox": (
        ["grid_mappings", 0, "bbox"],
        [1, 43.5, 0.5, 44.8],
        "grid_mappings[0].bbox: west (1) must be less than east (0.5)",
    ),
    "missing-function": (
        ["datasets", 0, "custom_processing", "function_name"],
        "nope",
        "datasets[0].custom_processing.function_name: 'nope' is not defined",
    ),
    "unset-var": (
        ["datasets", 0, "data_id"],
        "${UNSET_VARIABLE}",
        "datasets[0].data_id: environment variable 'UNSET_VARIABLE' is not set",
    ),
    "secret-in-bad-value": (
        ["data_stores", 2, "store_params", "storage_options", "anon"],
        "${MULTISTORE_TOKEN}",
        "data_stores[2].store_params.storage_options.anon: expected true or "
        "false, got string '***'",
    ),
}


# These run as real processes; the others through click's runner in-process, since each
# process pays the whole xcube import (seconds on busy cores).
SUBPROCESS_CASES = ("unknown-store", "missing-function", "secret-in-bad-value", "broken-yaml")


@dataclass
class Run:
    returncode: int
    output: str


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Run every CLI case once; the real processes run concurrently."""
    paths: dict[str, Path] = {}
    for case, (path_in_config, value, _) in BROKEN.items():
        config = base_config()
        target = config
        for key in path_in_config[:-1]:
            target = target[key]
        target[path_in_config[-1]] = value
        paths[case] = write_config(tmp_path_factory.mktemp(case) / "project", config)
    paths["good"] = write_config(tmp_path_factory.mktemp("good") / "project", base_config())
    paths["broken-yaml"] = write_config(tmp_path_factory.mktemp("yaml"), "datasets: [a, b\n")
    cwd = tmp_path_factory.mktemp("cwd")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "MULTISTORE_TOKEN": SECRET}
    procs = {
        case: subprocess.Popen(
            [sys.executable, "-c", RUN_CLI, "validate", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=cwd,
            env=env,
        )
        for case, path in paths.items()
        if case in SUBPROCESS_CASES
    }
    runs = {  # while the processes start
        case: _run_in_process(path, env, cwd)
        for case, path in paths.items()
        if case not in SUBPROCESS_CASES
    }
    for case, proc in procs.items():
        output, _ = proc.communicate(timeout=300)
        runs[case] = Run(proc.returncode, output)
    return runs


def _run_in_process(path: Path, env: dict[str, str], cwd: Path) -> Run:
    from click.testing import CliRunner

    from multistore.cli import main

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        for name, value in env.items():
            mp.setenv(name, value)
        result = CliRunner().invoke(main, ["validate", str(path)])
    error = result.exc_info[1] if result.exc_info else None
    if error is not None and not isinstance(error, SystemExit):
        return Run(result.exit_code, result.output + "".join(traceback.format_exception(error)))
    return Run(result.exit_code, result.output)


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_validate_reports_problem(cli_runs: dict[str, Run], case: str) -> None:
    run = cli_runs[case]
    assert run.returncode == 2, run.output
    assert "Traceback" not in run.output
    expected_line = BROKEN[case][2]
    assert any(line.strip().startswith(expected_line) for line in run.output.splitlines()), (
        run.output
    )
    assert SECRET not in run.output


def test_validate_broken_yaml(cli_runs: dict[str, Run]) -> None:
    run = cli_runs["broken-yaml"]
    assert run.returncode == 2, run.output
    assert "Traceback" not in run.output
    assert "line 2, column 1: YAML syntax error" in run.output


def test_validate_good_config(cli_runs: dict[str, Run]) -> None:
    run = cli_runs["good"]
    assert run.returncode == 0, run.output
    assert "valid" in run.output
