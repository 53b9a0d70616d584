"""Content-addressed blob store and manifests.

A blob is stored once under ``blobs/sha256/ab/<hex>`` by the sha256 of its bytes, written to a
temp file in the same folder, fsynced, renamed into place and made read-only. Hashes carry their
algorithm: ``sha256:<hex>``. One level of 256 folders, as git does: two levels (65,536 folders)
cost a 4 KiB folder per blob until millions of blobs, 37 MB for 10,000 files in a benchmark.

A **manifest** describes a tree of files. Its canonical form (a contract: its hash names it) is
the JSON array of ``{"hash", "mode", "path", "size"}`` objects sorted by ``path``, serialised with
sorted keys, ``(",", ":")`` separators and UTF-8, no trailing newline. ``path`` is relative,
POSIX-style, without ``.``/``..`` components; ``mode`` is ``0o755`` for executables, else
``0o644``. The manifest is itself stored as a blob.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from .errors import BlobCorrupted, BlobNotFound, LockTimeout, UnsafePath
from .fileops import ALGORITHM, hash_file  # noqa: F401 - one hash, here and on ssh hosts

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    """One file of a manifest."""

    path: str
    hash: str
    size: int
    mode: int = 0o644

    def as_dict(self) -> dict[str, object]:
        return {"hash": self.hash, "mode": self.mode, "path": self.path, "size": self.size}


def hash_bytes(data: bytes) -> str:
    """The algorithm-tagged hash of ``data``: its blob's name."""
    return f"{ALGORITHM}:{hashlib.sha256(data).hexdigest()}"


def check_relpath(path: str) -> str:
    """Return ``path`` if it is a safe relative POSIX path, else raise :class:`UnsafePath`."""
    if not isinstance(path, str) or not path:
        raise UnsafePath(f"manifest path must be a non-empty string, got {path!r}")
    if "\x00" in path or "\\" in path:
        raise UnsafePath(f"manifest path {path!r} contains a NUL or a backslash")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise UnsafePath(f"manifest path {path!r} is absolute; paths must be relative")
    # Substring tests instead of splitting: this runs for every file of a 10,000-file dataset
    # on every re-check.
    framed = f"/{path}/"
    if "//" in framed or "/./" in framed or "/../" in framed:
        raise UnsafePath(f"manifest path {path!r} has an empty, '.' or '..' component")
    return path


_HASH = re.compile(r"sha256:[0-9a-f]{64}\Z")


def check_hash(value: str) -> str:
    if not isinstance(value, str) or _HASH.fullmatch(value) is None:
        raise UnsafePath(f"not a valid blob hash: {value!r} (expected 'sha256:<64 hex>')")
    return value


#: A string JSON writes as it is, between quotes (no quote, backslash or control character).
_PLAIN = re.compile(r'[^"\\\x00-\x1f\x7f]*')


def canonical_manifest(entries: Iterable[Entry], *, trusted: bool = False) -> bytes:
    """The canonical bytes of a manifest. ``trusted`` skips re-validating entries that the
    caller built itself from a folder walk and stored hashes (paths unique and safe)."""
    items = sorted(entries, key=lambda e: e.path)
    if trusted:
        # The same bytes as the json.dumps below (a test checks), built directly: sorted keys
        # are hash, mode, path, size; only the path needs escaping.
        dumps, plain = json.dumps, _PLAIN.fullmatch

        def text(path: str) -> str:
            return f'"{path}"' if plain(path) else dumps(path, ensure_ascii=False)

        body = ",".join(
            f'{{"hash":"{e.hash}","mode":{e.mode},"path":{text(e.path)},"size":{e.size}}}'
            for e in items
        )
        return f"[{body}]".encode()
    if not trusted:
        seen: set[str] = set()
        for e in items:
            check_relpath(e.path)
            check_hash(e.hash)
            if e.path in seen:
                raise UnsafePath(f"manifest lists {e.path!r} twice")
            seen.add(e.path)
    return json.dumps(
        [e.as_dict() for e in items], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def parse_manifest(data: bytes) -> list[Entry]:
    """Parse and validate a manifest; raises :class:`UnsafePath` on any bad entry."""
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UnsafePath(f"manifest is not valid JSON: {e}") from None
    if not isinstance(raw, list):
        raise UnsafePath("manifest must be a JSON array")
    entries = []
    for item in raw:
        if not isinstance(item, dict) or set(item) != {"hash", "mode", "path", "size"}:
            raise UnsafePath(f"manifest entry must have exactly hash, mode, path, size: {item!r}")
        entries.append(
            Entry(
                check_relpath(item["path"]),
                check_hash(item["hash"]),
                int(item["size"]),
                int(item["mode"]),
            )
        )
    return entries


def file_mode(st_mode: int) -> int:
    return 0o755 if st_mode & stat.S_IXUSR else 0o644


#: How long a snapshot waits for a gc, and a gc for snapshots in progress, in seconds.
GC_WAIT_S = 600.0


def wait_for_lock(
    acquire: Callable[..., Any],
    waiting: Callable[[], str],
    timed_out: Callable[[], str],
    timeout: float | None = None,
) -> None:
    """Take a lock with ``acquire(timeout=...)``: at once if it is free; else say ``waiting()``
    once on stderr (a silent ten-minute wait looks like a hang) and wait up to ``timeout``
    seconds (default :data:`GC_WAIT_S`), then raise :class:`LockTimeout` with ``timed_out()``."""
    import sys

    from filelock import Timeout

    try:
        acquire(timeout=0)
        return
    except Timeout:
        pass
    print(waiting(), file=sys.stderr, flush=True)
    try:
        acquire(timeout=GC_WAIT_S if timeout is None else timeout)
    except Timeout:
        raise LockTimeout(timed_out()) from None


class BlobStore:
    """The blob folder of one workspace."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._dir = self.root / ALGORITHM
        self._prefix = str(self._dir) + os.sep
        # digest -> temp file written inside batch(), installed when the batch ends
        self._pending: dict[str, str] | None = None

    def path(self, digest: str) -> Path:
        return Path(self._str_path(digest))

    def _str_path(self, digest: str) -> str:
        # Strings, not pathlib: this runs once per file of every snapshot.
        hexdigest = check_hash(digest)[7:]
        return f"{self._prefix}{hexdigest[:2]}/{hexdigest}"

    # -- coordination with gc ---------------------------------------------------------------------
    def _rwlock(self) -> Any:
        from filelock import ReadWriteLock

        self.root.mkdir(parents=True, exist_ok=True)
        # One instance per hold (not a per-path singleton), so threads wait on each other too.
        return ReadWriteLock(str(self.root / ".gc.lock"), timeout=600, is_singleton=False)

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        """Held by writers that re-use existing blobs (snapshots): gc waits for them.

        :raises LockTimeout: a gc held the store for over :data:`GC_WAIT_S` seconds.
        """
        lock = self._rwlock()
        wait_for_lock(
            lock.acquire_read,
            lambda: f"waiting for gc{self.gc_holder()}...",
            lambda: (
                f"gc{self.gc_holder()} has held the blob store of {self.root.parent} for"
                f" over {GC_WAIT_S:.0f} s; try again when it has ended"
            ),
        )
        try:
            yield
        finally:
            lock.release()
            lock.close()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Held by gc while it deletes blobs; bumps the gc generation first, and names its
        process in ``.gc-owner`` for whoever waits (see :meth:`gc_holder`).

        :raises LockTimeout: snapshots held the store for over :data:`GC_WAIT_S` seconds.
        """
        lock = self._rwlock()
        wait_for_lock(
            lock.acquire_write,
            lambda: "gc: waiting for snapshots in progress...",
            lambda: (
                f"gc waited over {GC_WAIT_S:.0f} s for snapshots in progress in"
                f" {self.root.parent}; try again when they have ended"
            ),
        )
        owner = self.root / ".gc-owner"
        try:
            import socket

            gen = self.gc_generation() + 1
            target = self.root / "gc-generation"
            tmp = self.root / ".gc-generation.tmp"
            tmp.write_text(f"{gen}\n")
            os.replace(tmp, target)
            tmp = self.root / ".gc-owner.tmp"
            tmp.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
            os.replace(tmp, owner)
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                owner.unlink()
            lock.release()
            lock.close()

    def gc_holder(self) -> str:
        """`` (pid N on HOST)`` of the gc holding the store, or ``""`` when not known."""
        try:
            owner = json.loads((self.root / ".gc-owner").read_text())
            return f" (pid {int(owner['pid'])} on {owner['host']})"
        except (OSError, ValueError, TypeError, KeyError):
            return ""

    def identity(self) -> str:
        """A random id of this store, made on first use: a store re-created at the same path
        is another store (the snapshot stat cache's "seen here" marks must not carry over)."""
        path = self.root / "store-id"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
        import uuid

        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            f.write(uuid.uuid4().hex)
        try:
            os.link(tmp, path)  # of concurrent first users, exactly one id wins
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        return path.read_text().strip()

    def gc_generation(self) -> int:
        """How many times gc has run on this store; blobs seen present since are still there."""
        try:
            return int((self.root / "gc-generation").read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def has(self, digest: str) -> bool:
        if self._pending is not None and digest in self._pending:
            return True
        return os.path.exists(self._str_path(digest))

    def _touch(self, digest: str) -> bool:
        """Mark a blob as just used (gc spares recent blobs); False when it is missing."""
        if self._pending is not None and digest in self._pending:
            return True
        try:
            os.utime(self._str_path(digest))
            return True
        except FileNotFoundError:
            return False
        except PermissionError:  # another user's blob on a shared folder: present is enough
            return self.has(digest)

    # -- writing ----------------------------------------------------------------------------
    def _install(self, tmp: str, digest: str) -> None:
        final = self.path(digest)
        if final.exists():
            os.unlink(tmp)
            return
        os.chmod(tmp, 0o444)
        # os.replace is atomic: a reader sees either no blob or the whole blob.
        os.replace(tmp, final)

    def _tempfile(self, digest_hint: str | None = None) -> tuple[int, str]:
        folder = self.path(digest_hint).parent if digest_hint else self._dir
        folder.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(dir=folder, prefix=".tmp-")

    def put_bytes(self, data: bytes) -> str:
        digest = hash_bytes(data)
        if self._touch(digest):
            return digest
        fd, tmp = self._tempfile(digest)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            self._install(tmp, digest)
        except BaseException:
            _unlink_quiet(tmp)
            raise
        return digest

    def put_file(
        self, src: str | os.PathLike[str], known: str | None = None, size: int | None = None
    ) -> tuple[str, int, bool]:
        """Store a file; returns ``(hash, size, stored_new_bytes)``.

        ``known`` is a trusted hash of the file (from the snapshot stat cache) and ``size`` its
        size: when that blob is present already the file is not opened at all. (The blob is not
        touched either: the snapshot's new manifest protects it from gc, see maintenance.gc.)
        """
        if known is not None and self.has(known):
            return known, os.stat(src).st_size if size is None else size, False
        with open(src, "rb") as fin:
            return self.put_stream(fin)

    def put_stream(self, stream: IO[bytes]) -> tuple[str, int, bool]:
        """Store a binary stream; returns ``(hash, size, stored_new_bytes)``."""
        # Hash while copying to a temp file: one read of the source whatever happens.
        fd, tmp = self._tempfile()
        h = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as fout:
                while chunk := stream.read(_CHUNK):
                    h.update(chunk)
                    fout.write(chunk)
                    size += len(chunk)
                digest = f"{ALGORITHM}:{h.hexdigest()}"
                if self._touch(digest):
                    fout.close()
                    os.unlink(tmp)
                    return digest, size, False
                if self._pending is not None:
                    self._pending[digest] = tmp  # fsynced and installed when the batch ends
                    return digest, size, True
                fout.flush()
                os.fsync(fout.fileno())
            self.path(digest).parent.mkdir(parents=True, exist_ok=True)
            self._install(tmp, digest)
        except BaseException:
            _unlink_quiet(tmp)
            raise
        return digest, size, True

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Store many blobs without waiting for the disk once per blob.

        Inside, new blobs go to temp files; at the end they are fsynced together (from a thread
        pool: fsync releases the GIL and the disk can merge the flushes), renamed into place,
        and their folders fsynced. An error inside removes the temp files; a crash leaves only
        temp files, which ``gc`` removes. Measured: 10,000 small files, 8.8 s of one-by-one
        fsyncs became about a third of that.
        """
        if self._pending is not None:
            yield  # nested: the outer batch installs
            return
        self._pending = {}
        try:
            yield
        except BaseException:
            for tmp in self._pending.values():
                _unlink_quiet(tmp)
            self._pending = None
            raise
        pending, self._pending = self._pending, None
        self._install_many(pending)

    def _install_many(self, pending: dict[str, str]) -> None:
        if not pending:
            return
        from concurrent.futures import ThreadPoolExecutor

        def sync(path: str) -> None:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        try:
            with ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(sync, pending.values()))
            folders = set()
            for digest, tmp in pending.items():
                final = self.path(digest)
                final.parent.mkdir(parents=True, exist_ok=True)
                self._install(tmp, digest)
                folders.add(str(final.parent))
            with ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(sync, folders))  # make the renames themselves durable
        except BaseException:
            for tmp in pending.values():
                _unlink_quiet(tmp)
            raise

    def put_folder(
        self, src: Path, prefix: str = "", *, skip_symlinks: bool = False
    ) -> list[Entry]:
        """Store every file under ``src`` (in one batch); returns entries named
        ``<prefix>/<relative path>``. ``skip_symlinks`` leaves out links, e.g. in a run's
        outputs, where one could point at any file on the machine."""
        if skip_symlinks and src.is_symlink():
            return []  # the folder itself is a link (rglob would follow it): nothing of ours
        entries = []
        with self.batch():
            for f in sorted(src.rglob("*")):
                if skip_symlinks and (f.is_symlink() or _under_link(f, src)):
                    continue
                if not f.is_file():
                    continue
                rel = f.relative_to(src).as_posix()
                digest, size, _ = self.put_file(f)
                entries.append(
                    Entry(
                        f"{prefix}/{rel}" if prefix else rel,
                        digest,
                        size,
                        file_mode(f.stat().st_mode),
                    )
                )
        return entries

    def put_manifest(self, entries: Iterable[Entry]) -> str:
        return self.put_bytes(canonical_manifest(entries))

    # -- reading ----------------------------------------------------------------------------
    def read_bytes(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(
                f"blob {digest} is missing from {self.root}; run 'mlws fsck'"
            ) from None

    def read_manifest(self, digest: str) -> list[Entry]:
        return parse_manifest(self.read_bytes(digest))

    def verify(self, digest: str) -> bool:
        """True when the blob exists and its bytes hash to its name."""
        p = self.path(digest)
        if not p.exists():
            return False
        return hash_file(p)[0] == digest

    def check(self, digest: str) -> None:
        """Raise :class:`BlobNotFound` / :class:`BlobCorrupted` unless the blob is sound."""
        p = self.path(digest)
        if not p.exists():
            raise BlobNotFound(f"blob {digest} is missing from {self.root}; run 'mlws fsck'")
        actual = hash_file(p)[0]
        if actual != digest:
            raise BlobCorrupted(
                f"blob {digest} is corrupted (its bytes hash to {actual}); run 'mlws fsck'"
            )

    def iter_hashes(self) -> Iterator[str]:
        if not self._dir.exists():
            return
        for d1 in sorted(self._dir.iterdir()):
            if not d1.is_dir():
                continue
            for f in sorted(d1.iterdir()):
                if not f.name.startswith("."):
                    yield f"{ALGORITHM}:{f.name}"

    def iter_temp_files(self) -> Iterator[Path]:
        if self._dir.exists():
            yield from self._dir.rglob(".tmp-*")

    # -- materializing -----------------------------------------------------------------------
    def materialize(
        self,
        entries: Iterable[Entry],
        target: str | os.PathLike[str],
        *,
        link: bool = False,
        verify: bool = False,
    ) -> int:
        """Write the files of a manifest under ``target``; returns the number of files.

        Copies by default, because a hard link would let a script that edits a file in place
        change the stored blob for every run that shares it. ``link=True`` hard-links (falling
        back to a copy across filesystems) for read-only consumers. No path may escape
        ``target``: every entry is validated before anything is written.
        """
        entries = list(entries)
        root = Path(target)
        root.mkdir(parents=True, exist_ok=True)
        real_root = os.path.realpath(root)
        planned = []
        for e in entries:
            check_relpath(e.path)
            dest = root / PurePosixPath(e.path)
            planned.append((e, dest))
        for e, dest in planned:
            dest.parent.mkdir(parents=True, exist_ok=True)
            # A symlink already inside target could redirect the write outside it.
            real_parent = os.path.realpath(dest.parent)
            if real_parent != real_root and not real_parent.startswith(real_root + os.sep):
                raise UnsafePath(f"{e.path!r} would be written outside {root}")
            src = self.path(e.hash)
            if not src.exists():
                raise BlobNotFound(f"blob {e.hash} for {e.path!r} is missing; run 'mlws fsck'")
            if verify:
                self.check(e.hash)
            if dest.is_symlink() or dest.exists():
                dest.unlink()
            if link:
                try:
                    os.link(src, dest)
                    continue
                except OSError:
                    pass
            shutil.copyfile(src, dest)
            os.chmod(dest, e.mode)
        return len(planned)

    def remove(self, digest: str) -> int:
        p = self.path(digest)
        try:
            size = p.stat().st_size
            p.unlink()
            return size
        except FileNotFoundError:
            return 0


def copy_file(src: str | os.PathLike[str], dst: Path) -> None:
    """Copy a file out (downloads): whole or not at all, a temp file beside the target renamed
    over it, so a reader never sees half a file."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.mlws-tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _under_link(path: Path, root: Path) -> bool:
    """Whether a folder between ``root`` and ``path`` is a symlink (rglob follows them)."""
    for parent in path.parents:
        if parent == root:
            return False
        if parent.is_symlink():
            return True
    return False


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
