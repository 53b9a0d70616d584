"""Registered datasets of a remote workspace: the storage calls of
:class:`~mlws.datasets.AbstractDataset` and :class:`~mlws.datasets.Dataset` when ``ws.remote``
is set (``GET /datasets``, ``GET|POST /datasets/{name}/versions...``).

A dataset's definition is the same JSON as in a local catalog; its files are on the server's
datastores (:mod:`.datastores`), so the server fingerprints them when a version is registered,
and this machine fetches a file (hash checked, cached) only when it reads it. A dataset over
local paths of this machine can be read here but not registered on the server: upload the
files to a datastore first.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from ..errors import UserErrorException

if TYPE_CHECKING:
    from ..datasets import AbstractDataset
    from ..workspace import Workspace


def dataset_of(ws: Workspace, answer: dict[str, Any]) -> AbstractDataset:
    """The registered dataset version the server's ``answer`` describes."""
    from ..datasets import from_definition

    ds = from_definition(ws, answer["definition"])
    ds.name, ds.version = answer["name"], answer["version"]
    ds.description, ds.tags = answer.get("description"), dict(answer.get("tags") or {})
    ds._fingerprint = answer.get("fingerprint")
    ds.created_time, ds.created_by = answer.get("createdTime"), answer.get("createdBy")
    return ds


def _version_path(ws: Workspace, name: str, version: int | str) -> str:
    return ws.remote.path("datasets", name, "versions", str(version))


def get(ws: Workspace, name: str, version: int | str) -> AbstractDataset:
    """Version ``version`` (a number or ``"latest"``) of dataset ``name``.

    :raises DatasetNotFound: no such name or version."""
    return dataset_of(ws, ws.remote.request("GET", _version_path(ws, name, version)))


def get_all(ws: Workspace) -> dict[str, AbstractDataset]:
    """The latest version of every registered dataset, by name."""
    found = ws.remote.request("GET", "/datasets")["value"]
    return {d["name"]: dataset_of(ws, d) for d in found}


def runs_of(ws: Workspace, name: str, version: int) -> list[dict[str, Any]]:
    """The runs that used or produced version ``version`` of ``name`` (the server's lineage)."""
    return list(ws.remote.request("GET", _version_path(ws, name, version))["runs"])


def register(
    ws: Workspace,
    ds: AbstractDataset,
    name: str,
    description: str | None,
    tags: dict[str, Any] | None,
    create_new_version: bool,
    request_id: str | None = None,
) -> AbstractDataset:
    """The next version of ``name`` on the server (``POST /datasets/{name}/versions``), which
    fingerprints the data where it is and records the token's user as ``createdBy``. Sent with
    a ``registrationId``: a request re-sent after a lost answer makes no second version.

    :raises UserErrorException: a path of the definition is on this machine, not a datastore;
        the name exists and ``create_new_version`` is false; a path matches no file."""
    from ..datasets import check_dataset_name

    check_dataset_name(name)
    local = [s["local"] for s in ds.definition["sources"] if "local" in s]
    if local:
        raise UserErrorException(
            f"a dataset registered on a remote workspace reads datastore paths; {local[0]!r} is"
            " a path of this machine: upload it first (Datastore.upload) and use"
            " (datastore, 'path')"
        )
    body = {
        "definition": ds.definition,
        "description": description,
        "tags": {str(k): "" if v is None else str(v) for k, v in (tags or {}).items()},
        "createNewVersion": bool(create_new_version),
        "registrationId": request_id or uuid.uuid4().hex,
    }
    path = ws.remote.path("datasets", name, "versions")
    return dataset_of(ws, ws.remote.request("POST", path, body))


def record_lineage(
    ws: Workspace, rows: list[tuple[Any, str, str, str, Any, str | None, bool]]
) -> None:
    """Send a run's lineage rows (``(run id, direction, name in the run, mode, dataset,
    content, changed)``, as ``rundata`` makes them) to the server: ``POST /runs/{id}/datasets``."""
    by_run: dict[str, list[dict[str, Any]]] = {}
    for run_id, direction, name, mode, ds, content, changed in rows:
        by_run.setdefault(str(run_id), []).append(
            {
                "direction": direction,
                "name": name,
                "mode": mode,
                "dataset": {"name": ds.name, "version": ds.version, "definition": ds.definition},
                "content": content,
                "changed": bool(changed),
            }
        )
    from .runs import deliver_pending

    for run_id, inputs in by_run.items():
        deliver_pending(ws.remote, run_id)  # a run not sent yet (created with its next send)
        ws.remote.request("POST", ws.remote.path("runs", run_id, "datasets"), {"data": inputs})


def output_datasets(run: Any, outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """``run.output_datasets`` of a run of a remote workspace, outside its script: each
    uploaded output's registered version, else the dataset over where it was uploaded."""
    from ..datasets import Dataset
    from ..datastores import Datastore

    ws = run.workspace
    recorded = {
        o["outputDetails"]["outputName"]: o["dataset"]
        for o in run.get_details().get("outputDatasets") or []
    }
    out: dict[str, Any] = {}
    for spec in outputs:
        d = recorded.get(spec["name"])
        if d is not None and d["name"]:
            out[spec["name"]] = Dataset.get_by_name(ws, d["name"], d["version"])
        elif d is not None:
            where = spec["path"].replace("{run-id}", run.id).replace("{output-name}", spec["name"])
            store = Datastore(ws, spec["datastore"])
            out[spec["name"]] = Dataset.File.from_files((store, where), validate=False)
    return out
