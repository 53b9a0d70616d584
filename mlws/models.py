"""The model registry: named, versioned models with their files, tags, properties and lineage.

``Model.register(ws, model_path, model_name)`` stores a file or a folder (from disk) and
``run.register_model(model_name, model_path="outputs/model.pkl")`` one of a run's files or
folders; each registration of a name is the next version (1, 2, ...), numbered inside the
transaction that records it, so concurrent registrations never share a number, and never
re-used: deleting a version, the latest included, does not free its number (v1). A version's files
are a manifest in the blob store: a file identical across versions (or with the run that made
it) is stored once. As in Azure ML v1 the registered file or folder keeps its name inside the
model: ``outputs/model.pkl`` becomes ``model.pkl``, a folder ``outputs/model`` becomes
``model/...``; ``Model.get_model_path`` and ``download`` return that path.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .blobs import Entry, check_relpath, file_mode
from .errors import (
    BlobNotFound,
    InvalidName,
    ModelInUse,
    ModelNotFound,
    PropertyConflict,
    RegistrationConflict,
    UserErrorException,
)

if TYPE_CHECKING:
    import sqlite3

    from .runs import Run
    from .workspace import Workspace

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")


def check_model_name(name: Any) -> str:
    """Return ``name`` if it can name a model (1-255 letters, digits, ``-``, ``_`` or ``.``,
    starting with a letter or digit).

    :raises UserErrorException: anything else.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UserErrorException(
            f"invalid model name {name!r}: 1-255 letters, digits, '-', '_' or '.', starting with"
            " a letter or digit"
        )
    return name


def _parse_id(model_id: str) -> tuple[str, int]:
    name, sep, version = str(model_id).rpartition(":")
    if not sep or not version.isdigit():
        raise UserErrorException(f"invalid model id {model_id!r}: expected 'name:version'")
    return check_model_name(name), int(version)


def _str_dict(values: dict[str, Any] | None, what: str) -> dict[str, str]:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserErrorException(f"{what} must be a dict, got {type(values).__name__}")
    out = {str(k): "" if v is None else str(v) for k, v in values.items()}
    if any(not k.strip() for k in out):
        raise InvalidName(f"{what} keys must not be empty, got {values!r}")
    return out


def _dataset_refs(datasets: Any) -> list[dict[str, Any]]:
    """v1's ``datasets=[("training data", dataset), ...]`` as JSON-able lineage records."""
    out = []
    for item in datasets or []:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise UserErrorException(
                f"datasets must be a list of (scenario, dataset) pairs, got {item!r}"
            )
        scenario, ds = item
        out.append(
            {
                "scenario": str(scenario),
                "name": getattr(ds, "name", None) or str(ds),
                "version": getattr(ds, "version", None),
                "id": getattr(ds, "id", None),
            }
        )
    return out


def _check_metadata(tags: Any, properties: Any, datasets: Any) -> None:
    """Bad arguments fail before any file is stored (no orphan blobs)."""
    _str_dict(tags, "tags")
    _str_dict(properties, "properties")
    _dataset_refs(datasets)


def _filter(values: dict[str, str], wanted: list[Any] | dict[str, Any] | None, what: str) -> bool:
    """v1 filters: ``["key"]`` (has the key) or ``[["key", "value"]]`` (has that value)."""
    if not wanted:
        return True
    items = list(wanted.items()) if isinstance(wanted, dict) else list(wanted)
    for item in items:
        if isinstance(item, str):
            if item not in values:
                return False
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            if values.get(str(item[0])) != str(item[1]):
                return False
        else:
            raise UserErrorException(
                f"{what} filters are 'key' or ['key', 'value'] items, got {item!r}"
            )
    return True


class Model:
    """A registered model version (v1: ``azureml.core.Model``).

    ``Model(ws, "name")`` is the latest version, ``Model(ws, "name", version=2)`` or
    ``Model(ws, id="name:2")`` a given one; ``tags``/``properties``/``run_id`` narrow the search.

    :raises ModelNotFound: no such model.
    """

    def __init__(
        self,
        workspace: Workspace,
        name: str | None = None,
        id: str | None = None,  # noqa: A002 - v1's argument name
        tags: list[Any] | dict[str, Any] | None = None,
        properties: list[Any] | dict[str, Any] | None = None,
        version: int | None = None,
        run_id: str | None = None,
        model_framework: str | None = None,
        **_kwargs: Any,
    ) -> None:
        self.workspace = workspace
        if id is not None:
            name, version = _parse_id(id)
        if name is None:
            raise UserErrorException("give the model's name (or id='name:version')")
        check_model_name(name)
        found = Model.list(
            workspace,
            name=name,
            tags=tags,
            properties=properties,
            run_id=run_id,
            model_framework=model_framework,
        )
        if version is not None:
            found = [m for m in found if m.version == int(version)]
        if not found:
            known = [(v,) for v in sorted(m.version for m in Model.list(workspace, name=name))]
            which = f"{name}:{version}" if version is not None else name
            hint = (
                f"; versions: {', '.join(str(r[0]) for r in known)}"
                if known
                else "; see 'mlws model list'"
            )
            raise ModelNotFound(f"no model {which!r} in workspace {workspace.name!r}{hint}")
        self._load(found[0]._row)

    @classmethod
    def _from_row(cls, workspace: Workspace, row: sqlite3.Row) -> Model:
        m = cls.__new__(cls)
        m.workspace = workspace
        m._load(row)
        return m

    def _load(self, row: sqlite3.Row) -> None:
        self._row = row
        self._blobs = getattr(row, "blobs", None) or self.workspace.blobs  # hostmodels.HomeRow
        self.name: str = row["name"]
        self.version: int = row["version"]
        self.id = f"{self.name}:{self.version}"
        self.description: str | None = row["description"]
        self.model_framework: str | None = row["framework"]
        self.model_framework_version: str | None = row["framework_version"]
        self.tags: dict[str, str] = json.loads(row["tags"])
        self.properties: dict[str, str] = json.loads(row["properties"])
        self.run_id: str | None = row["run_id"]
        self.experiment_name: str | None = row["experiment"]
        self.created_time: float = row["created"]
        self.created_by: str | None = row["created_by"]
        self.path: str = row["path"]  # the registered file or folder, inside the model
        self.url = f"mlws://models/{self.name}/{self.version}/{self.path}"
        self._datasets: list[dict[str, Any]] = json.loads(row["datasets"])

    @property
    def framework(self) -> str | None:
        """The framework given at registration (v1's ``model_framework``, e.g. ``ScikitLearn``), or
        None."""
        return self.model_framework

    @property
    def datasets(self) -> dict[str, list[dict[str, Any]]]:
        """Lineage: datasets by scenario (v1 shape)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for d in self._datasets:
            out.setdefault(d["scenario"], []).append(d)
        return out

    @property
    def run(self) -> Run | None:
        """The run that produced the model (``run.register_model``), if any."""
        return self.workspace.get_run(self.run_id) if self.run_id else None

    def __repr__(self) -> str:
        return (
            f"Model(workspace={self.workspace.name!r}, name={self.name!r}, version={self.version})"
        )

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Model)
            and other.id == self.id
            and other.workspace.path == self.workspace.path
        )

    def __hash__(self) -> int:
        return hash((str(self.workspace.path), self.id))

    # -- files -------------------------------------------------------------------------------
    @property
    def manifest(self) -> str:
        """The hash of the manifest blob naming the model's files (``sha256:...``)."""
        return str(self._row["manifest"])

    def _entries(self) -> list[Entry]:
        return self._blobs.read_manifest(self._row["manifest"])

    def get_file_names(self) -> list[str]:
        """The paths of the model's files, relative to the model.

        :raises BlobNotFound: the model's manifest is missing. :raises BlobCorrupted: it changed.
        """
        return [e.path for e in self._entries()]

    def read_file(self, path: str) -> bytes:
        """The content of one of the model's files (``path`` as :meth:`get_file_names` gives it).

        :raises UserErrorException: the model has no such file.
        """
        for e in self._entries():
            if e.path == path:
                return self._blobs.read_bytes(e.hash)
        raise UserErrorException(f"model {self.id} has no file {path!r}")

    def download(
        self,
        target_dir: str | os.PathLike[str] = ".",
        exist_ok: bool = False,
        exists_ok: bool | None = None,
    ) -> str:
        """Copy the model's files under ``target_dir``; returns the path of the registered
        file or folder there.

        :raises UserErrorException: a file is there already and not ``exist_ok``.
        """
        if exists_ok is not None:  # v1's older spelling
            exist_ok = exists_ok
        target = Path(target_dir)
        if target.exists() and not target.is_dir():
            raise UserErrorException(f"cannot download into {target}: it is a file, not a folder")
        # Every path checked before any folder is made: exist_ok replaces files, but never
        # writes (or makes folders) through a link out of target.
        self._blobs.materialize(
            self._entries(), target, overwrite=exist_ok, flag="exist_ok=True (--exist-ok)"
        )
        return str(target / self.path)

    # -- metadata ----------------------------------------------------------------------------
    def _update(self, change: Any, remote: dict[str, Any]) -> None:
        """Read the row, let ``change(row)`` return the columns to set, write them: all in one
        transaction, so a change made meanwhile through another object is never lost. On a
        remote workspace the server makes the change ``remote`` describes, the same way.

        :raises ModelNotFound: the version was deleted.
        """
        if self.workspace.remote is not None:
            from .remote.models import update

            return self._load(update(self, remote))
        with self.workspace.catalog.write() as conn:
            where = (
                "SELECT * FROM models WHERE name = ? AND version = ?",
                (self.name, self.version),
            )
            row = conn.execute(*where).fetchone()
            if row is None:
                raise ModelNotFound(f"model {self.id} no longer exists")
            columns = change(row)
            if columns:
                conn.execute(
                    f"UPDATE models SET {', '.join(f'{k} = ?' for k in columns)}"
                    " WHERE name = ? AND version = ?",
                    [*columns.values(), self.name, self.version],
                )
                row = conn.execute(*where).fetchone()
        self._load(row)

    def add_tags(self, tags: dict[str, Any]) -> None:
        """Add or replace tags (values kept as strings).

        :raises UserErrorException: ``tags`` is not a dict, or has an empty key.
        :raises ModelNotFound: the version was deleted.
        """
        self.update_tags_properties(add_tags=tags)

    def remove_tags(self, tags: list[str] | str) -> None:
        """Remove tags by key (one key or several); keys not set are ignored.

        :raises ModelNotFound: the version was deleted.
        """
        self.update_tags_properties(remove_tags=tags)

    def add_properties(self, properties: dict[str, Any]) -> None:
        """Add properties; like a run's, they are add-only.

        :raises PropertyConflict: a key is set already to another value.
        """
        self.update_tags_properties(add_properties=properties)

    def update_tags_properties(
        self,
        add_tags: dict[str, Any] | None = None,
        remove_tags: list[str] | str | None = None,
        add_properties: dict[str, Any] | None = None,
    ) -> None:
        """v1's combined edit: add or replace ``add_tags``, then remove the ``remove_tags`` keys,
        and add ``add_properties`` (add-only) — one change: a property conflict changes nothing.

        :raises PropertyConflict: a property is set already to another value."""
        new_tags = _str_dict(add_tags, "tags")
        keys = {remove_tags} if isinstance(remove_tags, str) else set(remove_tags or ())
        new_props = _str_dict(add_properties, "properties")

        def change(row: Any) -> dict[str, Any]:
            columns: dict[str, Any] = {}
            if add_tags is not None or remove_tags is not None:
                tags = {**json.loads(row["tags"]), **new_tags}
                columns["tags"] = json.dumps({k: v for k, v in tags.items() if k not in keys})
            if add_properties is not None:
                current = json.loads(row["properties"])
                for k, v in new_props.items():
                    if k in current and current[k] != v:
                        raise PropertyConflict(
                            f"model property {k!r} is {current[k]!r} already; properties are"
                            " add-only"
                        )
                columns["properties"] = json.dumps({**current, **new_props})
            return columns

        remote = {"addTags": new_tags, "removeTags": sorted(keys), "addProperties": new_props}
        given = {"addTags": add_tags, "removeTags": remove_tags, "addProperties": add_properties}
        self._update(change, {k: v for k, v in remote.items() if given[k] is not None})

    def update(
        self, tags: dict[str, Any] | None = None, description: str | None = None, **_kwargs: Any
    ) -> None:
        """Replace the tags and/or the description."""
        change: dict[str, Any] = {}
        if tags is not None:
            change["tags"] = _str_dict(tags, "tags")
        if description is not None:
            change["description"] = str(description)
        columns = {k: json.dumps(v) if k == "tags" else v for k, v in change.items()}
        self._update(lambda _row: columns, change)

    def delete(self) -> None:
        """Delete this version (its files stay in the blob store until ``mlws gc``).

        :raises ModelInUse: a service that is not deleted uses it.
        """
        if self.workspace.remote is not None:  # owners; the server checks the services
            from .remote.models import delete

            return delete(self)
        users = services_using(self.workspace, self.name, self.version)
        if users:
            raise ModelInUse(
                f"model {self.id} is used by service(s) {', '.join(users)}; delete or update them first"
            )
        with self.workspace.catalog.write() as conn:
            cur = conn.execute(
                "DELETE FROM models WHERE name = ? AND version = ?", (self.name, self.version)
            )
            conn.execute(  # a retried registration of a deleted version makes a new one
                "DELETE FROM model_registrations WHERE name = ? AND version = ?",
                (self.name, self.version),
            )
        if cur.rowcount == 0:
            raise ModelNotFound(f"model {self.id} no longer exists")

    @staticmethod
    def deploy(
        workspace: Workspace,
        name: str,
        models: list[Model],
        inference_config: Any = None,
        deployment_config: Any = None,
        deployment_target: Any = None,
        overwrite: bool = False,
        **_kwargs: Any,
    ) -> Any:
        """Serve ``models`` as the local HTTP service ``name`` (see :mod:`mlws.serving`);
        returns its ``Webservice`` at once (``wait_for_deployment()`` waits until it answers)."""
        from .serving import deploy

        return deploy(workspace, name, models, inference_config, deployment_config, overwrite)

    def serialize(self) -> dict[str, Any]:
        """The model as JSON-ready data in v1's field names (``mlws model show --json``)."""
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "tags": self.tags,
            "properties": self.properties,
            "framework": self.model_framework,
            "frameworkVersion": self.model_framework_version,
            "runId": self.run_id,
            "experimentName": self.experiment_name,
            "datasets": self._datasets,
            "createdTime": self.created_time,
            "createdBy": self.created_by,
            "path": self.path,
            "url": self.url,
        }

    # -- registry ----------------------------------------------------------------------------
    @staticmethod
    def register(
        workspace: Workspace,
        model_path: str | os.PathLike[str],
        model_name: str,
        tags: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None,
        description: str | None = None,
        datasets: list[Any] | None = None,
        model_framework: str | None = None,
        model_framework_version: str | None = None,
        child_paths: list[str] | None = None,
        **_kwargs: Any,
    ) -> Model:
        """Register a file or folder from disk as the next version of ``model_name``.

        ``child_paths``: only these files (relative to the folder ``model_path``).

        :raises UserErrorException: bad name, missing path, an empty folder.
        """
        import sys

        from . import fileops
        from .blobs import bad_names
        from .errors import UnsafePath

        check_model_name(model_name)
        _check_metadata(tags, properties, datasets)
        src = Path(model_path)
        if not src.exists():
            raise UserErrorException(f"model_path {src} does not exist")
        # The name the user gave (a symlink keeps its own name, not its target's).
        top = Path(os.path.abspath(src)).name
        bad_names(str(src.parent), [top])
        if workspace.remote is None:
            workspace.catalog.require_writer()  # before any blob is stored
        blobs = workspace.blobs
        if src.is_file():
            if child_paths:
                raise UserErrorException("child_paths needs model_path to be a folder")
            digest, size, _ = blobs.put_file(src)
            entries = [Entry(top, digest, size, file_mode(src.stat().st_mode))]
        else:
            if child_paths:
                rels = [check_relpath(Path(rel).as_posix()) for rel in child_paths]
                if len(set(rels)) != len(rels):
                    raise UserErrorException(f"child_paths lists a file twice: {child_paths}")
                for rel in rels:
                    if not (src / rel).is_file():
                        raise UserErrorException(f"child path {src / rel} is not a file")
                    # Named by the user, so refused rather than skipped: a link out of the
                    # folder is never stored (the one rule of fileops.gather).
                    if not fileops.inside(os.path.realpath(src), str(src / rel)):
                        raise UnsafePath(
                            f"child path {src / rel} is a symlink that leads outside {src}"
                        )
                entries = []
                with blobs.batch():
                    for rel in rels:
                        f = src / rel
                        digest, size, _ = blobs.put_file(f)
                        entries.append(
                            Entry(
                                f"{top}/{Path(rel).as_posix()}",
                                digest,
                                size,
                                file_mode(f.stat().st_mode),
                            )
                        )
            else:
                skipped: list[str] = []
                entries = blobs.put_folder(src, top, skipped=skipped)
                for w in skipped:
                    print(f"Warning: {w}", file=sys.stderr)
            if not entries:
                raise UserErrorException(f"model folder {src} holds no files")
        return record_version(
            workspace,
            model_name,
            entries,
            top,
            tags=tags,
            properties=properties,
            description=description,
            datasets=datasets,
            framework=model_framework,
            framework_version=model_framework_version,
        )[0]

    @staticmethod
    def list(
        workspace: Workspace,
        name: str | None = None,
        tags: list[Any] | dict[str, Any] | None = None,
        properties: list[Any] | dict[str, Any] | None = None,
        run_id: str | None = None,
        latest: bool = False,
        model_framework: str | None = None,
        **_kwargs: Any,
    ) -> list[Model]:
        """Registered models, newest version first within a name; ``latest``: only each
        name's newest version (after the filters)."""
        where, params = [], []
        if name is not None:
            where.append("name = ?")
            params.append(name)
        if run_id is not None:
            where.append("run_id = ?")
            params.append(run_id)
        if model_framework is not None:
            where.append("framework = ?")
            params.append(model_framework)
        sql = "SELECT * FROM models"
        if where:
            sql += " WHERE " + " AND ".join(where)
        if workspace.remote is not None:
            from .remote.models import list_rows

            rows: list[Any] = list_rows(workspace, name, run_id, model_framework)
        else:  # a run's catalog on an ssh host has none of the workspace's: home has them
            from .compute.hostmodels import home_rows

            rows = workspace.catalog.query(sql + " ORDER BY name, version DESC", params)
            rows = rows or home_rows(workspace, name, run_id, model_framework)
        out, seen = [], set()
        for r in rows:
            if not _filter(json.loads(r["tags"]), tags, "tags"):
                continue
            if not _filter(json.loads(r["properties"]), properties, "properties"):
                continue
            if latest and r["name"] in seen:
                continue
            seen.add(r["name"])
            out.append(Model._from_row(workspace, r))
        return out

    @staticmethod
    def get_model_path(
        model_name: str, version: int | None = None, _workspace: Workspace | None = None
    ) -> str:
        """Where a model's registered file or folder is: inside a deployment, under
        ``AZUREML_MODEL_DIR``; else under ``./azureml-models/<name>/<version>``, downloaded
        there from the workspace (``_workspace``, or the current run's) when missing.

        :raises ModelNotFound: found nowhere.
        """
        from .modelpath import model_path

        return model_path(model_name, version, _workspace)


def record_version(
    ws: Workspace,
    name: str,
    entries: list[Entry],
    top: str,
    *,
    tags: dict[str, Any] | None = None,
    properties: dict[str, Any] | None = None,
    description: str | None = None,
    datasets: list[Any] | None = None,
    framework: str | None = None,
    framework_version: str | None = None,
    run_id: str | None = None,
    experiment: str | None = None,
    created_by: str | None = None,
    request_id: str | None = None,
) -> tuple[Model, bool]:
    """Record stored files ``entries`` (under ``top``, the registered file or folder's name) as
    the next version of model ``name``; returns it and whether it is new. Every registration
    ends here (from disk, from a run, ``mlws serve``'s upload of a manifest).

    ``request_id``: a registration sent again with it (a retry after a lost answer) returns the
    version made the first time, and False, writing nothing.

    :raises UserErrorException: bad tags, properties or datasets.
    :raises UnsafePath: an unsafe path or one listed twice.
    :raises RegistrationConflict: ``request_id`` registered another model.
    """
    from .lifecycle import current_user

    if ws.remote is not None:
        from .remote.models import register

        meta = {"tags": tags, "properties": properties, "description": description}
        meta.update(datasets=datasets, framework=framework, framework_version=framework_version)
        return register(ws, name, entries, run_id=run_id, request_id=request_id, **meta)
    row_tags = json.dumps(_str_dict(tags, "tags"))
    row_props = json.dumps(_str_dict(properties, "properties"))
    refs = json.dumps(_dataset_refs(datasets))
    if framework is None:
        from .mlmodel import framework_of_files

        framework, framework_version = framework_of_files(
            {e.path: e.hash for e in entries}, ws.blobs.read_bytes, framework_version
        )
    manifest = ws.blobs.put_manifest(entries)
    with ws.catalog.write() as conn:
        if request_id is not None:
            # Looked up inside the write transaction: two copies of one request never both
            # find nothing.
            done = conn.execute(
                "SELECT name, version FROM model_registrations WHERE request_id = ?",
                (request_id,),
            ).fetchone()
            if done is not None and done[0] != name:
                raise RegistrationConflict(
                    f"registrationId {request_id!r} registered model {done[0]}:{done[1]}, not"
                    f" {name!r}; use a new id for each registration"
                )
            if done is not None:
                row = conn.execute(
                    "SELECT * FROM models WHERE name = ? AND version = ?", tuple(done)
                ).fetchone()
                return Model._from_row(ws, row), False
        version = next_version(conn, name)
        if request_id is not None:
            conn.execute(
                "INSERT INTO model_registrations VALUES (?, ?, ?, ?)",
                (request_id, name, version, time.time()),
            )
        conn.execute(
            "INSERT INTO models (name, version, manifest, path, description, framework,"
            " framework_version, tags, properties, datasets, run_id, experiment, created,"
            " created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                name,
                version,
                manifest,
                top,
                description,
                framework,
                framework_version,
                row_tags,
                row_props,
                refs,
                run_id,
                experiment,
                time.time(),
                created_by or current_user(),
            ),
        )
        row = conn.execute(
            "SELECT * FROM models WHERE name = ? AND version = ?", (name, version)
        ).fetchone()
    return Model._from_row(ws, row), True


def next_version(conn: sqlite3.Connection, name: str) -> int:
    """Take the next version number of model ``name`` inside the caller's write transaction.

    Numbers only count up: the highest ever given is kept in ``model_versions`` and survives
    deleting any version, the latest included (v1). The rows still present are a floor too, in
    case a row was written without the counter (a host's catalog copied in by hand).
    """
    version = conn.execute(
        "SELECT max(coalesce((SELECT last FROM model_versions WHERE name = ?), 0),"
        " coalesce((SELECT max(version) FROM models WHERE name = ?), 0)) + 1",
        (name, name),
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO model_versions (name, last) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET last = excluded.last",
        (name, version),
    )
    return int(version)


def register_from_run(
    run: Run,
    model_name: str,
    model_path: str,
    tags: dict[str, Any] | None = None,
    properties: dict[str, Any] | None = None,
    description: str | None = None,
    datasets: list[Any] | None = None,
    model_framework: str | None = None,
    model_framework_version: str | None = None,
    *,
    created_by: str | None = None,
) -> Model:
    """``run.register_model``: a run file or folder (stored, or live in a running run's
    working folder) as the next version of ``model_name``, with the run as lineage.
    ``created_by``: who registers it (default: this process's user; ``mlws serve`` gives
    the token's)."""
    check_model_name(model_name)
    _check_metadata(tags, properties, datasets)
    if run.workspace.remote is not None:  # registered by the server, from its run's files
        from .remote.models import register_from_run as remote

        meta = {"tags": tags, "properties": properties, "description": description}
        meta.update(datasets=datasets, framework=model_framework)
        meta.update(framework_version=model_framework_version)
        return remote(run, model_name, model_path, **meta)
    rel = str(model_path).strip()
    while rel.startswith("./"):
        rel = rel[2:]
    rel = rel.rstrip("/")
    if rel in ("", "."):
        raise UserErrorException(
            "model_path must name a file or folder of the run, e.g. outputs/model.pkl"
        )
    check_relpath(rel)
    names = run.get_file_names()
    # A file, or a folder (every file under it); either keeps its own name inside the model.
    chosen = [rel] if rel in names else [n for n in names if n.startswith(rel + "/")]
    top = rel.rsplit("/", 1)[-1]
    strip = len(rel) - len(top)
    if not chosen:
        raise UserErrorException(
            f"run {run.id} has no file or folder {rel!r}; its files: {', '.join(names[:10]) or 'none'}"
        )
    entries = []
    blobs = run.workspace.blobs
    with blobs.batch():
        for name in chosen:
            digest = run._stored_blob(name)
            if digest is not None:
                if not blobs.reuse(digest):  # touched: gc spares it until record_version commits
                    raise BlobNotFound(
                        f"blob {digest} of run {run.id}'s file {name!r} is missing; run 'mlws fsck'"
                    )
                size, mode = run.workspace.catalog.one(
                    "SELECT size, mode FROM run_files WHERE run_seq = ? AND path = ?",
                    (run.seq, name),
                )
            else:  # a running run's live output: store it now
                live = run._live_file(name)
                assert live is not None
                digest, size, _ = blobs.put_file(live)
                mode = file_mode(live.stat().st_mode)
            entries.append(Entry(name[strip:], digest, size, mode))
    return record_version(
        run.workspace,
        model_name,
        entries,
        top,
        tags=tags,
        properties=properties,
        description=description,
        datasets=datasets,
        framework=model_framework,
        framework_version=model_framework_version,
        run_id=run.id,
        experiment=run.experiment.name,
        created_by=created_by,
    )[0]


def services_using(ws: Workspace, name: str, version: int) -> list[str]:
    """Names of live services deployed with this model version (none before serving exists)."""
    has_services = ws.catalog.scalar(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'services'"
    )
    if not has_services:
        return []
    rows = ws.catalog.query(
        "SELECT s.name FROM services s, json_each(s.models) m"
        " WHERE m.value = ? AND s.state NOT IN ('Deleted')",
        (f"{name}:{version}",),
    )
    return sorted({r[0] for r in rows})
