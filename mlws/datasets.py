"""Datasets: named, versioned definitions of data, with a fingerprint of its content.

``Dataset.File.from_files(path)`` defines a file dataset over datastore paths (``(datastore,
"glob")`` tuples, ``datastore.path(...)`` references) or local paths, globs allowed. Every
registered version records its definition **and** a fingerprint: a manifest of every file's
hash, computed through the per-machine stat cache, so an unchanged 10,000-file dataset is
re-checked without reading a file. ``has_changed()`` / ``mlws dataset diff`` say whether the data
under a version changed since it was registered, and which files.

``Dataset.Tabular.from_delimited_files / from_parquet_files / from_json_lines_files`` define
tabular datasets (``mlws.tabular``) on the same registry. (Datasets as run inputs come next.)
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import fileops
from .blobs import Entry, canonical_manifest, check_relpath, hash_bytes, hash_file, parse_manifest
from .errors import DatasetNotFound, InvalidName, UserErrorException

if TYPE_CHECKING:
    from .rundata import DatasetConsumptionConfig, MountContext
    from .tabular import TabularDatasetFactory
    from .workspace import Workspace

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")


def _refuse_existing(name: str, latest: int | None) -> None:
    if latest is not None:
        raise UserErrorException(
            f"a dataset named {name!r} exists (version {latest}); pass"
            " create_new_version=True to register a new version"
        )


def check_dataset_name(name: Any) -> str:
    """Return ``name`` if it can name a dataset (1-255 letters, digits, ``-``, ``_`` or ``.``,
    starting with a letter or digit).

    :raises UserErrorException: anything else.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UserErrorException(
            f"invalid dataset name {name!r}: 1-255 letters, digits, '-', '_' or '.', starting with"
            " a letter or digit"
        )
    return name


def sources_of(ws: Workspace | None, path: Any) -> list[dict[str, str]]:
    """The definition's sources: ``{"datastore": name, "path": glob}`` or ``{"local": glob}``."""
    from .datastores import DataReference, Datastore, clean_path

    items = path if isinstance(path, list) else [path]
    out = []
    for item in items:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], Datastore):
            out.append({"datastore": item[0].name, "path": clean_path(item[1])})
        elif isinstance(item, DataReference):
            out.append({"datastore": item.datastore.name, "path": item.path_on_datastore})
        elif isinstance(item, (str, os.PathLike)):
            out.append({"local": os.path.abspath(os.fspath(item))})
        else:
            raise UserErrorException(
                f"a dataset path is (datastore, 'path/glob'), datastore.path(...) or a local path;"
                f" got {item!r}"
            )
    if not out:
        raise UserErrorException("from_files needs at least one path")
    return out


def resolve_sources(ws: Workspace, sources: list[dict[str, str]]) -> dict[str, tuple[str, Any]]:
    """Every file the definition names now: ``{name in the dataset: (path, stat)}``, found by
    ``fileops.match``. A file on an ``ssh`` datastore has its ``ssh://`` address for a path
    and a ``sshstore.HostStat``, which knows its datastore: ``fingerprint`` hashes it on its
    host, ``on_this_machine`` fetches it here.

    :raises UserErrorException: a path or glob that matches no file.
    """
    from .datastores import Datastore

    # Each datastore answers for all of its paths at once: an ssh one in one round trip.
    paths: dict[str, list[str]] = {}
    for src in sources:
        if "datastore" in src:
            paths.setdefault(src["datastore"], []).append(src["path"])
    matched = {name: Datastore(ws, name)._match(p) for name, p in paths.items()}
    files: dict[str, tuple[str, Any]] = {}
    for src in sources:
        if "datastore" in src:
            found = matched[src["datastore"]].pop(0)
            shown = f"({src['datastore']!r}, {src['path']!r})"
        else:
            # Names: for local paths a folder keeps its name.
            found, shown = fileops.match(None, src["local"]), repr(src["local"])
        if not found:
            raise UserErrorException(f"the dataset path {shown} matches no file")
        files.update(found)
    return files


def by_host(files: dict[str, tuple[str, Any]]) -> dict[Any, dict[str, Any]]:
    """``{ssh datastore: {name: HostStat}}`` of the files that are on hosts (none: ``{}``)."""
    out: dict[Any, dict[str, Any]] = {}
    for name, (_path, st) in files.items():
        if type(st) is not os.stat_result:
            out.setdefault(st.store, {})[name] = st
    return out


def on_this_machine(files: dict[str, tuple[str, Any]]) -> dict[str, tuple[str, Any]]:
    """``files`` with those on ssh datastores fetched here first (into the datastore's mirror
    in the per-machine cache, ``sshstore``), so every path is a file of this machine."""
    hosted = by_host(files)
    if not hosted:
        return files
    out = dict(files)
    for store, group in hosted.items():
        out.update(store._fetch(group))
    return out


def fingerprint(
    files: dict[str, tuple[str, Any]], progress: Callable[[int, int], None] | None = None
) -> list[Entry]:
    """Hash every file, through the per-machine stat cache (a file whose size, mtime and inode
    are unchanged is not read again); files on ssh datastores are hashed on their hosts.
    ``progress(done, total)`` is called after each file of this machine."""
    from .snapshots import HashCache, default_cache_path

    hosted = by_host(files)
    remote: list[Entry] = []
    for store, group in hosted.items():
        remote += store._fingerprint(group)
    if hosted:
        files = {n: v for n, v in files.items() if type(v[1]) is os.stat_result}
    if not files:
        return sorted(remote, key=lambda e: e.path)
    cache = HashCache(default_cache_path())
    try:
        # The common folder of the first and last path in sorted order is everyone's (and
        # commonpath over 10,000 paths costs more than the whole no-change check should).
        paths = sorted(p for p, _ in files.values())
        common = os.path.commonpath([paths[0], paths[-1]])
        known = cache.load(common if not os.path.isfile(common) else os.path.dirname(common))
        entries, updates = [], []
        for name in sorted(files):
            path, st = files[name]
            hit = known.get(path)
            if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns and hit[2] == st.st_ino:
                digest = hit[3]
            else:
                digest, _ = hash_file(path)
                updates.append(
                    (path, st.st_size, st.st_mtime_ns, st.st_ino, digest, hit[4] if hit else "")
                )
            entries.append(Entry(check_relpath(name), digest, st.st_size))
            if progress is not None:
                progress(len(entries), len(files))
        cache.store(updates)
        return sorted(entries + remote, key=lambda e: e.path) if remote else entries
    finally:
        cache.close()


@dataclass
class Changes:
    """What differs between a dataset version's registered fingerprint and its data now."""

    added: list[str]
    removed: list[str]
    modified: list[str]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.modified)

    def as_dict(self) -> dict[str, list[str]]:
        """The changed paths as JSON-ready data (``mlws dataset diff --json``)."""
        return {"added": self.added, "removed": self.removed, "modified": self.modified}


class AbstractDataset:
    """What every dataset kind shares (v1's ``AbstractDataset``): a definition over files
    (``sources``), and once registered a name, version, tags and fingerprint.

    A kind subclasses this, sets ``kind`` (the definition's ``type``) and puts its own part of
    the definition in ``_extra``; ``_KINDS`` maps a stored definition back to its class.
    """

    kind = ""

    def __init__(
        self,
        sources: list[dict[str, str]],
        workspace: Workspace | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self._sources = sources
        self._extra: dict[str, Any] = dict(extra or {})
        self.workspace = workspace
        self.name: str | None = None
        self.version: int | None = None
        self.description: str | None = None
        self.tags: dict[str, str] = {}
        self._fingerprint: str | None = None
        self.created_time: float | None = None
        #: Who registered this version (v1's ``createdBy``; a served workspace's token user).
        self.created_by: str | None = None

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.kind:
            _KINDS[cls.kind] = cls

    def __repr__(self) -> str:
        if self.name:
            return f"{type(self).__name__}(name={self.name!r}, version={self.version})"
        return f"{type(self).__name__}({self._sources!r})"

    @property
    def id(self) -> str | None:
        """``name:version`` once registered (the form ``mlws`` commands accept), else None."""
        return f"{self.name}:{self.version}" if self.name else None

    @property
    def definition(self) -> dict[str, Any]:
        """What the dataset reads, as stored in the catalog: its ``type``, its ``sources`` and its
        kind's own settings (e.g. column types)."""
        return {"type": self.kind, "sources": self._sources, **self._extra}

    def _derive(self, **extra: Any) -> AbstractDataset:
        """A new unregistered dataset of this kind over the same sources (v1: every transform
        returns a new dataset; the registered one is unchanged)."""
        return type(self)(self._sources, self.workspace, {**self._extra, **extra})

    def _ws(self, workspace: Workspace | None = None) -> Workspace:
        ws = workspace or self.workspace
        if ws is None:
            from .workspace import Workspace

            ws = Workspace.from_config()
        return ws

    def current_files(self) -> dict[str, tuple[str, Any]]:
        """Every file the definition names now, ``{relative path: (source, where)}`` (see
        ``resolve_sources``): what a run, a pipeline step or a fingerprint reads."""
        return resolve_sources(self._ws(), self._sources)

    # -- registry ----------------------------------------------------------------------------
    def register(
        self,
        workspace: Workspace,
        name: str,
        description: str | None = None,
        tags: dict[str, Any] | None = None,
        create_new_version: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> AbstractDataset:
        """Record the definition and a fingerprint of the data now as version 1 of ``name``,
        or the next version with ``create_new_version``; ``progress(done, total)`` is called
        as files are hashed.

        :raises UserErrorException: the name exists and ``create_new_version`` is false (as v1).
        """
        if workspace.remote is not None:  # the server fingerprints the data where it is
            from .remote.datasets import register

            return register(workspace, self, name, description, tags, create_new_version)
        from .lifecycle import current_user

        return record_version(
            workspace,
            self,
            name,
            description=description,
            tags=tags,
            create_new_version=create_new_version,
            progress=progress,
            created_by=current_user(),
        )[0]

    def _entries(self) -> list[Entry]:
        assert self.workspace is not None and self._fingerprint is not None
        return parse_manifest(self.workspace.blobs.read_bytes(self._fingerprint))

    def changes(self, progress: Callable[[int, int], None] | None = None) -> Changes:
        """How the data under this registered version differs from when it was registered;
        ``progress(done, total)`` is called as files are hashed."""
        if self._fingerprint is None:
            raise UserErrorException("only a registered dataset has a fingerprint to compare")
        try:
            files = self.current_files()
        except UserErrorException:
            files = {}  # nothing matches any more: everything was removed
        entries = fingerprint(files, progress)
        # The fingerprint is the hash of a canonical manifest: the same data gives the same
        # hash, so an unchanged dataset needs no per-file comparison (nor parsing the stored one).
        if hash_bytes(canonical_manifest(entries, trusted=True)) == self._fingerprint:
            return Changes(added=[], removed=[], modified=[])
        then = {e.path: e.hash for e in self._entries()}
        now = {e.path: e.hash for e in entries}
        return Changes(
            added=sorted(set(now) - set(then)),
            removed=sorted(set(then) - set(now)),
            modified=sorted(p for p in set(now) & set(then) if now[p] != then[p]),
        )

    def has_changed(self) -> bool:
        """Whether the data under this registered version differs from when it was registered
        (re-hashes the files; :meth:`changes` says how).

        :raises UserErrorException: the dataset is not registered.
        """
        return bool(self.changes())

    # -- as a run's input --------------------------------------------------------------------
    def as_named_input(self, name: str) -> DatasetConsumptionConfig:
        """This dataset as input ``name`` of a run: put it (or its ``.as_mount()`` /
        ``.as_download()``) in ``ScriptRunConfig.arguments``; the script finds it in
        ``run.input_datasets[name]``."""
        from .rundata import DatasetConsumptionConfig

        return DatasetConsumptionConfig(name, self)

    def runs(self) -> list[dict[str, Any]]:
        """The runs that used this registered version as input, or produced it as output."""
        from .rundata import runs_of_dataset

        if self.name is None or self.version is None:
            return []
        ws = self._ws()
        if ws.remote is not None:
            from .remote.datasets import runs_of

            return runs_of(ws, self.name, self.version)
        return runs_of_dataset(ws, self.name, self.version)

    def serialize(self) -> dict[str, Any]:
        """The dataset as JSON-ready data (``mlws dataset show --json``): name, version,
        description, tags, definition, fingerprint and file count, and the runs that used or
        produced it."""
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "tags": self.tags,
            "definition": self.definition,
            "fingerprint": self._fingerprint,
            "files": len(self._entries()) if self._fingerprint else None,
            "createdTime": self.created_time,
            "createdBy": self.created_by,
            "runs": self.runs(),
        }


_KINDS: dict[str, type[AbstractDataset]] = {}


class FileDataset(AbstractDataset):
    """A file dataset: a set of files on datastores or local paths."""

    kind = "file"

    def to_path(self) -> list[str]:
        """The dataset's files, as paths inside it (v1 shape: a leading '/')."""
        return ["/" + n for n in sorted(self.current_files())]

    def download(self, target_path: str | os.PathLike[str], overwrite: bool = False) -> list[str]:
        """Copy the files into ``target_path``; returns their paths there.

        :raises UserErrorException: a file is there already and not ``overwrite``.
        """
        from .blobs import copy_file
        from .datastores import is_inside

        target = Path(target_path).absolute()
        files = self.current_files()
        for name in files:  # every name checked before anything is fetched or written
            out = target / name
            if not is_inside(target, out):
                raise UserErrorException(f"{name!r} would be written outside {target}")
            if out.exists() and not overwrite:
                raise UserErrorException(f"{out} exists; pass overwrite=True")
        here = on_this_machine(files)
        outs = [(here[name][0], target / name) for name in sorted(files)]
        for src, out in outs:
            copy_file(src, out)
        return [str(o) for _, o in outs]

    def as_mount(self, path_on_compute: str | None = None) -> DatasetConsumptionConfig:
        """As a run's input, read-only and not copied (where the machine allows it)."""
        from .rundata import default_input_name

        return self.as_named_input(default_input_name(self)).as_mount(path_on_compute)

    def as_download(self, path_on_compute: str | None = None) -> DatasetConsumptionConfig:
        """As a run's input, a copy of the files the script may change."""
        from .rundata import default_input_name

        return self.as_named_input(default_input_name(self)).as_download(path_on_compute)

    def mount(self, mount_point: str | os.PathLike[str] | None = None) -> MountContext:
        """The files under ``mount_point`` (a new temporary folder by default), read-only, while
        the returned context is started (``with ds.mount() as m: m.mount_point``)."""
        from .rundata import MountContext

        return MountContext(self, mount_point)


class _FileFactory:
    @staticmethod
    def from_files(path: Any, validate: bool = True) -> FileDataset:
        """A file dataset over ``path``: ``(datastore, "path/glob")`` tuples, ``datastore.path(...)``,
        local paths, or a list of them. ``validate``: check now that every path matches files.

        :raises UserErrorException: a path that matches nothing (with ``validate``).
        """
        # The datastores' workspace, validated or not: without it the files would be looked
        # for in Workspace.from_config()'s datastore of that name (another workspace's).
        ds = FileDataset(sources_of(None, path), workspace_of(path))
        if validate:
            resolve_sources(ds._ws(), ds._sources)
        return ds


def workspace_of(path: Any) -> Workspace | None:
    """The workspace of the first datastore among a dataset's paths, or None."""
    from .datastores import DataReference

    for item in path if isinstance(path, list) else [path]:
        if isinstance(item, tuple):
            return item[0].workspace
        if isinstance(item, DataReference):
            return item.datastore.workspace
    return None


class Dataset:
    """v1's ``Dataset``: ``Dataset.File.from_files(...)``, ``Dataset.Tabular.from_*(...)``,
    ``Dataset.get_by_name``, ``get_all``."""

    File = _FileFactory
    Tabular: type[TabularDatasetFactory]  # set by tabular.py, once it can import this module

    @staticmethod
    def get_by_name(
        workspace: Workspace, name: str, version: int | str = "latest"
    ) -> AbstractDataset:
        """A registered version (the latest by default).

        :raises DatasetNotFound: no such name or version.
        :raises UserErrorException: ``version`` is not a whole number (or "latest").
        """
        check_dataset_name(name)
        if workspace.remote is not None and version == "latest":
            from .remote.datasets import get

            return get(workspace, name, "latest")
        if version == "latest":
            row = workspace.catalog.one(
                "SELECT * FROM datasets WHERE name = ? ORDER BY version DESC LIMIT 1", (name,)
            )
        else:
            try:
                number = int(version)
            except (TypeError, ValueError):
                raise UserErrorException(
                    f"a dataset version is a whole number or 'latest', got {version!r}"
                ) from None
            if workspace.remote is not None:
                from .remote.datasets import get

                return get(workspace, name, number)
            # SQLite integers are 64-bit: a larger number names no version (not an overflow).
            row = (
                workspace.catalog.one(
                    "SELECT * FROM datasets WHERE name = ? AND version = ?", (name, number)
                )
                if 0 < number < 2**63
                else None
            )
        if row is None:
            raise DatasetNotFound(
                f"no dataset {name!r}"
                + ("" if version == "latest" else f" version {version}")
                + f" in workspace {workspace.name!r}; see 'mlws dataset list'"
            )
        return _from_row(workspace, row)

    @staticmethod
    def get_all(workspace: Workspace) -> dict[str, AbstractDataset]:
        """The latest version of every registered dataset, by name."""
        if workspace.remote is not None:
            from .remote.datasets import get_all

            return get_all(workspace)
        rows = workspace.catalog.query(
            "SELECT * FROM datasets d WHERE version = (SELECT max(version) FROM datasets WHERE"
            " name = d.name) ORDER BY name"
        )
        return {r["name"]: _from_row(workspace, r) for r in rows}


def from_definition(ws: Workspace | None, definition: dict[str, Any]) -> AbstractDataset:
    """An unregistered dataset of the kind a stored definition names."""
    extra = dict(definition)
    kind, sources = extra.pop("type"), extra.pop("sources")
    return _KINDS[kind](sources, ws, extra)


def _from_row(ws: Workspace, row: Any) -> AbstractDataset:
    ds = from_definition(ws, json.loads(row["definition"]))
    ds.name, ds.version = row["name"], row["version"]
    ds.description, ds.tags = row["description"], json.loads(row["tags"])
    ds._fingerprint, ds.created_time = row["fingerprint"], row["created"]
    ds.created_by = row["created_by"]
    return ds


def record_version(
    ws: Workspace,
    ds: AbstractDataset,
    name: str,
    *,
    description: str | None = None,
    tags: dict[str, Any] | None = None,
    create_new_version: bool = False,
    progress: Callable[[int, int], None] | None = None,
    created_by: str | None = None,
    request_id: str | None = None,
) -> tuple[AbstractDataset, bool]:
    """Record ``ds``'s definition and a fingerprint of its data now as the next version of
    ``name`` (version 1 unless ``create_new_version``); returns it and whether it is new. Every
    registration ends here (``register``, and ``mlws serve``'s for a remote client).

    ``request_id``: a registration sent again with it (a retry after a lost answer) returns the
    version made the first time, and False, writing nothing.

    :raises UserErrorException: a bad name or tag, the name exists and ``create_new_version``
        is false (as v1), or a path that matches no file.
    :raises RegistrationConflict: ``request_id`` registered another dataset.
    """
    from .errors import RegistrationConflict

    check_dataset_name(name)
    tag_values = {str(k): "" if v is None else str(v) for k, v in (tags or {}).items()}
    if any(not k.strip() for k in tag_values):
        raise InvalidName(f"dataset tag keys must not be empty, got {tags!r}")

    def done(conn: Any) -> tuple[AbstractDataset, bool] | None:
        if request_id is None:
            return None
        # Looked up inside the write transaction: two copies of one request never both find
        # nothing.
        row = conn.execute(
            "SELECT name, version FROM dataset_registrations WHERE request_id = ?", (request_id,)
        ).fetchone()
        if row is not None and row[0] != name:
            raise RegistrationConflict(
                f"registrationId {request_id!r} registered dataset {row[0]}:{row[1]}, not"
                f" {name!r}; use a new id for each registration"
            )
        if row is None:
            return None
        found = conn.execute(
            "SELECT * FROM datasets WHERE name = ? AND version = ?", tuple(row)
        ).fetchone()
        return _from_row(ws, found), False

    latest_sql = "SELECT max(version) FROM datasets WHERE name = ?"
    if request_id is not None:
        with ws.catalog.write() as conn:  # a retry answers at once, before any hashing
            again = done(conn)
        if again is not None:
            return again
    if not create_new_version:
        # Checked before the manifest blob is stored too, so a refusal leaves no blob
        # behind (and is quick); again in the transaction, for a concurrent register.
        _refuse_existing(name, ws.catalog.scalar(latest_sql, (name,)))
    entries = fingerprint(resolve_sources(ws, ds._sources), progress)
    manifest = ws.blobs.put_bytes(canonical_manifest(entries))
    now = time.time()
    with ws.catalog.write() as conn:
        again = done(conn)
        if again is not None:
            return again
        latest = conn.execute(latest_sql, (name,)).fetchone()[0]
        if not create_new_version:
            _refuse_existing(name, latest)
        version = (latest or 0) + 1
        conn.execute(
            "INSERT INTO datasets (name, version, definition, fingerprint, description, tags,"
            " created, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                name,
                version,
                json.dumps(ds.definition),
                manifest,
                description,
                json.dumps(tag_values),
                now,
                created_by,
            ),
        )
        if request_id is not None:
            conn.execute(
                "INSERT INTO dataset_registrations VALUES (?, ?, ?, ?)",
                (request_id, name, version, now),
            )
    return Dataset.get_by_name(ws, name, version), True


# At the bottom: tabular.py subclasses AbstractDataset (which puts "tabular" in _KINDS) and sets
# Dataset.Tabular. Whichever of the two modules is imported first, both end up complete.
from . import tabular  # noqa: E402, F401
