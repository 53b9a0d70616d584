"""REST routes for services. A service deployed from a client (``Model.deploy`` on a remote
workspace) runs on that client's machine; the server keeps its *record* (``service_records``:
name, models, scoring URI, the state its machine last reported, who deployed it), which every
client lists and reads. Services deployed on the server's own machine are listed too, read-only.

Roles: readers read; contributors record, update and delete the services they deployed; owners
delete any record."""

from __future__ import annotations

import json
import time
from typing import Any

from ..errors import NotAvailableRemotely, UserErrorException, WebserviceException
from .api import Call, Endpoint, body_field

#: The states a client may report (v1's).
STATES = ("Transitioning", "Healthy", "Unhealthy", "Failed", "Deleting")
_FIELDS = {"name", "models", "scoringUri", "state", "machine", "error"}


def _record_answer(row: Any) -> dict[str, Any]:
    from ..lifecycle import iso_utc

    return {
        "name": row["name"],
        "models": json.loads(row["models"]),
        "scoringUri": row["scoring_uri"],
        "state": row["state"],
        "machine": row["machine"],
        "error": json.loads(row["error"]) if row["error"] else None,
        "createdTime": iso_utc(row["created"]),
        "createdBy": row["created_by"],
        "updatedTime": iso_utc(row["updated"]),
        "where": "client",
    }


def _server_answer(ws: Any, name: str) -> dict[str, Any]:
    from ..serving.service import Webservice

    svc = Webservice(ws, name)
    data = svc.serialize()
    return {
        "name": name,
        "models": data["models"],
        "scoringUri": data["scoringUri"],
        "state": data["state"],
        "machine": ws.catalog.scalar("SELECT machine FROM services WHERE name = ?", (name,)),
        "error": data["error"],
        "where": "server",
    }


def _record(call: Call, name: str) -> Any:
    return call.ws.catalog.one("SELECT * FROM service_records WHERE name = ?", (name,))


def _server_names(call: Call) -> list[str]:
    return [r[0] for r in call.ws.catalog.query("SELECT name FROM services ORDER BY name")]


def list_services(call: Call) -> dict[str, Any]:
    """``GET /services``: the records of services deployed from clients, and the services of
    the server's own machine, by name."""
    rows = call.ws.catalog.query("SELECT * FROM service_records ORDER BY name")
    found = [_record_answer(r) for r in rows]
    found += [_server_answer(call.ws, n) for n in _server_names(call)]
    return {"value": sorted(found, key=lambda s: s["name"])}


def get_service(call: Call) -> dict[str, Any]:
    """``GET /services/{name}``."""
    from ..serving.service import check_service_name

    name = check_service_name(call.path["name"])
    row = _record(call, name)
    if row is not None:
        return _record_answer(row)
    return _server_answer(call.ws, name)  # :raises WebserviceException: no such service


def _reported(body: dict[str, Any]) -> dict[str, Any]:
    """The checked ``state``, ``scoringUri`` and ``error`` of a body (absent: not changed)."""
    out: dict[str, Any] = {}
    state = body_field(body, "state", str)
    if state is not None:
        if state not in STATES:
            raise UserErrorException(f"state must be one of {', '.join(STATES)}, got {state!r}")
        out["state"] = state
    uri = body_field(body, "scoringUri", str)
    if uri is not None:
        if not uri.startswith(("http://", "https://")) or len(uri) > 2048:
            raise UserErrorException(f"scoringUri must be an http(s) URL, got {uri[:80]!r}")
        out["scoring_uri"] = uri
    error = body_field(body, "error", dict)
    if error is not None:
        out["error"] = json.dumps(error)[:20_000]
    return out


def record_service(call: Call) -> dict[str, Any]:
    """``POST /services``: record a service deployed on a client's machine (its models must be
    registered here; the name must be free)."""
    from ..models import Model
    from ..serving.service import check_service_name

    body = call.body
    unknown = set(body) - _FIELDS
    if unknown:
        raise UserErrorException(f"unknown field(s) {', '.join(sorted(unknown))} in the body")
    name = check_service_name(body_field(body, "name", str))
    models = body_field(body, "models", list)
    machine = body_field(body, "machine", str)
    if not models or any(not isinstance(m, str) for m in models):
        raise UserErrorException('"models" must be a non-empty list of model ids (name:version)')
    if not machine or len(machine) > 255:
        raise UserErrorException('"machine" must name the machine the service runs on')
    ids = [Model(call.ws, id=m).id for m in models]  # :raises ModelNotFound:
    fields = {"state": "Transitioning", "scoring_uri": None, "error": None, **_reported(body)}
    now = time.time()
    with call.ws.catalog.write() as conn:
        taken = conn.execute(
            "SELECT 1 FROM service_records WHERE name = ? UNION ALL"
            " SELECT 1 FROM services WHERE name = ?",
            (name, name),
        ).fetchone()
        if taken:
            raise WebserviceException(
                f"a service named {name!r} exists; pass overwrite=True, or delete it first"
            )
        conn.execute(
            "INSERT INTO service_records (name, models, scoring_uri, state, machine, error,"
            " created, created_by, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                name,
                json.dumps(ids),
                fields["scoring_uri"],
                fields["state"],
                machine,
                fields["error"],
                now,
                call.user.name,
                now,
            ),
        )
    return _record_answer(_record(call, name))


def _own_record(call: Call) -> Any:
    """The record of ``{name}`` that this user may change: theirs, or any for an owner.

    :raises WebserviceException: no record. :raises NotAvailableRemotely: a service of the
        server's own machine. :raises Forbidden: someone else's, and the user is no owner."""
    from ..serving.service import check_service_name

    name = check_service_name(call.path["name"])
    row = _record(call, name)
    if row is None:
        if name in _server_names(call):
            raise NotAvailableRemotely(
                f"service {name!r} runs on the server's machine; change it there"
            )
        raise WebserviceException(f"no service named {name!r} in workspace {call.ws.name!r}")
    if row["created_by"] != call.user.name:
        call.user.require("owner", f"changing service {name!r}, deployed by {row['created_by']!r},")
    return row


def update_service(call: Call) -> dict[str, Any]:
    """``PATCH /services/{name}``: the state, scoring URI or error its machine reports."""
    unknown = set(call.body) - {"state", "scoringUri", "error"}
    if unknown:
        raise UserErrorException(f"unknown field(s) {', '.join(sorted(unknown))} in the body")
    changes = _reported(call.body)
    row = _own_record(call)
    if "state" in changes and "error" not in changes and changes["state"] != "Failed":
        changes["error"] = None
    if changes:
        with call.ws.catalog.write() as conn:
            conn.execute(
                f"UPDATE service_records SET {', '.join(f'{k} = ?' for k in changes)},"
                " updated = ? WHERE name = ?",
                [*changes.values(), time.time(), row["name"]],
            )
    return _record_answer(_record(call, row["name"]))


def delete_service(call: Call) -> dict[str, Any]:
    """``DELETE /services/{name}``: remove the record (its machine stops the service)."""
    row = _own_record(call)
    with call.ws.catalog.write() as conn:
        conn.execute("DELETE FROM service_records WHERE name = ?", (row["name"],))
    return {"deleted": row["name"]}


def recorded_users(ws: Any, model_id: str) -> list[str]:
    """Names of recorded client services that serve model version ``model_id``."""
    rows = ws.catalog.query(
        "SELECT s.name FROM service_records s, json_each(s.models) m WHERE m.value = ?",
        (model_id,),
    )
    return sorted(r[0] for r in rows)


_STATE_BODY = {
    "state": {"type": "string", "enum": list(STATES)},
    "scoringUri": {"type": "string"},
    "error": {"type": "object"},
}

ENDPOINTS = [
    Endpoint("GET", "/services", "reader", "List services", list_services, tag="services"),
    Endpoint("GET", "/services/{name}", "reader", "One service", get_service, tag="services"),
    Endpoint(
        "POST",
        "/services",
        "contributor",
        "Record a service deployed on a client's machine",
        record_service,
        body={
            "type": "object",
            "required": ["name", "models", "machine"],
            "properties": {
                "name": {"type": "string"},
                "models": {"type": "array", "items": {"type": "string"}},
                "machine": {"type": "string"},
                **_STATE_BODY,
            },
        },
        status=201,
        tag="services",
    ),
    Endpoint(
        "PATCH",
        "/services/{name}",
        "contributor",
        "Report a recorded service's state and scoring URI (its deployer, or an owner)",
        update_service,
        body={"type": "object", "properties": _STATE_BODY},
        tag="services",
    ),
    Endpoint(
        "DELETE",
        "/services/{name}",
        "contributor",
        "Remove a service's record (its deployer, or an owner)",
        delete_service,
        tag="services",
    ),
]
