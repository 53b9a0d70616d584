"""The files and logs of a run: stored files (blobs named in ``run_files``), the live
``logs/`` and ``outputs/`` of a run still running on this machine, uploads, downloads, the
snapshot and following a log.

:class:`RunFiles` is a part of :class:`mlws.runs.Run` (its base class), kept in its own module
because the files of a run are their own concept; use it through ``Run``.
"""

from __future__ import annotations

# shutil: imported where used. Every run's ``from mlws import Run`` loads this
# module and needs none of them (issue 12).
import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .blobs import Entry, check_relpath, copy_file, file_mode, plan_writes, write_all
from .errors import UserErrorException
from .lifecycle import TERMINAL
from .processes import hostname

if TYPE_CHECKING:
    import sqlite3

    from .workspace import Workspace


class RunFiles:
    """Files and logs of a run (the base class of :class:`mlws.runs.Run`)."""

    # Provided by Run.
    workspace: Workspace
    id: str
    seq: int
    _row: sqlite3.Row

    if TYPE_CHECKING:

        def _refresh(self) -> sqlite3.Row: ...

    # -- files ------------------------------------------------------------------------------
    def _live_dir(self) -> Path | None:
        row = self._row
        wd = row["working_dir"]
        if wd and row["status"] not in TERMINAL and row["host"] == hostname():
            p = Path(wd)
            return p if p.is_dir() else None
        return None

    def _live_files(self) -> dict[str, Path]:
        wd = self._live_dir()
        out: dict[str, Path] = {}
        if wd is None:
            return out
        try:
            for sub in ("logs", "outputs"):
                base = wd / sub
                if base.is_dir():
                    for p in base.rglob("*"):
                        if p.is_file():
                            out[p.relative_to(wd).as_posix()] = p
        except FileNotFoundError:
            # The run ended while this walked: its supervisor stored these files, then removed
            # the folder (a cancel from `mlws serve` met it: a 500 for the client).
            return {}
        return out

    def _live_file(self, name: str) -> Path | None:
        """One file of the live working folder (``logs/...`` or ``outputs/...``), found by its
        path rather than by walking the folders, which can be large."""
        check_relpath(name)
        wd = self._live_dir()
        if wd is None or name.split("/", 1)[0] not in ("logs", "outputs"):
            return None
        p = wd / name
        return p if p.is_file() else None

    def get_file_names(self) -> list[str]:
        """Files of the run: uploaded, collected outputs and logs, plus live ``logs/`` and
        ``outputs/`` while the run runs on this machine."""
        self._refresh()
        return self._file_names()

    def _file_names(self) -> list[str]:
        if self.workspace.remote is not None:
            from .remote.runs import files

            return sorted(files(self))  # type: ignore[arg-type]
        # The live folder first: a run that ends meanwhile has its files stored before its
        # folder goes, so the stored ones read after it include them.
        live = self._live_files()
        stored = {
            r[0]
            for r in self.workspace.catalog.query(
                "SELECT path FROM run_files WHERE run_seq = ?", (self.seq,)
            )
        }
        return sorted(stored | set(live))

    def _stored_blob(self, name: str, fresh: bool = False) -> str | None:
        if self.workspace.remote is not None:
            from .remote.runs import files

            return files(self, fresh).get(name)  # type: ignore[arg-type]
        return self.workspace.catalog.scalar(
            "SELECT blob FROM run_files WHERE run_seq = ? AND path = ?", (self.seq, name)
        )

    def file_source(self, name: str) -> Path:
        """Where run file ``name`` can be read now: its stored blob, or (while the run runs on
        this machine) the live file under ``logs/`` or ``outputs/``. For servers that stream a
        file rather than copy it; the blob must not be written to.

        :raises UnsafePath: ``name`` is absolute or has a ``..`` component.
        :raises UserErrorException: the run has no file ``name``.
        """
        check_relpath(name)
        blob = self._stored_blob(name)
        if blob is not None:
            return self.workspace.blobs.path(blob)
        live = self._live_file(name)
        if live is None:
            raise self._no_file(name)
        return live

    def _no_file(self, name: str) -> UserErrorException:
        return UserErrorException(f"run {self.id} has no file {name!r}; see run.get_file_names()")

    def _read_file_text(self, name: str) -> str:
        blob = self._stored_blob(name)
        if blob is not None:
            return self.workspace.blobs.read_bytes(blob).decode("utf-8", errors="replace")
        live = self._live_file(name)
        if live is None:
            raise self._no_file(name)
        return live.read_text(errors="replace")

    def upload_file(
        self,
        name: str,
        path_or_stream: str | os.PathLike[str] | IO[bytes],
        datastore_name: str | None = None,
    ) -> dict[str, Any]:
        """Store a file (path or binary stream) as run file ``name``."""
        check_relpath(name)
        blobs = self.workspace.blobs
        if isinstance(path_or_stream, (str, os.PathLike)):
            src = Path(path_or_stream)
            if not src.is_file():
                raise UserErrorException(f"cannot upload {src}: not a file")
            digest, size, _ = blobs.put_file(src)
            mode = file_mode(src.stat().st_mode)
        else:
            digest, size, _ = blobs.put_stream(path_or_stream)
            mode = 0o644
        add_run_files(self.workspace, self.seq, [Entry(name, digest, size, mode)])
        return {"name": name, "hash": digest, "size": size}

    def upload_files(self, names: list[str], paths: list[str], **_kwargs: Any) -> None:
        """Store several files as run files: ``names[i]`` from ``paths[i]`` (see
        :meth:`upload_file`).

        :raises UserErrorException: the lists differ in length, or a path is not a file.
        """
        if len(names) != len(paths):
            raise UserErrorException("upload_files: names and paths must have the same length")
        for n, p in zip(names, paths, strict=True):
            self.upload_file(n, p)

    def upload_folder(
        self, name: str, path: str | os.PathLike[str], datastore_name: str | None = None
    ) -> list[str]:
        """Store every file under ``path`` as run files ``name/<relative path>``. A symlink is
        stored only when it leads to a file inside ``path`` (as that file); others are skipped
        with a warning on stderr.

        :raises UnsafePath: a file's name cannot be stored (a backslash, not UTF-8); nothing
            is recorded then.
        """
        src = Path(path)
        if not src.is_dir():
            raise UserErrorException(f"cannot upload {src}: not a folder")
        prefix = name.strip("/")
        if prefix:
            check_relpath(prefix)
        skipped: list[str] = []
        entries = self.workspace.blobs.put_folder(src, prefix, skipped=skipped)
        for w in skipped:
            print(f"Warning: {w}", file=sys.stderr)
        add_run_files(self.workspace, self.seq, entries)
        return [e.path for e in entries]

    def _copy_into(self, name: str, fd: int) -> None:
        """Write run file ``name`` into the open file ``fd`` (closed here); a stored file is
        checked against its hash."""
        check_relpath(name)
        blob = self._stored_blob(name)
        if blob is not None:
            self.workspace.blobs.copy_into(blob, fd, name)
            return
        live = self._live_file(name)
        if live is None:
            os.close(fd)
            raise UserErrorException(
                f"run {self.id} has no file {name!r}; see run.get_file_names()"
            )
        with os.fdopen(fd, "wb") as fout, open(live, "rb") as fin:
            import shutil

            shutil.copyfileobj(fin, fout, 1 << 20)

    def _copy_out(self, name: str, out: Path) -> None:
        """Copy run file ``name`` to ``out``: a stored file is checked against its hash while
        it is copied (a corrupted blob is never handed out); a live one comes from the working
        folder."""
        check_relpath(name)
        blob = self._stored_blob(name)
        if blob is not None:
            self.workspace.blobs.copy_out(blob, out)
            return
        live = self._live_file(name)
        if live is None:
            raise UserErrorException(
                f"run {self.id} has no file {name!r}; see run.get_file_names()"
            )
        copy_file(live, out)

    def download_file(
        self,
        name: str,
        output_file_path: str | os.PathLike[str] | None = None,
        _validate_checksum: bool = False,
    ) -> Path:
        """Copy run file ``name`` to ``output_file_path`` (a file or folder; default: cwd)."""
        out = Path(output_file_path) if output_file_path is not None else Path(Path(name).name)
        if out.is_dir():
            out = out / Path(name).name
        # Always checked against its hash while copying (_validate_checksum is implied).
        self._copy_out(name, out)
        return out

    def download_files(
        self,
        prefix: str | None = None,
        output_directory: str | os.PathLike[str] | None = None,
        output_paths: list[str] | None = None,
        batch_size: int = 100,
        append_prefix: bool = True,
        overwrite: bool = False,
        _validate_checksum: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[Path]:
        """Copy every run file under ``prefix`` into ``output_directory`` keeping relative paths
        (without the prefix when ``append_prefix`` is false); ``progress(done, total)`` is
        called after each file is copied (before all are renamed into place).

        Every file is checked before any is written: a file already there is refused unless
        ``overwrite``, and nothing is ever written through a symlink that leads out of
        ``output_directory`` (``overwrite`` or not).

        :raises UserErrorException: a file is there (and not ``overwrite``), or
            ``output_directory`` is a file.
        :raises UnsafePath: a file would be written outside ``output_directory``.
        """
        target = Path(output_directory or ".")
        names = [
            n
            for n in self.get_file_names()
            if prefix is None or n == prefix or n.startswith(prefix.rstrip("/") + "/")
        ]
        rels = []
        for n in names:
            rel = n
            if prefix and not append_prefix:
                rel = n[len(prefix.rstrip("/")) :].lstrip("/") or Path(n).name
            rels.append(rel)
        dests = plan_writes(target, rels, overwrite=overwrite, flag="overwrite=True (--overwrite)")

        def fill(name: str, done: int, fd: int) -> None:
            self._copy_into(name, fd)
            if progress is not None:
                progress(done, len(names))

        # All or nothing: a corrupted (or vanished) file leaves the target as it was.
        write_all(
            target,
            [
                (dest, functools.partial(fill, name, i), 0o644)
                for i, (name, dest) in enumerate(zip(names, dests, strict=True), 1)
            ],
        )
        return dests

    def restore_snapshot(
        self, path: str | os.PathLike[str] | None = None, overwrite: bool = False
    ) -> Path:
        """Write the run's source snapshot into ``path`` (default: ``./<run id>-snapshot``);
        files there already are refused unless ``overwrite``, and nothing is written through a
        symlink out of ``path``."""
        snap = self._row["snapshot"]
        if not snap:
            raise UserErrorException(f"run {self.id} has no snapshot")
        target = Path(path or f"{self.id}-snapshot")
        self.workspace.blobs.materialize(
            self.workspace.blobs.read_manifest(snap),
            target,
            overwrite=overwrite,
            flag="overwrite=True (--overwrite)",
        )
        return target

    # -- logs -------------------------------------------------------------------------------
    def iter_log(
        self, name: str = "logs/driver.log", follow: bool = False, timeout: float | None = None
    ) -> Iterator[str]:
        """Yield the text of a log file; with ``follow``, keep yielding as it grows until the run
        is terminal (the open file survives the working folder's removal at the end).

        :raises UnsafePath: ``name`` is absolute or has a ``..`` component.
        :raises UserErrorException: the run has ended and has no file ``name``, or ``name`` can
            never be one of its files (not stored, and not under ``logs/`` or ``outputs/``).
        """
        check_relpath(name)
        if name.split("/", 1)[0] not in ("logs", "outputs") and self._stored_blob(name) is None:
            raise self._no_file(name)
        deadline = None if timeout is None else time.monotonic() + timeout
        offset = 0
        handle = None
        seen = None
        delay = 0.02
        try:
            while True:
                row = self._refresh()
                terminal = row["status"] in TERMINAL
                if handle is None and not terminal:
                    live = self._live_file(name)
                    if live is not None:
                        try:
                            handle = open(live, "rb")  # noqa: SIM115
                        except OSError:
                            handle = None
                if handle is not None:
                    data = handle.read()
                    if data:
                        offset += len(data)
                        yield data.decode("utf-8", errors="replace")
                        delay = 0.02
                elif follow and not terminal and self.workspace.remote is not None:
                    # A run executing elsewhere: its log as uploaded so far, the new part.
                    blob = self._stored_blob(name)
                    if blob is not None and blob != seen:
                        seen = blob
                        data = self.workspace.blobs.read_bytes(blob)[offset:]
                        offset += len(data)
                        if data:
                            yield data.decode("utf-8", errors="replace")
                    delay = max(delay, 0.5)
                if terminal:
                    if handle is None or offset == 0:
                        # Fresh: a remote run's last log upload may postdate a cached listing.
                        blob = self._stored_blob(name, fresh=True)
                        # Asked of an ended run, a name it does not have is an error; followed
                        # (wait_for_completion(show_output=True)), a log never written is empty.
                        if blob is None and handle is None and not follow:
                            raise self._no_file(name)
                        if blob is not None:
                            data = self.workspace.blobs.read_bytes(blob)[offset:]
                            if data:
                                yield data.decode("utf-8", errors="replace")
                    return
                if not follow:
                    if handle is None:
                        blob = self._stored_blob(name)
                        if blob is not None:
                            yield self.workspace.blobs.read_bytes(blob).decode(
                                "utf-8", errors="replace"
                            )
                    return
                if deadline is not None and time.monotonic() > deadline:
                    return
                time.sleep(delay)
                delay = min(delay * 1.5, 0.2)
        finally:
            if handle is not None:
                handle.close()


def add_run_files(ws: Workspace, run_seq: int, entries: list[Entry]) -> None:
    """Record stored blobs as files of a run (replacing files of the same path). On a remote
    workspace ``run_seq`` is the run's id (see :mod:`mlws.remote.runs`)."""
    if ws.remote is not None:
        from .remote.runs import record_files

        record_files(ws, str(run_seq), entries)
        return
    now = time.time()
    with ws.catalog.write() as conn:
        conn.executemany(
            "INSERT OR REPLACE INTO run_files VALUES (?, ?, ?, ?, ?, ?)",
            [(run_seq, e.path, e.hash, e.size, e.mode, now) for e in entries],
        )
