"""``GET /runs``: the run listing, filtered and sorted by the server over its own catalog
(:func:`mlws.experiments.query_runs`, every filter and order a local listing has), one page at
a time: by creation time a keyset token (a run created meanwhile never shifts a page), in any
other order a position."""

from __future__ import annotations

from typing import Any

from ..errors import UserErrorException
from .api import Call, decode_continuation, encode_continuation, query_int, query_value

#: The most runs one page holds.
MAX_PAGE = 1000

#: The query parameters of ``GET /runs``, as the OpenAPI document lists them.
LIST_QUERY = (
    ("experiment", "only this experiment's runs"),
    ("status", "only runs in this status"),
    ("tag", "key or key=value; repeat for several"),
    ("property", "key or key=value; repeat for several"),
    ("runType", "only runs of this type"),
    ("parent", "only the children of this run"),
    ("text", "only runs whose id or display name contains it"),
    ("includeChildren", "true: child runs too"),
    ("order", "desc (default) or asc"),
    (
        "sortBy",
        "created (default), start_time, end_time, duration, number, status, id,"
        " display_name, target, submitter_user, metric:NAME, tag:KEY or property:KEY",
    ),
    ("offset", "skip this many runs first"),
    ("afterRun", "only runs after this one (by creation time, in the order asked)"),
    ("limit", f"runs per page, 1-{MAX_PAGE} (default 100)"),
    ("continuationToken", "the previous page's continuationToken"),
    ("latestMetrics", "true: each run's latest scalar metric values too"),
)


def _key_filter(call: Call, name: str) -> dict[str, str | None]:
    """Repeated query parameter ``name`` (``key`` or ``key=value``) as ``{key: value or None}``."""
    found: dict[str, str | None] = {}
    for t in call.query.get(name, []):
        key, eq, value = t.partition("=")
        if not key:
            raise UserErrorException(f"a {name} filter is 'key' or 'key=value', got {t!r}")
        found[key] = value if eq else None
    return found


def list_runs(call: Call) -> dict[str, Any]:
    """``GET /runs``: filtered, newest first (``order=asc``: oldest first; ``sortBy``: any order
    the local listing has), one page at a time."""
    from ..experiments import query_runs
    from ..lifecycle import ACTIVE, TERMINAL
    from .runs import run_summary

    status = query_value(call, "status")
    if status is not None and status not in (*ACTIVE, *TERMINAL):
        raise UserErrorException(
            f"unknown status {status!r}: use one of {', '.join((*ACTIVE, *TERMINAL))}"
        )
    order = query_value(call, "order", "desc")
    if order not in ("asc", "desc"):
        raise UserErrorException(f"order must be 'asc' or 'desc', got {order!r}")
    tags = _key_filter(call, "tag")
    properties = _key_filter(call, "property")
    sort_by = query_value(call, "sortBy") or "created"
    limit = query_int(call, "limit", 100, 1, MAX_PAGE)
    offset = query_int(call, "offset", 0, 0, 2**62)
    token = query_value(call, "continuationToken")
    after = None
    by_created = sort_by == "created"
    after_run = query_value(call, "afterRun")
    if after_run is not None:
        if not by_created or token is not None:
            raise UserErrorException("afterRun pages runs sorted by creation time, alone")
        row = call.ws.catalog.one("SELECT created, seq FROM runs WHERE id = ?", (after_run,))
        if row is None:
            raise UserErrorException(f"afterRun: no run {after_run!r}")
        after = (float(row["created"]), int(row["seq"]))
    if token is not None and by_created:
        created, seq = decode_continuation(token, 2)
        if not isinstance(created, (int, float)) or not isinstance(seq, int):
            raise UserErrorException(
                "invalid continuation token: pass back the continuationToken of a page"
            )
        after = (float(created), seq)
    elif token is not None:
        # Any other order pages by position (a run created meanwhile may shift a page).
        (offset,) = decode_continuation(token, 1)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise UserErrorException(
                "invalid continuation token: pass back the continuationToken of a page"
            )
    parent = query_value(call, "parent")
    rows = query_runs(
        call.ws,
        experiment=query_value(call, "experiment"),
        tags=tags or None,
        properties=properties or None,
        run_type=query_value(call, "runType"),
        status=status,
        include_children=query_value(call, "includeChildren", "false") == "true",
        parent=parent,
        sort_by=sort_by,
        ascending=order == "asc",
        limit=limit + 1,
        after=after,
        offset=offset,
        text=query_value(call, "text"),
    )
    more = len(rows) > limit
    rows = rows[:limit]
    page = [run_summary(r) for r in rows]
    if query_value(call, "latestMetrics", "false") == "true":
        # What a listing shows beside each run, from metric_summary (never the metrics table).
        from ..metrics import latest_scalars

        latest = latest_scalars(call.ws.catalog, {r["seq"]: r["id"] for r in rows})
        for summary in page:
            summary["latestMetrics"] = latest[summary["runId"]]
    following = None
    if more:
        following = encode_continuation(
            [rows[-1]["created"], rows[-1]["seq"]] if by_created else [offset + limit]
        )
    return {"value": page, "continuationToken": following}
