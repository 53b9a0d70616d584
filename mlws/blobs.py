"""Content-addressed blob store.

A blob is stored once under ``blobs/sha256/ab/<hex>`` by the sha256 of its bytes, written to a
temp file in the same folder, made durable, renamed into place, read-only. Hashes carry their
algorithm: ``sha256:<hex>``. One level of 256 folders, as git does: two levels (65,536 folders)
cost a 4 KiB folder per blob until millions of blobs, 37 MB for 10,000 files in a benchmark.
Manifests (trees of blobs) are :mod:`mlws.manifests`; writing trees out, :mod:`mlws.filetree`.
"""

from __future__ import annotations

# hashlib, tempfile: imported where used. Every run's ``from mlws import Run`` loads this
# module and needs none of them (issue 12).
import contextlib
import functools
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

from .dirs import new_file_mode
from .durable import sync_paths
from .errors import BlobCorrupted, BlobNotFound, UserErrorException
from .fileops import (  # noqa: F401 - hash_file: one hash, here and on ssh hosts
    ALGORITHM,
    gather,
    hash_file,
    name_problem,
    skipped_warning,
)
from .filetree import (  # noqa: F401 - copy_file, plan_writes: imported from here too
    copy_file,
    plan_writes,
    write_all,
)
from .gclock import GcGate
from .manifests import (  # noqa: F401 - the manifest names other modules import from here
    Entry,
    bad_names,
    canonical_manifest,
    check_hash,
    check_relpath,
    file_mode,
    hash_bytes,
    parse_manifest,
)

_CHUNK = 1 << 20
#: Files up to this size are read whole and hashed before any temp file is made (in a batch).
_SMALL = 1 << 20


class BlobStore:
    """The blob folder of one workspace."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.gate = GcGate(self.root)
        self._dir = self.root / ALGORITHM
        self._prefix = str(self._dir) + os.sep
        # digest -> temp file written inside batch(), installed when the batch ends
        self._pending: dict[str, str] | None = None
        self._claims = threading.Lock()  # put_files' threads add to _pending
        self._folders: set[str] = set()  # blob folders known to exist
        self._strips: bool | None = None  # the umask read once per batch, not per blob

    def path(self, digest: str) -> Path:
        """Where the blob named ``digest`` lives (or would live); it may not exist.

        :raises UnsafePath: ``digest`` is not a ``sha256:<64 hex>`` hash.
        """
        return Path(self._str_path(digest))

    def _str_path(self, digest: str) -> str:
        # Strings, not pathlib: this runs once per file of every snapshot.
        hexdigest = check_hash(digest)[7:]
        return f"{self._prefix}{hexdigest[:2]}/{hexdigest}"

    def _mkdir(self, folder: Path) -> None:
        """``mkdir -p`` inside the store, each new folder as open as the store's root: users
        sharing a workspace (a group-writable ``blobs/``) must all be able to add blobs to a
        folder that any one of them made first, whatever that one's umask."""
        if folder.is_dir():
            return
        self.root.mkdir(parents=True, exist_ok=True)  # the store's own root: as the user makes it
        mode = None
        missing = []
        p = folder
        while not p.exists() and p != self.root and p.parent != p:
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:
                continue
            if mode is None:
                mode = stat.S_IMODE(os.stat(self.root).st_mode)
            try:
                os.chmod(d, mode)
            except OSError:
                pass

    # -- coordination with gc (see mlws.gclock) ----------------------------------------------------
    def shared(self) -> contextlib.AbstractContextManager[None]:
        """Hold the store against gc while storing or re-using blobs: :meth:`GcGate.shared`."""
        return self.gate.shared()

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        """Hold the store for gc's deletions: :meth:`GcGate.exclusive`."""
        return self.gate.exclusive()

    def gc_holder(self) -> str:
        """`` (pid N on HOST)`` of the gc holding the store, or ``""`` when not known."""
        return self.gate.holder()

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
        import tempfile

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
        return self.gate.generation()

    def has(self, digest: str) -> bool:
        """Whether the blob is stored, counting one written in the current :meth:`batch`. It does
        not mark the blob as used: before recording a reference to it, use :meth:`reuse`."""
        if self._pending is not None and digest in self._pending:
            return True
        return os.path.exists(self._str_path(digest))

    def reuse(self, digest: str) -> bool:
        """Whether the blob is here, marking it as just used so that gc spares it until the
        caller has recorded the catalog row that references it (see :meth:`shared`). Use this,
        not :meth:`has`, before recording a reference to a blob that is already stored."""
        with self.shared():
            return self._touch(digest)

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
        """Rename a durable, read-only temp file to its blob's name (made by :meth:`_tempfile`)."""
        final = self._str_path(digest)
        if os.path.exists(final):
            os.unlink(tmp)
            return
        # os.replace is atomic: a reader sees either no blob or the whole blob.
        os.replace(tmp, final)

    def _tempfile(self, digest_hint: str | None = None) -> tuple[int, str]:
        """A new temp file open for writing: in the blob's own folder when its hash is known
        (the rename stays in one folder), else -- and always inside a :meth:`batch` -- in the
        store's top folder. It is made read-only (0444) from the start, as the blob will be, so
        installing it is a rename alone: one metadata change less per blob (the fd is open for
        writing all the same)."""
        # A batch creates its temp files side by side: creating a file in one folder cost 320
        # us here where spreading the creates over the blob folders cost 540 us (ext4 puts each
        # folder's inodes elsewhere), and moving one into its folder at the end costs 12 us.
        # On 10,000 files of 10 kB (bench 6e) that is 2 s of 5.8.
        in_place = digest_hint is not None and self._pending is None
        folder = self._str_path(digest_hint).rpartition("/")[0] if in_place else str(self._dir)
        if folder not in self._folders:  # a stat per blob saved: folders are never removed
            self._mkdir(Path(folder))
            self._folders.add(folder)
        while True:
            tmp = f"{folder}/.tmp-{os.urandom(8).hex()}"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
                break
            except FileExistsError:  # pragma: no cover - 64 random bits
                continue
            except FileNotFoundError:  # the folder was removed by hand since
                self._mkdir(Path(folder))
        if self._strips if self._strips is not None else _umask_strips_read():
            os.fchmod(fd, 0o444)
        return fd, tmp

    def put_bytes(self, data: bytes) -> str:
        """Store ``data`` as a blob (once: a blob already here is only marked as just used) and
        return its hash. Waits while a gc runs (see :meth:`shared`)."""
        with self.shared():
            return self._put_bytes(data)

    def _put_bytes(self, data: bytes) -> str:
        digest = hash_bytes(data)
        if not self._touch(digest):
            self._put_new(digest, data)
        return digest

    def _put_new(self, digest: str, data: bytes) -> bool:
        """Write a blob that is not here (yet): at once, or in a batch as a temp file it
        installs at its end; False when another thread of the batch wrote it first."""
        fd, tmp = self._tempfile(digest)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if self._pending is None:
                    f.flush()
                    os.fsync(f.fileno())
            if self._pending is not None:
                return self._claim(digest, tmp)  # made durable and installed at the batch's end
            self._install(tmp, digest)
        except BaseException:
            _unlink_quiet(tmp)
            raise
        return True

    def _claim(self, digest: str, tmp: str) -> bool:
        """Add a written temp file to the batch; False (and the temp file removed) when
        another thread of the batch claimed the same blob first."""
        assert self._pending is not None
        with self._claims:
            if digest in self._pending:
                _unlink_quiet(tmp)
                return False
            self._pending[digest] = tmp
            return True

    def put_file(
        self, src: str | os.PathLike[str], known: str | None = None, size: int | None = None
    ) -> tuple[str, int, bool]:
        """Store a file; returns ``(hash, size, stored_new_bytes)``.

        ``known`` is a trusted hash of the file (from the snapshot stat cache) and ``size`` its
        size: when that blob is present already the file is not opened at all. (The blob is not
        touched either: the snapshot's new manifest protects it from gc, see maintenance.gc; so
        a caller passing ``known`` holds :meth:`shared` until that manifest is stored.)
        """
        if known is not None and self.has(known):
            return known, os.stat(src).st_size if size is None else size, False
        with open(src, "rb") as fin:
            if self._pending is not None:
                # In a batch, a small file is read whole and hashed first: a blob already
                # here costs no temp file at all, a new one goes straight to its folder.
                data = fin.read(_SMALL + 1)
                if len(data) <= _SMALL:
                    digest = hash_bytes(data)
                    with self.shared():
                        if self._touch(digest):
                            return digest, len(data), False
                        return digest, len(data), self._put_new(digest, data)
                return self.put_stream(_Prepend(data, fin))
            return self.put_stream(fin)

    def put_files(
        self,
        paths: list[str],
        known: list[str | None] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[tuple[str, int, bool] | OSError]:
        """Store many files (a folder's) in one batch: ``put_file`` of each, by a pool of
        threads, so one file's hashing (hashlib lets go of the GIL) and one file's create,
        which may wait on the filesystem's journal, overlap the others'. Returns, in order,
        each file's ``(hash, size, stored_new_bytes)`` or the OSError reading it raised (the
        caller decides: skip it, or stop and let the batch remove what it wrote).
        ``known``: trusted hashes, as for :meth:`put_file`. ``progress(done, total)`` is
        called as files are done, one call at a time (from the pool's threads)."""
        hints = known if known is not None else [None] * len(paths)
        counted = threading.Lock()
        done = 0

        def one(i: int) -> tuple[str, int, bool] | OSError:
            nonlocal done
            try:
                return self.put_file(paths[i], known=hints[i])
            except OSError as e:
                return e
            finally:
                if progress is not None:
                    with counted:
                        done += 1
                        progress(done, len(paths))

        with self.batch():
            if len(paths) < 64:  # a pool costs more than it saves
                return [one(i) for i in range(len(paths))]
            from concurrent.futures import ThreadPoolExecutor

            def held(part: range) -> list[tuple[str, int, bool] | OSError]:
                with self.gate.lent():  # the workers run under this thread's (the batch's) hold
                    return [one(i) for i in part]

            # Measured on 2 CPUs, 10,000 files of 10 kB: 8 threads keep the creates
            # overlapped; more only add switching. Parts of 32 files: a future per file
            # cost more than the hashing.
            with ThreadPoolExecutor(max_workers=8) as pool:
                parts = pool.map(held, _parts(len(paths), 32))
                return [got for part in parts for got in part]

    def put_stream(self, stream: IO[bytes]) -> tuple[str, int, bool]:
        """Store a binary stream; returns ``(hash, size, stored_new_bytes)``."""
        # Hash while copying to a temp file: one read of the source whatever happens. The gc
        # hold covers only re-using or installing the blob, so a long upload never holds gc up
        # (a temp file is young: gc leaves it alone).
        fd, tmp = self._tempfile()
        import hashlib

        h = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as fout:
                while chunk := stream.read(_CHUNK):
                    h.update(chunk)
                    fout.write(chunk)
                    size += len(chunk)
                digest = f"{ALGORITHM}:{h.hexdigest()}"
                with self.shared():
                    if self._touch(digest):
                        fout.close()
                        os.unlink(tmp)
                        return digest, size, False
                    if self._pending is not None:
                        fout.close()
                        # fsynced and installed when the batch ends
                        return digest, size, self._claim(digest, tmp)
                    fout.flush()
                    os.fsync(fout.fileno())
                    fout.close()
                    self._mkdir(self.path(digest).parent)
                    self._install(tmp, digest)
        except BaseException:
            _unlink_quiet(tmp)
            raise
        return digest, size, True

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Store many blobs without waiting for the disk once per blob.

        Inside, new blobs go to temp files; at the end they are made durable together, then
        renamed into place, then the renames made durable: a blob is never visible under its
        name before its bytes are on disk. An error inside removes the temp files; a crash
        leaves only temp files, which ``gc`` removes. Measured: 10,000 small files, 8.8 s of
        one-by-one fsyncs became about a third of that.
        """
        if self._pending is not None:
            yield  # nested: the outer batch installs
            return
        # One gc hold for the whole batch: its blobs are re-used (touched) as they come and
        # installed at the end, and one lock instead of one per file.
        with self.shared():
            self._pending, self._strips = {}, _umask_strips_read()
            try:
                yield
            except BaseException:
                for tmp in self._pending.values():
                    _unlink_quiet(tmp)
                self._pending = None
                raise
            finally:
                self._strips = None
            pending, self._pending = self._pending, None
            self._install_many(pending)

    def _install_many(self, pending: dict[str, str]) -> None:
        if not pending:
            return
        try:
            sync_paths(list(pending.values()), str(self._dir))
            folders = set()
            for digest, tmp in pending.items():
                final = self._str_path(digest)
                folder = final.rpartition("/")[0]
                if folder not in folders:
                    self._mkdir(Path(folder))  # a streamed blob's temp file is not in it yet
                    folders.add(folder)
                self._install(tmp, digest)
            sync_paths(sorted(folders), str(self._dir))  # the renames themselves
        except BaseException:
            for tmp in pending.values():
                _unlink_quiet(tmp)
            raise

    def put_folder(
        self,
        src: Path,
        prefix: str = "",
        *,
        root_may_link: bool = True,
        skipped: list[str] | None = None,
        lenient: bool = False,
    ) -> list[Entry]:
        """Store every file under ``src`` (in one batch); returns entries named
        ``<prefix>/<relative path>``. Files are found by :func:`fileops.gather` (its one rule
        for symlinks); what is skipped goes to ``skipped``, one line per kind, for the caller
        to warn about. ``root_may_link=False``: ``src`` itself a link gives nothing (a run's
        outputs, where it could point at any folder on the machine). ``lenient`` (a run's
        outputs, after the run: refusing would lose them all): a name that cannot be stored,
        a folder or file that cannot be read, is skipped rather than refused.

        :raises UnsafePath: a file's name cannot be stored (unless ``lenient``), before
            anything is stored.
        :raises UserErrorException: a folder or file cannot be read (unless ``lenient``).
        """
        unreadable: list[str] | None = [] if lenient else None
        try:
            found, links = gather(str(src), root_may_link=root_may_link, unreadable=unreadable)
        except OSError as e:
            raise UserErrorException(f"cannot read {e.filename or src}: {e.strerror}") from None
        found.sort()
        bad = bad_names(str(src), [rel for rel, _st, _p in found], skip=lenient)
        entries = []
        if lenient:
            found = [f for f in found if name_problem(f[0]) is None]
        with self.batch():
            stored = self.put_files([path for _rel, _st, path in found])
            for (rel, st, path), got in zip(found, stored, strict=True):
                if isinstance(got, OSError):
                    if unreadable is None:
                        raise UserErrorException(f"cannot read {path}: {got.strerror}") from None
                    unreadable.append(f"{rel} ({got.strerror})")
                    continue
                digest, size, _ = got
                entries.append(
                    Entry(f"{prefix}/{rel}" if prefix else rel, digest, size, file_mode(st.st_mode))
                )
        if skipped is not None:
            if links:
                skipped.append(skipped_warning(str(src), links))
            if bad:
                skipped.append(bad)
            if unreadable:
                shown = ", ".join(unreadable[:5])
                skipped.append(f"skipped {len(unreadable)} unreadable item(s) in {src}: {shown}")
        return entries

    def put_manifest(self, entries: Iterable[Entry]) -> str:
        """Store ``entries`` as a manifest blob in the canonical form (sorted, compact JSON;
        :func:`canonical_manifest`) and return its hash."""
        return self.put_bytes(canonical_manifest(entries))

    # -- reading ----------------------------------------------------------------------------
    def read_bytes(self, digest: str) -> bytes:
        """The blob's bytes, checked against its hash (a corrupted blob is never handed out).

        :raises BlobNotFound: it is missing. :raises BlobCorrupted: its bytes changed.
        """
        try:
            data = self.path(digest).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(
                f"blob {digest} is missing from {self.root}; run 'mlws fsck'"
            ) from None
        actual = hash_bytes(data)
        if actual != digest:
            raise _corrupted(digest, actual)
        return data

    def read_manifest(self, digest: str) -> list[Entry]:
        """The entries of the manifest blob ``digest``, every path and hash validated.

        :raises BlobNotFound: it is missing. :raises BlobCorrupted: its bytes changed.
        :raises UnsafePath: it is not a manifest or names an unsafe path.
        """
        return parse_manifest(self.read_bytes(digest))

    def copy_out(self, digest: str, dst: str | os.PathLike[str]) -> None:
        """Copy a blob to ``dst`` (a download): checked against its hash while copying, whole
        or not at all (a temp file beside ``dst`` renamed over it, removed on any error).

        :raises BlobNotFound: it is missing. :raises BlobCorrupted: its bytes changed.
        """
        dst = Path(dst)
        dst.parent.mkdir(parents=True, exist_ok=True)
        import tempfile

        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.mlws-tmp-")
        try:
            _copy_verified(self._str_path(digest), fd, digest)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dst)
        except BaseException:
            _unlink_quiet(tmp)
            raise

    def copy_into(self, digest: str, fd: int, name: str | None = None) -> None:
        """Copy a blob into the open file ``fd`` (closed here), checked against its hash.

        :raises BlobNotFound: it is missing. :raises BlobCorrupted: its bytes changed.
        """
        _copy_verified(self._str_path(digest), fd, digest, name)

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
            raise _corrupted(digest, actual)

    def iter_hashes(self) -> Iterator[str]:
        """Yield the hash of every stored blob, sorted, skipping temp files (for fsck and gc)."""
        if not self._dir.exists():
            return
        for d1 in sorted(self._dir.iterdir()):
            if not d1.is_dir():
                continue
            for f in sorted(d1.iterdir()):
                if not f.name.startswith("."):
                    yield f"{ALGORITHM}:{f.name}"

    def iter_temp_files(self) -> Iterator[Path]:
        """Yield the temp files left in the store, e.g. by a writer that was killed (gc removes the
        old ones)."""
        if self._dir.exists():
            yield from self._dir.rglob(".tmp-*")

    # -- materializing -----------------------------------------------------------------------
    def materialize(
        self,
        entries: Iterable[Entry],
        target: str | os.PathLike[str],
        *,
        overwrite: bool = True,
        flag: str = "overwrite=True",
    ) -> int:
        """Write the files of a manifest under ``target``; returns the number of files.

        Every file is a copy of its own (a reflink where the filesystem has them), never a hard
        link: these files go to user code (a run's working folder, a service's model folder, a
        download), and a process that writes to a hard-linked file changes the blob for every
        user -- read-only modes do not stop root. Every file is checked against its hash while
        it is copied; files go to temp names and are renamed into place only when all are
        sound, so a missing or corrupted blob raises and leaves ``target`` as it was.

        Every entry is checked by :func:`plan_writes` before anything is written or any folder
        made: no path escapes ``target``, through a symlink either, and without ``overwrite``
        nothing there is replaced (``flag`` names the option that allows it in the message).

        :raises BlobNotFound: a blob is missing. :raises BlobCorrupted: a blob's bytes changed.
        :raises UnsafePath: a path would leave ``target``.
        """
        entries = list(entries)
        root = Path(target)
        planned = list(
            zip(
                entries,
                plan_writes(root, [e.path for e in entries], overwrite=overwrite, flag=flag),
                strict=True,
            )
        )
        write_all(
            root,
            [
                (dest, functools.partial(self.copy_into, e.hash, name=e.path), e.mode)
                for e, dest in planned
            ],
        )
        return len(planned)

    def remove(self, digest: str) -> int:
        """Delete a blob and return the bytes freed (0 if it was already gone). Only gc calls this,
        holding :meth:`exclusive`: removing a blob that a catalog row references loses data."""
        p = self.path(digest)
        try:
            size = p.stat().st_size
            p.unlink()
            return size
        except FileNotFoundError:
            return 0


#: Linux's ioctl that makes ``dst`` share ``src``'s extents copy-on-write (btrfs, xfs, ...).
_FICLONE = 0x40049409


def _copy_verified(src: str, fd: int, digest: str, name: str | None = None) -> None:
    """Copy blob file ``src`` into the open file ``fd`` (closed here) as a reflink where the
    filesystem can make one, else by bytes; either way the copy is hashed and compared with
    ``digest``, so the caller never publishes bytes that do not match their name."""
    what = f" for {name!r}" if name else ""
    with os.fdopen(fd, "r+b") as fout:
        try:
            fin = open(src, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise BlobNotFound(f"blob {digest}{what} is missing; run 'mlws fsck'") from None
        with fin:
            import hashlib

            h = hashlib.sha256()
            try:
                import fcntl

                fcntl.ioctl(fout.fileno(), _FICLONE, fin.fileno())
            except (ImportError, OSError):  # no reflinks here: copy the bytes, hashing them
                while chunk := fin.read(_CHUNK):
                    h.update(chunk)
                    fout.write(chunk)
            else:  # the clone shares the blob's extents: hash what the copy holds
                while chunk := fout.read(_CHUNK):
                    h.update(chunk)
        actual = f"{ALGORITHM}:{h.hexdigest()}"
        if actual != digest:
            raise _corrupted(digest, actual, what)


def _corrupted(digest: str, actual: str, what: str = "") -> BlobCorrupted:
    return BlobCorrupted(
        f"blob {digest}{what} is corrupted (its bytes hash to {actual}); nothing was handed"
        " out; run 'mlws fsck' and restore or re-create it"
    )


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class _Prepend:
    """A binary stream: ``head`` (already read), then the rest of ``rest``."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self.head, self.rest = head, rest

    def read(self, n: int = -1) -> bytes:
        if self.head:
            out, self.head = self.head, b""
            return out
        return self.rest.read(n)


def _umask_strips_read() -> bool:
    """Whether the umask takes read bits off a new 0444 file (then the blob is chmodded)."""
    return new_file_mode() & 0o444 != 0o444


def _parts(n: int, size: int) -> list[range]:
    """``range(n)`` cut into consecutive parts of ``size``: one thread pool task each."""
    return [range(i, min(i + size, n)) for i in range(0, n, size)]
