"""``mlws serve``: tokens and roles, the REST API's contract, and the server process (real
subprocesses on free loopback ports, stopped by pid)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    invoke,
    one_error_line,
    self_signed_cert,
    served_workspace,
    server_token,
    start_server,
    wait_until,
    workspace_fingerprint,
)

from mlws import Workspace

_token = server_token


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - (server, ws path, tokens)
    """One server for the module's API tests (with a 64 KB body limit), and a token per role."""
    with served_workspace(tmp_path_factory.mktemp("served"), "--max-body", "65536") as served:
        yield served


# -- tokens (CLI) ------------------------------------------------------------------------------
def test_token_create_list_revoke(tmp_path: Path) -> None:
    ws_path = tmp_path / "ws"
    Workspace.create(ws_path).close()
    result = invoke("-w", str(ws_path), "serve", "token", "create", "alice", "--role", "reader")
    assert result.exit_code == 0
    token = result.output.splitlines()[-1]
    assert token.startswith("mlws_") and " " not in token and len(token) > 40
    listed = json.loads(invoke("-w", str(ws_path), "serve", "token", "list", "--json").output)
    assert [(u["name"], u["role"]) for u in listed] == [("alice", "reader")]
    # Stored hashed: the token itself is nowhere in the catalog.
    with Workspace(ws_path) as ws:
        stored = ws.catalog.scalar("SELECT hash FROM server_tokens WHERE name = 'alice'")
    assert stored == "sha256:" + hashlib.sha256(token.encode()).hexdigest()
    assert token.encode() not in (ws_path / "mlws.db").read_bytes()

    before = workspace_fingerprint(ws_path)
    line = one_error_line(
        invoke("-w", str(ws_path), "serve", "token", "create", "alice", "--role", "owner")
    )
    assert "already has a token" in line
    assert "invalid user name" in one_error_line(
        invoke("-w", str(ws_path), "serve", "token", "create", "x/..", "--role", "owner")
    )
    assert (
        invoke("-w", str(ws_path), "serve", "token", "create", "bob", "--role", "god").exit_code
        == 2
    )
    assert "no token named" in one_error_line(
        invoke("-w", str(ws_path), "serve", "token", "revoke", "nobody")
    )
    assert workspace_fingerprint(ws_path) == before

    assert invoke("-w", str(ws_path), "serve", "token", "revoke", "alice").exit_code == 0
    assert invoke("-w", str(ws_path), "serve", "token", "list").output.strip() == "(none)"


# -- authentication and roles --------------------------------------------------------------------
def test_missing_wrong_and_revoked_tokens_are_401_readers_writing_403(served) -> None:  # noqa: ANN001
    server, ws_path, tokens = served
    revoked = _token(ws_path, "leaver", "owner")
    assert server.api("GET", "/workspace", revoked)[0] == 200
    assert invoke("-w", str(ws_path), "serve", "token", "revoke", "leaver").exit_code == 0
    before = workspace_fingerprint(ws_path)
    create = ("POST", "/experiments/auth/runs")
    for token in (None, "mlws_wrong", tokens["owner"] + "x", revoked, ""):
        status, body = server.api(*create, token, {"tags": {"a": "1"}})
        assert status == 401, body
        assert body["error"]["code"] == "Unauthorized" and "\n" not in body["error"]["message"]
    status, body = server.api(*create, tokens["reader"], {})
    assert status == 403 and body["error"]["code"] == "Forbidden"
    assert "contributor" in body["error"]["message"]
    assert (
        server.api("POST", "/tokens", tokens["contributor"], {"name": "x", "role": "owner"})[0]
        == 403
    )
    assert server.api("GET", "/tokens", tokens["contributor"])[0] == 403
    assert workspace_fingerprint(ws_path) == before
    # A reader reads everything.
    status, info = server.api("GET", "/workspace", tokens["reader"])
    assert status == 200 and info["user"] == {"name": "reader", "role": "reader"}
    assert info["apiVersion"] == "v1" and "path" not in info
    assert server.api("GET", "/runs", tokens["reader"])[0] == 200
    # An owner manages users over HTTP too.
    status, made = server.api(
        "POST", "/tokens", tokens["owner"], {"name": "carol", "role": "reader"}
    )
    assert status == 201 and made["token"].startswith("mlws_")
    assert server.api("GET", "/workspace", made["token"])[0] == 200
    assert server.api("DELETE", "/tokens/carol", tokens["owner"])[0] == 200
    assert server.api("GET", "/workspace", made["token"])[0] == 401


# -- runs over HTTP, read back locally -------------------------------------------------------------
def test_a_run_created_and_logged_over_http_reads_back_through_the_local_api(served) -> None:  # noqa: ANN001
    server, ws_path, tokens = served
    tok = tokens["contributor"]
    status, run = server.api(
        "POST",
        "/experiments/remote/runs",
        tok,
        {"displayName": "over http", "tags": {"lr": "0.1"}, "properties": {"kind": "demo"}},
    )
    assert status == 201, run
    rid = run["runId"]
    assert run["status"] == "Running" and run["createdBy"] == {"userName": "contributor"}
    metrics = [{"name": "loss", "value": 1.0 / (i + 1)} for i in range(500)]
    metrics += [
        {"name": "acc", "value": 0.5, "step": 3},
        {"name": "nan", "value": float("nan")},
        {"name": "classes", "value": ["a", "b"], "kind": "list"},
        {"name": "tbl", "value": {"x": [1, 2], "y": [3, 4]}, "kind": "table"},
    ]
    status, written = server.api("POST", f"/runs/{rid}/metrics", tok, {"metrics": metrics})
    assert (status, written) == (200, {"written": 504})
    assert (
        server.api("PATCH", f"/runs/{rid}/tags", tok, {"tags": {"lr": "0.2", "new": None}})[0]
        == 200
    )
    assert (
        server.api(
            "POST", f"/runs/{rid}/properties", tok, {"properties": {"kind": "demo", "p": 1}}
        )[0]
        == 200
    )
    status, body = server.api(
        "POST", f"/runs/{rid}/properties", tok, {"properties": {"kind": "other"}}
    )
    assert status == 409 and body["error"]["innerError"]["code"] == "PropertyConflict"
    status, done = server.api("POST", f"/runs/{rid}/complete", tok)
    assert status == 200 and done["status"] == "Completed"
    assert server.api("POST", f"/runs/{rid}/fail", tok, {"error": {"message": "late"}})[0] == 409

    with Workspace(ws_path) as ws:
        local = ws.get_run(rid)
        assert local.get_status() == "Completed"
        assert local.get_details()["submittedBy"] == "contributor"
        assert local.display_name == "over http"
        assert local.get_tags() == {"lr": "0.2", "new": None}
        assert local.get_properties() == {"kind": "demo", "p": "1"}
        got = local.get_metrics()
    assert got["loss"] == [1.0 / (i + 1) for i in range(500)]
    assert got["acc"] == 0.5 and got["classes"] == ["a", "b"]
    assert got["tbl"] == {"x": [1, 2], "y": [3, 4]}
    assert got["nan"] != got["nan"]  # NaN kept as NaN
    # ... and over HTTP, NaN travels as the string Python's float() reads.
    status, back = server.api("GET", f"/runs/{rid}/metrics?name=nan", tokens["reader"])
    assert (status, back) == (200, {"metrics": {"nan": "NaN"}})
    assert server.api("GET", f"/runs/{rid}/tags", tokens["reader"])[1]["tags"]["lr"] == "0.2"


def test_bad_requests_are_one_line_errors_and_change_nothing(served) -> None:  # noqa: ANN001
    server, ws_path, tokens = served
    tok = tokens["owner"]
    status, run = server.api("POST", "/experiments/bad/runs", tok, {})
    rid = run["runId"]
    before = workspace_fingerprint(ws_path)
    cases = [
        ("POST", f"/runs/{rid}/metrics", None, b"{not json", 400),
        ("POST", f"/runs/{rid}/metrics", None, b"[1, 2]", 400),
        ("POST", f"/runs/{rid}/metrics", None, b"\xff\xfe", 400),
        ("POST", f"/runs/{rid}/metrics", None, b"[" * 20_000 + b"]" * 20_000, 400),
        (
            "POST",
            f"/runs/{rid}/metrics",
            {"metrics": [{"name": "ok", "value": 1}, {"name": "", "value": 2}]},
            None,
            400,
        ),
        (
            "POST",
            f"/runs/{rid}/metrics",
            {"metrics": [{"name": "ok", "value": 1}, {"name": "s", "value": 1, "step": -1}]},
            None,
            400,
        ),
        (
            "POST",
            f"/runs/{rid}/metrics",
            {"metrics": [{"name": "ok", "value": [1], "kind": "scalar"}]},
            None,
            400,
        ),
        (
            "POST",
            f"/runs/{rid}/metrics",
            {"metrics": [{"name": "ok", "value": 1, "kind": "image"}]},
            None,
            400,
        ),
        (
            "POST",
            f"/runs/{rid}/metrics",
            {"metrics": [{"name": "x", "value": "y" * 70_000}]},
            None,
            413,
        ),
        ("POST", "/runs/nope_1/metrics", {"metrics": [{"name": "ok", "value": 1}]}, None, 404),
        ("POST", "/experiments/bad%20name!/runs", {}, None, 400),
        ("POST", "/experiments/fresh/runs", {"tags": {"": "empty key"}}, None, 400),
        ("POST", "/experiments/fresh/runs", {"tags": ["not", "a", "dict"]}, None, 400),
        ("POST", "/experiments/fresh/runs", {"surprise": 1}, None, 400),
        ("POST", "/experiments/fresh/runs", {"runId": rid}, None, 409),
        ("POST", "/experiments/fresh/runs", {"runId": "../../etc"}, None, 400),
        ("PATCH", f"/runs/{rid}/tags", {"tags": "x"}, None, 400),
        ("GET", "/runs/nope_1", None, None, 404),
        ("GET", "/runs?limit=0", None, None, 400),
        ("GET", "/runs?status=Sleeping", None, None, 400),
        ("GET", "/runs?continuationToken=garbage", None, None, 400),
        ("GET", "/models/nothing/versions/1", None, None, 404),
        ("GET", "/models/nothing/versions/x", None, None, 400),
        ("GET", "/no/such/route", None, None, 404),
        ("DELETE", "/runs", None, None, 405),
        ("PUT", "/blobs/sha256:" + "0" * 64, None, b"not those bytes", 400),
        ("PUT", "/blobs/..%2F..%2Fmlws.db", None, b"x", 404),  # no route has that many parts
        ("PUT", "/blobs/..", None, b"x", 400),
        ("PUT", "/blobs/sha256:..%5Cmlws.db", None, b"x", 400),
        ("POST", "/blobs/missing", {"blobs": ["../../mlws.db"]}, None, 400),
        ("PUT", f"/runs/{rid}/files", {"manifest": "sha256:" + "0" * 64}, None, 404),
        ("PUT", f"/runs/{rid}/files", {"manifest": "../mlws.db"}, None, 400),
        ("POST", "/models/m/versions", {"manifest": "sha256:" + "0" * 64}, None, 404),
        ("POST", "/models/m/versions", {"manifest": "../mlws.db"}, None, 400),
        ("POST", "/models/bad%20name/versions", {"manifest": "sha256:" + "0" * 64}, None, 400),
    ]
    for method, path, body, raw, expected in cases:
        status, answer = server.api(method, path, tok, body, raw)
        assert status == expected, (method, path, answer)
        assert set(answer) == {"error"}, answer
        assert answer["error"]["code"] and "\n" not in answer["error"]["message"]
    assert workspace_fingerprint(ws_path) == before


def test_runs_are_listed_in_pages_with_filters(served) -> None:  # noqa: ANN001
    server, ws_path, tokens = served
    tok = tokens["contributor"]
    made = []
    for i in range(7):
        made.append(
            server.api("POST", "/experiments/paged/runs", tok, {"tags": {"parity": str(i % 2)}})[1][
                "runId"
            ]
        )
    seen, token, pages = [], None, 0
    while True:
        q = "/runs?experiment=paged&limit=3" + (f"&continuationToken={token}" if token else "")
        status, page = server.api("GET", q, tokens["reader"])
        assert status == 200, page
        seen += [r["runId"] for r in page["value"]]
        pages += 1
        token = page["continuationToken"]
        if token is None:
            break
    assert pages == 3 and seen == made[::-1]
    # Keyset paging: a run created between two pages neither shifts nor repeats a page.
    status, first = server.api("GET", "/runs?experiment=paged&limit=4", tokens["reader"])
    newer = server.api("POST", "/experiments/paged/runs", tok, {})[1]["runId"]
    q = f"/runs?experiment=paged&limit=4&continuationToken={first['continuationToken']}"
    status, second = server.api("GET", q, tokens["reader"])
    assert [r["runId"] for r in first["value"] + second["value"]] == made[::-1]
    made.append(newer)
    status, page = server.api("GET", "/runs?experiment=paged&order=asc&limit=2", tokens["reader"])
    assert [r["runId"] for r in page["value"]] == made[:2]
    status, page = server.api(
        "GET", "/runs?experiment=paged&tag=parity=1&limit=100", tokens["reader"]
    )
    assert [r["runId"] for r in page["value"]] == made[:7][1::2][::-1]
    assert page["continuationToken"] is None
    server.api("POST", f"/runs/{made[0]}/complete", tok)
    status, page = server.api("GET", "/runs?experiment=paged&status=Completed", tokens["reader"])
    assert [r["runId"] for r in page["value"]] == [made[0]]
    status, exps = server.api("GET", "/experiments", tokens["reader"])
    assert {"name": "paged", "runs": 8}.items() <= next(
        e for e in exps["value"] if e["name"] == "paged"
    ).items()


def test_concurrent_clients_lose_nothing(served) -> None:  # noqa: ANN001
    from concurrent.futures import ThreadPoolExecutor

    server, ws_path, tokens = served
    tok = tokens["contributor"]

    def client(c: int) -> list[str]:
        ids = []
        for _ in range(3):
            status, run = server.api("POST", "/experiments/busy/runs", tok, {"tags": {"c": str(c)}})
            assert status == 201, run
            for b in range(4):
                batch = [{"name": "m", "value": b * 250 + i} for i in range(250)]
                status, ans = server.api(
                    "POST", f"/runs/{run['runId']}/metrics", tok, {"metrics": batch}
                )
                assert (status, ans) == (200, {"written": 250})
            ids.append(run["runId"])
        return ids

    with ThreadPoolExecutor(6) as pool:
        ids = [rid for got in pool.map(client, range(6)) for rid in got]
    with Workspace(ws_path) as ws:
        numbers = sorted(ws.get_run(rid).number for rid in ids)
        assert numbers == list(range(1, 19))
        for rid in ids:
            assert ws.get_run(rid).get_metrics()["m"] == list(range(1000))


def test_models_and_blobs(served, tmp_path: Path) -> None:  # noqa: ANN001
    server, ws_path, tokens = served
    (tmp_path / "m.pkl").write_bytes(b"model bytes")
    from mlws import Model

    with Workspace(ws_path) as ws:
        Model.register(ws, str(tmp_path / "m.pkl"), "clf")
        Model.register(ws, str(tmp_path / "m.pkl"), "clf")
    status, listed = server.api("GET", "/models?name=clf", tokens["reader"])
    assert status == 200 and [m["version"] for m in listed["value"]] == [2, 1]
    status, one = server.api("GET", "/models/clf/versions/1", tokens["reader"])
    assert status == 200 and one["id"] == "clf:1"

    data = b"some blob" * 100
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    status, ans = server.api(
        "POST", "/blobs/missing", tokens["contributor"], {"blobs": [digest, digest]}
    )
    assert ans == {"missing": [digest]}
    assert server.api("PUT", f"/blobs/{digest}", tokens["reader"], raw=data)[0] == 403
    assert server.api("PUT", f"/blobs/{digest}", tokens["contributor"], raw=data)[0] == 200
    assert server.api("POST", "/blobs/missing", tokens["contributor"], {"blobs": [digest]})[1] == {
        "missing": []
    }
    assert server.api("GET", f"/blobs/{digest}", tokens["reader"]) == (200, data)


def test_run_files_go_manifest_first_and_only_missing_blobs_are_sent(served) -> None:  # noqa: ANN001
    from mlws.manifests import Entry, canonical_manifest

    server, ws_path, tokens = served
    tok = tokens["contributor"]
    rid = server.api("POST", "/experiments/files/runs", tok, {})[1]["runId"]
    files = {"outputs/model.txt": b"weights", "outputs/notes.txt": b"notes " * 50}
    entries = [
        Entry(p, "sha256:" + hashlib.sha256(d).hexdigest(), len(d)) for p, d in files.items()
    ]
    manifest = canonical_manifest(entries)
    mdigest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    assert server.api("PUT", f"/blobs/{mdigest}", tok, raw=manifest)[0] == 200
    before = workspace_fingerprint(ws_path)
    # Blobs not sent yet: refused, nothing recorded.
    status, body = server.api("PUT", f"/runs/{rid}/files", tok, {"manifest": mdigest})
    assert status == 400 and "not stored" in body["error"]["message"]
    assert workspace_fingerprint(ws_path) == before
    status, ans = server.api(
        "POST", "/blobs/missing", tok, {"blobs": [e.hash for e in entries] + [mdigest]}
    )
    assert sorted(ans["missing"]) == sorted(e.hash for e in entries)
    for e, data in zip(entries, files.values(), strict=True):
        assert server.api("PUT", f"/blobs/{e.hash}", tok, raw=data)[0] == 200
    assert server.api("PUT", f"/runs/{rid}/files", tok, {"manifest": mdigest}) == (
        200,
        {"files": 2},
    )
    status, listed = server.api("GET", f"/runs/{rid}/files", tokens["reader"])
    assert [(f["path"], f["size"]) for f in listed["value"]] == [
        ("outputs/model.txt", 7),
        ("outputs/notes.txt", 300),
    ]
    with Workspace(ws_path) as ws:
        run = ws.get_run(rid)
        assert run.get_file_names() == ["outputs/model.txt", "outputs/notes.txt"]
        run.download_file("outputs/notes.txt", str(ws_path.parent / "notes.txt"))
    assert (ws_path.parent / "notes.txt").read_bytes() == files["outputs/notes.txt"]
    # ... and registered as a model from the run, made by the token's user.
    before = workspace_fingerprint(ws_path)
    for bad in (
        {"name": "m"},
        {"name": "m", "path": "outputs/none"},
        {"name": "bad name", "path": "outputs"},
    ):
        assert server.api("POST", f"/runs/{rid}/models", tok, bad)[0] == 400
    assert (
        server.api(
            "POST", f"/runs/{rid}/models", tokens["reader"], {"name": "m", "path": "outputs"}
        )[0]
        == 403
    )
    assert workspace_fingerprint(ws_path) == before
    status, model = server.api(
        "POST",
        f"/runs/{rid}/models",
        tok,
        {"name": "from-http", "path": "outputs", "tags": {"t": "1"}},
    )
    assert status == 201 and model["version"] == 1 and model["createdBy"] == "contributor"
    with Workspace(ws_path) as ws:
        from mlws import Model

        local = Model(ws, "from-http")
        assert local.run_id == rid and sorted(local.get_file_names()) == [
            "outputs/model.txt",
            "outputs/notes.txt",
        ]
    # A manifest whose stated size is not its blob's: refused.
    bad = canonical_manifest([Entry("x.txt", entries[0].hash, 999)])
    bdigest = "sha256:" + hashlib.sha256(bad).hexdigest()
    server.api("PUT", f"/blobs/{bdigest}", tok, raw=bad)
    status, body = server.api("PUT", f"/runs/{rid}/files", tok, {"manifest": bdigest})
    assert status == 400 and "size 999" in body["error"]["message"]
    # A blob that is not a manifest: refused.
    status, body = server.api("PUT", f"/runs/{rid}/files", tok, {"manifest": entries[0].hash})
    assert status == 400, body


def test_every_route_needs_a_token_and_answers_in_the_one_error_shape(served) -> None:  # noqa: ANN001
    import re

    from mlws.server.app import endpoints

    server, ws_path, _tokens = served
    before = workspace_fingerprint(ws_path)
    for ep in endpoints():
        path = re.sub(r"{(\w+)}", "x", ep.path)
        status, body = server.api(ep.method, path, None, {} if ep.method != "GET" else None)
        assert status == 401, (ep.method, ep.path, body)
        assert set(body) == {"error"} and set(body["error"]) <= {"code", "message", "innerError"}
    assert workspace_fingerprint(ws_path) == before


def test_openapi_lists_every_route(served) -> None:  # noqa: ANN001
    server, _ws, _tokens = served
    status, doc = server.api("GET", "/openapi.json")  # no token needed
    assert status == 200 and doc["openapi"].startswith("3.")
    from mlws.server.app import endpoints

    listed = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    for ep in endpoints():
        assert (ep.method, "/api/v1" + ep.path) in listed
    assert ("POST", "/api/v1/runs/{run_id}/metrics") in listed
    assert ("POST", "/api/v1/runs/{run_id}/heartbeat") in listed
    upload = doc["paths"]["/api/v1/models/{name}/versions"]["post"]
    assert "x-mlws-planned" not in upload and upload["x-mlws-role"] == "contributor"
    schema = upload["requestBody"]["content"]["application/json"]["schema"]
    assert {"manifest", "registrationId", "modelFramework"} <= set(schema["properties"])
    metrics = doc["paths"]["/api/v1/runs/{run_id}/metrics"]["post"]
    batch_id = metrics["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert batch_id["batchId"]["maxLength"] == 64
    assert doc["paths"]["/api/v1/tokens"]["post"]["x-mlws-role"] == "owner"


# -- the server process --------------------------------------------------------------------------
def test_beyond_loopback_needs_tls_or_insecure(tmp_path: Path) -> None:
    ws_path = tmp_path / "ws"
    Workspace.create(ws_path).close()
    before = workspace_fingerprint(ws_path)
    assert "without TLS" in one_error_line(invoke("-w", str(ws_path), "serve", "--host", "0.0.0.0"))
    assert "both --certfile and --keyfile" in one_error_line(
        invoke(
            "-w",
            str(ws_path),
            "serve",
            "--host",
            "0.0.0.0",
            "--certfile",
            str(ws_path / "mlws.json"),
        )
    )
    assert "no such file" in one_error_line(
        invoke("-w", str(ws_path), "serve", "--certfile", "/nope.pem", "--keyfile", "/nope.key")
    )
    from mlws.server.process import check_options

    check_options("0.0.0.0", 8787, None, None, True)  # --insecure: the user's explicit choice
    direct = subprocess.run(
        [sys.executable, "-m", "mlws.server", str(ws_path), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert direct.returncode == 1 and direct.stderr.strip().startswith("Error: refusing to serve")
    assert len(direct.stderr.strip().splitlines()) == 1
    assert workspace_fingerprint(ws_path) == before


def test_tls(tmp_path: Path) -> None:
    import ssl
    import urllib.request

    certfile, keyfile = self_signed_cert(tmp_path)
    ws_path = tmp_path / "ws"
    Workspace.create(ws_path).close()
    tok = _token(ws_path, "u", "reader")
    server = start_server(
        "-m",
        "mlws.server",
        str(ws_path),
        "--host",
        "localhost",
        "--port",
        "0",
        "--certfile",
        str(certfile),
        "--keyfile",
        str(keyfile),
    )
    try:
        assert server.url.startswith("https://localhost:")
        req = urllib.request.Request(server.url + "/api/v1/workspace")
        req.add_header("Authorization", f"Bearer {tok}")
        ctx = ssl.create_default_context(cafile=str(certfile))
        with urllib.request.urlopen(req, context=ctx, timeout=20) as r:
            assert json.loads(r.read())["user"]["name"] == "u"
    finally:
        assert server.stop() == 0, server.lines


def test_sigterm_stops_the_server_cleanly(tmp_path: Path) -> None:
    ws_path = tmp_path / "ws"
    Workspace.create(ws_path).close()
    tok = _token(ws_path, "u", "contributor")
    # Through the CLI, which becomes the server process (same pid, the server's command line).
    server = start_server("-m", "mlws", "-w", str(ws_path), "serve", "--port", "0")
    state_dir = Path(os.environ["HOME"]) / ".cache" / "mlws" / "servers"
    assert len(list(state_dir.glob("*.json"))) == 1
    rid = server.api("POST", "/experiments/t/runs", tok, {})[1]["runId"]
    assert (
        server.api("POST", f"/runs/{rid}/metrics", tok, {"metrics": [{"name": "m", "value": 1}]})[0]
        == 200
    )
    assert server.stop() == 0, server.lines
    assert server.lines[-1] == "Stopped."
    assert not list(state_dir.glob("*.json"))
    with Workspace(ws_path) as ws:
        assert ws.catalog.integrity_check() == []
        assert ws.get_run(rid).get_metrics() == {"m": 1}


def test_ctrl_c_stops_it_without_a_traceback(tmp_path: Path) -> None:
    ws_path = tmp_path / "ws"
    Workspace.create(ws_path).close()
    server = start_server("-m", "mlws.server", str(ws_path), "--port", "0")
    server.proc.send_signal(signal.SIGINT)
    out, _ = server.proc.communicate(timeout=20)
    assert server.proc.returncode == 0 and out.strip() == "Stopped.", out


def test_sigterm_lets_a_request_in_flight_finish(tmp_path: Path) -> None:
    import socket
    from urllib.parse import urlparse

    ws_path = tmp_path / "ws"
    Workspace.create(ws_path).close()
    tok = _token(ws_path, "u", "contributor")
    server = start_server("-m", "mlws.server", str(ws_path), "--port", "0")
    addr = urlparse(server.url)
    data = b"x" * 200_000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    conn = socket.create_connection((addr.hostname, addr.port), timeout=20)
    try:
        conn.sendall(
            f"PUT /api/v1/blobs/{digest} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data[:1000]
        )
        # A whole request on a second connection, answered: by then the loop has read the
        # first one's headers (they came first), so that request is in flight, not idle.
        assert server.api("GET", "/workspace", tok)[0] == 200
        server.proc.send_signal(signal.SIGTERM)

        def refused() -> bool:  # the listener is closed: the stop has begun
            try:
                socket.create_connection((addr.hostname, addr.port), timeout=1).close()
                return False
            except OSError:
                return True

        wait_until(refused, 10, "the server to stop listening")
        assert server.proc.poll() is None  # still finishing the request in flight
        conn.sendall(data[1000:])
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = conn.recv(65536)
            assert chunk, answer
            answer += chunk
    finally:
        conn.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert server.stop() == 0, server.lines
    with Workspace(ws_path) as ws:
        assert ws.blobs.has(digest)


def test_detach_then_stop(tmp_path: Path) -> None:
    ws_path = tmp_path / "ws"
    Workspace.create(ws_path).close()
    tok = _token(ws_path, "u", "reader")
    env = {**os.environ}
    started = subprocess.run(
        [sys.executable, "-m", "mlws", "-w", str(ws_path), "serve", "--port", "0", "--detach"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert started.returncode == 0, started.stderr
    url = started.stdout.split(" at ")[1].split()[0]
    pid = int(started.stdout.rsplit("pid ", 1)[1].rstrip(")\n"))
    from helpers import Server

    remote = Server(None, url, [])
    try:
        assert remote.api("GET", "/workspace", tok)[0] == 200
        again = invoke("-w", str(ws_path), "serve", "--port", "0", "--detach")
        assert "already serves this workspace" in one_error_line(again)
        # Even past the state-file check (another user's server has its state elsewhere):
        direct = subprocess.run(
            [sys.executable, "-m", "mlws.server", str(ws_path), "--port", "0"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "another-user-cache")},
        )
        assert direct.returncode == 1 and "lock locks/server.lock is held" in direct.stderr
        other = tmp_path / "other"
        Workspace.create(other).close()
        port = url.rsplit(":", 1)[1]
        taken = invoke("-w", str(other), "serve", "--port", port, "--detach")
        assert "cannot listen on 127.0.0.1:" in one_error_line(taken)
        stopped = invoke("-w", str(ws_path), "serve", "stop")
        assert stopped.exit_code == 0 and str(pid) in stopped.output
        wait_until(lambda: not _alive(pid), 10, "the detached server to end")
        assert "no server is running" in one_error_line(invoke("-w", str(ws_path), "serve", "stop"))
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_after_kill_9_a_new_server_starts(tmp_path: Path) -> None:
    ws_path = tmp_path / "ws"
    Workspace.create(ws_path).close()
    pids = []
    try:
        for _ in range(2):
            started = invoke("-w", str(ws_path), "serve", "--port", "0", "--detach")
            assert started.exit_code == 0, started.output
            pids.append(int(started.output.rsplit("pid ", 1)[1].rstrip(")\n")))
            os.kill(pids[-1], signal.SIGKILL)
            wait_until(lambda: not _alive(pids[-1]), 10, "the killed server to end")
        # Its state file is stale and its lock was released with it: nothing to stop.
        assert "no server is running" in one_error_line(invoke("-w", str(ws_path), "serve", "stop"))
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_stop_never_signals_a_process_that_is_not_the_server(tmp_path: Path) -> None:
    ws_path = tmp_path / "ws"
    with Workspace.create(ws_path) as ws:
        from mlws.processes import process_start_time
        from mlws.server.process import state_file

        path = state_file(ws)
        path.parent.mkdir(parents=True)
        # This very test process, named as the server: not an mlws.server process of the folder.
        path.write_text(
            json.dumps({"pid": os.getpid(), "start": process_start_time(os.getpid()), "url": "x"})
        )
    assert "no server is running" in one_error_line(invoke("-w", str(ws_path), "serve", "stop"))


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
