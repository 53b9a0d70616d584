"""REST routes for datastores and datasets (what a remote workspace's
:mod:`mlws.remote.datastores` and :mod:`mlws.remote.datasets` call).

A datastore's files stay in its folder on this machine. A client uploads as it does a run's
files (``POST /blobs/missing``, ``PUT /blobs/...``, a manifest), then ``POST
/datastores/{name}/upload`` writes them into the folder. Reading: ``match`` and ``files`` list
names with hashes (the stat cache: no file is read twice unchanged); ``fetch`` puts the named
files in the blob store, from where the client downloads them (``GET /blobs/...``) and checks
each hash. Registering a dataset fingerprints its data here. Every path a client sends is a
relative datastore path checked here too (``..``, absolute paths and links that lead out are
refused); registering a datastore names a folder of this machine, so it is an owner's call.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

from ..errors import UserErrorException
from .api import REQUEST_ID_SCHEMA, Call, Endpoint, body_field, query_value

#: The most paths or patterns one request may name.
MAX_PATHS = 100_000


# -- datastores ---------------------------------------------------------------------------------
def _store(call: Call) -> Any:
    from ..datastores import Datastore, check_datastore_name

    return Datastore(call.ws, check_datastore_name(call.path["name"]))


def list_datastores(call: Call) -> dict[str, Any]:
    """``GET /datastores``: every datastore, by name."""
    from ..datastores import Datastore

    return {"value": [d.serialize() for d in Datastore.list(call.ws)]}


def get_datastore(call: Call) -> dict[str, Any]:
    """``GET /datastores/{name}``."""
    return dict(_store(call).serialize())


def _only(body: dict[str, Any], *fields: str) -> None:
    unknown = set(body) - set(fields)
    if unknown:
        raise UserErrorException(f"unknown field(s) {', '.join(sorted(unknown))} in the body")


def register_datastore(call: Call) -> dict[str, Any]:
    """``POST /datastores``: name an absolute folder of this machine as a datastore (every
    token holder can then read and write it, hence an owner's call). Not the workspace's own
    folder, nor one holding it."""
    from ..datastores import Datastore, is_inside

    body = call.body
    _only(body, "name", "path", "overwrite")
    name, path = body_field(body, "name", str), body_field(body, "path", str)
    if name is None or path is None:
        raise UserErrorException('the body needs "name" and "path" (an absolute folder here)')
    if not os.path.isabs(path) or "\x00" in path:
        raise UserErrorException(f"a datastore's path is an absolute folder, got {path!r}")
    folder = Path(os.path.realpath(path))
    if is_inside(call.ws.path, folder) or is_inside(folder, call.ws.path):
        raise UserErrorException(
            f"{path} is, holds or is inside the workspace's own folder; register another folder"
        )
    overwrite = body_field(body, "overwrite", bool, False)
    return dict(Datastore.register_local(call.ws, name, folder, overwrite=overwrite).serialize())


def set_default(call: Call) -> dict[str, Any]:
    """``POST /datastores/{name}/default``."""
    store = _store(call)
    store.set_as_default()
    return dict(store.serialize())


def unregister(call: Call) -> dict[str, Any]:
    """``DELETE /datastores/{name}``: forget it (its files stay)."""
    store = _store(call)
    store.unregister()
    return {"name": store.name, "unregistered": True}


def upload(call: Call) -> dict[str, Any]:
    """``POST /datastores/{name}/upload``: write the files of a manifest whose blobs were sent
    first under ``targetPath``; files there already are kept unless ``overwrite``. Every path
    is checked before anything is written."""
    from ..datastores import clean_path
    from .blobs import manifest_entries

    body = call.body
    _only(body, "manifest", "targetPath", "overwrite")
    if body.get("manifest") is None:
        raise UserErrorException('the body needs "manifest" (a stored manifest, sha256:...)')
    store = _store(call)
    target = clean_path(body_field(body, "targetPath", str, ""))
    overwrite = body_field(body, "overwrite", bool, False)
    entries = manifest_entries(call.ws, body["manifest"])
    blobs = call.ws.blobs
    store._put([(blobs.path(e.hash), e.path) for e in entries], target, overwrite, False)
    return {"copied": store.last_upload["copied"], "skipped": store.last_upload["skipped"]}


def _listing(files: dict[str, tuple[str, Any]]) -> list[dict[str, Any]]:
    """``[{path, hash, size}]`` of ``files`` (hashed through the stat cache)."""
    from ..datasets import fingerprint

    return [{"path": e.path, "hash": e.hash, "size": e.size} for e in fingerprint(files)]


def _paths(body: dict[str, Any], key: str, allow_root: bool) -> list[str]:
    from ..datastores import clean_path

    _only(body, key)
    items = body_field(body, key, list)
    if items is None or len(items) > MAX_PATHS or not all(isinstance(p, str) for p in items):
        raise UserErrorException(f'the body needs "{key}": at most {MAX_PATHS} strings')
    out = [clean_path(p) for p in items]
    if not allow_root and "" in out:
        raise UserErrorException(f'"{key}" names the datastore\'s root, not a file')
    return out


def match(call: Call) -> dict[str, Any]:
    """``POST /datastores/{name}/match``: for each dataset path (a glob) the files it names
    now, ``[{path, hash, size}]`` (names relative to the datastore)."""
    patterns = _paths(call.body, "patterns", allow_root=True)
    found = _store(call)._match(patterns)
    return {"matches": [_listing(f) for f in found]}


def list_files(call: Call) -> dict[str, Any]:
    """``GET /datastores/{name}/files?prefix=``: the files ``Datastore.download`` copies."""
    from ..datastores import clean_path

    prefix = clean_path(query_value(call, "prefix", ""))
    store = _store(call)
    files = {}
    for name, path in store._fetch_under(prefix, lambda _n: True):
        try:
            files[name] = (path, os.stat(path))
        except OSError:
            continue  # gone since it was listed
    return {"files": _listing(files)}


def fetch(call: Call) -> dict[str, Any]:
    """``POST /datastores/{name}/fetch``: put the named files in the blob store (the client
    then downloads each from ``GET /blobs/...``); answers their hashes now."""
    from ..datasets import on_this_machine

    paths = _paths(call.body, "paths", allow_root=False)
    found = _store(call)._match([glob.escape(p) for p in paths])
    files = {}
    for path, matched in zip(paths, found, strict=True):
        if path not in matched:
            raise UserErrorException(f"no file {path!r} on datastore {call.path['name']!r}")
        files[path] = matched[path]
    here = on_this_machine(files)
    names = sorted(here)
    stored = call.ws.blobs.put_files([here[n][0] for n in names])
    out = []
    for name, result in zip(names, stored, strict=True):
        if isinstance(result, OSError):
            raise UserErrorException(f"cannot read {name!r}: {result.strerror}")
        out.append({"path": name, "hash": result[0], "size": result[1]})
    return {"files": out}


# -- datasets -----------------------------------------------------------------------------------
def answer(ds: Any, runs: bool = False) -> dict[str, Any]:
    """A dataset version as the API shows it (with its runs when ``runs``)."""
    out = {
        "name": ds.name,
        "version": ds.version,
        "description": ds.description,
        "tags": ds.tags,
        "definition": ds.definition,
        "fingerprint": ds._fingerprint,
        "createdTime": ds.created_time,
        "createdBy": ds.created_by,
    }
    if runs:
        out["runs"] = ds.runs()
    return out


def list_datasets(call: Call) -> dict[str, Any]:
    """``GET /datasets``: the latest version of each dataset, by name."""
    from ..datasets import Dataset

    return {"value": [answer(d) for d in Dataset.get_all(call.ws).values()]}


def get_dataset(call: Call) -> dict[str, Any]:
    """``GET /datasets/{name}/versions/{version}`` (a number or ``latest``), with its runs."""
    from ..datasets import Dataset

    version = call.path["version"]
    if version != "latest" and not version.isdigit():
        raise UserErrorException(
            f"a dataset version is a whole number or 'latest', got {version!r}"
        )
    number = version if version == "latest" else int(version)
    return answer(Dataset.get_by_name(call.ws, call.path["name"], number), runs=True)


def check_definition(ws: Any, definition: Any) -> Any:
    """The unregistered dataset a client's ``definition`` describes, checked: a known kind,
    and sources that are paths on datastores (never a folder of this machine).

    :raises UserErrorException: anything else (:class:`~mlws.errors.UnsafePath` for a path)."""
    from ..datasets import from_definition
    from ..datastores import check_datastore_name, clean_path

    if not isinstance(definition, dict) or not isinstance(definition.get("sources"), list):
        raise UserErrorException('"definition" must be {"type", "sources": [...], ...}')
    sources = []
    for i, src in enumerate(definition["sources"]):
        if not isinstance(src, dict) or set(src) != {"datastore", "path"}:
            raise UserErrorException(
                f"definition.sources[{i}] must be {{datastore, path}}: a served workspace's"
                " datasets read datastore paths"
            )
        if not isinstance(src["path"], str):
            raise UserErrorException(f"definition.sources[{i}].path must be a string")
        sources.append(
            {"datastore": check_datastore_name(src["datastore"]), "path": clean_path(src["path"])}
        )
    if not sources:
        raise UserErrorException("definition.sources names no path")
    try:
        return from_definition(ws, {**definition, "sources": sources})
    except (KeyError, TypeError):
        raise UserErrorException(
            f"unknown dataset type {definition.get('type')!r}: 'file' or 'tabular'"
        ) from None


def register_dataset(call: Call) -> dict[str, Any]:
    """``POST /datasets/{name}/versions``: fingerprint the data a definition names and record
    it as the next version, made by the token's user. With ``registrationId``, sent again it
    answers the version made the first time (``duplicate``)."""
    from ..datasets import check_dataset_name, record_version
    from .api import request_id

    name = check_dataset_name(call.path["name"])
    body = call.body
    _only(body, "definition", "description", "tags", "createNewVersion", "registrationId")
    reg_id = request_id(body, "registrationId")
    ds = check_definition(call.ws, body.get("definition"))
    tags = body_field(body, "tags", dict, {})
    if not all(isinstance(v, str) for v in tags.values()):
        raise UserErrorException("tags must be an object of strings")
    made, new = record_version(
        call.ws,
        ds,
        name,
        description=body_field(body, "description", str),
        tags=tags,
        create_new_version=body_field(body, "createNewVersion", bool, False),
        created_by=call.user.name,
        request_id=reg_id,
    )
    return answer(made) if new else {**answer(made), "duplicate": True}


#: The most inputs one run records.
MAX_INPUTS = 1000


def registered_version(ws: Any, given: Any, where: str) -> Any:
    """The registered dataset version a client's ``given`` (``{name, version, definition}``)
    names, read from this catalog; None when it names none (an unregistered definition).
    ``where``: what the error messages call ``given``.

    :raises UserErrorException: not such a dict, a version that is not a whole number.
    :raises DatasetNotFound: no such version here."""
    from ..datasets import Dataset

    if not isinstance(given, dict):
        raise UserErrorException(f"{where} must be {{name, version, definition}}")
    if given.get("name") is None:
        return None
    version = given.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise UserErrorException(f"{where}.version must be a whole number")
    return Dataset.get_by_name(ws, str(given["name"]), version)


def _lineage_dataset(ws: Any, given: Any, i: int) -> Any:
    """The dataset input ``i`` names: a registered version (which must exist), else an
    unregistered definition (it may name paths of the submitting machine: only recorded)."""
    from ..datasets import from_definition

    registered = registered_version(ws, given, f"data[{i}].dataset")
    if registered is not None:
        return registered
    definition = given.get("definition")
    try:
        if not isinstance(definition, dict) or not all(
            isinstance(s, dict) for s in definition["sources"]
        ):
            raise TypeError
        return from_definition(ws, definition)
    except (KeyError, TypeError):
        raise UserErrorException(
            f"data[{i}].dataset.definition must be a dataset definition"
        ) from None


#: The modes of a lineage row, by direction.
_MODES = {"input": ("mount", "download", "direct"), "output": ("upload",)}


def record_lineage(call: Call) -> dict[str, Any]:
    """``POST /runs/{run_id}/datasets``: the datasets a run read and wrote, as its lineage
    (its supervisor on the submitting machine sends the inputs once it has prepared them and
    the outputs once they are uploaded)."""
    from ..rundata import check_data_name, record_lineage
    from .blobs import check_digest

    body = call.body
    _only(body, "data")
    items = body_field(body, "data", list)
    if not items or len(items) > MAX_INPUTS:
        raise UserErrorException(f'the body needs "data": 1 to {MAX_INPUTS} inputs or outputs')
    run = call.ws.get_run(call.path["run_id"])  # RunNotFound: 404
    seq = call.ws.catalog.scalar("SELECT seq FROM runs WHERE id = ?", (run.id,))
    fields = {"direction", "name", "mode", "dataset", "content", "changed"}
    rows = []
    for i, item in enumerate(items):  # every row checked before anything is written
        if not isinstance(item, dict) or not fields - {"content", "changed"} <= set(item) <= fields:
            raise UserErrorException(
                f"data[{i}] must be {{direction, name, mode, dataset[, content, changed]}}"
            )
        modes = _MODES.get(item["direction"])
        if modes is None or item["mode"] not in modes:
            raise UserErrorException(
                f"data[{i}]: an input's mode is mount, download or direct; an output's upload"
            )
        content = item.get("content")
        rows.append(
            (
                seq,
                item["direction"],
                check_data_name(item["name"]),
                item["mode"],
                _lineage_dataset(call.ws, item["dataset"], i),
                None if content is None else check_digest(content),
                body_field(item, "changed", bool, False),
            )
        )
    record_lineage(call.ws, rows)
    return {"runId": run.id, "recorded": len(rows)}


_PATHS = {"type": "array", "items": {"type": "string"}}

ENDPOINTS = [
    Endpoint(
        "POST",
        "/runs/{run_id}/datasets",
        "contributor",
        "Record the datasets a run read and wrote (its lineage)",
        record_lineage,
        body={
            "type": "object",
            "required": ["data"],
            "properties": {"data": {"type": "array", "items": {"type": "object"}}},
        },
        tag="data",
    ),
    Endpoint("GET", "/datastores", "reader", "List datastores", list_datastores, tag="data"),
    Endpoint(
        "POST",
        "/datastores",
        "owner",
        "Register an absolute folder of the server's machine as a datastore",
        register_datastore,
        body={
            "type": "object",
            "required": ["name", "path"],
            "properties": {
                "name": {"type": "string"},
                "path": {"type": "string"},
                "overwrite": {"type": "boolean"},
            },
        },
        status=201,
        tag="data",
    ),
    Endpoint("GET", "/datastores/{name}", "reader", "One datastore", get_datastore, tag="data"),
    Endpoint(
        "DELETE",
        "/datastores/{name}",
        "owner",
        "Unregister a datastore (its files stay)",
        unregister,
        tag="data",
    ),
    Endpoint(
        "POST",
        "/datastores/{name}/default",
        "owner",
        "Make a datastore the default",
        set_default,
        tag="data",
    ),
    Endpoint(
        "POST",
        "/datastores/{name}/upload",
        "contributor",
        "Write the files of a manifest whose blobs were sent first into a datastore",
        upload,
        body={
            "type": "object",
            "required": ["manifest"],
            "properties": {
                "manifest": {"type": "string", "description": "a stored manifest, sha256:..."},
                "targetPath": {"type": "string"},
                "overwrite": {"type": "boolean"},
            },
        },
        tag="data",
    ),
    Endpoint(
        "GET",
        "/datastores/{name}/files",
        "reader",
        "The files under a prefix, with their hashes",
        list_files,
        query=(("prefix", "only files under this path"),),
        tag="data",
    ),
    Endpoint(
        "POST",
        "/datastores/{name}/match",
        "reader",
        "The files each dataset path (a glob) names, with their hashes",
        match,
        body={"type": "object", "required": ["patterns"], "properties": {"patterns": _PATHS}},
        tag="data",
    ),
    Endpoint(
        "POST",
        "/datastores/{name}/fetch",
        "reader",
        "Put files of a datastore in the blob store, to download them from /blobs",
        fetch,
        body={"type": "object", "required": ["paths"], "properties": {"paths": _PATHS}},
        tag="data",
    ),
    Endpoint(
        "GET",
        "/datasets",
        "reader",
        "The latest version of each dataset",
        list_datasets,
        tag="data",
    ),  # fmt: skip
    Endpoint(
        "GET",
        "/datasets/{name}/versions/{version}",
        "reader",
        "One dataset version (a number or latest), with the runs that used or produced it",
        get_dataset,
        tag="data",
    ),
    Endpoint(
        "POST",
        "/datasets/{name}/versions",
        "contributor",
        "Register the next version of a dataset over datastore paths (fingerprinted here; at"
        " most once per registrationId)",
        register_dataset,
        body={
            "type": "object",
            "required": ["definition"],
            "properties": {
                "definition": {"type": "object"},
                "description": {"type": "string"},
                "tags": {"type": "object"},
                "createNewVersion": {"type": "boolean"},
                "registrationId": REQUEST_ID_SCHEMA,
            },
        },
        status=201,
        tag="data",
    ),
]
