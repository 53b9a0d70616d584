"""Datastores of a remote workspace: ``Datastore(ws, name)`` when ``ws`` is
``Workspace("https://...")`` is a :class:`RemoteDatastore`, the server's datastore seen through
its routes (``/datastores/...``; :mod:`mlws.server.datasets`).

A datastore's folder is on the *server's* machine, whatever its kind: ``root`` names that
folder there, and files move through the server's content-addressed blob store. An upload
hashes the files here, sends only the blobs the server lacks and a manifest, and the server
writes the files into the datastore. Reading lists names and hashes first (cheap: the
server's stat cache), and fetches the bytes only when a file is needed here
(:meth:`RemoteDatastore._fetch`): each file is checked against its hash and kept in this
machine's cache of the server (``ws.path / "data"``, by hash), so a file read twice is
downloaded once. Datasets over a remote datastore go the same way: files are listed as
:class:`RemoteStat` (as an ssh datastore's are ``HostStat``), so fingerprints and ``to_path``
download nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, NamedTuple

from ..datastores import Datastore, check_datastore_name, clean_path
from ..errors import DatastoreNotFound, DatastoreUnavailable, UserErrorException
from .backend import UPLOAD_THREADS, not_available

if TYPE_CHECKING:
    from ..manifests import Entry
    from ..workspace import Workspace


#: The most files one ``POST .../fetch`` names (the server copies each into its blob store
#: before it answers: a bounded request).
FETCH_AT_ONCE = 5_000


class RemoteStat(NamedTuple):
    """A file on a remote workspace's datastore, as the server listed it: its hash and size
    (what ``datasets.resolve_sources`` holds for it; ``store`` fetches it)."""

    store: RemoteDatastore
    hash: str
    st_size: int
    st_mtime_ns: int = 0
    st_ino: int = 0


def list_datastores(ws: Workspace) -> list[Datastore]:
    """Every datastore of the server's workspace, by name (``GET /datastores``)."""
    answer = ws.remote.request("GET", "/datastores")
    return [RemoteDatastore.of(ws, d) for d in answer["value"]]


def register_folder(
    ws: Workspace, name: str, path: str | os.PathLike[str], overwrite: bool
) -> Datastore:
    """``Datastore.register_local`` on a remote workspace: ``path`` is an absolute folder on the
    server's machine (``POST /datastores``, an owner's call).

    :raises UserErrorException: ``path`` is not absolute. :raises Forbidden: not an owner."""
    check_datastore_name(name)
    folder = os.fspath(path)
    if not PurePosixPath(folder).is_absolute():
        raise UserErrorException(
            f"on a remote workspace a datastore is a folder on the server's machine: give its"
            f" absolute path there, got {folder!r}"
        )
    body = {"name": name, "path": folder, "overwrite": bool(overwrite)}
    return RemoteDatastore.of(ws, ws.remote.request("POST", "/datastores", body))


def _cache_path(ws: Workspace, digest: str, name: str) -> Path:
    # By hash (a file read twice, or under two names, is fetched once), keeping the file's own
    # name: readers infer a format or compression from it.
    hexdigest = digest.split(":", 1)[1]
    return ws.path / "data" / hexdigest[:2] / hexdigest / PurePosixPath(name).name


class RemoteDatastore(Datastore):
    """A datastore of a remote workspace: the server's folder, read and written through its
    routes. ``root`` is the folder on the server's machine."""

    def __init__(self, workspace: Workspace, name: str | None = None) -> None:
        client = workspace.remote
        if name is None:
            found = [d for d in client.request("GET", "/datastores")["value"] if d["default"]]
            if not found:
                raise DatastoreNotFound(f"the workspace at {client.url} has no default datastore")
            answer = found[0]
        else:
            answer = client.request("GET", client.path("datastores", name))
        self._load(workspace, answer)

    @classmethod
    def of(cls, ws: Workspace, answer: dict[str, Any]) -> RemoteDatastore:
        """The datastore the server's ``answer`` describes (no request)."""
        store = object.__new__(cls)
        store._load(ws, answer)
        return store

    def _load(self, ws: Workspace, answer: dict[str, Any]) -> None:
        self.workspace = ws
        self.name = str(answer["name"])
        self.datastore_type = str(answer["type"])
        self.config = {"path": str(answer["root"])}
        self.is_default = bool(answer["default"])

    @property
    def root(self) -> Path:
        """The datastore's folder on the server's machine (not a folder of this one)."""
        return Path(self.config["path"])

    def _where(self, path: str) -> str:
        return f"{self.root / path if path else self.root} on {self.workspace.remote.url}"

    def _route(self, *segments: str) -> str:
        return self.workspace.remote.path("datastores", self.name, *segments)

    # -- registry ----------------------------------------------------------------------------
    def set_as_default(self) -> None:
        """Make this the server workspace's default datastore (an owner's call)."""
        self.workspace.remote.request("POST", self._route("default"))
        self.is_default = True

    def unregister(self) -> None:
        """Forget the datastore on the server (its files stay; an owner's call)."""
        self.workspace.remote.request("DELETE", self._route())

    # -- files -------------------------------------------------------------------------------
    def _put(
        self,
        pairs: list[tuple[Path, str]],
        target_path: str | None,
        overwrite: bool,
        show_progress: bool,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Upload: hash here, send the blobs the server lacks and the manifest, then the server
        writes the files (its own checks: nothing outside the datastore, no write through a
        link)."""
        from ..manifests import Entry, file_mode

        target = clean_path(target_path)
        entries = []
        for src, rel in pairs:  # every name checked before anything is sent
            name = clean_path(rel)
            if not name:
                raise UserErrorException(f"cannot upload {src} as the datastore's root")
            digest, size, _new = self.workspace.blobs.put_file(src)
            entries.append(Entry(name, digest, size, file_mode(os.stat(src).st_mode)))
        if progress is not None:
            progress(0, len(entries))
        if not entries:
            self.last_upload = {"copied": 0, "skipped": 0}
            return
        digest = self.workspace.blobs.put_manifest(entries)
        body = {"manifest": digest, "targetPath": target, "overwrite": bool(overwrite)}
        answer = self.workspace.remote.request("POST", self._route("upload"), body)
        self.last_upload = {"copied": answer["copied"], "skipped": answer["skipped"]}
        if progress is not None:
            progress(len(entries), len(entries))

    def _fetch_under(self, prefix: str, wanted: Callable[[str], bool]) -> list[tuple[str, str]]:
        """``(name, path here)`` of the files under ``prefix`` that are ``wanted``, fetched."""
        client = self.workspace.remote
        listed = client.request("GET", self._route("files"), query={"prefix": prefix})["files"]
        group = {
            f["path"]: RemoteStat(self, f["hash"], f["size"]) for f in listed if wanted(f["path"])
        }
        return sorted((n, p) for n, (p, _st) in self._fetch(group).items())

    def _match(self, patterns: list[str]) -> list[dict[str, tuple[str, Any]]]:
        """For each dataset path (a glob), ``{name: (address, RemoteStat)}`` of the files it
        names on the server now (names and hashes only; nothing is downloaded)."""
        answer = self.workspace.remote.request(
            "POST", self._route("match"), {"patterns": list(patterns)}
        )
        return [
            {
                f["path"]: (self._address(f["path"]), RemoteStat(self, f["hash"], f["size"]))
                for f in found
            }
            for found in answer["matches"]
        ]

    def _address(self, name: str) -> str:
        """A file of this datastore as one string (what a dataset shows as its source)."""
        return f"{self.workspace.remote.url}/datastores/{self.name}/{name}"

    def _fingerprint(self, group: dict[str, RemoteStat]) -> list[Entry]:
        """The manifest entries of ``group``'s files: the hashes the server listed."""
        from ..manifests import Entry

        return sorted(
            (Entry(n, st.hash, st.st_size) for n, st in group.items()), key=lambda e: e.path
        )

    def _fetch(self, group: dict[str, RemoteStat]) -> dict[str, tuple[str, RemoteStat]]:
        """``{name: (path here, stat)}``: ``group``'s files in this machine's cache, the
        missing ones fetched (``POST .../fetch`` puts them in the server's blob store, then
        each blob is downloaded and checked against its hash).

        :raises DatastoreUnavailable: a file changed on the server since it was listed."""
        from ..manifests import check_relpath

        ws = self.workspace
        out: dict[str, tuple[str, RemoteStat]] = {}
        need: dict[str, Path] = {}
        for name, st in group.items():
            local = _cache_path(ws, st.hash, check_relpath(name))
            out[name] = (str(local), st)
            if not (local.is_file() and local.stat().st_size == st.st_size):
                need[name] = local
        if not need:
            return out
        names, now = sorted(need), {}
        for i in range(0, len(names), FETCH_AT_ONCE):
            body = {"paths": names[i : i + FETCH_AT_ONCE]}
            answer = ws.remote.request("POST", self._route("fetch"), body)
            now.update({f["path"]: f["hash"] for f in answer["files"]})
        changed = sorted(n for n in need if now.get(n) != group[n].hash)
        if changed:
            raise DatastoreUnavailable(
                f"{changed[0]!r} on datastore {self.name!r} changed on the server since it was"
                f" listed ({len(changed)} file(s)); read the data again"
            )

        def one(name: str) -> None:
            ws.blobs.copy_out(group[name].hash, need[name])

        with ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="mlws-fetch") as pool:
            for _ in pool.map(one, sorted(need)):
                pass
        return out

    def _occupied(self, path: str) -> bool:
        """Whether a file is at ``path`` or under it, on the server."""
        client = self.workspace.remote
        listed = client.request("GET", self._route("files"), query={"prefix": path})["files"]
        return any(f["path"] == path or f["path"].startswith(path + "/") for f in listed)

    # -- not on a remote workspace yet -------------------------------------------------------
    def write_new(self, path: str, write: Callable[[Path], None]) -> Callable[[], None]:
        """A tabular pipeline output written to a remote workspace's datastore: not ported."""
        raise not_available("a tabular output written to a datastore", self.workspace.remote.url)
