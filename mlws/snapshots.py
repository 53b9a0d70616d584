"""Snapshots: the source folder of a run, captured as a manifest of blobs.

Only the top-level ``.amlignore`` is read, else the top-level ``.gitignore`` (gitwildmatch
semantics via :mod:`pathspec`); ``.git`` is never captured (git info is recorded as run
properties instead). Ignored folders are pruned, not walked. Files are found by
:func:`fileops.gather`, the walk of every folder mlws stores: a symlink to a file inside the
folder is captured as that file, other links are skipped with a warning. A name no manifest
can hold (a backslash, not UTF-8) refuses the snapshot before anything is stored.

A per-machine hash cache (``~/.cache/mlws/hashcache.db``) keyed by (path, size, mtime_ns, inode)
means an unchanged tree is not read again: a re-snapshot is a walk, a stat per file and a stat per
blob. There is no size or file-count limit; large snapshots only warn.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .blobs import BlobStore, Entry, bad_names, canonical_manifest, file_mode
from .errors import SnapshotError, UnsafePath
from .fileops import gather, skipped_warning

WARN_BYTES = 300 * 1024 * 1024
WARN_FILES = 2000
ALWAYS_EXCLUDED = {".git"}


@dataclass
class Snapshot:
    """The result of capturing a folder."""

    manifest: str
    files: int
    bytes: int
    new_files: int
    new_bytes: int
    warnings: list[str] = field(default_factory=list)


def _ignore_spec(root: Path) -> Any:
    for name in (".amlignore", ".gitignore"):
        f = root / name
        if f.is_file():
            import pathspec

            lines = f.read_text(encoding="utf-8", errors="replace").splitlines()
            return pathspec.GitIgnoreSpec.from_lines(lines)
    return None


def iter_files(
    root: Path, skipped: list[str] | None = None
) -> Iterator[tuple[str, os.stat_result, str]]:
    """Yield ``(relative posix path, stat, path to read)`` for every file kept in a snapshot:
    :func:`fileops.gather` (its one rule for symlinks) less ignored names. Links it skips are
    appended to ``skipped``.

    :raises SnapshotError: a folder cannot be read.
    """
    spec = _ignore_spec(root)

    def prune(rel: str, is_dir: bool) -> bool:
        if is_dir and rel in ALWAYS_EXCLUDED:
            return True
        # An ignored folder is pruned, never walked.
        return spec is not None and bool(spec.match_file(rel + "/" if is_dir else rel))

    try:
        files, links = gather(str(root), prune=prune)
    except OSError as e:
        raise SnapshotError(f"cannot read folder {e.filename}: {e.strerror}") from None
    if skipped is not None:
        skipped += links
    yield from files


class HashCache:
    """Per-machine (path, size, mtime_ns, inode) -> hash cache in its own small SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(
            str(path), timeout=30, isolation_level=None, check_same_thread=False
        )
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        # seen: "<blob store>#<gc generation>" in which the blob was last seen present; while no
        # gc has run since, the blob is still there and need not be stat-ed again.
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS files_v2 (path TEXT PRIMARY KEY, size INTEGER,"
            " mtime_ns INTEGER, inode INTEGER, hash TEXT, seen TEXT) WITHOUT ROWID"
        )
        self._lock = threading.Lock()

    def load(self, root: str) -> dict[str, tuple[int, int, int, str, str]]:
        """The cached ``path -> (size, mtime_ns, inode, hash, seen)`` of every file under ``root``,
        in one query."""
        prefix = root.rstrip("/") + "/"
        # A range scan on the primary key: every cached path under root, in one query.
        rows = self.conn.execute(
            "SELECT path, size, mtime_ns, inode, hash, seen FROM files_v2 WHERE path >= ? AND path < ?",
            (prefix, prefix[:-1] + "0"),
        ).fetchall()
        return {r[0]: (r[1], r[2], r[3], r[4], r[5]) for r in rows}

    def store(self, rows: list[tuple[str, int, int, int, str, str]]) -> None:
        """Add or replace cache rows ``(path, size, mtime_ns, inode, hash, seen)`` in one
        transaction."""
        if not rows:
            return
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.executemany(
                    "INSERT OR REPLACE INTO files_v2 VALUES (?, ?, ?, ?, ?, ?)", rows
                )
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Close the cache's database."""
        self.conn.close()


def default_cache_path() -> Path:
    """The per-user, per-machine hash cache file (in the user's cache folder: safe to delete, it is
    rebuilt by hashing)."""
    from .dirs import user_cache_dir

    return user_cache_dir() / "hashcache.db"


def snapshot_files(root: Path) -> tuple[list[tuple[str, os.stat_result, str]], list[str]]:
    """``(files, skipped links)`` of a snapshot of folder ``root``: :func:`iter_files`, every
    name checked first.

    :raises SnapshotError: the folder is missing or unreadable, or a name cannot be stored.
    """
    if not root.is_dir():
        raise SnapshotError(f"source directory {root} does not exist or is not a folder")
    links: list[str] = []
    files = list(iter_files(root, links))
    try:
        # Every name checked before anything is stored or recorded: a name no manifest reader
        # accepts would make the run fail, and then fsck and gc, for good.
        bad_names(str(root), [rel for rel, _st, _p in files])
    except UnsafePath as e:
        raise SnapshotError(f"cannot snapshot {root}: {e}") from None
    return files, links


def take_snapshot(
    blobs: BlobStore,
    source_dir: str | os.PathLike[str],
    cache_path: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Snapshot:
    """Capture ``source_dir`` into ``blobs``; returns the manifest hash and counts.
    ``progress(done, total)`` is called as the files the stat cache cannot vouch for are read
    (an unchanged tree reads none, and calls it never).

    :raises SnapshotError: the folder is missing or unreadable, or a file's name cannot be
        stored (a backslash, not UTF-8): nothing is stored then.
    """
    root = Path(source_dir).absolute()
    real_root = os.path.realpath(root)
    files, links = snapshot_files(root)
    cache = HashCache(cache_path or default_cache_path())
    # Shared hold on the blob store: gc (exclusive) cannot delete a blob this snapshot re-uses
    # until the manifest naming it exists, and the gc generation cannot change under us.
    with blobs.shared():
        seen_token = f"{blobs.root}#{blobs.identity()}#{blobs.gc_generation()}"
        try:
            known = cache.load(real_root)
            entries: list[Entry] = []
            updates: list[tuple[str, int, int, int, str, str]] = []
            total = new_files = new_bytes = 0
            with blobs.batch():
                # Files the stat cache cannot vouch for are stored together, by put_files'
                # threads; then the entries are made in the files' order.
                todo: list[int] = []
                hints: list[str | None] = []
                cached: dict[int, str] = {}
                for i, (rel, st, _abspath) in enumerate(files):
                    c = known.get(f"{real_root}/{rel}")
                    if (
                        c is not None
                        and c[0] == st.st_size
                        and c[1] == st.st_mtime_ns
                        and c[2] == st.st_ino
                        and c[4] == seen_token
                    ):
                        # unchanged, and its blob seen since the last gc: nothing to read or stat
                        cached[i] = c[3]
                        continue
                    same = c is not None and c[:3] == (st.st_size, st.st_mtime_ns, st.st_ino)
                    todo.append(i)
                    hints.append(c[3] if same else None)
                stored_files = blobs.put_files(
                    [files[i][2] for i in todo], known=hints, progress=progress
                )
                got = dict(zip(todo, stored_files, strict=True))
                for i, (rel, st, abspath) in enumerate(files):
                    size = st.st_size
                    if i in cached:
                        digest, stored = cached[i], False
                    else:
                        result = got[i]
                        if isinstance(result, OSError):
                            raise SnapshotError(f"cannot read {abspath}: {result.strerror}")
                        digest, size, stored = result
                        updates.append(
                            (
                                f"{real_root}/{rel}",
                                st.st_size,
                                st.st_mtime_ns,
                                st.st_ino,
                                digest,
                                seen_token,
                            )
                        )
                    if stored:
                        new_files += 1
                        new_bytes += size
                    total += size
                    entries.append(Entry(rel, digest, size, file_mode(st.st_mode)))
            cache.store(updates)
        finally:
            cache.close()
        manifest = blobs.put_bytes(canonical_manifest(entries, trusted=True))
    warnings = [skipped_warning(str(root), links)] if links else []
    if total > WARN_BYTES or len(entries) > WARN_FILES:
        warnings.append(
            f"snapshot of {root} is large ({len(entries)} files, {total / 1e6:.0f} MB); "
            "add an .amlignore to leave out data and outputs"
        )
    return Snapshot(manifest, len(entries), total, new_files, new_bytes, warnings)


# -- git ---------------------------------------------------------------------------------------
_GIT_ENV = {
    "azureml.git.repository_uri": "AZUREML_GIT_REPOSITORY_URI",
    "azureml.git.branch": "AZUREML_GIT_BRANCH",
    "azureml.git.commit": "AZUREML_GIT_COMMIT",
    "azureml.git.dirty": "AZUREML_GIT_DIRTY",
}
_MLFLOW_ALIASES = {
    "azureml.git.repository_uri": "mlflow.source.git.repoURL",
    "azureml.git.branch": "mlflow.source.git.branch",
    "azureml.git.commit": "mlflow.source.git.commit",
}


def _git_all(folder: Path, *commands: tuple[str, ...]) -> list[str | None]:
    """Each git command's output (``None`` where it failed), the commands run at once: a
    submission waits for the slowest, not for their sum."""
    procs: list[subprocess.Popen[str] | None] = []
    for args in commands:
        try:
            procs.append(
                subprocess.Popen(
                    ["git", "-C", str(folder), *args],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            )
        except OSError:
            procs.append(None)
    outs: list[str | None] = []
    for p in procs:
        if p is None:
            outs.append(None)
            continue
        try:
            out, _ = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            outs.append(None)
            continue
        outs.append(out.strip() if p.returncode == 0 else None)
    return outs


def git_properties(source_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Git facts about ``source_dir`` as v1 run properties (``AZUREML_GIT_*`` env vars win)."""
    folder = Path(source_dir).absolute()
    props: dict[str, str] = {}
    in_repo = any((p / ".git").exists() for p in (folder, *folder.parents))
    if in_repo:
        head, remote, status = _git_all(
            folder,
            # Options apply to the revisions after them: the full sha, then the branch name.
            ("rev-parse", "HEAD", "--abbrev-ref", "HEAD"),
            ("config", "--get", "remote.origin.url"),
            ("status", "--porcelain", "--untracked-files=no"),
        )
        if head:
            lines = head.splitlines()
            if len(lines) == 2:
                props["azureml.git.commit"] = lines[0]
                props["azureml.git.branch"] = lines[1]
        props["azureml.git.repository_uri"] = remote or str(folder)
        if status is not None:
            props["azureml.git.dirty"] = str(bool(status))
    for prop, var in _GIT_ENV.items():
        if os.environ.get(var):
            props[prop] = os.environ[var]
    for prop, alias in _MLFLOW_ALIASES.items():
        if prop in props:
            props[alias] = props[prop]
    return props
