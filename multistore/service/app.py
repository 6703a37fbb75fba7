"""The HTTP face of ``multistore serve``: Starlette routes over the job store and runner."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .jobs import JobRejected, Runner, ServiceSettings, load_request_config
from .jobstore import FINAL, JobStore
from .openapi import OPENAPI
from .security import PathRefused, bearer, safe_file, token_matches

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 * 2**20  # a config is a few KB
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
STATIC = Path(__file__).parent / "static"
# the page and its script hold no data: the browser must load them to ask for the token
PUBLIC = frozenset({"/healthz", "/", "/static/app.js", "/static/app.css"})
EVENT_POLL_S = 0.25


class BearerAuth:
    """Every route but ``PUBLIC`` needs ``Authorization: Bearer <token>`` (constant time)."""

    def __init__(self, app: ASGIApp, token: str):
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in PUBLIC:
            headers = dict(scope.get("headers") or [])
            given = bearer(headers.get(b"authorization", b"").decode("latin-1"))
            if not token_matches(given, self.token):
                response = JSONResponse(
                    {"error": "missing or wrong bearer token"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def create_app(settings: ServiceSettings, token: str, runner: Runner | None = None) -> ASGIApp:
    """The ASGI app; starts the runner (re-queuing interrupted jobs) on startup."""
    store = runner.store if runner else JobStore(settings.state)
    runner = runner or Runner(store, settings)

    def job_or_404(job: str) -> dict[str, Any]:
        found = store.get(job) if _JOB_ID.match(job) else None
        if found is None:
            raise HTTPException(404, f"no job {job!r}")
        return found

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ("app.js", "app.css"):
            raise HTTPException(404, "not found")
        return FileResponse(STATIC / name)

    async def openapi(request: Request) -> Response:
        return JSONResponse(OPENAPI)

    async def submit(request: Request) -> Response:
        body = await _read_body(request)
        datasets, force = None, False
        ctype = request.headers.get("content-type", "").split(";")[0].strip()
        if ctype == "application/json":
            try:
                payload = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                return error(400, "the body is not JSON")
            if not isinstance(payload, dict) or not isinstance(payload.get("config"), str):
                return error(
                    400, 'expected {"config": "<YAML text>", "datasets": [...], "force": false}'
                )
            text = payload["config"]
            datasets = payload.get("datasets")
            force = payload.get("force", False)
            name = payload.get("name") or "config.yml"
        else:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                return error(400, "the config is not UTF-8 text")
            if request.query_params.get("datasets"):
                datasets = request.query_params["datasets"].split(",")
            force = request.query_params.get("force", "false").lower() in ("1", "true", "yes")
            name = request.query_params.get("name") or "config.yml"
        if datasets is not None and (
            not isinstance(datasets, list) or not all(isinstance(d, str) for d in datasets)
        ):
            return error(400, "datasets: a list of dataset identifiers")
        if not isinstance(force, bool):
            return error(400, "force: true or false")
        if not isinstance(name, str) or len(name) > 200:
            return error(400, "name: a short string")
        try:
            config = await run_in_threadpool(load_request_config, text, settings)
        except JobRejected as e:
            problems = [{"location": p.location, "message": p.message} for p in e.problems]
            return error(400, "invalid config", problems=problems)
        known = {d.identifier for d in config.datasets}
        unknown = [d for d in datasets or () if d not in known]
        if unknown:
            problems = [{"location": "datasets", "message": f"no dataset {d!r}"} for d in unknown]
            return error(400, "invalid request", problems=problems)
        job = await run_in_threadpool(
            store.create, name=name, text=text, config=config, datasets=datasets, force=force
        )
        runner.submit(job)
        return JSONResponse({"id": job, "status_url": f"/api/jobs/{job}"}, status_code=201)

    async def jobs(request: Request) -> Response:
        return JSONResponse({"jobs": await run_in_threadpool(store.list)})

    async def job(request: Request) -> Response:
        # two indexed reads of a local database take well under a millisecond: done on the
        # event loop, since a hop to the thread pool waits for the GIL twice under load
        return JSONResponse(job_or_404(request.path_params["job"]))

    async def cancel(request: Request) -> Response:
        ident = request.path_params["job"]
        job_or_404(ident)
        if not await run_in_threadpool(runner.cancel, ident):
            return error(409, "the job is not queued or running")
        return JSONResponse({"id": ident, "cancelled": True}, status_code=202)

    async def job_log(request: Request) -> Response:
        ident = request.path_params["job"]
        job_or_404(ident)
        lines = await run_in_threadpool(store.log_lines, ident)
        return Response("\n".join(lines) + "\n", media_type="text/plain")

    async def events(request: Request) -> Response:
        ident = request.path_params["job"]
        job_or_404(ident)
        try:
            after = int(request.headers.get("last-event-id") or 0)
        except ValueError:
            after = 0

        async def stream() -> AsyncIterator[str]:
            seq = after
            while True:
                batch = await run_in_threadpool(store.events_after, ident, seq)
                done = False
                for seq, data in batch:
                    yield f"id: {seq}\nevent: {data['type']}\ndata: {json.dumps(data)}\n\n"
                    done = done or (data["type"] == "job" and data["status"] in FINAL)
                if done or await request.is_disconnected():
                    return
                if not batch:
                    yield ": keep-alive\n\n"
                await asyncio.sleep(EVENT_POLL_S)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def cubes(request: Request) -> Response:
        return JSONResponse({"cubes": await run_in_threadpool(store.cubes)})

    async def cube_file(request: Request) -> Response:
        ident, path = request.path_params["job"], request.path_params["path"]
        row = store.row(ident) if _JOB_ID.match(ident) else None
        if row is None or not row["storage_root"]:
            return error(404, "no cubes for this job (unknown job or remote storage)")
        top = path.split("/", 1)[0]
        try:
            file = safe_file(Path(row["storage_root"]), path)
        except PathRefused as e:
            return error(403, str(e))
        except (FileNotFoundError, NotADirectoryError):
            return error(404, "not found")
        if top not in store.served_names(ident):
            return error(404, "not found")
        return await run_in_threadpool(_ranged, file, request)

    routes = [
        Route("/healthz", healthz),
        Route("/", page),
        Route("/static/{name}", static),
        Route("/api/openapi.json", openapi),
        Route("/api/jobs", submit, methods=["POST"]),
        Route("/api/jobs", jobs, methods=["GET"]),
        Route("/api/jobs/{job}", job),
        Route("/api/jobs/{job}/events", events),
        Route("/api/jobs/{job}/cancel", cancel, methods=["POST"]),
        Route("/api/jobs/{job}/log", job_log),
        Route("/api/cubes", cubes),
        Route("/cubes/{job}/{path:path}", cube_file, methods=["GET", "HEAD"]),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error(exc.status_code, str(exc.detail))

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("request %s failed: %s", request.url.path, type(exc).__name__)
        return error(500, "internal error (see the server log)")

    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=_lifespan(runner),
    )
    app.state.runner = runner
    return BearerAuth(app, token)


def _lifespan(runner: Runner):
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(runner.start)
        try:
            yield
        finally:
            runner.stop()

    return lifespan


class _TooLarge(HTTPException):
    def __init__(self) -> None:
        super().__init__(413, f"request body larger than {MAX_BODY_BYTES // 2**20} MB")


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _TooLarge()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _TooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def _ranged(file: Path, request: Request) -> Response:
    """One file, whole or one byte range (what fsspec's HTTP filesystem asks for)."""
    size = os.stat(file).st_size
    media = "image/png" if file.suffix == ".png" else "application/octet-stream"
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "no-cache"}
    spec = request.headers.get("range")
    start, end, status = 0, size - 1, 200
    if spec:
        match = _RANGE.match(spec.strip())
        if not match or (not match.group(1) and not match.group(2)):
            return error(416, "only single byte ranges are served")
        first, last = match.group(1), match.group(2)
        if first:
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
        else:
            start, end = max(0, size - int(last)), size - 1
        if start >= size or start > end:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1 if size else 0)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=media)
    with open(file, "rb") as f:
        f.seek(start)
        body = f.read(end - start + 1) if size else b""
    return Response(body, status_code=status, headers=headers, media_type=media)
