"""REST routes of workspace upkeep: ``fsck`` (any role: it only reads, besides marking a damaged
catalog as the local call does) and ``gc`` (owners: it removes blobs), run by the server over
its own catalog and blob store and answered as the library's reports."""

from __future__ import annotations

from typing import Any

from ..errors import UserErrorException
from .api import Call, Endpoint, body_field


def fsck(call: Call) -> dict[str, Any]:
    """``POST /maintenance/fsck``: the report of :func:`mlws.maintenance.fsck`."""
    from ..maintenance import fsck as check

    if call.body:
        raise UserErrorException("fsck takes no options: send an empty body")
    return check(call.ws).as_dict()


def gc(call: Call) -> dict[str, Any]:
    """``POST /maintenance/gc``: ``dryRun``, ``graceSeconds``; the report of
    :func:`mlws.maintenance.gc`."""
    from ..maintenance import GC_GRACE_S
    from ..maintenance import gc as collect

    body = call.body or {}
    unknown = set(body) - {"dryRun", "graceSeconds"}
    if unknown:
        raise UserErrorException(f"unknown field(s) {', '.join(sorted(unknown))} in the body")
    dry_run = body_field(body, "dryRun", bool, False)
    grace = body_field(body, "graceSeconds", (int, float), GC_GRACE_S)
    return collect(call.ws, dry_run=dry_run, grace_s=grace).as_dict()


ENDPOINTS = [
    Endpoint(
        "POST",
        "/maintenance/fsck",
        "reader",
        "Check the catalog, re-hash every blob, check every manifest (the fsck report)",
        fsck,
        body={"type": "object", "properties": {}},
        tag="maintenance",
    ),
    Endpoint(
        "POST",
        "/maintenance/gc",
        "owner",
        "Remove blobs nothing references, older than the grace (the gc report)",
        gc,
        body={
            "type": "object",
            "properties": {
                "dryRun": {"type": "boolean"},
                "graceSeconds": {"type": "number", "minimum": 0},
            },
        },
        tag="maintenance",
    ),
]
