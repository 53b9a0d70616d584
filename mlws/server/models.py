"""REST routes for registered models."""

from __future__ import annotations

from typing import Any

from ..errors import UserErrorException
from .api import Call, Endpoint, query_value


def list_models(call: Call) -> dict[str, Any]:
    """``GET /models``: newest version first within a name (``latest=true``: one per name)."""
    from ..models import Model

    latest = query_value(call, "latest", "false")
    if latest not in ("true", "false"):
        raise UserErrorException(f"latest must be 'true' or 'false', got {latest!r}")
    found = Model.list(call.ws, name=query_value(call, "name"), latest=latest == "true")
    return {"value": [m.serialize() for m in found]}


def get_model(call: Call) -> dict[str, Any]:
    """``GET /models/{name}/versions/{version}``."""
    from ..models import Model

    version = call.path["version"]
    if not version.isdigit():
        raise UserErrorException(f"a model version is a whole number, got {version!r}")
    return Model(call.ws, call.path["name"], version=int(version)).serialize()


def register_from_run(call: Call) -> dict[str, Any]:
    """``POST /runs/{run_id}/models``: a run's file or folder as the next version of a model
    (v1's ``run.register_model``), made by the token's user."""
    from ..models import register_from_run as register
    from .api import body_field

    body = call.body
    name = body_field(body, "name", str)
    path = body_field(body, "path", str)
    if name is None or path is None:
        raise UserErrorException(
            'the body needs "name" (the model) and "path" (a run file or folder)'
        )
    unknown = set(body) - {
        "name",
        "path",
        "tags",
        "properties",
        "description",
        "framework",
        "frameworkVersion",
    }
    if unknown:
        raise UserErrorException(f"unknown field(s) {', '.join(sorted(unknown))} in the body")
    model = register(
        call.ws.get_run(call.path["run_id"]),
        name,
        path,
        tags=body_field(body, "tags", dict),
        properties=body_field(body, "properties", dict),
        description=body_field(body, "description", str),
        model_framework=body_field(body, "framework", str),
        model_framework_version=body_field(body, "frameworkVersion", str),
        created_by=call.user.name,
    )
    return model.serialize()


ENDPOINTS = [
    Endpoint(
        "GET",
        "/models",
        "reader",
        "List registered models",
        list_models,
        query=(
            ("name", "only this model's versions"),
            ("latest", "true: each name's newest version only"),
        ),
        tag="models",
    ),
    Endpoint(
        "GET",
        "/models/{name}/versions/{version}",
        "reader",
        "One model version",
        get_model,
        tag="models",
    ),
    Endpoint(
        "POST",
        "/runs/{run_id}/models",
        "contributor",
        "Register a run's file or folder as the next version of a model (run.register_model)",
        register_from_run,
        body={
            "type": "object",
            "required": ["name", "path"],
            "properties": {
                "name": {"type": "string"},
                "path": {"type": "string"},
                "tags": {"type": "object"},
                "properties": {"type": "object"},
                "description": {"type": "string"},
                "framework": {"type": "string"},
                "frameworkVersion": {"type": "string"},
            },
        },
        status=201,
        tag="models",
    ),
    Endpoint(
        "POST",
        "/models/{name}/versions",
        "contributor",
        "Register a model version from a manifest whose blobs are stored",
        None,
        body={
            "type": "object",
            "required": ["manifest"],
            "properties": {"manifest": {"type": "string"}},
        },
        status=201,
        tag="models",
    ),
]
