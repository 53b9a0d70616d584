"""Datastores: named places where data lives (Azure ML v1's ``Datastore``).

``workspaceblobstore`` (the default) is the workspace's own ``datastores/workspaceblobstore``
folder, so it travels with the workspace; ``Datastore.register_local(ws, name, path)`` names a
folder of this machine, ``Datastore.register_ssh(ws, name, host, path)`` a folder on another
machine (``mlws.sshstore``; ``Datastore(ws, name)`` returns an ``SshDatastore`` then, as v1
returns the concrete class). ``upload``/``download`` copy files in and out; a path on a
datastore is always relative, and nothing is ever written outside the folder it is meant for:
``..``, absolute paths and symlinks that lead out are refused.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import fileops
from .blobs import check_relpath, copy_file
from .dirs import replacing
from .errors import DatastoreNotFound, UnsafePath, UserErrorException

if TYPE_CHECKING:
    from .workspace import Workspace

DEFAULT = "workspaceblobstore"
_NAME = re.compile(r"[A-Za-z0-9_]{1,255}")


def check_datastore_name(name: Any) -> str:
    """Return ``name`` if it can name a datastore (letters, digits and ``_``, as Azure ML allows).

    :raises UserErrorException: anything else.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UserErrorException(
            f"invalid datastore name {name!r}: letters, digits and '_' only (as Azure ML)"
        )
    return name


def clean_path(path: str | None) -> str:
    """A path on a datastore: relative, '/'-separated, no '..'; '' for the root."""
    if path is None:
        return ""
    p = str(path).replace("\\", "/").strip()
    while p.startswith("./"):
        p = p[2:]
    p = p.strip("/") if not p.startswith("/") else p
    if p in ("", "."):
        return ""
    try:
        return check_relpath(p)
    except UnsafePath:
        raise UnsafePath(
            f"path {path!r} on a datastore must be relative, without '..' (e.g. 'data/iris')"
        ) from None


def is_inside(root: Path, path: Path) -> bool:
    """Whether ``path`` (symlinks followed) stays under ``root``."""
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(root))
        return True
    except ValueError:
        return False


class DataReference:
    """A path on a datastore (v1: ``datastore.path("folder")``); runs receive it as a real path.
    ``data_reference_name`` names it as a run's or step's input (v1's keyword: pass v1's
    arguments by keyword, as the second positional one here is the path); v1's
    ``path_on_compute`` and ``overwrite`` are accepted and change nothing.

    :raises UserErrorException: ``data_reference_name`` is not letters, digits and ``_``.
    """

    def __init__(
        self,
        datastore: Datastore,
        path_on_datastore: str | None = "",
        mode: str = "mount",
        data_reference_name: str | None = None,
        path_on_compute: str | None = None,
        overwrite: bool = False,
    ) -> None:
        from .rundata import check_data_name

        self.datastore = datastore
        self.path_on_datastore = clean_path(path_on_datastore or "")
        self.mode = mode
        #: v1's name of the input: the script finds it as ``$AZUREML_DATAREFERENCE_<name>``
        #: (None: one derived from the path).
        self.data_reference_name = (
            None
            if data_reference_name is None
            else check_data_name(data_reference_name, "data reference")
        )

    @property
    def local_path(self) -> Path:
        """The path on this machine.

        :raises UserErrorException: an ssh datastore, whose files are not on this machine.
        """
        return (
            self.datastore.root / self.path_on_datastore
            if self.path_on_datastore
            else self.datastore.root
        )

    def as_mount(self) -> DataReference:
        """This path as a run input that the run reads in place."""
        return DataReference(
            self.datastore, self.path_on_datastore, "mount", self.data_reference_name
        )

    def as_download(self) -> DataReference:
        """This path as a run input copied into the run's folder first, so the script may change its
        copy."""
        return DataReference(
            self.datastore, self.path_on_datastore, "download", self.data_reference_name
        )

    def __str__(self) -> str:
        """``$AZUREML_DATAREFERENCE_<name>``, as v1: the run input's variable, which a run that
        takes this reference expands to its path (``local_path`` is the path here)."""
        from .rundata import default_input_name

        return f"$AZUREML_DATAREFERENCE_{self.data_reference_name or default_input_name(self)}"

    def __repr__(self) -> str:
        return f"DataReference(datastore={self.datastore.name!r}, path={self.path_on_datastore!r}, mode={self.mode!r})"


class Datastore:
    """A registered datastore. ``Datastore(ws, name)`` loads one (``Datastore.get`` too).

    :raises DatastoreNotFound: no such datastore.
    """

    def __new__(cls, workspace: Workspace | None = None, name: str | None = None) -> Datastore:
        # As v1 (AzureBlobDatastore, ...): Datastore(ws, name) is of its kind's class.
        if cls is Datastore and workspace is not None and workspace.remote is not None:
            from .remote.datastores import RemoteDatastore  # the server's, whatever the kind

            return super().__new__(RemoteDatastore)
        if cls is Datastore and workspace is not None:
            row = (
                workspace.catalog.one("SELECT type FROM datastores WHERE is_default = 1")
                if name is None
                else workspace.catalog.one("SELECT type FROM datastores WHERE name = ?", (name,))
            )
            if row is not None and row[0] == "ssh":
                from .sshstore import SshDatastore

                return super().__new__(SshDatastore)
        return super().__new__(cls)

    def __init__(self, workspace: Workspace, name: str | None = None) -> None:
        self.workspace = workspace
        if name is None:
            row = workspace.catalog.one("SELECT * FROM datastores WHERE is_default = 1")
        else:
            row = workspace.catalog.one("SELECT * FROM datastores WHERE name = ?", (name,))
        if row is None:
            known = [
                r[0] for r in workspace.catalog.query("SELECT name FROM datastores ORDER BY name")
            ]
            raise DatastoreNotFound(
                f"no datastore named {name!r} in workspace {workspace.name!r}; known: {', '.join(known)}"
            )
        self.name: str = row["name"]
        self.datastore_type: str = row["type"]
        self.config: dict[str, Any] = json.loads(row["config"])
        self.is_default = bool(row["is_default"])

    def __repr__(self) -> str:
        return (
            f"Datastore(name={self.name!r}, type={self.datastore_type!r}, root={str(self.root)!r})"
        )

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Datastore)
            and other.name == self.name
            and other.workspace.path == self.workspace.path
        )

    def __hash__(self) -> int:
        return hash((str(self.workspace.path), self.name))

    @property
    def root(self) -> Path:
        """The folder holding the datastore's files."""
        if self.datastore_type == "workspace":
            return self.workspace.path / "datastores" / self.name
        return Path(self.config["path"])

    @property
    def location(self) -> str:
        """Where the files are: a folder of this machine, or ``ssh://user@host:port/path``."""
        return self._where("")

    def _where(self, path: str) -> str:
        return str(self.root / path if path else self.root)

    # -- registry ----------------------------------------------------------------------------
    @staticmethod
    def get(workspace: Workspace, datastore_name: str) -> Datastore:
        """The datastore registered as ``datastore_name`` (v1's ``Datastore.get``).

        :raises DatastoreNotFound: no such datastore.
        """
        return Datastore(workspace, datastore_name)

    @staticmethod
    def get_default(workspace: Workspace) -> Datastore:
        """The workspace's default datastore (``workspaceblobstore`` unless another was set as
        default)."""
        return Datastore(workspace)

    @staticmethod
    def list(workspace: Workspace) -> list[Datastore]:
        """Every datastore registered in the workspace, by name."""
        if workspace.remote is not None:
            from .remote.datastores import list_datastores

            return list_datastores(workspace)
        rows = workspace.catalog.query("SELECT name FROM datastores ORDER BY name")
        return [Datastore(workspace, r[0]) for r in rows]

    @staticmethod
    def register_local(
        workspace: Workspace,
        datastore_name: str,
        path: str | os.PathLike[str],
        overwrite: bool = False,
    ) -> Datastore:
        """Name a folder of this machine (created if missing) as a datastore.

        On a remote workspace ``path`` is an absolute folder on the *server's* machine (the
        server reads and writes it for everyone), and only an owner may register one.

        :raises UserErrorException: bad name, the name is taken (without ``overwrite``), the
            path is a file or the workspace's own datastores folder.
        """
        check_datastore_name(datastore_name)
        if workspace.remote is not None:
            from .remote.datastores import register_folder

            return register_folder(workspace, datastore_name, path, overwrite)
        folder = Path(path).expanduser().absolute()
        if folder.exists() and not folder.is_dir():
            raise UserErrorException(f"{folder} is a file, not a folder")
        if is_inside(workspace.path / "datastores", folder):
            raise UserErrorException(
                f"{folder} is inside the workspace's own datastores; register a folder outside it"
            )
        if datastore_name == DEFAULT:
            raise UserErrorException(
                f"{DEFAULT!r} is the workspace's own datastore; pick another name"
            )
        now = time.time()
        replaced = workspace.catalog.one(
            "SELECT type FROM datastores WHERE name = ?", (datastore_name,)
        )
        if replaced is not None and replaced[0] == "ssh" and overwrite:
            Datastore(workspace, datastore_name)._release()  # its connection and mirror here
        with workspace.catalog.write() as conn:
            exists = conn.execute(
                "SELECT type FROM datastores WHERE name = ?", (datastore_name,)
            ).fetchone()
            if exists and not overwrite:
                raise UserErrorException(
                    f"a datastore named {datastore_name!r} exists; pass overwrite=True to replace it"
                )
            folder.mkdir(parents=True, exist_ok=True)
            record(conn, datastore_name, "local", {"path": str(folder)}, now)
        return Datastore(workspace, datastore_name)

    @staticmethod
    def register_ssh(
        workspace: Workspace,
        datastore_name: str,
        host: str,
        path: str,
        username: str | None = None,
        port: int | None = 22,
        private_key_file: str | os.PathLike[str] | None = None,
        private_key_passphrase: str | None = None,
        *,
        python_path: str = "/usr/bin/python3",
        ssh_options: list[str] | None = None,
        overwrite: bool = False,
        check: bool = True,
    ) -> Datastore:
        """Name a folder on another machine, reached with OpenSSH, as a datastore (see
        ``mlws.sshstore``). ``host`` is ``host``, ``host:port`` or ``user@host:port``;
        ``path`` the folder there (relative: under the login's home). The key goes to the
        key vault, decrypted with ``private_key_passphrase`` (without a key, ssh uses your
        agent and ``~/.ssh/config``). ``python_path``: the host's Python 3.8+, which lists
        and hashes files there. ``ssh_options``: extra ``-o`` options. ``check``: connect and
        make sure the folder is usable (created if missing) before anything is recorded.

        :raises UserErrorException: a bad name, host, path, key or passphrase; the name is
            taken (without ``overwrite``).
        :raises DatastoreUnavailable: the host cannot be reached, refuses the key, or its
            folder is not a writable folder (then nothing is recorded).
        """
        if workspace.remote is not None:
            from .remote.backend import not_available

            raise not_available("Datastore.register_ssh", workspace.remote.url)
        from .sshstore import register

        return register(
            workspace,
            datastore_name,
            host,
            path,
            username=username,
            port=port,
            private_key_file=private_key_file,
            private_key_passphrase=private_key_passphrase,
            python_path=python_path,
            ssh_options=ssh_options,
            overwrite=overwrite,
            check=check,
        )

    def set_as_default(self) -> None:
        """Make this the workspace's default datastore (one catalog write: the old default stops
        being one in the same transaction).

        :raises DatastoreNotFound: it was unregistered meanwhile; the default is unchanged.
        """
        with self.workspace.catalog.write() as conn:
            # Only if it is still registered: else the workspace would be left with no default.
            cur = conn.execute(
                "UPDATE datastores SET is_default = (name = ?)"
                " WHERE EXISTS (SELECT 1 FROM datastores WHERE name = ?)",
                (self.name, self.name),
            )
            if cur.rowcount == 0:
                raise DatastoreNotFound(f"datastore {self.name!r} is no longer registered")
        self.is_default = True

    def unregister(self) -> None:
        """Forget the datastore (its files stay where they are).

        :raises UserErrorException: it is the workspace's own or the default datastore.
        """
        if self.datastore_type == "workspace":
            raise UserErrorException(
                f"{self.name!r} is the workspace's own datastore; it cannot be unregistered"
            )
        if Datastore(self.workspace, self.name).is_default:  # now, not when this was loaded
            raise UserErrorException(
                f"{self.name!r} is the default datastore; make another one the default first"
            )
        with self.workspace.catalog.write() as conn:
            row = conn.execute(
                "SELECT config FROM datastores WHERE name = ?", (self.name,)
            ).fetchone()
            if row is not None:
                _forget_secrets(conn, json.loads(row[0]))
            conn.execute("DELETE FROM datastores WHERE name = ?", (self.name,))
        self._release()

    def _release(self) -> None:
        """Free what the datastore holds on this machine once unregistered (kinds override)."""

    def serialize(self) -> dict[str, Any]:
        """The datastore as JSON-ready data (``mlws datastore show --json``): name, type, root and
        whether it is the default."""
        return {
            "name": self.name,
            "type": self.datastore_type,
            "root": str(self.root),
            "default": self.is_default,
        }

    # -- files -------------------------------------------------------------------------------
    def path(
        self, path: str | None = None, data_reference_name: str | None = None
    ) -> DataReference:
        """A :class:`DataReference` to ``path`` on this datastore (its root when None), to pass as a
        run argument. ``data_reference_name`` names the input (``$AZUREML_DATAREFERENCE_<name>``
        in the run), as v1; by default one is derived from the path.

        :raises UnsafePath: ``path`` is absolute or has a ``..`` component.
        :raises UserErrorException: ``data_reference_name`` is not letters, digits and ``_``.
        """
        return DataReference(self, path or "", data_reference_name=data_reference_name)

    def _target(self, target_path: str | None) -> Path:
        rel = clean_path(target_path)
        dest = self.root / rel if rel else self.root
        if not is_inside(self.root, dest):
            raise UnsafePath(
                f"{target_path!r} leads outside datastore {self.name!r} (through a symlink)"
            )
        return dest

    def upload(
        self,
        src_dir: str | os.PathLike[str],
        target_path: str | None = None,
        overwrite: bool = False,
        show_progress: bool = True,
        progress: Callable[[int, int], None] | None = None,
    ) -> DataReference:
        """Copy the files under ``src_dir`` to ``target_path`` on the datastore. Files that are
        there already are kept unless ``overwrite``. ``progress(done, total)``, if given, is
        called as files are done, instead of the line ``show_progress`` prints on a terminal. A symlink in ``src_dir`` is copied only
        when it leads to a file inside ``src_dir`` (as that file); others are skipped with a
        warning on stderr (``fileops.gather``, the rule of every upload).

        :raises UserErrorException: ``src_dir`` is not a folder, a path leads outside, or a
            file's name cannot be stored (a backslash, not UTF-8); nothing is copied then.
        """
        from .blobs import bad_names

        src = Path(src_dir)
        if not src.is_dir():
            raise UserErrorException(f"cannot upload {src}: not a folder")
        try:
            found, links = fileops.gather(str(src))
        except OSError as e:
            raise UserErrorException(f"cannot read {e.filename or src}: {e.strerror}") from None
        found.sort()
        bad_names(str(src), [rel for rel, _st, _p in found])
        if links:
            print(f"Warning: {fileops.skipped_warning(str(src), links)}", file=sys.stderr)
        self._put(
            [(Path(path), rel) for rel, _st, path in found],
            target_path,
            overwrite,
            show_progress,
            progress,
        )
        return DataReference(self, target_path or "")

    def upload_files(
        self,
        files: Iterable[str | os.PathLike[str]],
        relative_root: str | os.PathLike[str] | None = None,
        target_path: str | None = None,
        overwrite: bool = False,
        show_progress: bool = True,
        progress: Callable[[int, int], None] | None = None,
    ) -> DataReference:
        """Copy ``files`` to ``target_path``, keeping their paths relative to
        ``relative_root`` (default: just the file names); ``progress`` as for :meth:`upload`.

        :raises UserErrorException: a file is missing or not under ``relative_root``.
        """
        pairs = []
        root = Path(relative_root).absolute() if relative_root is not None else None
        for f in files:
            p = Path(f).absolute()
            if not p.is_file():
                raise UserErrorException(f"cannot upload {f}: not a file")
            if root is not None:
                try:
                    rel = p.relative_to(root).as_posix()
                except ValueError:
                    raise UserErrorException(
                        f"{f} is not under relative_root {relative_root}"
                    ) from None
            else:
                rel = p.name
            pairs.append((p, rel))
        from .blobs import bad_names

        bad_names(str(root or "."), [rel for _p, rel in pairs])
        self._put(pairs, target_path, overwrite, show_progress, progress)
        return DataReference(self, target_path or "")

    def _put(
        self,
        pairs: list[tuple[Path, str]],
        target_path: str | None,
        overwrite: bool,
        show_progress: bool,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        dest = self._target(target_path)
        plan = []
        for src, rel in pairs:  # every path checked before anything is written
            out = dest / clean_path(rel)
            # realpath resolves links in the part of the path that exists: a link on the
            # datastore cannot carry the new file outside, even into folders made for it.
            if not is_inside(self.root, out):
                raise UnsafePath(f"{rel!r} leads outside datastore {self.name!r}")
            if out.is_symlink():
                raise UnsafePath(
                    f"{out} is a symlink on the datastore; refusing to write through it"
                )
            plan.append((src, out))
        copied = skipped = 0
        if progress is not None:
            show_progress = False  # the caller draws
        for i, (src, out) in enumerate(plan, 1):
            if progress is not None:
                progress(i - 1, len(plan))
            if out.exists() and not overwrite:
                skipped += 1
                continue
            copy_file(src, out)
            copied += 1
            if show_progress and sys.stderr.isatty() and (i % 100 == 0 or i == len(plan)):
                print(f"\ruploaded {i}/{len(plan)}", end="", file=sys.stderr, flush=True)
        if show_progress and sys.stderr.isatty() and plan:
            print(file=sys.stderr)
        if progress is not None and plan:
            progress(len(plan), len(plan))
        self.last_upload = {"copied": copied, "skipped": skipped}

    def download(
        self,
        target_path: str | os.PathLike[str],
        prefix: str | None = None,
        overwrite: bool = False,
        show_progress: bool = True,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Copy the datastore's files (under ``prefix``) into ``target_path``, keeping their
        paths; returns how many were copied. Existing files are kept unless ``overwrite``.
        Links on the datastore that lead outside it are skipped. ``progress(done, total)``, if
        given, is called after each file.
        """
        target = Path(target_path)
        if target.exists() and not target.is_dir():
            raise UserErrorException(f"cannot download into {target}: it is a file")
        here = target.absolute()

        def wanted(name: str) -> bool:
            out = here / name
            # Never through a link in the target; what is there stays unless overwrite.
            return is_inside(here, out) and not out.is_symlink() and (overwrite or not out.exists())

        count = 0
        found = self._fetch_under(clean_path(prefix), wanted)
        for name, src in found:
            copy_file(src, here / name)
            count += 1
            if progress is not None:
                progress(count, len(found))
        return count

    # -- what the kinds do differently (``sshstore.SshDatastore`` overrides these) -----------
    def _fetch_under(self, prefix: str, wanted: Callable[[str], bool]) -> list[tuple[str, str]]:
        """``(name, path here)`` of the files ``download`` copies (``fileops.select``), only
        those ``wanted``; links that lead out of the datastore left out."""
        root = str(self._target(None))
        return [(n, p) for n, p, _st in fileops.select(root, prefix, links=True) if wanted(n)]

    def write_new(self, path: str, write: Callable[[Path], None]) -> Callable[[], None]:
        """A new file at ``path``, whole or not at all (``write`` fills a temp file, renamed
        into place); returns what undoes it: the file and the folders made for it go."""
        dest = self._target(path)
        made = [p for p in [dest.parent, *dest.parent.parents] if not p.exists()]
        dest.parent.mkdir(parents=True, exist_ok=True)

        def undo() -> None:
            dest.unlink(missing_ok=True)
            for d in made:
                try:
                    d.rmdir()
                except OSError:
                    break

        try:
            with replacing(dest) as tmp:  # readers see the whole file or none
                write(tmp)
        except BaseException:
            undo()
            raise
        return undo

    def _match(self, patterns: list[str]) -> list[dict[str, tuple[str, Any]]]:
        """For each dataset path (a glob), ``{name: (path, stat)}`` of the files it names now."""
        root = os.path.realpath(self.root)
        return [fileops.match(root, p) for p in patterns]

    def _occupied(self, path: str) -> bool:
        """Whether anything (a file, a folder with entries) is at ``path`` already."""
        there = self._target(path)
        return there.exists() and (not there.is_dir() or any(there.iterdir()))


def record(conn: Any, name: str, kind: str, config: dict[str, Any], now: float) -> None:
    """Insert or replace datastore ``name`` in the open write transaction ``conn``; the
    credentials of the datastore it replaces go (those ``config`` keeps stay)."""
    old = conn.execute("SELECT config FROM datastores WHERE name = ?", (name,)).fetchone()
    if old is not None:
        _forget_secrets(conn, json.loads(old[0]), keep=config.get("secrets") or [])
    conn.execute(
        "INSERT INTO datastores (name, type, config, is_default, created) VALUES (?, ?, ?, 0, ?)"
        " ON CONFLICT(name) DO UPDATE SET type = excluded.type, config = excluded.config",
        (name, kind, json.dumps(config), now),
    )


def _forget_secrets(conn: Any, config: dict[str, Any], keep: Iterable[str] = ()) -> None:
    kept = set(keep)
    names = [n for n in config.get("secrets") or [] if n not in kept]
    if names:
        conn.execute(f"DELETE FROM secrets WHERE name IN ({','.join('?' * len(names))})", names)
