"""``mlws serve``: a run created over HTTP is held by its client's lease; a run whose client is
gone ends Failed (``ClientLost``), checked in the background, on reads and after a restart.
Real server subprocesses with a one-second lease; every wait is on a condition with a deadline."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import invoke, one_error_line, start_server, wait_until, workspace_fingerprint

from mlws import Experiment, Workspace
from mlws.lifecycle import iso_utc

LEASE = "1.0"


def _token(ws_path: Path, role: str = "contributor") -> str:
    result = invoke("-w", str(ws_path), "serve", "token", "create", role, "--role", role)
    assert result.exit_code == 0, result.output
    return result.output.splitlines()[-1]


def _row(ws_path: Path, run_id: str) -> sqlite3.Row:
    # Read with plain sqlite3: the test's read must not reconcile anything itself.
    conn = sqlite3.connect(f"file:{ws_path / 'mlws.db'}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(
            "SELECT status, error, lease_seen, end_time FROM runs WHERE id = ?", (run_id,)
        ).fetchone()
    finally:
        conn.close()


def _serve(ws_path: Path, lease: str = LEASE):  # noqa: ANN202 - a helpers.Server
    return start_server("-m", "mlws.server", str(ws_path), "--port", "0", "--run-lease-s", lease)


@pytest.fixture
def ws_path(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    Workspace.create(path).close()
    return path


def test_a_client_that_stops_is_lost_one_that_heartbeats_or_writes_is_kept(ws_path: Path) -> None:
    tok, reader = _token(ws_path), _token(ws_path, "reader")
    server = _serve(ws_path)
    try:
        ids = {}
        for name in ("gone", "beats", "writes"):
            status, run = server.api("POST", "/experiments/lease/runs", tok, {"runId": name})
            assert status == 201, run
            ids[name] = run["runId"]
        # Created whole in one batch: the one left Running is held by the same lease.
        runs = [
            {"experiment": "lease", "runId": "batched"},
            {"experiment": "lease", "runId": "batched-done", "outcome": "complete"},
        ]
        status, answer = server.api("POST", "/runs/batch", tok, {"runs": runs})
        assert status == 201 and answer == {"created": 2}, answer
        created = time.time()
        status, beat = server.api("POST", "/runs/beats/heartbeat", tok)
        assert status == 200 and beat["status"] == "Running"
        assert beat["leaseSeconds"] == 1.0 and 0 < beat["heartbeatSeconds"] <= 0.25

        def speak() -> bool:
            # The living clients speak; the dead one is only read (reads never renew a lease).
            assert server.api("POST", "/runs/beats/heartbeat", tok)[0] == 200
            metric = {"metrics": [{"name": "loss", "value": 0.5}]}
            assert server.api("POST", "/runs/writes/metrics", tok, metric)[0] == 200
            assert server.api("GET", "/runs/gone/tags", reader)[0] == 200
            return True

        def gone_failed() -> bool:
            return speak() and _row(ws_path, "gone")["status"] == "Failed"

        wait_until(gone_failed, 10, "the silent client's run to be failed")
        wait_until(lambda: _row(ws_path, "batched")["status"] == "Failed", 5, "'batched' failed")
        assert json.loads(_row(ws_path, "batched")["error"])["code"] == "ClientLost"
        assert _row(ws_path, "batched-done")["status"] == "Completed"
        row = _row(ws_path, "gone")
        error = json.loads(row["error"])
        assert error["code"] == "ClientLost"
        assert f"last seen at {iso_utc(row['lease_seen'])}" in error["message"]
        assert "\n" not in error["message"]
        # The living clients' runs outlived the lease and are still Running.
        wait_until(lambda: speak() and time.time() > created + 2.5, 5, "well past the lease")
        for rid in ("beats", "writes"):
            assert _row(ws_path, rid)["status"] == "Running", rid

        # The lost client comes back: every write is a one-line 409 and changes nothing.
        before = workspace_fingerprint(ws_path)
        for method, path, body in [
            ("POST", "/runs/gone/heartbeat", None),
            ("POST", "/runs/gone/metrics", {"metrics": [{"name": "late", "value": 1}]}),
            ("PATCH", "/runs/gone/tags", {"tags": {"late": "1"}}),
            ("POST", "/runs/gone/properties", {"properties": {"late": "1"}}),
            ("POST", "/runs/gone/complete", None),
            ("POST", "/runs/gone/fail", {"error": {"message": "late"}}),
        ]:
            status, answer = server.api(method, path, tok, body)
            assert status == 409, (method, path, answer)
            assert answer["error"]["innerError"]["code"] == "RunStateError"
            message = answer["error"]["message"]
            assert "ClientLost" in message and "last seen at" in message and "\n" not in message
        assert workspace_fingerprint(ws_path) == before
        status, got = server.api("GET", "/runs/gone", reader)
        assert status == 200 and got["status"] == "Failed"

        # A run that ended is never touched by the sweep, and takes no heartbeat.
        assert server.api("POST", "/runs/beats/complete", tok)[1]["status"] == "Completed"
        status, answer = server.api("POST", "/runs/beats/heartbeat", tok)
        assert status == 409 and "has ended already (Completed)" in answer["error"]["message"]
        # Left alone now, "writes" is failed by the background sweep (nobody reads it), and
        # sweeps go on well past the ended run's lease: they leave it as it was.
        wait_until(
            lambda: _row(ws_path, "writes")["status"] == "Failed", 10, "the sweep to fail 'writes'"
        )
        beat_seen = _row(ws_path, "beats")["lease_seen"]
        wait_until(lambda: time.time() > beat_seen + 1.6, 5, "sweeps past the ended run's lease")
        assert _swept(server, tok)  # and one more, surely after that
        done = _row(ws_path, "beats")
        assert (done["status"], done["error"]) == ("Completed", None)
    finally:
        assert server.stop() == 0, server.lines


def test_runs_not_created_over_http_have_no_lease(ws_path: Path) -> None:
    tok, reader = _token(ws_path), _token(ws_path, "reader")
    with Workspace(ws_path) as ws:
        local = Experiment(ws, "local").start_logging()
        local_id = local.id
    server = _serve(ws_path)
    try:
        before = workspace_fingerprint(ws_path)
        status, answer = server.api("POST", f"/runs/{local_id}/heartbeat", tok)
        assert status == 409 and "was not created over HTTP" in answer["error"]["message"]
        assert server.api("POST", "/runs/nope_1/heartbeat", tok)[0] == 404
        assert server.api("POST", "/runs/nope_1/heartbeat", reader)[0] == 403
        assert workspace_fingerprint(ws_path) == before
        # The local run is not the server's to reconcile, however long it is quiet.
        assert _swept(server, tok)
        assert _row(ws_path, local_id)["status"] == "Running"
        assert _row(ws_path, local_id)["lease_seen"] is None
    finally:
        assert server.stop() == 0, server.lines


def _swept(server, tok: str) -> bool:  # noqa: ANN001 - a helpers.Server
    # A run created now and left alone is failed by a sweep after the lease: proof one ran
    # (waited for through the listing, which reconciles nothing itself).
    status, run = server.api("POST", "/experiments/probe/runs", tok, {})
    assert status == 201
    rid = run["runId"]
    wait_until(
        lambda: server.api("GET", "/runs?status=Failed&experiment=probe", tok)[1]["value"],
        10,
        "the probe run to be swept",
    )
    return server.api("GET", f"/runs/{rid}", tok)[1]["status"] == "Failed"


def test_a_restart_gives_every_client_a_whole_lease_to_come_back(ws_path: Path) -> None:
    tok = _token(ws_path)
    server = _serve(ws_path, "3.0")
    try:
        for rid in ("alive", "dead"):
            status, run = server.api("POST", "/experiments/restart/runs", tok, {"runId": rid})
            assert status == 201, run
    finally:
        assert server.stop() == 0, server.lines
    seen = _row(ws_path, "dead")["lease_seen"]
    assert seen is not None and _row(ws_path, "dead")["status"] == "Running"
    # The server stays down longer than the lease: its clients could not reach it.
    wait_until(lambda: time.time() > seen + 3.5, 10, "the outage to outlast the lease")
    server = _serve(ws_path, "3.0")
    try:
        # Back: nobody is judged before the server has listened for a whole lease.
        assert server.api("GET", "/runs/dead", tok)[1]["status"] == "Running"
        assert server.api("POST", "/runs/alive/heartbeat", tok)[0] == 200

        # The client that died meanwhile never comes back: failed one lease after the restart,
        # naming the time it was last heard (before the outage); the live one goes on.
        def dead_failed() -> bool:  # the live client heartbeats as it waits
            assert server.api("POST", "/runs/alive/heartbeat", tok)[0] == 200
            return server.api("GET", "/runs/dead", tok)[1]["status"] == "Failed"

        wait_until(dead_failed, 10, "the dead client's run to be failed")
        error = json.loads(_row(ws_path, "dead")["error"])
        assert error["code"] == "ClientLost" and iso_utc(seen) in error["message"]
        assert _row(ws_path, "dead")["lease_seen"] == seen
        assert server.api("POST", "/runs/dead/heartbeat", tok)[0] == 409
        assert server.api("POST", "/runs/alive/heartbeat", tok)[0] == 200
        assert server.api("GET", "/runs/alive", tok)[1]["status"] == "Running"
    finally:
        assert server.stop() == 0, server.lines


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "soon"])
def test_a_bad_lease_is_refused_in_one_line(ws_path: Path, bad: str) -> None:
    before = workspace_fingerprint(ws_path)
    result = invoke("-w", str(ws_path), "serve", "--port", "0", "--run-lease-s", bad)
    if bad == "soon":  # not a number: click's usage error
        assert result.exit_code == 2 and "not a valid float" in result.output
    else:
        assert "run lease" in one_error_line(result)
    proc = subprocess.run(
        [sys.executable, "-m", "mlws.server", str(ws_path), "--port", "0"],
        env={**os.environ, "MLWS_RUN_LEASE_S": bad},
        capture_output=True,
        text=True,
        timeout=30,
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and "run lease" in lines[0], proc.stderr
    assert workspace_fingerprint(ws_path) == before


def test_reads_change_nothing_and_a_heartbeat_only_the_lease(ws_path: Path) -> None:
    tok, reader = _token(ws_path), _token(ws_path, "reader")
    server = _serve(ws_path, "30")
    try:
        assert server.api("POST", "/experiments/quiet/runs", tok, {"runId": "q"})[0] == 201
        seen = _row(ws_path, "q")["lease_seen"]
        before = workspace_fingerprint(ws_path)
        for path in ("/runs/q", "/runs/q/tags", "/runs/q/metrics", "/runs?experiment=quiet"):
            assert server.api("GET", path, reader)[0] == 200, path
        assert workspace_fingerprint(ws_path) == before
        assert _row(ws_path, "q")["lease_seen"] == seen
        # Heard from again once the renewal's short throttle has passed: only the lease moves.
        wait_until(lambda: time.time() > seen + 1.1, 5, "past the renewal throttle")
        status, beat = server.api("POST", "/runs/q/heartbeat", tok)
        assert status == 200 and (beat["leaseSeconds"], beat["heartbeatSeconds"]) == (30, 7.5)
        row = _row(ws_path, "q")
        assert row["lease_seen"] > seen and (row["status"], row["error"]) == ("Running", None)
    finally:
        assert server.stop() == 0, server.lines
