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
