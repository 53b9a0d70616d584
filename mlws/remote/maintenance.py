"""``fsck`` and ``gc`` of a remote workspace: the server checks (any role) or collects (owners)
its own catalog and blob store, and answers the report the local call returns."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..maintenance import FsckReport, GcReport
    from ..workspace import Workspace


def remote_fsck(ws: Workspace) -> FsckReport:
    """The server's :func:`mlws.maintenance.fsck` of its own workspace (within the client's
    request timeout: a store that takes the server longer to re-hash is checked on its machine)."""
    from ..maintenance import FsckReport

    answer = ws.remote.request("POST", "/maintenance/fsck", {})
    answer.pop("ok", None)  # a property of the report
    return FsckReport(**answer)


def remote_gc(ws: Workspace, *, dry_run: bool, grace_s: float) -> GcReport:
    """The server's :func:`mlws.maintenance.gc` of its own blob store (owners)."""
    from ..maintenance import GcReport

    body = {"dryRun": bool(dry_run), "graceSeconds": grace_s}
    answer = ws.remote.request("POST", "/maintenance/gc", body)
    return GcReport(**answer)
