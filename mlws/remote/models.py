"""Registered models of a remote workspace: the storage calls of :class:`~mlws.models.Model`
when ``ws.remote`` is set (``GET /models``, ``POST /models/{name}/versions``,
``POST /runs/{id}/models``). A model's files are the server's blobs, named by its manifest."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..models import Model
from .runs import RemoteRow

if TYPE_CHECKING:
    from ..manifests import Entry
    from ..runs import Run
    from ..workspace import Workspace


def row_of(d: dict[str, Any]) -> RemoteRow:
    """A model version's row (as the catalog's ``models`` row) from the server's answer."""
    return RemoteRow(
        name=d["name"],
        version=d["version"],
        manifest=d.get("manifest"),
        path=d.get("path"),
        description=d.get("description"),
        framework=d.get("framework"),
        framework_version=d.get("frameworkVersion"),
        tags=json.dumps(d.get("tags") or {}),
        properties=json.dumps(d.get("properties") or {}),
        datasets=json.dumps(d.get("datasets") or []),
        run_id=d.get("runId"),
        experiment=d.get("experimentName"),
        created=d.get("createdTime"),
        created_by=d.get("createdBy"),
    )


def list_rows(
    ws: Workspace,
    name: str | None = None,
    run_id: str | None = None,
    framework: str | None = None,
) -> list[RemoteRow]:
    """Model versions (of ``name``; made by run ``run_id``; of ``framework``), newest version
    first within a name."""
    query = {"name": name} if name is not None else None
    rows = [row_of(m) for m in ws.remote.request("GET", "/models", query=query)["value"]]
    return [
        r for r in rows if run_id in (None, r["run_id"]) and framework in (None, r["framework"])
    ]


def _metadata(meta: dict[str, Any], framework_keys: tuple[str, str]) -> dict[str, Any]:
    keys = {
        "tags": "tags",
        "properties": "properties",
        "description": "description",
        "framework": framework_keys[0],
        "framework_version": framework_keys[1],
    }
    return {wire: meta[k] for k, wire in keys.items() if meta.get(k) is not None}


def register(
    ws: Workspace,
    name: str,
    entries: list[Entry],
    request_id: str | None = None,
    **meta: Any,
) -> tuple[Model, bool]:
    """The next version of model ``name`` from files staged by ``ws.blobs``: the blobs the
    server lacks and the manifest are sent first, then ``POST /models/{name}/versions`` with a
    ``registrationId`` (so a request sent again after a lost answer makes no second version).
    Returns the version and whether it is new.

    :raises UserErrorException: lineage (datasets, a run) cannot be given this way."""
    import uuid

    from ..errors import UserErrorException

    if meta.get("datasets") or meta.get("run_id"):
        raise UserErrorException(
            "a model registered from local files on a remote workspace takes no datasets or"
            " run; register it from the run (run.register_model)"
        )
    digest = ws.blobs.put_manifest(entries)
    body = {
        "manifest": digest,
        "registrationId": request_id or uuid.uuid4().hex,
        **_metadata(meta, ("modelFramework", "modelFrameworkVersion")),
    }
    client = ws.remote
    answer = client.request("POST", client.path("models", name, "versions"), body)
    return Model._from_row(ws, row_of(answer)), not answer.get("duplicate")


def register_from_run(run: Run, name: str, path: str, **meta: Any) -> Model:
    """``run.register_model`` on the server: the run's file or folder ``path`` as the next
    version of ``name``, with the run as lineage."""
    from ..errors import UserErrorException

    if meta.get("datasets"):
        raise UserErrorException(
            "datasets= is not available with run.register_model on a remote workspace yet"
        )
    from .runs import deliver_pending

    client = run.workspace.remote
    run.flush()
    deliver_pending(client, run.id)  # a run not sent yet (created with its next send): now
    body = {"name": name, "path": path, **_metadata(meta, ("framework", "frameworkVersion"))}
    answer = client.request("POST", client.path("runs", run.id, "models"), body, idempotent=False)
    return Model._from_row(run.workspace, row_of(answer))


def update(model: Model, change: dict[str, Any]) -> RemoteRow:
    """Make ``change`` (any of ``addTags``, ``removeTags``, ``addProperties`` at once, or
    ``tags`` and/or ``description``) to ``model`` on the server, in one request; returns its row
    as changed. An empty update changes nothing and asks nothing."""
    client = model.workspace.remote
    path = client.path("models", model.name, "versions", str(model.version))
    if not change:
        return row_of(client.request("GET", path))
    return row_of(client.request("PATCH", path, change))


def delete(model: Model) -> None:
    """Delete ``model``'s version on the server (owners; 409 while a service uses it)."""
    client = model.workspace.remote
    client.request("DELETE", client.path("models", model.name, "versions", str(model.version)))
