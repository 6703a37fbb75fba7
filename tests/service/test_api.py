"""The service end to end: httpx against a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from multistore.service.jobs import ServiceSettings
from multistore.service.jobstore import JobStore

from .conftest import TOKEN, Service, small_config, start_service


def follow(svc: Service, job: str, timeout: float = 50) -> list[dict]:
    """Every server-sent event of ``job`` until it ends."""
    events = []
    with (
        svc.client() as client,
        client.stream("GET", f"/api/jobs/{job}/events", timeout=timeout) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events


def submit(svc: Service, text: str, **extra) -> str:
    with svc.client() as client:
        r = client.post("/api/jobs", json={"config": text, **extra})
    assert r.status_code == 201, r.text
    assert r.json()["status_url"] == f"/api/jobs/{r.json()['id']}"
    return r.json()["id"]


def wait_for(svc: Service, job: str, statuses: set[str], timeout: float = 50) -> dict:
    deadline = time.monotonic() + timeout
    with svc.client() as client:
        while time.monotonic() < deadline:
            body = client.get(f"/api/jobs/{job}").json()
            if body["status"] in statuses:
                return body
            time.sleep(0.1)
    raise AssertionError(f"job {job} stayed {body['status']}")


def test_round_trip_events_then_cube_over_http_equals_disk(service, workspace):
    job = submit(service, small_config())
    events = follow(service, job)
    assert events[-1] == {"type": "job", "status": "completed", "message": ""}
    rows = [e for e in events if e["type"] == "dataset"]
    assert [e["status"] for e in rows][-1] == "completed"
    assert "writing" in [e["status"] for e in rows]
    with service.client() as client:
        body = client.get(f"/api/jobs/{job}").json()
        (row,) = body["datasets"]
        assert row["identifier"] == "landcover" and row["status"] == "completed"
        assert row["started"] <= row["finished"]
        on_disk = sum(
            f.stat().st_size
            for f in (workspace / "out" / "landcover.zarr").rglob("*")
            if f.is_file()
        )
        assert row["bytes"] == on_disk > 0
        cubes = client.get("/api/cubes").json()["cubes"]
        assert [c["cube"] for c in cubes] == [f"/cubes/{job}/landcover.zarr"]
        png = client.get(row["quicklook"])
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert png.content == (workspace / "out" / "landcover.png").read_bytes()
        # byte ranges, as fsspec asks for them
        whole = (workspace / "out" / "landcover.zarr" / ".zmetadata").read_bytes()
        part = client.get(f"{row['cube']}/.zmetadata", headers={"Range": "bytes=5-24"})
        assert part.status_code == 206 and part.content == whole[5:25]
        assert part.headers["content-range"] == f"bytes 5-24/{len(whole)}"
        assert client.get(f"/cubes/{job}/landcover.zarr").status_code == 404  # no listing
        assert "completed" in client.get(f"/api/jobs/{job}/log").text
    remote = xr.open_zarr(
        f"{service.url}{row['cube']}",
        storage_options={"headers": {"Authorization": f"Bearer {TOKEN}"}},
    )
    local = xr.open_zarr(workspace / "out" / "landcover.zarr")
    assert set(remote.data_vars) == set(local.data_vars) == {"band_1"}
    np.testing.assert_array_equal(remote["band_1"].values, local["band_1"].values)
    np.testing.assert_array_equal(remote["lat"].values, local["lat"].values)


def test_token_required_except_healthz(service):
    with service.client(token=None) as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        for path in ("/api/jobs", "/api/cubes", "/api/openapi.json", "/cubes/x/y.zarr/.zattrs"):
            r = anonymous.get(path)
            assert r.status_code == 401 and r.json()["error"], path
        assert anonymous.post("/api/jobs", content=small_config()).status_code == 401
    with service.client(token="wrong-token-0123456789abcdef") as wrong:
        assert wrong.get("/api/jobs").status_code == 401
    with service.client() as client:
        spec = client.get("/api/openapi.json").json()
        assert "/api/jobs/{job}/events" in spec["paths"]


def test_invalid_config_gets_located_problems_and_bad_input_4xx(service):
    text = small_config().replace("spatial_res: 0.01", "spatial_res: -1")
    with service.client() as client:
        r = client.post("/api/jobs", content=text, headers={"content-type": "application/yaml"})
        assert r.status_code == 400
        (problem,) = r.json()["problems"]
        assert problem["location"] == "grid_mappings[0].spatial_res"
        assert "(line " in problem["message"]
        assert client.post("/api/jobs", content=b"\xff\xfe").status_code == 400
        assert (
            client.post(
                "/api/jobs", content="{", headers={"content-type": "application/json"}
            ).status_code
            == 400
        )
        assert client.post("/api/jobs", content="x" * (2 * 2**20)).status_code == 413
        assert client.post("/api/jobs", content="- a list").status_code == 400
        assert client.get("/api/jobs/../../etc/passwd").status_code == 404
        assert client.get("/api/jobs/nope").status_code == 404
        assert client.post("/api/jobs/0123/cancel").status_code == 404


def test_hooks_refused_without_allow_hooks(service):
    text = small_config(custom_processing={"module_path": "hooks/slow.py", "function_name": "slow"})
    with service.client() as client:
        r = client.post("/api/jobs", json={"config": text})
    assert r.status_code == 400
    assert r.json()["problems"] == [
        {
            "location": "datasets[0].custom_processing",
            "message": "hooks run arbitrary code: refused (serve --allow-hooks)",
        }
    ]


@pytest.mark.parametrize(
    ("dask", "locations"),
    [
        ({"address": "tcp://203.0.113.9:8786"}, ["general.dask.scheduler", "general.dask.address"]),
        ({"scheduler": "processes"}, ["general.dask.scheduler"]),
        (
            {"cluster": "slurm", "cores": 1, "memory": "1GB", "account": "someone-else",
             "job_extra_directives": ["--x"]},
            ["general.dask.scheduler", "general.dask.cluster", "general.dask.cores",
             "general.dask.memory", "general.dask.account", "general.dask.job_extra_directives"],
        ),
        ({"num_workers": 4096}, ["general.dask.num_workers"]),
    ],
)  # fmt: skip
def test_configs_cannot_choose_where_their_tasks_run(service, dask, locations):
    config = yaml.safe_load(small_config())
    config["general"]["dask"] = dask
    with service.client() as client:
        r = client.post("/api/jobs", json={"config": yaml.safe_dump(config)})
        assert r.status_code == 400, r.text
        assert sorted(p["location"] for p in r.json()["problems"]) == sorted(locations)
        config["general"]["dask"] = {"scheduler": "threads", "num_workers": 1}
        assert client.post("/api/jobs", json={"config": yaml.safe_dump(config)}).status_code == 201


def test_local_paths_outside_allow_root_refused(service, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.tif").write_bytes(b"")
    text = small_config(storage=str(outside))
    config = yaml.safe_load(text)
    config["datasets"][0]["data_id"] = "../../elsewhere/x.tif"
    with service.client() as client:
        r = client.post("/api/jobs", json={"config": yaml.safe_dump(config)})
    assert r.status_code == 400
    locations = [p["location"] for p in r.json()["problems"]]
    assert "data_stores[0].store_params.root" in locations
    assert "datasets[0].data_id" in locations


def test_cube_paths_cannot_escape_storage(service, workspace, tmp_path):
    job = submit(service, small_config())
    wait_for(service, job, {"completed"})
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    os.symlink(secret, workspace / "out" / "landcover.zarr" / "link")
    with service.client() as client:
        base = f"/cubes/{job}/landcover.zarr"
        assert client.get(f"{base}/.zattrs").status_code == 200
        assert client.get(f"{base}/link").status_code == 403
        for path in (
            f"{base}/%2e%2e/%2e%2e/secret.txt",
            f"/cubes/{job}/.multistore/landcover.zarr.json",
        ):
            r = client.get(path)
            assert r.status_code in (403, 404) and "do not serve" not in r.text, path


def test_planted_secret_never_in_any_response(service):
    planted = "PLANTED-s3cr3t-value-42"
    config = yaml.safe_load(small_config())
    config["data_stores"].append(
        {
            "identifier": "bucket",
            "store_id": "s3",
            "store_params": {"root": "b", "storage_options": {"key": "k", "secret": planted}},
        }
    )
    config["datasets"].append(
        {
            "identifier": "broken",
            "store": "local",
            "data_id": f"missing.tif?token={planted}",
            "grid_mapping": "gm",
        }
    )
    text = yaml.safe_dump(config, sort_keys=False)
    bodies = []
    job = submit(service, text)
    bodies.append(json.dumps(follow(service, job)))
    with service.client() as client:
        for path in (f"/api/jobs/{job}", "/api/jobs", f"/api/jobs/{job}/log", "/api/cubes"):
            bodies.append(client.get(path).text)
        bad = text.replace("spatial_res: 0.01", f"spatial_res: {planted}")
        bodies.append(client.post("/api/jobs", json={"config": bad}).text)
    job_body = json.loads(bodies[1])
    assert job_body["status"] == "failed"
    assert {d["identifier"]: d["status"] for d in job_body["datasets"]} == {
        "landcover": "completed",
        "broken": "failed",
    }
    for body in bodies:
        assert planted not in body
    assert "***" in job_body["config"]


def _slow_service(tmp_path: Path, workspace: Path, max_jobs: int) -> Service:
    return start_service(
        ServiceSettings(
            state=tmp_path / "state",
            allow_roots=(workspace,),
            allow_hooks=True,
            max_jobs=max_jobs,
            env={},
        )
    )


def test_cancel_running_and_queued(tmp_path, workspace):
    svc = _slow_service(tmp_path, workspace, max_jobs=1)
    try:
        outside = tmp_path / "evil.py"
        outside.write_text("def slow(ds):\n    return ds\n")
        hook = {"module_path": str(outside), "function_name": "slow"}
        with svc.client() as client:  # hooks allowed, but only files under the allowed roots
            r = client.post("/api/jobs", json={"config": small_config(custom_processing=hook)})
        assert r.status_code == 400
        assert [p["location"] for p in r.json()["problems"]] == [
            "datasets[0].custom_processing.module_path"
        ]
        slow = small_config(
            custom_processing={"module_path": "hooks/slow.py", "function_name": "slow"}
        )
        running = submit(svc, slow)
        queued = submit(svc, small_config("other", storage="out2"))
        wait_for(svc, running, {"running"})
        with svc.client() as client:
            assert client.post(f"/api/jobs/{queued}/cancel").status_code == 202
            assert client.post(f"/api/jobs/{running}/cancel").status_code == 202
        assert (
            wait_for(svc, running, {"cancelled", "completed", "failed"}, 30)["status"]
            == "cancelled"
        )
        body = wait_for(svc, queued, {"cancelled"}, 5)
        assert body["datasets"] == [] and body["started"] is None
        assert not (workspace / "out2").exists()
        with svc.client() as client:
            assert client.post(f"/api/jobs/{running}/cancel").status_code == 409
    finally:
        svc.stop()


def test_restart_requeues_interrupted_job_and_skips_complete_cubes(tmp_path, workspace):
    state = tmp_path / "state"
    settings = ServiceSettings(state=state, allow_roots=(workspace,), env={})
    first = start_service(settings)
    done = submit(first, small_config("first"))
    wait_for(first, done, {"completed"})
    first.stop()
    # a server that died mid-job leaves it "running" in the database
    store = JobStore(state)
    config = yaml.safe_load(small_config("first"))
    config["datasets"].append({**config["datasets"][0], "identifier": "second"})
    from multistore.service.jobs import load_request_config

    text = yaml.safe_dump(config)
    job = store.create(
        name="c.yml",
        text=text,
        config=load_request_config(text, settings),
        datasets=None,
        force=False,
    )
    assert store.claim(job)
    store.close()
    second = start_service(settings)
    try:
        body = wait_for(second, job, {"completed", "failed"})
        statuses = [e["status"] for e in follow(second, job) if e["type"] == "job"]
        assert statuses == ["queued", "running", "interrupted", "queued", "running", "completed"]
        assert {d["identifier"]: d["status"] for d in body["datasets"]} == {
            "first": "skipped",
            "second": "completed",
        }
        reference = xr.open_zarr(workspace / "out" / "first.zarr")["band_1"].values
        np.testing.assert_array_equal(
            xr.open_zarr(workspace / "out" / "second.zarr")["band_1"].values, reference
        )
    finally:
        second.stop()


@pytest.mark.parametrize("bad", ["", "short"])
def test_serve_cli_needs_a_token(bad, monkeypatch):
    from click.testing import CliRunner

    from multistore.cli.main import main

    monkeypatch.setenv("MULTISTORE_TOKEN", bad)
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 2
    assert "token" in result.output.lower()


def test_env_secrets_masked_and_server_env_hidden(tmp_path, workspace):
    planted = "ENV-s3cr3t-value-77"
    env = {"MULTISTORE_CONFIG_S3_SECRET": planted}
    svc = start_service(
        ServiceSettings(state=tmp_path / "state", allow_roots=(workspace,), env=env)
    )
    try:
        config = yaml.safe_load(small_config())
        config["datasets"][0]["data_id"] = "${MULTISTORE_CONFIG_S3_SECRET}.tif"
        job = submit(svc, yaml.safe_dump(config))
        bodies = [json.dumps(follow(svc, job))]
        with svc.client() as client:
            bodies += [client.get(p).text for p in (f"/api/jobs/{job}", f"/api/jobs/{job}/log")]
            # a variable of the server's environment outside MULTISTORE_CONFIG_* is unset
            config["datasets"][0]["data_id"] = "${MULTISTORE_TOKEN}.tif"
            r = client.post("/api/jobs", json={"config": yaml.safe_dump(config)})
            assert r.status_code == 400
            assert r.json()["problems"][0]["location"] == "datasets[0].data_id"
        assert json.loads(bodies[1])["datasets"][0]["status"] == "failed"
        for body in bodies:
            assert planted not in body
    finally:
        svc.stop()
