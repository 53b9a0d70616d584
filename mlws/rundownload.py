"""Taking a run's files out of the workspace: all of them, only ``outputs/``, or its source
snapshot, into a folder or one ``.zip`` file (what ``mlws run download`` does).

Each file is checked against its hash as it is copied; files already there are refused unless
``overwrite``; nothing is written through a symlink that leads out of the target.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .blobs import copy_file, plan_writes
from .errors import UserErrorException

if TYPE_CHECKING:
    from .runs import Run

#: What :func:`download_run` takes: every run file, only ``outputs/``, or the source snapshot.
WHAT = (None, "outputs", "snapshot")


class Downloaded(NamedTuple):
    """What :func:`download_run` wrote: how many files, and where (a folder or a .zip)."""

    count: int
    path: Path


def default_target(run_id: str, what: str | None = None) -> Path:
    """Where a download goes when no target is given: ``./<run id>`` (``-snapshot`` added for
    the snapshot), as ``restore_snapshot`` does."""
    return Path(f"{run_id}-snapshot" if what == "snapshot" else run_id)


def download_run(
    run: Run,
    target: str | os.PathLike[str] | None = None,
    *,
    what: str | None = None,
    as_zip: bool = False,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Downloaded:
    """Download ``run``'s files (``what=None``), its ``outputs/`` or its source snapshot into
    folder ``target`` (default: :func:`default_target`), or with ``as_zip`` into the file
    ``<target>.zip``, made whole in a temporary folder first so a failure leaves no half archive.
    ``progress(done, total)`` is called as run files are copied (not for the snapshot).

    :raises UserErrorException: ``what`` is unknown, the run has no snapshot, or a file is in
        the way and not ``overwrite``.
    :raises UnsafePath: a file would be written outside the target.
    """
    if what not in WHAT:
        raise UserErrorException(
            f"what={what!r}: expected None (every file), 'outputs' or 'snapshot'"
        )
    dest = Path(target) if target is not None else default_target(run.id, what)

    def fetch(into: Path, replace: bool) -> int:
        if what == "snapshot":
            run.restore_snapshot(into, overwrite=replace)
            return sum(1 for p in into.rglob("*") if p.is_file())
        prefix = "outputs" if what == "outputs" else None
        files = run.download_files(
            prefix, into, overwrite=replace, _validate_checksum=True, progress=progress
        )
        return len(files)

    if not as_zip:
        return Downloaded(fetch(dest, overwrite), dest)
    whole = Path(os.path.abspath(dest))  # "." names the current folder: its name, not ""
    archive = whole.with_name(whole.name + ".zip")
    # Checked before anything is fetched: an archive there is refused unless overwrite.
    [archive] = plan_writes(
        archive.parent, [archive.name], overwrite=overwrite, flag="overwrite=True (--overwrite)"
    )
    staging = Path(tempfile.mkdtemp(prefix=".mlws-download-"))
    try:
        count = fetch(staging / "files", False)
        made = shutil.make_archive(str(staging / "archive"), "zip", staging / "files")
        copy_file(made, archive)  # a link at the archive's place is replaced, never written through
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Downloaded(count, archive)
