"""The workspace: one directory holding the catalog, the blob store and the default datastore.

Finding it (:func:`find_workspace_path`, used by the CLI and :meth:`Workspace.from_config`):
``--workspace/-w`` > ``MLWS_WORKSPACE`` > ``.mlws/config.json`` or ``.azureml/config.json`` in the
current folder or a parent > the per-user default workspace ``~/.local/share/mlws/default``,
created on first use.

Each of them may name a server instead of a folder (``https://host:port``, or ``"url"`` in a
config file): the workspace is then remote, the same classes over the server's storage (see
:mod:`mlws.remote`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .blobs import BlobStore
from .catalog import SCHEMA_VERSION, Catalog
from .dirs import user_cache_dir as user_cache_dir  # re-exported: older callers import it here
from .dirs import user_config_dir, user_data_dir, write_atomic
from .errors import InvalidWorkspace, RunNotFound, WorkspaceExists, WorkspaceNotFound
from .processes import hostname

if TYPE_CHECKING:
    from .experiments import Experiment
    from .keyvault import Keyvault
    from .runs import Run

IDENTITY_FILE = "mlws.json"
CATALOG_FILE = "mlws.db"
CONFIG_DIRS = (".mlws", ".azureml")


def default_workspace_path() -> Path:
    """The workspace used when none is given, ``MLWS_WORKSPACE`` is not set and no
    ``.mlws/config.json`` is found above the current folder: ``default`` in the user's data folder
    (created on first use)."""
    return user_data_dir() / "default"


def find_config_file(start: Path) -> Path | None:
    """The nearest ``.mlws/config.json`` or ``.azureml/config.json`` in ``start`` or a parent
    (``.mlws`` first in each folder), or None."""
    start = start.resolve()
    for folder in (start, *start.parents):
        for d in CONFIG_DIRS:
            candidate = folder / d / "config.json"
            if candidate.is_file():
                return candidate
    return None


def _named_workspaces_file() -> Path:
    return user_config_dir() / "workspaces.json"


def named_workspaces() -> dict[str, str]:
    """The user's workspaces by name (``name -> folder``), as recorded when they were created; empty
    if the list is missing or unreadable."""
    try:
        data = json.loads(_named_workspaces_file().read_text())
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _remember(name: str, path: Path) -> None:
    """Record name -> path in the user's list, so ``Workspace.get(name)`` finds it."""
    if named_workspaces().get(name) == str(path):
        return  # the common case (re-opening) takes no lock
    from filelock import FileLock

    target = _named_workspaces_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Read-modify-write under a lock: without it, of 8 concurrent creates one name was lost
    # about once in 20 rounds (two read the same list, the later rename drops the other's name).
    with FileLock(str(target) + ".lock", timeout=30):
        names = named_workspaces()
        if names.get(name) == str(path):
            return
        names[name] = str(path)
        write_atomic(target, json.dumps(names, indent=2, sort_keys=True), 0o644)


def _config_workspace_path(config_file: Path) -> Path | str:
    """The workspace a config file names: a folder, or a server's URL (``"url"``)."""
    try:
        cfg = json.loads(config_file.read_text())
    except (OSError, ValueError) as e:
        raise InvalidWorkspace(f"cannot read {config_file}: {e}") from None
    if not isinstance(cfg, dict):
        raise InvalidWorkspace(f"{config_file} must hold a JSON object")
    url = cfg.get("url")
    if url:
        if not is_url(url):
            raise InvalidWorkspace(f"{config_file}: 'url' must be http(s)://host:port, got {url!r}")
        return str(url)
    for key in ("workspace_path", "path"):
        if cfg.get(key):
            p = Path(os.path.expanduser(str(cfg[key])))
            return p if p.is_absolute() else (config_file.parent.parent / p)
    name = cfg.get("workspace_name")
    scope = cfg.get("Scope")
    if not name and isinstance(scope, str) and "/workspaces/" in scope:
        # v1's write_config form: {"Scope": "/subscriptions/<s>/resourceGroups/<r>/providers/
        # Microsoft.MachineLearningServices/workspaces/<name>"}
        name = scope.rstrip("/").rsplit("/workspaces/", 1)[1]
    if name:
        known = named_workspaces()
        if name in known:
            return Path(known[name])
        # An Azure config for a workspace never seen here: give it a local home by that name.
        return user_data_dir() / "workspaces" / str(name)
    raise InvalidWorkspace(
        f"{config_file} names no workspace: expected 'workspace_path' or 'workspace_name'"
    )


def is_url(value: object) -> bool:
    """Whether ``value`` names a remote workspace (``http(s)://``). A folder path is answered
    without importing the remote client (http.client, email, ssl: ~20 ms of every run's
    ``Run.get_context()``, most of a sweep trial's import time beyond mlws's own)."""
    if not (isinstance(value, str) and "://" in value):
        return False
    from .remote.client import is_url as names_server

    return names_server(value)


def find_workspace_path(
    path: str | os.PathLike[str] | None = None,
) -> tuple[Path | str, bool]:
    """Return ``(workspace path or server URL, create_if_missing)`` following the discovery
    order (a URL is never created)."""
    if path is not None:
        return (path, False) if is_url(path) else (Path(path), False)
    env = os.environ.get("MLWS_WORKSPACE")
    if env:
        return (env, False) if is_url(env) else (Path(env), True)
    cfg = find_config_file(Path.cwd())
    if cfg is not None:
        found = _config_workspace_path(cfg)
        return found, not isinstance(found, str)
    return default_workspace_path(), True


class Workspace:
    """A workspace directory. Open with ``Workspace(path)``; close with ``close()`` or ``with``.

    ``Workspace("https://host:port", token=..., ca_file=...)`` opens a remote workspace: the
    workspace served by ``mlws serve`` there. ``remote`` is then its client (None for a local
    workspace); see :mod:`mlws.remote` for what works remotely.

    :raises WorkspaceNotFound: no workspace at ``path``.
    :raises InvalidWorkspace: ``path`` is a file, or its identity file is unreadable.
    :raises Unauthorized: a server refused the token (or none was found).
    :raises ServerUnreachable: a server did not answer.
    """

    #: The client of a remote workspace's server; None for a workspace folder.
    remote: Any = None

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        token: str | None = None,
        ca_file: str | None = None,
        _checking: bool = False,
    ) -> None:
        if is_url(path):
            self._open_remote(str(path), token, ca_file)
            return
        self.path = Path(path).expanduser().absolute()
        if self.path.exists() and not self.path.is_dir():
            raise InvalidWorkspace(f"{self.path} is a file, not a workspace folder")
        identity = self.path / IDENTITY_FILE
        if not identity.is_file():
            raise WorkspaceNotFound(
                f"no workspace at {self.path} (no {IDENTITY_FILE}); create one with "
                f"'mlws workspace create {self.path}'"
            )
        try:
            info = json.loads(identity.read_text())
            self.id: str = str(info["id"])
            self.name: str = str(info["name"])
            self.created: float = float(info.get("created", 0))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InvalidWorkspace(
                f"{identity} is not a valid workspace identity file: {e}"
            ) from None
        try:
            (self.path / "locks").mkdir(exist_ok=True)
        except OSError:
            pass  # a read-only folder: reading needs no locks folder (the catalog says so)
        # _checking (fsck): open a catalog that an earlier command found damaged, to check it.
        self.catalog = Catalog(
            self.path / CATALOG_FILE,
            lock_path=self.path / "locks" / "catalog.lock",
            name=self.name,
            ignore_damage_mark=_checking,
        )
        try:
            self.catalog.migrate()
        except BaseException:
            self.catalog.close()
            raise
        self.blobs = BlobStore(self.path / "blobs")
        self._closed = False

    def _open_remote(self, url: str, token: str | None, ca_file: str | None) -> None:
        from .remote.backend import RemoteBlobs, RemoteCatalog, server_key
        from .remote.client import RemoteClient

        client = RemoteClient(url, token=token, ca_file=ca_file)
        info = client.request("GET", "/workspace")
        self.remote = client
        self.url = client.url
        self.id = str(info["id"])
        self.name = str(info["name"])
        self.created = float(info.get("created") or 0)
        self.info: dict[str, Any] = info
        # Per-user state of this server on this machine (the spool's neighbour), so code that
        # keys local state by workspace folder keeps working.
        self.path = user_cache_dir() / "remote" / server_key(client.url)
        self.catalog: Any = RemoteCatalog(client)
        self.blobs: Any = RemoteBlobs(client)
        self._closed = False

    @property
    def folder_key(self) -> str:
        """A short key of the workspace *folder* (its real path), for this machine's per-user
        state of it (run folders, service folders, local Dask clusters). A copy of a workspace
        shares its id (and its run ids and service names) with the original, never this key,
        so neither touches the other's state."""
        import hashlib

        return hashlib.sha256(os.path.realpath(self.path).encode()).hexdigest()[:16]

    def blob_store_matches(self) -> str | None:
        """None when the catalog and the blob store belong together, else why not.

        The catalog records the id of its blob store (made at creation, or at the first
        write of an older workspace); a catalog restored from another workspace, or a blob
        folder swapped under it, then no longer matches, and gc must not judge which blobs
        are referenced.
        """
        recorded = self.catalog.scalar("SELECT value FROM settings WHERE key = 'blob_store_id'")
        actual = self.blobs.identity()
        if recorded is None:
            with self.catalog.write() as conn:
                conn.execute(
                    "INSERT OR IGNORE INTO settings (key, value) VALUES ('blob_store_id', ?)",
                    (actual,),
                )
            recorded = self.catalog.scalar("SELECT value FROM settings WHERE key = 'blob_store_id'")
        if recorded != actual:
            return (
                f"the catalog {self.catalog.path} belongs to blob store {recorded}, but "
                f"{self.blobs.root} is blob store {actual}: the catalog or the blobs were "
                "replaced by another workspace's"
            )
        return None

    # -- creation and discovery -------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        name: str | None = None,
        exist_ok: bool = False,
        *,
        _remember_name: bool = True,
    ) -> Workspace:
        """Create a workspace folder at ``path`` (its parents too) and open it.

        :raises WorkspaceExists: a workspace is there already and ``exist_ok`` is false.
        :raises InvalidWorkspace: ``path`` is a file.
        """
        if is_url(path):
            raise InvalidWorkspace(
                f"{path} is a server's address: a workspace is created where it is served"
                " ('mlws workspace create' on the server's machine); open it with"
                f" Workspace({str(path)!r})"
            )
        if not os.fspath(path).strip():
            # Path("") is the current folder: an empty name must not make it a workspace.
            raise InvalidWorkspace("the workspace path is empty; give a folder such as ./ws")
        p = Path(path).expanduser().absolute()
        if p.exists() and not p.is_dir():
            raise InvalidWorkspace(f"{p} is a file, not a folder; choose another path")
        identity = p / IDENTITY_FILE
        if identity.exists():
            if not exist_ok:
                raise WorkspaceExists(
                    f"a workspace already exists at {p}; open it with Workspace({str(p)!r})"
                )
            return cls(p)
        p.mkdir(parents=True, exist_ok=True)
        for sub in ("blobs", "locks", "services", "datastores/workspaceblobstore"):
            (p / sub).mkdir(parents=True, exist_ok=True)
        # The catalog first, the identity file last: a workspace whose mlws.json is there and
        # whose mlws.db is not has lost its catalog (an error), never one being created.
        catalog = Catalog(p / CATALOG_FILE, lock_path=p / "locks" / "catalog.lock", create=True)
        try:
            catalog.migrate()
            with catalog.write() as conn:
                conn.execute(
                    "INSERT OR IGNORE INTO settings (key, value) VALUES ('blob_store_id', ?)",
                    (BlobStore(p / "blobs").identity(),),
                )
        finally:
            catalog.close()
        import uuid  # here: its import (platform...) is no cost of every run's get_context

        info = {
            "id": str(uuid.uuid4()),
            "name": name or p.name,
            "schema": SCHEMA_VERSION,
            "created": time.time(),
        }
        # Exclusive (link): of many concurrent creators exactly one wins, and the identity
        # file is never seen half-written. 0600 as it has always been.
        data = json.dumps(info, indent=2) + "\n"
        if not write_atomic(identity, data, 0o600, exclusive=True) and not exist_ok:
            raise WorkspaceExists(f"a workspace already exists at {p}")
        ws = cls(p)
        if not _remember_name:  # a run's replica on a remote host is not the user's workspace
            return ws
        try:
            _remember(ws.name, ws.path)
        except OSError:
            pass  # the name list is a convenience; a read-only home must not stop creation
        return ws

    @classmethod
    def from_config(
        cls, path: str | os.PathLike[str] | None = None, _file_name: str | None = None
    ) -> Workspace:
        """Find and open the workspace (see module docstring for the order).

        ``path`` may be a workspace folder, a ``config.json`` file or a folder to search for one,
        as in Azure ML v1. With no path, the default workspace is created on first use.
        """
        if is_url(path):
            return cls(str(path))
        if path is not None:
            p = Path(path).expanduser()
            if p.is_file() and p.name.endswith(".json"):
                return cls._open_or_create(_config_workspace_path(p))
            if (p / IDENTITY_FILE).is_file():
                return cls(p)
            cfg = find_config_file(p) if p.is_dir() else None
            if cfg is None:
                raise WorkspaceNotFound(
                    f"no workspace or .mlws/config.json at or above {p}; run 'mlws workspace create'"
                )
            return cls._open_or_create(_config_workspace_path(cfg))
        found, create = find_workspace_path(None)
        return cls._open_or_create(found) if create else cls(found)

    @classmethod
    def _open_or_create(cls, path: Path | str) -> Workspace:
        if isinstance(path, str):  # a server's URL (from a config file): opened, never created
            return cls(path)
        if (path / IDENTITY_FILE).is_file():
            return cls(path)
        return cls.create(path, exist_ok=True)

    @classmethod
    def get(cls, name: str, **_azure_args: Any) -> Workspace:
        """Open a workspace by the name it was created with on this machine (v1 ``Workspace.get``)."""
        known = named_workspaces()
        if name not in known:
            raise WorkspaceNotFound(
                f"no workspace named {name!r} on this machine; known: {', '.join(sorted(known)) or 'none'}"
            )
        return cls(known[name])

    def write_config(
        self, path: str | os.PathLike[str] = ".", file_name: str | None = None
    ) -> Path:
        """Write ``<path>/.mlws/config.json`` naming this workspace (a remote one by its URL),
        so scripts and the CLI run from that folder find it."""
        folder = Path(path) / ".mlws"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / (file_name or "config.json")
        if self.remote is not None:  # the server's URL; never a token (the file goes with code)
            config = {"url": self.remote.url, "workspace_name": self.name}
            write_atomic(target, json.dumps(config, indent=2) + "\n", 0o644)
            return target
        write_atomic(
            target,
            (
                json.dumps(
                    {"workspace_path": str(self.path), "workspace_name": self.name}, indent=2
                )
                + "\n"
            ),
            0o644,
        )
        return target

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self, optimize: bool = True) -> None:
        """Write the metrics still buffered for this workspace and close its catalog; a second call
        does nothing. ``with Workspace(...)`` closes it on exit. ``optimize=False``: no refresh
        of the planner's statistics on the way (a process that outlives what it reported, such
        as a sweep's trial worker, must not write after the sweep has ended)."""
        if not self._closed:
            self._closed = True
            if self.remote is not None:
                self.remote.close()
                return
            from .metrics import close_catalog

            close_catalog(self.catalog)
            self.catalog.close(optimize=optimize)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.remote is not None:
            return f"Workspace(name={self.name!r}, url={self.remote.url!r})"
        return f"Workspace(name={self.name!r}, path={str(self.path)!r})"

    # -- navigation --------------------------------------------------------------------------
    @property
    def experiments(self) -> dict[str, Experiment]:
        """The workspace's experiments by name (v1: ``ws.experiments``)."""
        from .experiments import Experiment

        return {e.name: e for e in Experiment.list(self)}

    @property
    def datastores(self) -> dict[str, Any]:
        """Registered datastores by name (v1: ``ws.datastores``)."""
        from .datastores import Datastore

        return {d.name: d for d in Datastore.list(self)}

    @property
    def compute_targets(self) -> dict[str, Any]:
        """Compute targets by name, each as its concrete class (v1: ``ws.compute_targets``)."""
        from .compute import ComputeTarget

        return {t.name: t for t in ComputeTarget.list(self)}

    @property
    def datasets(self) -> dict[str, Any]:
        """Registered datasets by name, the latest version of each (v1: ``ws.datasets``)."""
        from .datasets import Dataset

        return Dataset.get_all(self)

    @property
    def environments(self) -> dict[str, Any]:
        """Registered environments by name, the latest version of each (v1:
        ``ws.environments``)."""
        from .environments import Environment

        return Environment.list(self)

    @property
    def models(self) -> dict[str, Any]:
        """Registered models by name, the latest version of each (v1: ``ws.models``)."""
        from .models import Model

        return {m.name: m for m in Model.list(self, latest=True)}

    @property
    def webservices(self) -> dict[str, Any]:
        """Deployed services by name (v1: ``ws.webservices``)."""
        from .serving import Webservice

        return {s.name: s for s in Webservice.list(self)}

    def get_default_datastore(self) -> Any:
        """The workspace's default datastore (v1: ``ws.get_default_datastore()``)."""
        from .datastores import Datastore

        return Datastore.get_default(self)

    def get_run(self, run_id: str) -> Run:
        """The run with that id, in any experiment. :raises RunNotFound:"""
        from .runs import Run

        if self.remote is not None:
            from .remote.runs import get_row

            return Run.from_row(self, get_row(self, run_id))
        row = self.catalog.one("SELECT * FROM runs WHERE id = ?", (run_id,))
        if row is None:
            raise RunNotFound(
                f"no run with id {run_id!r} in workspace {self.name!r}; see 'mlws run list'"
            )
        return Run.from_row(self, row)

    def get_default_keyvault(self) -> Keyvault:
        """The workspace's key vault (secrets encrypted with a key kept outside the folder)."""
        from .keyvault import Keyvault

        return Keyvault(self)

    def get_mlflow_tracking_uri(self) -> str:
        """The MLflow tracking URI of this workspace, ``mlws:///abs/path`` (v1's
        ``ws.get_mlflow_tracking_uri()``): ``mlflow.set_tracking_uri(ws.get_mlflow_tracking_uri())``
        makes MLflow code record here (needs the ``mlws[mlflow]`` extra). A remote workspace's
        is ``mlws+https://host:port`` (its server's MLflow API, with mlws's token for it)."""
        if self.remote is not None:
            return "mlws+" + self.remote.url
        return "mlws://" + self.path.as_posix()

    def get_details(self) -> dict[str, Any]:
        """Facts about the workspace as JSON-ready data (``mlws workspace show --json``): id, name,
        folder, schema version, journal mode, counts, whether it is read-only here and which machine
        writes it."""
        if self.remote is not None:  # the server's facts (never its folder), and the URL
            return {**self.remote.request("GET", "/workspace"), "url": self.remote.url}
        return {
            "id": self.id,
            "name": self.name,
            "path": str(self.path),
            "created": self.created,
            "schemaVersion": self.catalog.user_version(),
            "journalMode": self.catalog.scalar("PRAGMA journal_mode"),
            "networkFilesystem": self.catalog.network,
            "experiments": self.catalog.scalar("SELECT count(*) FROM experiments"),
            "runs": self.catalog.scalar("SELECT count(*) FROM runs"),
            "host": hostname(),
            "readOnly": self.catalog.readonly_reason,
            "writingMachine": self.writing_machine(),
        }

    def writing_machine(self) -> str | None:
        """On a shared (network) folder: which machine writes it (see :mod:`mlws.lease`), or
        None when it is not shared or no machine has written yet."""
        lease = self.catalog.lease
        holder = lease.holder() if lease is not None else None
        if holder is None:
            return None
        state = " (released)" if holder.released else ""
        return holder.describe() + state

    def release_writer_lease(self) -> bool:
        """Stop writing to a shared workspace from this machine now, so that another machine
        may write at once. Returns False when this machine was not its writer."""
        return self.catalog.release_lease()
