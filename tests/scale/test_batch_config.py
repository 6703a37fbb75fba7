"""general.dask for batch clusters (SLURM, PBS, SGE): located config errors (issue 17.3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from multistore.config import load_config
from tests.config.configtools import assert_problem, base_config, problems_of, write_config

SLURM = {"cluster": "slurm", "cores": 4, "memory": "16GiB"}

CASES = [
    ("cluster-unknown", {**SLURM, "cluster": "lsf"}, "general.dask.cluster", "slurm"),
    ("memory-no-unit", {**SLURM, "memory": "16"}, "general.dask.memory", "like 16GiB"),
    ("walltime-minutes", {**SLURM, "walltime": "90min"}, "general.dask.walltime", "01:30:00"),
    ("cores-zero", {**SLURM, "cores": 0}, "general.dask.cores", ">= 1"),
    ("no-memory", {"cluster": "slurm", "cores": 4}, "general.dask", "needs 'memory'"),
    (
        "adapt-inverted",
        {**SLURM, "adapt": {"minimum": 5, "maximum": 2}},
        "general.dask.adapt.minimum",
        "must be <= adapt.maximum",
    ),
    (
        "adapt-typo",
        {**SLURM, "adapt": {"maximum": 2, "maximun": 3}},
        "general.dask.adapt.maximun",
        "unknown key 'maximun' (allowed: maximum, minimum)",
    ),
    ("queue-without-cluster", {"queue": "debug"}, "general.dask.queue", "set general.dask.cluster"),
    (
        "cluster-and-address",
        {**SLURM, "address": "tcp://127.0.0.1:8786"},
        "general.dask.address",
        "not both",
    ),
    (
        "cluster-on-threads",
        {**SLURM, "scheduler": "threads"},
        "general.dask.cluster",
        "only applies to the distributed scheduler",
    ),
    (
        "directives-not-strings",
        {**SLURM, "job_extra_directives": [3]},
        "general.dask.job_extra_directives[0]",
        "",
    ),
]


@pytest.mark.parametrize(
    ("dask", "location", "fragment"),
    [pytest.param(d, loc, frag, id=name) for name, d, loc, frag in CASES],
)
def test_batch_cluster_config_errors_are_located(
    tmp_path: Path, dask: dict[str, Any], location: str, fragment: str
) -> None:
    config = base_config()
    config.setdefault("general", {})["dask"] = dask
    path = write_config(tmp_path, config)
    problems = problems_of(lambda: load_config(path, env={"HOME": "/home/x"}))
    assert_problem(problems, location, fragment)
    for problem in problems:
        assert "Failed validating" not in problem.message


def test_a_batch_cluster_config_is_read(tmp_path: Path) -> None:
    config = base_config()
    config.setdefault("general", {})["dask"] = {
        **SLURM,
        "walltime": "1-02:00:00",
        "queue": "compute",
        "account": "proj42",
        "job_extra_directives": ["--constraint=cpu"],
        "adapt": {"maximum": 8},
    }
    dask = load_config(write_config(tmp_path, config), env={"HOME": "/home/x"}).general.dask
    assert dask.scheduler == "distributed" and dask.cluster == "slurm"
    assert (dask.cores, dask.memory, dask.walltime) == (4, "16GiB", "1-02:00:00")
    assert (dask.queue, dask.account) == ("compute", "proj42")
    assert dask.job_extra_directives == ("--constraint=cpu",) and dask.adapt == (0, 8)
