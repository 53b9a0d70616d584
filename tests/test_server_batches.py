"""``mlws serve``: metric batches with a ``batchId`` are applied at most once per run — sent
twice, sent from two threads at once, re-sent after the server was killed between the request
and its answer. Real server subprocesses on free loopback ports, stopped by pid."""

from __future__ import annotations

import http.client
import json
import os
import signal
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

import pytest
from helpers import invoke, server_token, start_server, workspace_fingerprint

from mlws import Workspace
from mlws.metrics import prune_batch_ids


def _metric_state(ws_path: Path, run_id: str) -> tuple[list[dict], list[dict]]:
    """The run's metric rows and metric_summary rows, read with plain sqlite3 (changes nothing)."""
    conn = sqlite3.connect(f"file:{ws_path / 'mlws.db'}?mode=ro", uri=True)
    conn.row_factory = lambda cur, row: {d[0]: v for d, v in zip(cur.description, row, strict=True)}
    try:
        seq = conn.execute("SELECT seq FROM runs WHERE id = ?", (run_id,)).fetchone()["seq"]
        rows = conn.execute(
            "SELECT name, step, kind, value, data FROM metrics WHERE run_seq = ? ORDER BY 1, 2",
            (seq,),
        ).fetchall()
        summary = conn.execute(
            "SELECT * FROM metric_summary WHERE run_seq = ? ORDER BY name", (seq,)
        ).fetchall()
    finally:
        conn.close()
    return rows, summary


@pytest.fixture
def served(tmp_path: Path):  # noqa: ANN201 - (server, ws path, token)
    ws_path = tmp_path / "ws"
    Workspace.create(ws_path, _remember_name=False).close()
    token = server_token(ws_path, "contributor")
    server = start_server("-m", "mlws.server", str(ws_path), "--port", "0")
    try:
        yield server, ws_path, token
    finally:
        assert server.stop() == 0, server.lines


def _new_run(server, token: str, experiment: str = "batches") -> str:  # noqa: ANN001
    status, run = server.api("POST", f"/experiments/{experiment}/runs", token, {})
    assert status == 201, run
    return run["runId"]


def test_the_same_batch_twice_is_applied_once(served) -> None:  # noqa: ANN001
    server, ws_path, tok = served
    rid = _new_run(server, tok)
    batch = {"batchId": "b-1", "metrics": [{"name": "loss", "value": i / 10} for i in range(50)]}
    assert server.api("POST", f"/runs/{rid}/metrics", tok, batch) == (200, {"written": 50})
    after_first = _metric_state(ws_path, rid)
    assert len(after_first[0]) == 50 and after_first[1][0]["count"] == 50
    # Steps are given by the server: applying it again would have added steps 50..99.
    assert server.api("POST", f"/runs/{rid}/metrics", tok, batch) == (
        200,
        {"written": 0, "duplicate": True},
    )
    assert _metric_state(ws_path, rid) == after_first
    # Another id is another batch; the same id in another run is that run's own.
    assert server.api("POST", f"/runs/{rid}/metrics", tok, {**batch, "batchId": "b-2"})[1] == {
        "written": 50
    }
    other = _new_run(server, tok)
    assert server.api("POST", f"/runs/{other}/metrics", tok, batch)[1] == {"written": 50}
    # Without a batchId nothing is remembered (a batch is applied each time, as before).
    plain = {"metrics": [{"name": "acc", "value": 1}]}
    for _ in range(2):
        assert server.api("POST", f"/runs/{rid}/metrics", tok, plain)[1] == {"written": 1}
    with Workspace(ws_path) as ws:
        got = ws.get_run(rid).get_metrics()
    assert got["loss"] == [i / 10 for i in range(50)] * 2 and got["acc"] == [1, 1]


def test_bad_batch_ids_are_refused_and_change_nothing(served) -> None:  # noqa: ANN001
    server, ws_path, tok = served
    rid = _new_run(server, tok)
    one = [{"name": "m", "value": 1}]
    before = workspace_fingerprint(ws_path)
    for bad in ("x" * 65, "", "a b", "../x", "é", 7, ["b"], {"id": 1}):
        status, answer = server.api(
            "POST", f"/runs/{rid}/metrics", tok, {"batchId": bad, "metrics": one}
        )
        assert status == 400, (bad, answer)
        assert "\n" not in answer["error"]["message"]
        if isinstance(bad, str) and bad:
            assert "batchId" in answer["error"]["message"]
    status, answer = server.api(
        "POST", f"/runs/{rid}/metrics", tok, {"batchid": "x", "metrics": one}
    )
    assert status == 400 and "unknown field" in answer["error"]["message"]
    # A batch refused for a bad value records no id either: sent again, mended, it is applied.
    status, _ = server.api(
        "POST", f"/runs/{rid}/metrics", tok, {"batchId": "b", "metrics": [{"name": ""}]}
    )
    assert status == 400
    assert workspace_fingerprint(ws_path) == before
    assert server.api("POST", f"/runs/{rid}/metrics", tok, {"batchId": "x" * 64, "metrics": one})[
        1
    ] == {"written": 1}
    assert server.api("POST", f"/runs/{rid}/metrics", tok, {"batchId": "b", "metrics": one})[1] == {
        "written": 1
    }


def test_the_same_batch_from_two_threads_at_once_is_applied_once(served) -> None:  # noqa: ANN001
    server, ws_path, tok = served
    rid = _new_run(server, tok)
    answers: list[tuple[int, dict]] = []
    for round_ in range(10):
        batch = {
            "batchId": f"race-{round_}",
            "metrics": [{"name": "m", "value": round_ * 1000 + i} for i in range(1000)],
        }
        gate = threading.Barrier(2)

        def send(batch: dict = batch, gate: threading.Barrier = gate) -> None:
            gate.wait(10)
            answers.append(server.api("POST", f"/runs/{rid}/metrics", tok, batch))

        threads = [threading.Thread(target=send) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
            assert not t.is_alive()
    assert sorted(json.dumps(a, sort_keys=True) for a in answers) == sorted(
        [json.dumps((200, {"written": 1000}))] * 10
        + [json.dumps((200, {"duplicate": True, "written": 0}))] * 10
    )
    rows, summary = _metric_state(ws_path, rid)
    assert [r["value"] for r in rows] == list(range(10_000))
    assert [r["step"] for r in rows] == list(range(10_000))
    assert summary[0]["count"] == 10_000 and summary[0]["last_value"] == 9999


def _send_without_answer(url: str, token: str, path: str, body: dict) -> http.client.HTTPConnection:
    """Send a request and return before reading its answer (the connection stays open)."""
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
    conn.request(
        "POST",
        "/api/v1" + path,
        json.dumps(body).encode(),
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    return conn


def test_a_batch_resent_after_kill_9_between_request_and_answer_is_applied_once(
    tmp_path: Path,
) -> None:
    ws_path = tmp_path / "ws"
    Workspace.create(ws_path, _remember_name=False).close()
    tok = server_token(ws_path, "contributor")
    server = start_server("-m", "mlws.server", str(ws_path), "--port", "0", "--run-lease-s", "600")
    rid = _new_run(server, tok)
    batches = [
        {
            "batchId": f"k-{b}",
            "metrics": [{"name": "m", "value": b * 2000 + i} for i in range(2000)],
        }
        for b in range(8)
    ]
    try:
        # The server dies with requests in flight: some were committed, some not; no answer
        # was read for any of them, so the client knows nothing of which.
        conns = [_send_without_answer(server.url, tok, f"/runs/{rid}/metrics", b) for b in batches]
        time.sleep(0.05 * (os.getpid() % 4))  # a varying moment, not a correctness wait
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(10)
        for c in conns:
            c.close()
        applied_before = _metric_state(ws_path, rid)[0]
        assert len(applied_before) % 2000 == 0  # whole batches or nothing
        server = start_server(
            "-m", "mlws.server", str(ws_path), "--port", "0", "--run-lease-s", "600"
        )
        # The client re-sends every batch it holds no answer for.
        answers = [server.api("POST", f"/runs/{rid}/metrics", tok, b) for b in batches]
        assert all(status == 200 for status, _ in answers), answers
        dup = sum(1 for _, a in answers if a.get("duplicate"))
        assert dup == len(applied_before) // 2000
        # ... and once more, as a client whose retry also lost its answer would.
        assert all(
            server.api("POST", f"/runs/{rid}/metrics", tok, b)[1]
            == {"written": 0, "duplicate": True}
            for b in batches
        )
    finally:
        assert server.stop() == 0, server.lines
    rows, summary = _metric_state(ws_path, rid)
    assert sorted(r["value"] for r in rows) == list(range(16_000))
    assert summary[0]["count"] == 16_000
    result = invoke("-w", str(ws_path), "fsck")
    assert result.exit_code == 0, result.output


def test_batch_ids_of_ended_runs_are_pruned_and_go_with_their_run(tmp_path: Path) -> None:
    from mlws import Experiment
    from mlws.lifecycle import delete_run
    from mlws.metrics import write_values

    with Workspace.create(tmp_path / "ws") as ws:
        exp = Experiment(ws, "p")
        ended, open_ = exp.start_logging(), exp.start_logging()
        for run in (ended, open_):
            assert write_values(ws.catalog, run.seq, [("m", "scalar", 1, None)], "b1") == 1
            assert write_values(ws.catalog, run.seq, [("m", "scalar", 1, None)], "b1") is None
        ended.complete()

        def ids() -> list[tuple]:
            return [
                tuple(r)
                for r in ws.catalog.query("SELECT run_seq, batch_id FROM metric_batches ORDER BY 1")
            ]

        assert prune_batch_ids(ws.catalog, time.time() - 3600) == 0  # too recent
        assert len(ids()) == 2
        assert prune_batch_ids(ws.catalog, time.time() + 1) == 1  # the ended run's only
        assert ids() == [(open_.seq, "b1")]
        open_.complete()
        delete_run(ws, open_.id)
        assert ids() == []


def test_series_write_what_metrics_write_and_tags_and_the_end_ride_along(tmp_path: Path) -> None:
    """The compact ``series`` form stores the same rows, steps and summary as one object per
    value; tags and the outcome commit with the values; a bad batch changes nothing. The
    handler is called in-process (no server start)."""
    from mlws.errors import RunStateError, UserErrorException
    from mlws.server.api import Call
    from mlws.server.runs import create_run, log_metrics

    class User:
        name = "u"

    ws_path = tmp_path / "ws"
    with Workspace.create(ws_path, _remember_name=False) as ws:

        def call(path: dict, body: dict) -> dict:
            return log_metrics(Call(ws, User(), path, {}, body, 60.0))  # type: ignore[arg-type]

        ids = []
        for _ in range(2):
            made = create_run(Call(ws, User(), {"experiment": "s"}, {}, {}, 60.0))  # type: ignore[arg-type]
            ids.append(made["runId"])
        values = [("a", None, 0.5, None), ("b", None, 1, None), ("a", None, float("inf"), None)]
        values += [("a", "list", [1, 2], None), ("a", None, 2.5, 9), ("a", None, "x", None)]
        values += [("b", None, None, None), ("b", None, True, None), ("c", None, 2**70, None)]
        per_value = [
            {"name": n, "value": v, **({"kind": k} if k else {}), **({"step": s} if s else {})}
            for n, k, v, s in values
        ]
        from mlws.remote.tracker import wire_series

        assert call({"run_id": ids[0]}, {"metrics": per_value}) == {"written": len(values)}
        assert call({"run_id": ids[1]}, {"series": wire_series(values)}) == {"written": len(values)}
        first, second = (_metric_state(ws_path, r) for r in ids)
        assert first[0] == second[0] and len(first[0]) == len(values)
        assert [{**s, "run_seq": 0} for s in first[1]] == [{**s, "run_seq": 0} for s in second[1]]
        # Bad input: one line, nothing stored, the run not ended.
        before = _metric_state(ws_path, ids[1])
        for body in (
            {"series": [{"name": "", "values": [1]}]},
            {"series": [{"name": "a", "values": 1}]},
            {"series": [{"name": "a", "values": [1], "steps": [-1]}]},
            {"series": [{"name": "a", "values": [1], "extra": 1}]},
            {"series": [{"name": "a", "kind": "list", "values": [1]}]},
            {"series": [], "metrics": []},
            {"series": [{"name": "a", "values": [1]}], "outcome": "done"},
            {"series": [{"name": "a", "values": [1]}], "tags": {"": "v"}},
        ):
            with pytest.raises(UserErrorException):
                call({"run_id": ids[1]}, {**body, "outcome": body.get("outcome", "complete")})
        assert _metric_state(ws_path, ids[1]) == before
        assert ws.get_run(ids[1]).get_status() == "Running"
        # Values, tags and the end in one request; sent again (its answer lost): applied once.
        last = {
            "batchId": "last",
            "series": [{"name": "a", "values": [7.0]}],
            "tags": {"t": "1"},
            "outcome": "fail",
            "error": {"code": "Boom", "message": "it broke"},
        }
        answer = call({"run_id": ids[1]}, last)
        assert answer["written"] == 1 and answer["run"]["status"] == "Failed"
        assert answer["run"]["error"]["error"] == {"code": "Boom", "message": "it broke"}
        again = call({"run_id": ids[1]}, last)
        assert again["duplicate"] is True and again["run"]["status"] == "Failed"
        run = ws.get_run(ids[1])
        assert run.get_tags() == {"t": "1"} and run.get_metrics()["a"][-1] == 7.0
        assert len(_metric_state(ws_path, ids[1])[0]) == len(values) + 1
        # A new outcome for an ended run is refused whole: its values are not written either.
        with pytest.raises(RunStateError, match="ended already"):
            call({"run_id": ids[1]}, {**last, "batchId": "other", "outcome": "fail"})
        assert len(_metric_state(ws_path, ids[1])[0]) == len(values) + 1


def test_whole_runs_in_one_batch_are_all_or_nothing_and_applied_once(served) -> None:  # noqa: ANN001
    """``POST /runs/batch`` (what a client that starts many small runs sends): every run is
    checked before any is written; a request cut off as its client died writes nothing."""
    server, ws_path, tok = served
    runs = [
        {
            "experiment": "whole",
            "runId": "w1",
            "properties": {"p": "1"},
            "tags": {"t": "x"},
            "series": [{"name": "m", "values": [0.5, 1.5]}],
            "outcome": "complete",
            "startedSecondsAgo": 2.0,
            "endedSecondsAgo": 0.5,
        },
        {"experiment": "whole", "runId": "w2"},
    ]
    reader = server_token(ws_path, "r", "reader")
    before = workspace_fingerprint(ws_path)
    bad_value = {"experiment": "whole", "runId": "w3", "series": [{"name": "m", "values": [{}]}]}
    for bad in (
        [*runs, bad_value],  # the last run is refused: the ones before are not written either
        [*runs, {"experiment": "no/slash", "runId": "w3"}],
        [*runs, {"experiment": "whole"}],  # the client names its runs
        [*runs, runs[1]],
        [{**runs[0], "endedSecondsAgo": 3.0}],  # ended before it started
        [{**runs[0], "startedSecondsAgo": "1"}],
        [{**runs[0], "outcome": "maybe"}],
        [{**runs[0], "parentId": "w2"}],
    ):
        status, answer = server.api("POST", "/runs/batch", tok, {"runs": bad})
        assert status == 400, (bad, answer)
        assert "\n" not in answer["error"]["message"]
    assert server.api("POST", "/runs/batch", tok, {"runs": []})[0] == 400
    status, answer = server.api("POST", "/runs/batch", reader, {"runs": runs})
    assert status == 403, (answer, server.lines)
    # A client killed while sending its batch: half a body, then the connection closes.
    full = json.dumps({"runs": runs}).encode()
    u = urlparse(server.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.putrequest("POST", "/api/v1/runs/batch")
    conn.putheader("Authorization", f"Bearer {tok}")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(len(full)))
    conn.endheaders(full[: len(full) // 2])
    conn.close()
    assert server.api("GET", "/runs/w1", tok)[0] == 404
    assert workspace_fingerprint(ws_path) == before

    body = {"batchId": "once", "runs": runs}
    assert server.api("POST", "/runs/batch", tok, body) == (201, {"created": 2})
    assert server.api("POST", "/runs/batch", tok, body) == (201, {"created": 0, "duplicate": True})
    status, w1 = server.api("GET", "/runs/w1", tok)
    assert status == 200 and w1["status"] == "Completed" and w1["createdBy"]["userName"]
    assert w1["properties"]["p"] == "1" and w1["tags"] == {"t": "x"}
    assert server.api("GET", "/runs/w1/metrics", tok)[1]["metrics"] == {"m": [0.5, 1.5]}
    # The times the client measured: started 2 s and ended 0.5 s before the request.
    start, end = (
        datetime.fromisoformat(w1[k].replace("Z", "+00:00")) for k in ("startTimeUtc", "endTimeUtc")
    )
    assert abs((end - start).total_seconds() - 1.5) < 0.01
    assert server.api("GET", "/runs/w2", tok)[1]["status"] == "Running"
    # A taken id refuses the batch (409), nothing of it written.
    again = [{"experiment": "whole", "runId": "w4"}, {"experiment": "whole", "runId": "w2"}]
    status, answer = server.api("POST", "/runs/batch", tok, {"runs": again})
    assert status == 409 and "already exists" in answer["error"]["message"]
    assert server.api("GET", "/runs/w4", tok)[0] == 404
