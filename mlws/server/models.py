"""REST routes for registered models."""

from __future__ import annotations

from typing import Any

from ..errors import UserErrorException
from .api import REQUEST_ID_SCHEMA, Call, Endpoint, query_value


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


#: The JSON schema of the metadata fields (:data:`METADATA`).
_META_SCHEMA: dict[str, Any] = {
    "tags": {"type": "object"},
    "properties": {"type": "object"},
    "description": {"type": "string"},
    "framework": {"type": "string"},
    "frameworkVersion": {"type": "string"},
}

_UPLOAD_FIELDS = {
    "manifest",
    "description",
    "tags",
    "properties",
    "modelFramework",
    "modelFrameworkVersion",
    "registrationId",
}


def _top(entries: list[Any]) -> str:
    """The registered file or folder a model version keeps (one file, or one folder's files)."""
    tops = {e.path.split("/", 1)[0] for e in entries}
    nested = sum("/" in e.path for e in entries)
    if len(tops) != 1 or nested not in (0, len(entries)) or (not nested and len(entries) > 1):
        raise UserErrorException(
            f"a model version is one file or one folder: its {len(entries)} paths must be one"
            f" file name or all under one folder, got {', '.join(sorted(tops)[:5])}"
        )
    return tops.pop()


def register_version(call: Call) -> dict[str, Any]:
    """``POST /models/{name}/versions``: files whose blobs were sent first (``/blobs/missing``,
    ``PUT /blobs/...``) as the next version of a model, made by the token's user. With
    ``registrationId``, sent again it answers the version made the first time (``duplicate``)."""
    from ..models import check_model_name, record_version
    from .api import body_field, request_id
    from .blobs import manifest_entries

    name = check_model_name(call.path["name"])
    body = call.body
    unknown = set(body) - _UPLOAD_FIELDS
    if unknown:
        raise UserErrorException(f"unknown field(s) {', '.join(sorted(unknown))} in the body")
    if body.get("manifest") is None:
        raise UserErrorException(
            'the body needs "manifest": [{"path", "hash", "size"[, "mode"]}, ...] or a stored'
            ' manifest\'s "sha256:..."'
        )
    reg_id = request_id(body, "registrationId")
    fields = {
        "tags": body_field(body, "tags", dict),
        "properties": body_field(body, "properties", dict),
        "description": body_field(body, "description", str),
        "framework": body_field(body, "modelFramework", str),
        "framework_version": body_field(body, "modelFrameworkVersion", str),
    }
    entries = manifest_entries(call.ws, body["manifest"])  # checked whole before any write
    model, new = record_version(
        call.ws,
        name,
        entries,
        _top(entries),
        **fields,
        created_by=call.user.name,
        request_id=reg_id,
    )
    return answer(model) if new else {**answer(model), "duplicate": True}


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
        "Register the next version of a model from a manifest whose blobs were sent first"
        " (one file or one folder; at most once per registrationId)",
        register_version,
        body={
            "type": "object",
            "required": ["manifest"],
            "properties": {
                "manifest": {
                    "oneOf": [
                        {"type": "string", "description": "a stored manifest blob, sha256:..."},
                        {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["path", "hash", "size"],
                                "properties": {
                                    "path": {"type": "string"},
                                    "hash": {"type": "string"},
                                    "size": {"type": "integer", "minimum": 0},
                                    "mode": {"type": "integer", "enum": [420, 493]},
                                },
                            },
                        },
                    ]
                },
                "description": {"type": "string"},
                "tags": {"type": "object"},
                "properties": {"type": "object"},
                "modelFramework": {"type": "string"},
                "modelFrameworkVersion": {"type": "string"},
                "registrationId": {
                    **REQUEST_ID_SCHEMA,
                    "description": "sent again, answers the version made the first time"
                    " (duplicate: true) instead of a new one",
                },
            },
        },
        status=201,
        tag="models",
    ),
]
