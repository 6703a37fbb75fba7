"""The OpenAPI document of the service, written by hand (the API is small and stable)."""

from __future__ import annotations

from typing import Any

from .. import __version__

_JOB = {"$ref": "#/components/schemas/Job"}
_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ID = {"name": "job", "in": "path", "required": True, "schema": {"type": "string"}}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "multistore serve", "version": __version__},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "properties": {
                    "error": {"type": "string"},
                    "problems": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "location": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        },
                    },
                },
            },
            "Dataset": {
                "type": "object",
                "properties": {
                    k: {"type": t}
                    for k, t in {
                        "identifier": "string",
                        "kind": "string",
                        "status": "string",
                        "message": "string",
                        "progress": ["number", "null"],
                        "started": ["number", "null"],
                        "finished": ["number", "null"],
                        "bytes": ["integer", "null"],
                        "cube": ["string", "null"],
                        "quicklook": ["string", "null"],
                    }.items()
                },
            },
            "Job": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "name": {"type": "string"},
                    "status": {"enum": ["queued", "running", "completed", "failed", "cancelled"]},
                    "message": {"type": "string"},
                    "created": {"type": "number"},
                    "started": {"type": ["number", "null"]},
                    "finished": {"type": ["number", "null"]},
                    "status_url": {"type": "string"},
                    "config": {"type": "string", "description": "YAML, secrets masked"},
                    "datasets": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/Dataset"},
                    },
                },
            },
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/healthz": {
            "get": {"security": [], "responses": {"200": {"description": "the service is up"}}}
        },
        "/api/jobs": {
            "post": {
                "summary": "Submit a config",
                "requestBody": {
                    "content": {
                        "application/yaml": {"schema": {"type": "string"}},
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["config"],
                                "properties": {
                                    "config": {"type": "string"},
                                    "datasets": {"type": "array", "items": {"type": "string"}},
                                    "force": {"type": "boolean"},
                                    "name": {"type": "string"},
                                },
                            }
                        },
                    }
                },
                "responses": {
                    "201": _json(
                        {
                            "type": "object",
                            "properties": {
                                "id": {"type": "string"},
                                "status_url": {"type": "string"},
                            },
                        },
                        "queued",
                    ),
                    "400": _json(_ERROR, "invalid config, with located problems"),
                    "401": _json(_ERROR, "missing or wrong token"),
                    "413": _json(_ERROR, "body too large"),
                },
            },
            "get": {"summary": "All jobs", "responses": {"200": {"description": "jobs"}}},
        },
        "/api/jobs/{job}": {
            "get": {
                "parameters": [_ID],
                "responses": {"200": _json(_JOB, "the job"), "404": _json(_ERROR, "no such job")},
            }
        },
        "/api/jobs/{job}/events": {
            "get": {
                "parameters": [_ID],
                "summary": "Server-sent events of status changes, until the job ends",
                "responses": {
                    "200": {"description": "event stream", "content": {"text/event-stream": {}}}
                },
            }
        },
        "/api/jobs/{job}/cancel": {
            "post": {
                "parameters": [_ID],
                "responses": {
                    "202": {"description": "cancelling"},
                    "409": _json(_ERROR, "not queued or running"),
                },
            }
        },
        "/api/jobs/{job}/log": {
            "get": {
                "parameters": [_ID],
                "responses": {"200": {"description": "log", "content": {"text/plain": {}}}},
            }
        },
        "/api/cubes": {"get": {"responses": {"200": {"description": "finished cubes"}}}},
        "/cubes/{job}/{path}": {
            "get": {
                "summary": "Cube files (read-only Zarr, byte ranges) and quick-look PNGs",
                "parameters": [
                    _ID,
                    {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
                "responses": {"200": {"description": "file"}, "206": {"description": "range"}},
            }
        },
    },
}
