"""The ``ssh`` datastore: a folder on another machine, reached with OpenSSH (as the ``ssh``
compute target reaches its hosts).

Design choices, and why:

- **One connection per datastore**: ``sshhost.Connection`` (the system OpenSSH client in
  BatchMode, one ControlMaster shared by every command, the key from the key vault written to a
  0600 file only until the master is logged in). Its sockets and key files go by ``ds_<name>``,
  a name no compute target can have, and the key by :func:`secret_name`.
- **The host looks at its own files**: every listing, glob and link check is one call of the
  host's Python running ``mlws.fileops`` (its source is sent along; nothing is installed there),
  the very code that serves local datastores, with no symlink followed at all.
- **rsync moves the bytes**, whole files only (rsync writes a temp file and renames it; no
  ``--partial``). From the host as untrusted (no links, devices or modes: the compute target's
  flags). To the host: the host first says where each file lands (a link inside followed, one
  leading out refused before anything is written), then a staging tree of symlinks to the
  sources is sent with ``-L`` to exactly those places, so rsync never writes through a link.
- **Fingerprints**: the host lists (size, mtime_ns, inode) of the files; only files whose stat
  this machine has not seen (the per-machine stat cache, keyed ``ssh://user@host:port/path``)
  are hashed there, in a second call. An unchanged re-check is one round trip and reads no file.
- **Reading here** (tabular datasets, downloads, run inputs): files are fetched into this
  machine's mirror of the datastore (``~/.cache/mlws/sshstores/<id>/``), whose index says
  which host file (size, mtime_ns, inode) each copy is: a copy is fetched again only when the
  host's file is another one (or the copy was changed here). Runs get hard links to it, made
  read-only as for local data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .blobs import Entry, check_hash, check_relpath
from .datastores import DEFAULT, Datastore, check_datastore_name, record
from .errors import (
    ComputeTargetException,
    DatastoreUnavailable,
    MlwsError,
    UnsafePath,
    UserErrorException,
)

if TYPE_CHECKING:
    from .sshhost import Connection, Node
    from .workspace import Workspace

_PREFIX, _SUFFIX = "datastore-", "-private-key"
#: A long call: hashing much data on the host.
_LONG_S = 6 * 3600


def secret_name(datastore: str) -> str:
    """The key-vault name of an ssh datastore's key, ``datastore-<name>-private-key`` with
    '_' written '-' (key-vault names have no '_', datastore names no '-': no two datastores
    share one). :raises UserErrorException: a name too long for the key vault (127)."""
    name = f"{_PREFIX}{datastore.replace('_', '-')}{_SUFFIX}"
    if len(name) > 127:
        raise UserErrorException(
            f"an ssh datastore's name has at most {127 - len(_PREFIX) - len(_SUFFIX)} characters"
            f" (its key's key-vault name must fit in 127); {datastore!r} has {len(datastore)}"
        )
    return name


class HostStat(NamedTuple):
    """A file's stat on an ssh datastore's host: what ``datasets.resolve_sources`` holds for it."""

    store: SshDatastore
    real: str  # the datastore folder's realpath on the host; names are relative to it
    st_size: int
    st_mtime_ns: int
    st_ino: int


class SshDatastore(Datastore):
    """A datastore whose folder is on another machine (``Datastore.register_ssh``)."""

    # -- where it is ---------------------------------------------------------------------------
    @property
    def node(self) -> Node:
        """The host the datastore's folder is on."""
        from .sshhost import Node

        c = self.config
        return Node(c["host"], None if c.get("port") is None else int(c["port"]), c.get("user"))

    def _address(self, path: str) -> str:
        """``ssh://user@host:port/path``: a folder on the host, as one string."""
        port = f":{self.node.port}" if self.node.port is not None else ""
        return (
            f"ssh://{self.node.destination}{port}{path if path.startswith('/') else '/~/' + path}"
        )

    @property
    def root(self) -> Path:
        """Refused: the folder is on another machine, not a path here.

        :raises UserErrorException: always; use ``upload()``, ``download()`` or a dataset over it.
        """
        raise UserErrorException(
            f"datastore {self.name!r} is a folder on {self.node}, not on this machine: use"
            " upload(), download() or a dataset over it"
        )

    def _where(self, path: str) -> str:
        base = self._address(self.config["path"])
        return f"{base.rstrip('/')}/{path}" if path else base

    def __repr__(self) -> str:
        return f"SshDatastore(name={self.name!r}, location={self.location!r})"

    def serialize(self) -> dict[str, Any]:
        c = self.config
        return {
            "name": self.name,
            "type": self.datastore_type,
            "root": self.location,
            "default": self.is_default,
            "host": c["host"],
            "port": c.get("port"),
            "username": c.get("user"),
            "path": c["path"],
            "python": c["python"],
            "key": bool(c.get("key")),
        }

    # -- talking to the host --------------------------------------------------------------------
    def _conn(self) -> Connection:
        from .sshhost import Connection

        return Connection(
            self.workspace,
            f"ds_{self.name}",
            self.config,
            self.node,
            key_secret=secret_name(self.name),
        )

    def _call(self, op: str, timeout: float = 3600, **args: Any) -> dict[str, Any]:
        # Long: listing a large tree takes a while; a dead host is noticed by ssh's keepalives.
        conn = self._conn()
        with _reaching(self.name):
            try:
                conn.open()
                return _ask(conn, self.config["python"], op, args, timeout)
            finally:
                conn.forget_key()

    def _rsync(self, *paths: str, options: tuple[str, ...], names: list[str]) -> None:
        conn = self._conn()
        with _reaching(self.name):
            try:
                conn.open()
                # NUL-separated: a name may hold a newline. Whole files only, said explicitly
                # (a popt alias cannot turn on --partial or --inplace behind our back).
                conn.rsync(
                    *paths,
                    options=("--from0", "--no-partial", "--no-inplace", *options),
                    files_from="\0".join(names) + "\0",
                )
            finally:
                conn.forget_key()

    def _release(self) -> None:
        from .sshhost import key_dir

        self._conn().close()
        mine = re.compile(rf"{re.escape(self.workspace.id[:8])}-ds_{re.escape(self.name)}-\d+\.key")
        for leftover in key_dir().iterdir():
            if mine.fullmatch(leftover.name):
                leftover.unlink(missing_ok=True)
        mirror = self._mirror()
        shutil.rmtree(mirror, ignore_errors=True)
        for extra in (".db", ".db-wal", ".db-shm", ".lock"):
            Path(str(mirror) + extra).unlink(missing_ok=True)

    # -- what a datastore does ----------------------------------------------------------------
    def _put(
        self,
        pairs: list[tuple[Path, str]],
        target_path: str | None,
        overwrite: bool,
        show_progress: bool,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        from .datastores import clean_path

        dest = clean_path(target_path)
        names = [f"{dest}/{clean_path(rel)}" if dest else clean_path(rel) for _src, rel in pairs]
        if not names:
            self.last_upload = {"copied": 0, "skipped": 0}
            return
        answer = self._call("plan", root=self.config["path"], names=names)
        real, plan = _text(answer, "real"), answer.get("plan")
        if not isinstance(plan, list) or len(plan) != len(pairs):
            raise self._odd("plan")
        staged: dict[str, Path] = {}
        skipped = 0
        for (src, _rel), item in zip(pairs, plan, strict=True):
            if not isinstance(item, list) or len(item) != 2:
                raise self._odd("plan")
            there, exists = _checked_name(item[0], self), bool(item[1])
            if exists and not overwrite:
                skipped += 1
                continue
            staged[there] = src
        if staged:
            with tempfile.TemporaryDirectory(prefix="mlws-upload-") as stage:
                for there, src in staged.items():
                    link = Path(stage) / there
                    link.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(os.path.abspath(src), link)
                # -L sends what the staged links point at; what is there already stays, unless
                # overwrite (--ignore-existing also covers a file that appeared meanwhile).
                keep = () if overwrite else ("--ignore-existing",)
                self._rsync(
                    f"{stage}/",
                    f":{real}/",
                    options=("-L", "--no-owner", "--no-group", *keep),
                    names=list(staged),
                )
        if progress is not None:  # one rsync sends them all: done when it returns
            progress(len(pairs), len(pairs))
        self.last_upload = {"copied": len(staged), "skipped": skipped}

    def _fetch_under(self, prefix: str, wanted: Callable[[str], bool]) -> list[tuple[str, str]]:
        answer = self._call("select", root=self.config["path"], prefix=prefix)
        real = _text(answer, "real")
        group = {
            name: st
            for name, st in self._stats(answer.get("found"), real, "select")
            if wanted(name)
        }
        fetched = self._fetch(group)
        return [(n, fetched[n][0]) for n in sorted(group)]

    def _match(self, patterns: list[str]) -> list[dict[str, tuple[str, Any]]]:
        answer = self._call("match", root=self.config["path"], patterns=patterns)
        real, found = _text(answer, "real"), answer.get("found")
        if not isinstance(found, list) or len(found) != len(patterns):
            raise self._odd("match")
        base = self._address(real)
        return [
            {name: (f"{base}/{name}", st) for name, st in self._stats(rows, real, "match")}
            for rows in found
        ]

    def _occupied(self, path: str) -> bool:
        return bool(self._call("occupied", root=self.config["path"], path=path).get("occupied"))

    def write_new(self, path: str, write: Callable[[Path], None]) -> Callable[[], None]:
        with tempfile.TemporaryDirectory(prefix="mlws-new-") as tmp:
            local = Path(tmp) / path.rsplit("/", 1)[-1]
            write(local)
            self._put([(local, path)], None, overwrite=False, show_progress=False)
        if self.last_upload["copied"] != 1:
            raise UserErrorException(f"{path!r} exists on datastore {self.name!r} already")

        def undo() -> None:
            try:
                self._call("remove", root=self.config["path"], names=[path])
            except MlwsError:
                pass  # best effort: the error that made us undo is the one to report

        return undo

    # -- what datasets over it need ----------------------------------------------------------
    def _fingerprint(self, group: dict[str, HostStat]) -> list[Entry]:
        """The manifest entries of ``group``'s files: hashes from the stat cache, and from the
        host (one call) for every file whose (size, mtime_ns, inode) it does not hold."""
        from .snapshots import HashCache, default_cache_path

        entries: list[Entry] = []
        cache = HashCache(default_cache_path())
        try:
            for real, files in _by_folder(group).items():
                base = self._address(real)
                known = cache.load(base)
                misses = []
                for name, st in files.items():
                    hit = known.get(f"{base}/{name}")
                    if hit and (hit[0], hit[1], hit[2]) == (st.st_size, st.st_mtime_ns, st.st_ino):
                        entries.append(Entry(name, hit[3], st.st_size))
                    else:
                        misses.append(name)
                if not misses:
                    continue
                answer = self._call("hash", timeout=_LONG_S, root=real, names=misses)
                hashes = answer.get("hashes")
                if not isinstance(hashes, list) or len(hashes) != len(misses):
                    raise self._odd("hash")
                updates = []
                for name, row in zip(misses, hashes, strict=True):
                    if row is None:
                        continue  # gone, or no longer a plain file: not in the dataset now
                    try:
                        digest, size, mtime, ino = (
                            check_hash(row[0]),
                            int(row[1]),
                            int(row[2]),
                            int(row[3]),
                        )
                    except (TypeError, ValueError, IndexError, UnsafePath):
                        raise self._odd("hash") from None
                    entries.append(Entry(name, digest, size))
                    updates.append((f"{base}/{name}", size, mtime, ino, digest, ""))
                cache.store(updates)
        finally:
            cache.close()
        return entries

    def _mirror(self) -> Path:
        """This machine's copy of the datastore's files (a cache: safe to delete)."""
        from .dirs import user_cache_dir

        ident = hashlib.sha256(self.location.encode()).hexdigest()[:16]
        return user_cache_dir() / "sshstores" / ident

    def _fetch(self, group: dict[str, HostStat]) -> dict[str, tuple[str, HostStat]]:
        """``{name: (path here, stat there)}``: ``group``'s files in the mirror, fetched (one
        rsync) unless the mirror holds the very file the host lists: its index says which
        host file (size, mtime_ns, inode) each copy is, whatever timestamps this machine's
        filesystem keeps.

        :raises DatastoreUnavailable: a file changed size on the host while it was copied.
        """
        from filelock import FileLock

        mirror = self._mirror()
        out: dict[str, tuple[str, HostStat]] = {}
        for real, files in _by_folder(group).items():
            with _MirrorIndex(mirror) as index:
                need = index.stale(files)
                if need:
                    # One fetcher at a time per mirror; readers need no lock (rsync renames
                    # whole files into place: a reader has the old file or the new one).
                    with FileLock(str(mirror) + ".lock"):
                        need = index.stale({n: files[n] for n in need})
                        if need:
                            self._rsync(
                                f":{real}/", f"{mirror}/", options=("--ignore-times",), names=need
                            )
                            index.record({n: files[n] for n in need})
            out.update({n: (str(mirror / n), st) for n, st in files.items()})
        return out

    def _stats(self, rows: Any, real: str, op: str) -> list[tuple[str, HostStat]]:
        try:
            return [
                (_checked_name(r[0], self), HostStat(self, real, int(r[1]), int(r[2]), int(r[3])))
                for r in rows
            ]
        except (TypeError, ValueError, IndexError):
            raise self._odd(op) from None

    def _odd(self, op: str) -> DatastoreUnavailable:
        return DatastoreUnavailable(
            f"datastore {self.name!r}: unexpected answer from {self.node} ({op})"
        )


class _MirrorIndex:
    """Which host file each copy in a mirror is: ``name -> (host size, mtime_ns, inode)`` and
    the copy's own (size, mtime_ns, inode) here, in a small SQLite file beside the mirror."""

    def __init__(self, mirror: Path) -> None:
        import sqlite3

        mirror.mkdir(parents=True, exist_ok=True)
        self.mirror = mirror
        self.conn = sqlite3.connect(str(mirror) + ".db", timeout=30, isolation_level=None)
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS copies (name TEXT PRIMARY KEY, host TEXT, here TEXT)"
            " WITHOUT ROWID"
        )

    def __enter__(self) -> _MirrorIndex:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.conn.close()

    def _here(self, name: str) -> str | None:
        try:
            st = os.lstat(self.mirror / name)
        except OSError:
            return None
        return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}" if stat.S_ISREG(st.st_mode) else None

    def stale(self, files: dict[str, HostStat]) -> list[str]:
        """The names whose copy is missing, changed here, or of another host file."""
        rows = self.conn.execute("SELECT name, host, here FROM copies")
        known = {r[0]: (r[1], r[2]) for r in rows}
        need = []
        for name, st in files.items():
            rec = known.get(name)
            there = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
            if rec is None or rec[0] != there or rec[1] != self._here(name):
                need.append(name)
        return need

    def record(self, files: dict[str, HostStat]) -> None:
        """Just fetched: the copies are of these host files. :raises DatastoreUnavailable:
        a copy's size is not the listed one (the file changed on the host meanwhile)."""
        rows = []
        for name, st in files.items():
            here = self._here(name)
            if here is None or int(here.split(":")[0]) != st.st_size:
                raise DatastoreUnavailable(
                    f"{name!r} changed on the host while it was copied; try again"
                )
            rows.append((name, f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}", here))
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany("INSERT OR REPLACE INTO copies VALUES (?, ?, ?)", rows)
        self.conn.execute("COMMIT")


def _by_folder(group: dict[str, HostStat]) -> dict[str, dict[str, HostStat]]:
    out: dict[str, dict[str, HostStat]] = {}
    for name, st in group.items():
        out.setdefault(st.real, {})[name] = st
    return out


def _checked_name(name: Any, store: SshDatastore) -> str:
    """A name the host gave: a plain relative path, or the answer is refused."""
    try:
        return check_relpath(name)
    except UnsafePath:
        raise UnsafePath(
            f"datastore {store.name!r}: {store.node} named a file {name!r}; refusing it"
        ) from None


def _text(answer: dict[str, Any], key: str) -> str:
    value = answer.get(key)
    if not isinstance(value, str) or not value.startswith("/"):
        raise DatastoreUnavailable(f"unexpected answer from the host: {key}={value!r}")
    return value


@contextlib.contextmanager
def _reaching(name: str) -> Iterator[None]:
    """The connection's errors (ComputeTargetException) as this datastore's."""
    try:
        yield
    except ComputeTargetException as e:
        raise DatastoreUnavailable(f"datastore {name!r}: {e}") from None


_PROGRAM: str | None = None


def _ask(conn: Connection, python: str, op: str, args: dict[str, Any], timeout: float) -> Any:
    """One ``fileops`` operation run by the host's Python; returns its answer.

    :raises UnsafePath: the host refused (a link in the way).
    :raises DatastoreUnavailable: the host or its Python failed.
    """
    global _PROGRAM
    if _PROGRAM is None:
        from . import fileops

        _PROGRAM = Path(fileops.__file__).read_text(encoding="utf-8")
    request = json.dumps({"op": op, "args": args})
    # The program and its request both come on stdin (-I: no user site, no PYTHON* settings).
    r = conn.run(
        f"{shlex.quote(python)} -I -", input=f"{_PROGRAM}\nmain({request!r})\n", timeout=timeout
    )
    from .sshhost import last_line

    lines = r.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if r.returncode == 0 and lines else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        if r.returncode == 255:
            raise DatastoreUnavailable(f"{conn.node}: {last_line(r.stderr)}")
        raise DatastoreUnavailable(
            f"{conn.node}: {python} could not list the folder (it needs Python 3.8+ there;"
            f" pass python_path=): {last_line(r.stderr)}"
        )
    if "error" in answer:
        kind = UnsafePath if answer.get("refused") else DatastoreUnavailable
        raise kind(f"{conn.node}: {answer['error']}")
    result = answer.get("ok")
    if not isinstance(result, dict):
        raise DatastoreUnavailable(f"{conn.node}: unexpected answer from {python}")
    return result


# -- registering -------------------------------------------------------------------------------
def register(
    ws: Workspace,
    datastore_name: str,
    host: str,
    path: str,
    *,
    username: str | None,
    port: int | None,
    private_key_file: str | os.PathLike[str] | None,
    private_key_passphrase: str | None,
    python_path: str,
    ssh_options: list[str] | None,
    overwrite: bool,
    check: bool,
) -> Datastore:
    """``Datastore.register_ssh`` (see there): everything checked, then (``check``) the
    folder made usable on the host, and only then the datastore and its key recorded."""
    from .sshhost import Connection, Node, check_host_path, parse_host, read_key

    check_datastore_name(datastore_name)
    if datastore_name == DEFAULT:
        raise UserErrorException(f"{DEFAULT!r} is the workspace's own datastore; pick another name")
    secret = secret_name(datastore_name)
    node = parse_host(host, username, port, error=UserErrorException)
    folder = str(path).rstrip("/") or "/"
    check_host_path(folder, "path", error=UserErrorException)
    check_host_path(python_path, "python_path", absolute=True, error=UserErrorException)
    if isinstance(ssh_options, str) or not all(isinstance(o, str) for o in ssh_options or []):
        raise UserErrorException(
            f"ssh_options is a list of 'Option=value' strings; got {ssh_options!r}"
        )
    key = (
        read_key(Path(private_key_file), private_key_passphrase, error=UserErrorException)
        if private_key_file is not None
        else None
    )
    config = {
        "host": node["host"],
        "port": node["port"],
        "user": node["user"],
        "path": folder,
        "python": str(python_path),
        "sshOptions": list(ssh_options or []),
        "key": key is not None,
        "secrets": [secret] if key is not None else [],
    }
    old = ws.catalog.one("SELECT type, config FROM datastores WHERE name = ?", (datastore_name,))
    if old is not None and not overwrite:
        raise UserErrorException(
            f"a datastore named {datastore_name!r} exists; pass overwrite=True to replace it"
        )
    if old is not None and old[0] == "ssh":
        # Its master connection (other settings, maybe another key) must not carry the check.
        Datastore(ws, datastore_name)._release()
    if check:
        conn = Connection(
            ws,
            f"ds_{datastore_name}",
            config,
            Node(node["host"], node["port"], node["user"]),
            key_secret=secret,
            key_text=key,
        )
        try:
            with _reaching(datastore_name):
                conn.open()
                _ask(conn, config["python"], "check", {"root": folder}, 120)
        except (DatastoreUnavailable, UnsafePath) as e:
            raise DatastoreUnavailable(
                f"cannot register datastore {datastore_name!r}: {e}; nothing was recorded"
            ) from None
        finally:
            conn.close()
    with ws.catalog.write() as conn_db:
        now = conn_db.execute(
            "SELECT type, config FROM datastores WHERE name = ?", (datastore_name,)
        ).fetchone()
        if now is not None and not overwrite:
            raise UserErrorException(
                f"a datastore named {datastore_name!r} exists; pass overwrite=True to replace it"
            )
        record(conn_db, datastore_name, "ssh", config, time.time())
    if key is not None:
        try:
            ws.get_default_keyvault().set_secrets({secret: key})
        except BaseException:
            with ws.catalog.write() as conn_db:  # as it was: the old row, or none
                if now is None:
                    conn_db.execute("DELETE FROM datastores WHERE name = ?", (datastore_name,))
                else:
                    conn_db.execute(
                        "UPDATE datastores SET type = ?, config = ? WHERE name = ?",
                        (now[0], now[1], datastore_name),
                    )
            raise
    return Datastore(ws, datastore_name)


__all__ = ["HostStat", "SshDatastore", "register", "secret_name"]
