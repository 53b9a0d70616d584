"""``POST /runs/batch``: many whole runs in one request and one transaction.

A client that starts many small runs (``exp.start_logging()`` in a loop, each with a few
properties, values and tags, then ``complete()``) sends each run once, whole — its creation,
properties, tags, values and (when it ended already) its outcome — together with the other runs
it started meanwhile. Measured on 2 loaded CPUs: 1,000 such runs cost ~6 s as 3 requests each
(the framework around each request and a round trip outweigh the writes); as one request per
client tick the same runs are a few thousand SQLite statements in one transaction.

The batch is all or nothing: every run is checked first, then all are written in one
``BEGIN IMMEDIATE`` transaction, so a client that dies mid-request leaves none of them. With
``batchId`` it is applied at most once (a retry after a lost answer changes nothing).
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..errors import UserErrorException
from .api import REQUEST_ID_SCHEMA, Call, Endpoint, body_field, request_id
from .runs import MAX_BATCH, check_new_run, checked_outcome, checked_series

#: The most runs one batch may carry.
MAX_RUNS = 1000

#: The fields of one run of a batch.
_RUN_FIELDS = {
    "experiment",
    "runId",
    "displayName",
    "tags",
    "properties",
    "series",
    "outcome",
    "error",
    "startedSecondsAgo",
    "endedSecondsAgo",
}
#: The oldest start a run of a batch may name (a run delivered from a client's spool).
MAX_AGE_S = 30 * 24 * 3600.0


def _age(item: dict[str, Any], key: str, i: int, most: float) -> float:
    """``item[key]``: seconds before this request (the client's own clock measures how long
    ago, so the two machines' clocks need not agree), 0 when absent."""
    value = item.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= most:
        raise UserErrorException(f"runs[{i}].{key} must be a number of seconds, 0 to {most:.0f}")
    return float(value)


def _check(call: Call, items: list[Any]) -> list[dict[str, Any]]:
    """Each run of the batch checked (nothing written yet)."""
    out = []
    ids: set[str] = set()
    total = 0
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise UserErrorException(f"runs[{i}] must be an object, got {type(item).__name__}")
        unknown = set(item) - _RUN_FIELDS
        if unknown:
            raise UserErrorException(f"unknown field(s) {', '.join(sorted(unknown))} in runs[{i}]")
        if not isinstance(item.get("runId"), str):
            raise UserErrorException(f"runs[{i}].runId is required: the client names its runs")
        fields = {k: item[k] for k in ("runId", "displayName", "tags", "properties") if k in item}
        req = check_new_run(call.ws, item.get("experiment"), fields)
        if req["run_id"] in ids:
            raise UserErrorException(f"run {req['run_id']!r} is twice in the batch")
        ids.add(req["run_id"])
        series = checked_series(item) if "series" in item else []
        total += sum(len(s[2]) for s in series)
        if total > MAX_BATCH:
            raise UserErrorException(f"at most {MAX_BATCH} metric values per batch, got more")
        req["series"] = series
        req["status"], req["error"] = checked_outcome(item)
        req["started"] = _age(item, "startedSecondsAgo", i, MAX_AGE_S)
        req["ended"] = _age(item, "endedSecondsAgo", i, req["started"])
        out.append(req)
    return out


def create_runs(call: Call) -> dict[str, Any]:
    """``POST /runs/batch``: create interactive runs, each with its properties, tags, values
    and optionally its end (``outcome``), all in one transaction; recorded as made by the
    token's user. A run not ended is held by its client's lease from now on."""
    from ..experiments import insert_experiment
    from ..lifecycle import INTERACTIVE, insert_run_row
    from ..metrics import write_series

    body = call.body
    batch_id = request_id(body, "batchId")
    unknown = set(body) - {"batchId", "runs"}
    if unknown:
        raise UserErrorException(f"unknown field(s) {', '.join(sorted(unknown))} in the body")
    items = body_field(body, "runs", list)
    if not items:
        raise UserErrorException('the body needs "runs": [{"experiment", "runId", ...}, ...]')
    if len(items) > MAX_RUNS:
        raise UserErrorException(f"at most {MAX_RUNS} runs per batch, got {len(items)}")
    first = items[0].get("runId") if isinstance(items[0], dict) else None
    if batch_id is not None and _applied(call, first, batch_id):
        return {"created": 0, "duplicate": True}  # the batch is whole: its first run says it
    runs = _check(call, items)
    now = time.time()
    user = call.user.name
    with call.ws.catalog.write() as conn:
        for name in {r["experiment"] for r in runs}:
            insert_experiment(conn, name)
        for r in runs:
            # Its times as the client saw them: a run sent whole after it ended keeps its
            # duration and its place among the runs created one by one.
            started = now - r["started"]
            fields: dict[str, Any] = {
                "submitter_user": user,
                "lease_seen": now,
                "created": started,
                "start_time": started,
            }
            if r["status"] is not None:
                fields.update(status=r["status"], end_time=now - r["ended"])
                if r["error"]:
                    fields["error"] = json.dumps(r["error"])
            row = insert_run_row(
                conn,
                r["experiment"],
                run_type=INTERACTIVE,
                status="Running",
                run_id=r["run_id"],
                display_name=r["display_name"],
                fields=fields,
                tags=r["tags"],
                properties=r["properties"],
            )
            # Recorded for every run (with no values too): a retried batch is recognised.
            write_series(conn, row["seq"], r["series"], now, batch_id)
    return {"created": len(runs)}


def _applied(call: Call, run_id: Any, batch_id: str) -> bool:
    """Whether run ``run_id`` exists and ``batch_id`` was applied to it (a retried batch)."""
    return isinstance(run_id, str) and bool(
        call.ws.catalog.one(
            "SELECT 1 FROM metric_batches b JOIN runs r ON r.seq = b.run_seq"
            " WHERE r.id = ? AND b.batch_id = ?",
            (run_id, batch_id),
        )
    )


_KV = {"type": "object", "additionalProperties": {"type": "string", "nullable": True}}

ENDPOINTS = [
    Endpoint(
        "POST",
        "/runs/batch",
        "contributor",
        "Create many interactive runs whole (properties, tags, values, end) in one transaction",
        create_runs,
        body={
            "type": "object",
            "required": ["runs"],
            "properties": {
                "batchId": {
                    **REQUEST_ID_SCHEMA,
                    "description": "applied at most once: sent again, answers duplicate true",
                },
                "runs": {
                    "type": "array",
                    "maxItems": MAX_RUNS,
                    "items": {
                        "type": "object",
                        "required": ["experiment", "runId"],
                        "properties": {
                            "experiment": {"type": "string"},
                            "runId": {"type": "string"},
                            "displayName": {"type": "string"},
                            "tags": _KV,
                            "properties": _KV,
                            "series": {
                                "type": "array",
                                "description": "values as in POST /runs/{run_id}/metrics",
                            },
                            "outcome": {"type": "string", "enum": ["complete", "fail"]},
                            "startedSecondsAgo": {
                                "type": "number",
                                "description": "how long before this request the run started"
                                " (the client's clock; default 0)",
                            },
                            "endedSecondsAgo": {
                                "type": "number",
                                "description": "with outcome: how long before this request"
                                " it ended",
                            },
                            "error": {
                                "type": "object",
                                "properties": {
                                    "code": {"type": "string"},
                                    "message": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
        },
        status=201,
        tag="runs",
        inline=True,
    ),
]
