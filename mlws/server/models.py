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
    return {"value": [answer(m) for m in found]}


def answer(model: Any) -> dict[str, Any]:
    """A model version as the API shows it: v1's fields, plus the hash of its manifest (a
    client downloads the files it names from ``GET /blobs/...``)."""
    return {**model.serialize(), "manifest": model.manifest}


def get_model(call: Call) -> dict[str, Any]:
    """``GET /models/{name}/versions/{version}``."""
    from ..models import Model

    version = call.path["version"]
    if not version.isdigit():
        raise UserErrorException(f"a model version is a whole number, got {version!r}")
    return answer(Model(call.ws, call.path["name"], version=int(version)))


#: The metadata fields a registering body may carry.
METADATA = ("tags", "properties", "description", "framework", "frameworkVersion")


def _metadata(body: dict[str, Any], *fields: str) -> dict[str, Any]:
    """The model metadata of a registering body, each field checked; a field neither in
    ``fields`` nor metadata is refused."""
    from .api import body_field

    unknown = set(body) - {*fields, *METADATA}
    if unknown:
        raise UserErrorException(f"unknown field(s) {', '.join(sorted(unknown))} in the body")
    return {
        "tags": body_field(body, "tags", dict),
        "properties": body_field(body, "properties", dict),
        "description": body_field(body, "description", str),
        "framework": body_field(body, "framework", str),
        "framework_version": body_field(body, "frameworkVersion", str),
    }


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
    meta = _metadata(body, "name", "path")
    model = register(
        call.ws.get_run(call.path["run_id"]),
        name,
        path,
        tags=meta["tags"],
        properties=meta["properties"],
        description=meta["description"],
        model_framework=meta["framework"],
        model_framework_version=meta["framework_version"],
        created_by=call.user.name,
    )
    return answer(model)


def register_version(call: Call) -> dict[str, Any]:
    """``POST /models/{name}/versions``: the next version of a model from a stored manifest
    (its blobs sent first: ``POST /blobs/missing``, ``PUT /blobs/...``), made by the token's
    user. ``path``: the registered file or folder among the manifest's paths (default: their
    common first folder, or the one file)."""
    from ..models import check_model_name, record_version
    from .api import body_field
    from .blobs import stored_manifest

    name = check_model_name(call.path["name"])
    body = call.body
    digest = body_field(body, "manifest", str)
    if digest is None:
        raise UserErrorException('the body needs "manifest": "sha256:..." (a stored manifest)')
    meta = _metadata(body, "manifest", "path")
    entries = stored_manifest(call.ws, digest)
    if not entries:
        raise UserErrorException(f"manifest {digest} names no files: a model needs one")
    tops = {e.path.split("/", 1)[0] for e in entries}
    top = body_field(body, "path", str) or (tops.pop() if len(tops) == 1 else None)
    if top is None or any(e.path != top and not e.path.startswith(top + "/") for e in entries):
        raise UserErrorException(
            '"path" must name the file or folder every file of the manifest is in'
        )
    model = record_version(call.ws, name, entries, top, **meta, created_by=call.user.name)
    return answer(model)


#: The JSON schema of the metadata fields (:data:`METADATA`).
_META_SCHEMA: dict[str, Any] = {
    "tags": {"type": "object"},
    "properties": {"type": "object"},
    "description": {"type": "string"},
    "framework": {"type": "string"},
    "frameworkVersion": {"type": "string"},
}

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
                **_META_SCHEMA,
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
        register_version,
        body={
            "type": "object",
            "required": ["manifest"],
            "properties": {
                "manifest": {"type": "string"},
                "path": {"type": "string"},
                **_META_SCHEMA,
            },
        },
        status=201,
        tag="models",
    ),
]
