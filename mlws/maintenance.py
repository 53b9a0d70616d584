"""Workspace upkeep: ``fsck`` (is everything sound?) and ``gc`` (drop unreferenced blobs)."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import BlobCorrupted, BlobNotFound, MlwsError, UnsafePath, UserErrorException

if TYPE_CHECKING:
    from .workspace import Workspace

#: Catalog columns that hold blob hashes: (SQL, is_manifest). Later tables (models, datasets)
#: add their queries here, and both fsck and gc follow.
BLOB_ROOTS: list[tuple[str, bool]] = [
    ("SELECT DISTINCT snapshot FROM runs WHERE snapshot IS NOT NULL", True),
    ("SELECT DISTINCT blob FROM run_files", False),
    ("SELECT DISTINCT manifest FROM models", True),
    # A dataset's fingerprint lists hashes of files that live on datastores, not blobs.
    ("SELECT DISTINCT fingerprint FROM datasets", False),
    # So is the fingerprint of the data a run read or wrote.
    ("SELECT DISTINCT content FROM run_datasets WHERE content IS NOT NULL", False),
    # What a pipeline step was given from an upstream step: a manifest of that step's run files.
    (
        "SELECT DISTINCT json_extract(i.value, '$.manifest') FROM runs r,"
        " json_each(r.definition, '$.inputs') i WHERE r.type IN"
        " ('azureml.StepRun', 'azureml.ReusedStepRun')"
        " AND json_extract(i.value, '$.manifest') IS NOT NULL",
        True,
    ),
    # A published pipeline's step snapshots: it is frozen, and may be submitted any time later.
    (
        "SELECT DISTINCT json_extract(s.value, '$.snapshot.manifest') FROM published_pipelines p,"
        " json_each(p.definition, '$.steps') s",
        True,
    ),
    # A service's scoring snapshot, whatever its state: a replica restarted or an update rolled
    # back lays it out again, and a row that still exists can still be updated or restarted.
    (
        "SELECT DISTINCT json_extract(config, '$.snapshot') FROM services"
        " WHERE json_extract(config, '$.snapshot') IS NOT NULL",
        True,
    ),
]

#: gc keeps unreferenced blobs younger than this: a submit in progress may have stored them
#: before recording the run that references them. A young blob that is a manifest also keeps
#: every blob it lists, however old: a snapshot re-uses old blobs without touching them.
GC_GRACE_S = 3600.0
#: How long a gc waits for another one to end, in seconds.
GC_LOCK_WAIT_S = 60.0
_MANIFEST_START = b'[{"hash":"sha256:'


@dataclass
class FsckReport:
    """What :func:`fsck` found: catalog problems, blobs corrupted, blobs referenced but missing,
    manifests that cannot be read, and how many temp files are left over."""

    catalog_problems: list[str] = field(default_factory=list)
    blobs_checked: int = 0
    corrupted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    bad_manifests: list[str] = field(default_factory=list)
    temp_files: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing is wrong (left-over temp files are not a fault; gc removes them)."""
        return not (self.catalog_problems or self.corrupted or self.missing or self.bad_manifests)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``mlws fsck --json``), with ``ok``."""
        return {
            "ok": self.ok,
            "catalog_problems": self.catalog_problems,
            "blobs_checked": self.blobs_checked,
            "corrupted": self.corrupted,
            "missing": self.missing,
            "bad_manifests": self.bad_manifests,
            "temp_files": self.temp_files,
        }


def _referenced(ws: Workspace, report: FsckReport | None = None) -> Iterator[tuple[str, str]]:
    """Yield ``(hash, where)`` for every blob the catalog references, manifests expanded."""
    for sql, is_manifest in BLOB_ROOTS:
        for (digest,) in ws.catalog.query(sql):
            yield digest, sql
            if not is_manifest:
                continue
            try:
                entries = ws.blobs.read_manifest(digest)
            except (BlobNotFound, BlobCorrupted, UnsafePath) as e:  # read_bytes checks hashes
                if report is not None and digest not in report.bad_manifests:
                    report.bad_manifests.append(f"{digest}: {e}")
                continue
            for e in entries:
                yield e.hash, f"manifest {digest}"


def fsck(ws: Workspace, progress: Callable[[int, int], None] | None = None) -> FsckReport:
    """Check the catalog (SQLite integrity), re-hash every blob, and check that every manifest
    parses, holds only safe paths, and names blobs that exist. ``progress(done, total)`` is
    called after each blob is re-hashed (the long part). On a remote workspace the server
    checks its own catalog and blobs (``POST /maintenance/fsck``) and answers this report."""
    if ws.remote is not None:
        return ws.catalog.fsck()  # the server checks its own (RemoteCatalog.fsck)
    report = FsckReport()
    report.catalog_problems = ws.catalog.integrity_check()
    if report.catalog_problems:
        ws.catalog.mark_damaged(report.catalog_problems[0])
    else:
        ws.catalog.clear_damage_mark()  # sound again (e.g. restored from a backup)
    digests = list(ws.blobs.iter_hashes())  # listed first: a progress bar needs the total
    for digest in digests:
        report.blobs_checked += 1
        if not ws.blobs.verify(digest):
            report.corrupted.append(digest)
        if progress is not None:
            progress(report.blobs_checked, len(digests))
    seen: set[str] = set()
    try:
        for digest, _where in _referenced(ws, report):
            if digest in seen:
                continue
            seen.add(digest)
            if not ws.blobs.has(digest):
                report.missing.append(digest)
        report.catalog_problems += service_record_problems(ws)
    except MlwsError as e:  # a damaged catalog: report it, whatever else could not be read
        report.catalog_problems.append(str(e))
    report.temp_files = sum(1 for _ in ws.blobs.iter_temp_files())
    return report


def service_record_problems(ws: Workspace) -> list[str]:
    """What is wrong with the records of services deployed from clients (``service_records``):
    a ``models`` column that is not a JSON list, or that names a model version the catalog no
    longer has (the server refuses to delete a version a record names, so either is damage)."""
    problems = [
        f"service record {name!r}: its models are not a JSON list"
        for (name,) in ws.catalog.query(
            "SELECT name FROM service_records WHERE NOT json_valid(models)"
            " OR json_type(models) != 'array'"
        )
    ]
    rows = ws.catalog.query(
        "SELECT s.name, m.value FROM service_records s, json_each(s.models) m"
        " WHERE json_valid(s.models) AND json_type(s.models) = 'array' AND NOT EXISTS"
        " (SELECT 1 FROM models WHERE name || ':' || version = m.value)"
    )
    problems += [f"service record {name!r}: no model {model!r}" for name, model in rows]
    return problems


@dataclass
class GcReport:
    """What :func:`gc` removed (or, with ``dry_run``, would remove): blobs and bytes, unreferenced
    blobs kept as younger than the grace, and stale temp files."""

    removed: int = 0
    bytes_freed: int = 0
    kept_recent: int = 0
    temp_removed: int = 0
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``mlws gc --json``)."""
        return dict(self.__dict__)


@contextlib.contextmanager
def _one_gc(ws: Workspace) -> Iterator[None]:
    """Hold the workspace's gc lock, saying once on stderr when another gc has it.

    :raises LockTimeout: another gc held it for over :data:`GC_LOCK_WAIT_S` seconds.
    """
    from filelock import FileLock

    from .gclock import wait_for_lock

    lock = FileLock(str(ws.path / "locks" / "gc.lock"))
    wait_for_lock(
        lock.acquire,
        lambda: f"waiting for another gc{ws.blobs.gc_holder()}...",
        lambda: (
            f"another gc{ws.blobs.gc_holder()} has run in {ws.path} for over"
            f" {GC_LOCK_WAIT_S:.0f} s; try again when it has ended"
        ),
        GC_LOCK_WAIT_S,
    )
    try:
        yield
    finally:
        lock.release()


def gc(
    ws: Workspace,
    dry_run: bool = False,
    grace_s: float = GC_GRACE_S,
    progress: Callable[[int, int], None] | None = None,
) -> GcReport:
    """Remove blobs no catalog row or manifest references (and stale temp files), keeping any
    younger than ``grace_s``. Refuses to run when a manifest cannot be read, since its blobs
    would look unreferenced. ``progress(done, total)`` is called as old unreferenced blobs are
    removed. On a remote workspace the server collects its own store (owners;
    ``POST /maintenance/gc``), the grace checked here first."""
    if isinstance(grace_s, bool) or not isinstance(grace_s, (int, float)):
        raise UserErrorException(f"grace_s is a number of seconds, got {grace_s!r}")
    if not math.isfinite(grace_s) or grace_s < 0:
        # A negative grace puts the cutoff in the future: blobs a submit is writing right now
        # would look old and unreferenced. NaN compares false and would keep everything.
        raise UserErrorException(f"the gc grace is a number of seconds >= 0, got {grace_s!r}")
    if ws.remote is not None:
        return ws.catalog.gc(dry_run, grace_s)  # the server collects its own
    report = GcReport(dry_run=dry_run)
    # gc decides from the catalog which blobs are garbage: it must be this workspace's sound,
    # writable catalog (a lost, replaced or damaged one would make every blob look unused).
    ws.catalog.require_writer()
    mismatch = ws.blob_store_matches()
    if mismatch is not None:
        raise MlwsError(f"gc refused: {mismatch}; nothing was removed")
    problems = ws.catalog.quick_check()
    if problems:
        raise MlwsError(
            f"gc refused: the catalog is damaged ({problems[0]}); run 'mlws fsck'; nothing was removed"
        )
    # _one_gc(): one gc at a time; exclusive(): no snapshot re-using blobs meanwhile.
    with _one_gc(ws), ws.blobs.exclusive():
        check = FsckReport()
        referenced = {d for d, _ in _referenced(ws, check)}
        if check.bad_manifests:
            raise MlwsError(
                f"gc refused: {len(check.bad_manifests)} manifest(s) cannot be read "
                f"({check.bad_manifests[0]}); run 'mlws fsck' and repair first"
            )
        cutoff = time.time() - grace_s
        old: list[tuple[str, int]] = []
        for digest in ws.blobs.iter_hashes():
            if digest in referenced:
                continue
            p = ws.blobs.path(digest)
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            if st.st_mtime <= cutoff:
                old.append((digest, st.st_size))
                continue
            report.kept_recent += 1
            referenced.update(_young_manifest_entries(ws, digest))
        for i, (digest, size) in enumerate(old, 1):
            if progress is not None:
                progress(i, len(old))
            if digest in referenced:
                continue  # listed by a young manifest: a submit in progress uses it
            report.removed += 1
            report.bytes_freed += size
            if not dry_run:
                ws.blobs.remove(digest)
        for tmp in ws.blobs.iter_temp_files():
            try:
                if tmp.stat().st_mtime < cutoff:
                    report.temp_removed += 1
                    if not dry_run:
                        os.unlink(tmp)
            except FileNotFoundError:
                pass
    if not dry_run:
        # gc is the workspace's maintenance: refresh the planner statistics too (bounded, and
        # only while this process may write; see Catalog.optimize).
        ws.catalog.optimize(full=True)
    return report


def _young_manifest_entries(ws: Workspace, digest: str) -> list[str]:
    """The blobs listed by ``digest`` if it is a manifest, else nothing."""
    try:
        with open(ws.blobs.path(digest), "rb") as f:
            if f.read(len(_MANIFEST_START)) != _MANIFEST_START:
                return []
        return [e.hash for e in ws.blobs.read_manifest(digest)]
    except (OSError, UnsafePath, BlobNotFound, BlobCorrupted):
        return []
