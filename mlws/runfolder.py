"""A run's working folder on the machine that runs it, and how its files are kept.

``run_folder`` is where a run works (``~/.cache/mlws/runs/<workspace folder key>/<run id>``:
per user, per workspace folder, so a copy of the workspace never shares it);
``collect_run_files`` stores its ``outputs/`` and ``logs/`` as run files when it ends, and
``remove_run_folder`` removes it (read-only input copies included). Used by the run supervisor,
by whoever abandons a run whose supervisor died, and by the ``ssh`` agent for its folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .workspace import Workspace


def run_folder(ws: Workspace, run_id: str) -> Path:
    """Where a run of ``ws`` works on this machine: ``~/.cache/mlws/runs/<key>/<run id>``."""
    from .dirs import user_cache_dir

    return user_cache_dir() / "runs" / ws.folder_key / run_id


def collect_run_files(
    ws: Workspace, run_seq: int, definition: dict[str, Any], workdir: Path
) -> None:
    """Store ``outputs/`` (unless output collection is off) and ``logs/`` of a run's working
    folder as its run files (storing the same file again replaces it).

    The run has ended: what cannot be stored (links out of the folder, names no manifest
    accepts, unreadable files) is skipped and said in the run's log, not refused."""
    from .errors import UserErrorException
    from .runs import add_run_files

    entries = []
    with ws.blobs.batch():
        for sub in ("outputs", "logs"):
            if sub == "outputs" and not definition.get("outputCollection", True):
                continue
            if not (workdir / sub).is_dir():
                continue
            skipped: list[str] = []
            try:
                entries += ws.blobs.put_folder(
                    workdir / sub, sub, root_may_link=False, skipped=skipped, lenient=True
                )
            except UserErrorException as e:
                skipped.append(f"{sub}/ not stored: {e}")
            if skipped:
                # Outputs first, so the warning is in the driver log stored next.
                # O_NOFOLLOW: the script may have left a link in place of its log.
                try:
                    (workdir / "logs").mkdir(exist_ok=True)
                    fd = os.open(
                        workdir / "logs" / "driver.log",
                        os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW,
                        0o644,
                    )
                except OSError:
                    continue  # no log to tell: the files are skipped all the same
                with os.fdopen(fd, "a") as log:
                    log.writelines(f"Warning: {w}\n" for w in skipped)
    if definition.get("distributed"):  # every rank's log under v1's name too
        from .distributed import v1_rank_logs

        entries += v1_rank_logs(entries)
    add_run_files(ws, run_seq, entries)


def remove_run_folder(folder: Path) -> None:
    """Remove a run's working folder, read-only input copies included."""
    from . import readonly
    from .rundata import DATA_DIR

    readonly.restore_write_bits(folder / DATA_DIR)
    shutil.rmtree(folder, ignore_errors=True)
