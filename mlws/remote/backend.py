"""The storage backend of a remote workspace: ``ws.catalog`` and ``ws.blobs`` when ``ws`` is
``Workspace("https://...")``.

The library's classes run unchanged over these two objects. Where a class's storage call is
ported, it branches once on ``ws.remote`` to the matching function of :mod:`mlws.remote`
(a method here for blobs, whose interface is the local :class:`~mlws.blobs.BlobStore`'s).
Everything not ported raises one line, :class:`~mlws.errors.NotAvailableRemotely`, naming the
public call that needed it, instead of an ``AttributeError`` deep inside.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..errors import BlobCorrupted, NotAvailableRemotely, UserErrorException

if TYPE_CHECKING:
    from ..maintenance import FsckReport, GcReport
    from ..manifests import Entry
    from .client import RemoteClient

#: The most hashes one ``POST /blobs/missing`` carries (the server's limit).
ASK_AT_ONCE = 100_000
#: Blobs sent at once by an upload (each thread its own kept-alive connection).
UPLOAD_THREADS = 4


def public_caller(default: str) -> str:
    """The public mlws call the user made (``Run.cancel``, ``Dataset.get_by_name``) that
    reached a storage method not ported yet, for the one-line message: the outermost public
    function of the library (not the CLI's) on the stack; ``default`` when none is found."""
    frame = sys._getframe(2)
    found = default
    for _ in range(60):
        if frame is None:
            break
        module = frame.f_globals.get("__name__", "")
        name = frame.f_code.co_name
        if (
            module.startswith("mlws.")
            and not module.startswith(("mlws.remote", "mlws.cli"))
            and not name.startswith("_")
            and name != "<module>"
        ):
            qualname = getattr(frame.f_code, "co_qualname", name)  # Python 3.11+
            if "." in qualname and "<" not in qualname:
                found = str(qualname)  # Run.cancel, Datastore.list
            else:
                found = f"{module.rsplit('.', 1)[-1]}.{name}"
        frame = frame.f_back
    return found


def not_available(operation: str, url: str) -> NotAvailableRemotely:
    """The one-line error of an operation not ported to remote workspaces."""
    return NotAvailableRemotely(
        f"{operation} is not available on a remote workspace yet ({url}); run it on the"
        " server's machine"
    )


class _Unported:
    """Every attribute not defined by the subclass raises :class:`NotAvailableRemotely`."""

    remote: RemoteClient
    _what = "storage"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise not_available(public_caller(f"{self._what}.{name}"), self.remote.url)


class RemoteCatalog(_Unported):
    """``ws.catalog`` of a remote workspace: no SQL here (no route runs SQL a client sends);
    ``remote`` is the client the ported paths use."""

    _what = "catalog"

    def __init__(self, remote: RemoteClient) -> None:
        self.remote = remote

    def close(self) -> None:
        """Nothing to close (the client's connections close with the workspace)."""

    # fsck and gc are the server's, over its own catalog and blob store; mlws.maintenance
    # (storage, which imports nothing above it) reaches them through these two methods.
    def fsck(self) -> FsckReport:
        """The server's :func:`mlws.maintenance.fsck` of its workspace (any role; within the
        client's request timeout: a store that takes longer is checked on its machine)."""
        from ..maintenance import FsckReport

        answer = self.remote.request("POST", "/maintenance/fsck", {})
        answer.pop("ok", None)  # a property of the report
        return FsckReport(**answer)

    def gc(self, dry_run: bool, grace_s: float) -> GcReport:
        """The server's :func:`mlws.maintenance.gc` of its blob store (owners)."""
        from ..maintenance import GcReport

        body = {"dryRun": bool(dry_run), "graceSeconds": grace_s}
        return GcReport(**self.remote.request("POST", "/maintenance/gc", body))

    def __repr__(self) -> str:
        return f"RemoteCatalog({self.remote.url!r})"


class RemoteBlobs(_Unported):
    """``ws.blobs`` of a remote workspace: the server's content-addressed store. Uploads send
    the hashes first and only the blobs the server lacks; downloads are checked against their
    hash before a byte is published."""

    _what = "blobs"

    def __init__(self, remote: RemoteClient) -> None:
        self.remote = remote
        self._staged: dict[str, str | bytes] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RemoteBlobs({self.remote.url!r})"

    # -- writing -----------------------------------------------------------------------------
    # The put_* methods only hash and *stage* (``{hash: file path or bytes}``): what is sent,
    # and when, is decided where the files are recorded (a run's files: in order with its
    # other writes, spooled while the server is away; a model: with its manifest).
    def _stage(self, digest: str, source: str | bytes) -> None:
        with self._lock:
            self._staged[digest] = source

    def take_staged(self, digests: Iterable[str]) -> dict[str, str | bytes]:
        """The staged sources of ``digests`` (those staged here), no longer staged."""
        with self._lock:
            return {d: self._staged.pop(d) for d in list(digests) if d in self._staged}

    def put_bytes(self, data: bytes) -> str:
        """Send one blob if the server lacks it; returns its hash."""
        from ..manifests import hash_bytes

        digest = hash_bytes(data)
        send_blobs(self.remote, {digest: data})
        return digest

    def put_file(
        self, src: str | os.PathLike[str], known: str | None = None, size: int | None = None
    ) -> tuple[str, int, bool]:
        """Hash a file and stage it; returns ``(hash, size, False)``."""
        from ..fileops import hash_file

        digest, n = hash_file(src)
        self._stage(digest, os.fspath(src))
        return digest, n, False

    def put_stream(self, stream: IO[bytes]) -> tuple[str, int, bool]:
        """Stage a stream's bytes; returns ``(hash, size, False)``."""
        from ..manifests import hash_bytes

        data = stream.read()
        digest = hash_bytes(data)
        self._stage(digest, data)
        return digest, len(data), False

    def put_folder(
        self,
        src: Path,
        prefix: str = "",
        *,
        root_may_link: bool = True,
        skipped: list[str] | None = None,
        lenient: bool = False,
    ) -> list[Entry]:
        """Hash every file under ``src`` (the local store's rules for links and names) and stage
        it; returns entries named ``<prefix>/<relative path>``.

        :raises UnsafePath: a file's name cannot be stored, before anything is sent.
        """
        from ..fileops import gather, hash_file, skipped_warning
        from ..manifests import Entry, bad_names, file_mode

        try:
            found, links = gather(str(src), root_may_link=root_may_link)
        except OSError as e:
            raise UserErrorException(f"cannot read {e.filename or src}: {e.strerror}") from None
        found.sort()
        bad = bad_names(str(src), [rel for rel, _st, _p in found], skip=lenient)
        entries = []
        for rel, st, path in found:
            try:
                digest, size = hash_file(path)
            except OSError as e:
                raise UserErrorException(f"cannot read {path}: {e.strerror}") from None
            self._stage(digest, path)
            entries.append(
                Entry(f"{prefix}/{rel}" if prefix else rel, digest, size, file_mode(st.st_mode))
            )
        if skipped is not None:
            if links:
                skipped.append(skipped_warning(str(src), links))
            if bad:
                skipped.append(bad)
        return entries

    def manifest_sources(self, entries: list[Entry]) -> tuple[str, dict[str, str | bytes]]:
        """``(hash, sources)`` of the canonical manifest of ``entries``: the staged blobs it
        names and its own bytes, what the server needs before it records it."""
        from ..manifests import canonical_manifest, hash_bytes

        data = canonical_manifest(entries)
        digest = hash_bytes(data)
        sources = self.take_staged(e.hash for e in entries)
        sources[digest] = data
        return digest, sources

    def put_manifest(self, entries: list[Entry]) -> str:
        """Send the staged blobs of ``entries`` that the server lacks, then their canonical
        manifest; returns its hash."""
        digest, sources = self.manifest_sources(entries)
        send_blobs(self.remote, sources)
        return digest

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Nothing to group: each ``put_*`` sends at once (the local store's interface)."""
        yield

    # -- reading -----------------------------------------------------------------------------
    def read_bytes(self, digest: str) -> bytes:
        """A blob's bytes from the server, checked against its hash.

        :raises BlobNotFound: the server has no such blob. :raises BlobCorrupted: the bytes
            that came do not hash to ``digest``."""
        from ..manifests import check_hash, hash_bytes

        check_hash(digest)
        data = self.remote.request("GET", self.remote.path("blobs", digest))
        actual = hash_bytes(data)
        if actual != digest:
            raise BlobCorrupted(
                f"blob {digest} from {self.remote.url} hashes to {actual}; nothing was written"
            )
        return data

    def read_manifest(self, digest: str) -> list[Entry]:
        """The entries of manifest blob ``digest`` on the server."""
        from ..manifests import parse_manifest

        return parse_manifest(self.read_bytes(digest))

    def copy_into(self, digest: str, fd: int, name: str | None = None) -> None:
        """Write blob ``digest`` (hash checked first) into the open file ``fd`` (closed here)."""
        try:
            data = self.read_bytes(digest)
        except BaseException:
            os.close(fd)
            raise
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    def copy_out(self, digest: str, dst: str | os.PathLike[str]) -> None:
        """Download blob ``digest`` to ``dst``, hash checked, whole or not at all."""
        data = self.read_bytes(digest)
        dst = Path(dst)
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.mlws-tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dst)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def materialize(
        self,
        entries: Iterable[Entry],
        target: str | os.PathLike[str],
        *,
        overwrite: bool = True,
        flag: str = "overwrite=True",
    ) -> int:
        """Write the files of a manifest under ``target`` from the server's blobs: the local
        store's own procedure (every path checked first, hashes checked, all or nothing) over
        this backend's :meth:`copy_into`."""
        from ..blobs import BlobStore

        return BlobStore.materialize(self, entries, target, overwrite=overwrite, flag=flag)  # type: ignore[arg-type]


def send_blobs(
    client: RemoteClient, sources: dict[str, str | bytes], retry_s: float | None = None
) -> int:
    """Send the blobs of ``sources`` (``{hash: file path or bytes}``) that the server lacks
    (asked first, ``POST /blobs/missing``), a few at once; returns how many were sent."""
    wanted: list[str] = []
    unique = list(sources)
    for i in range(0, len(unique), ASK_AT_ONCE):
        ask = {"blobs": unique[i : i + ASK_AT_ONCE]}
        wanted += client.request("POST", "/blobs/missing", ask, retry_s=retry_s)["missing"]

    def one(digest: str) -> None:
        src = sources[digest]
        data = src if isinstance(src, bytes) else Path(src).read_bytes()
        client.request("PUT", client.path("blobs", digest), raw=data, retry_s=retry_s)

    if len(wanted) <= 2:
        for d in wanted:
            one(d)
    else:
        with ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="mlws-upload") as pool:
            for _ in pool.map(one, wanted):
                pass
    return len(wanted)


def server_key(url: str) -> str:
    """A short key of a server URL, for per-server folders on this machine (the spool)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]
