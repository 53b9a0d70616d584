"""REST routes that edit what exists: a model version's tags, properties and description, its
deletion (owners), a run's tags and display name. Each request makes one change through the
library's own method, its input checked first, so a refused request changes nothing."""

from __future__ import annotations

from typing import Any

from ..errors import UserErrorException
from .api import Call, Endpoint, body_field

#: The edits ``model.update_tags_properties`` makes together: ``{field: (argument, kind)}``.
MODEL_CHANGES = {
    "addTags": ("add_tags", dict),
    "removeTags": ("remove_tags", list),
    "addProperties": ("add_properties", dict),
}


def _model(call: Call) -> Any:
    from ..models import Model

    version = call.path["version"]
    if not version.isdigit():
        raise UserErrorException(f"a model version is a whole number, got {version!r}")
    return Model(call.ws, call.path["name"], version=int(version))


def _one_change(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(body) - allowed
    if unknown:
        raise UserErrorException(f"unknown field(s) {', '.join(sorted(unknown))} in the body")
    if not body:
        raise UserErrorException(f"the body needs one of {', '.join(sorted(allowed))}")


def update_model(call: Call) -> dict[str, Any]:
    """``PATCH /models/{name}/versions/{version}``: any of ``addTags``, ``removeTags`` and
    ``addProperties`` (add-only: 409 on another value), made together as
    ``model.update_tags_properties``; or ``tags`` and/or ``description`` (replaced, as
    ``model.update``)."""
    from .models import answer

    body = call.body
    _one_change(body, {*MODEL_CHANGES, "tags", "description"})
    changes = [k for k in body if k in MODEL_CHANGES]
    if changes and set(body) & {"tags", "description"}:
        raise UserErrorException(
            "one change per request: addTags, removeTags and addProperties, or an update"
        )
    model = _model(call)
    if changes:
        arguments = {}
        for key in changes:
            argument, kind = MODEL_CHANGES[key]
            value = body_field(body, key, kind)
            if kind is list and value is not None and any(not isinstance(v, str) for v in value):
                raise UserErrorException(f"'{key}' must be a list of strings")
            arguments[argument] = value
        model.update_tags_properties(**arguments)
    else:
        model.update(
            tags=body_field(body, "tags", dict), description=body_field(body, "description", str)
        )
    return answer(model)


def delete_model(call: Call) -> dict[str, Any]:
    """``DELETE /models/{name}/versions/{version}`` (409 while a service uses it, one of the
    server's or one deployed from a client)."""
    from ..errors import ModelInUse
    from .services import recorded_users

    model = _model(call)
    users = recorded_users(call.ws, model.id)
    if users:
        raise ModelInUse(
            f"model {model.id} is used by service(s) {', '.join(users)}; delete them first"
        )
    model.delete()
    return {"deleted": model.id}


def _run(call: Call) -> Any:
    from .leases import expire

    expire(call.ws, call.run_lease_s, call.path["run_id"])
    return call.ws.get_run(call.path["run_id"])


def remove_run_tags(call: Call) -> dict[str, Any]:
    """``POST /runs/{run_id}/tags/remove``: remove ``keys`` (keys not set are ignored)."""
    _one_change(call.body, {"keys"})
    keys = body_field(call.body, "keys", list)
    if not keys or any(not isinstance(k, str) for k in keys):
        raise UserErrorException('"keys" must be a non-empty list of tag names')
    run = _run(call)
    run.remove_tags(keys)
    return {"tags": run.get_tags()}


def update_run(call: Call) -> dict[str, Any]:
    """``PATCH /runs/{run_id}``: set ``displayName``."""
    from .runs import run_details

    _one_change(call.body, {"displayName"})
    name = body_field(call.body, "displayName", str)
    if not name or not name.strip() or len(name) > 256:
        raise UserErrorException('"displayName" must be 1-256 characters, not only spaces')
    run = _run(call)
    run.display_name = name
    return run_details(run)


ENDPOINTS = [
    Endpoint(
        "PATCH",
        "/models/{name}/versions/{version}",
        "contributor",
        "Change a model version's tags and properties (add-only) together, or its description",
        update_model,
        body={
            "type": "object",
            "properties": {
                "addTags": {"type": "object"},
                "removeTags": {"type": "array", "items": {"type": "string"}},
                "addProperties": {"type": "object"},
                "tags": {"type": "object"},
                "description": {"type": "string"},
            },
        },
        tag="models",
    ),
    Endpoint(
        "DELETE",
        "/models/{name}/versions/{version}",
        "owner",
        "Delete a model version (its files stay until gc)",
        delete_model,
        tag="models",
    ),
    Endpoint(
        "POST",
        "/runs/{run_id}/tags/remove",
        "contributor",
        "Remove a run's tags by key",
        remove_run_tags,
        body={
            "type": "object",
            "required": ["keys"],
            "properties": {"keys": {"type": "array", "items": {"type": "string"}}},
        },
        tag="runs",
    ),
    Endpoint(
        "PATCH",
        "/runs/{run_id}",
        "contributor",
        "Set a run's display name",
        update_run,
        body={
            "type": "object",
            "required": ["displayName"],
            "properties": {"displayName": {"type": "string", "maxLength": 256}},
        },
        tag="runs",
    ),
]
