"""A stock MLflow client against ``mlws serve`` (issue 16 §3): artifacts through MLflow's
artifact API (``mlflow-artifacts:/`` URIs resolved to the server), ``log_model`` with MLflow 3's
logged-model routes, and the ``mlws+http://`` tracking URI of the plugin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import lazy_import, served_workspace, workspace_fingerprint

mlflow = lazy_import("mlflow")
from test_mlflow_store import plugin_path  # noqa: E402,F401 - the plugin's entry points

LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - (Server, ws path, tokens)
    # A 1 MiB request limit: every test's requests fit, and a 413 costs little to provoke.
    root = tmp_path_factory.mktemp("mlflow-served")
    with served_workspace(root, "--max-body", str(LIMIT)) as s:
        yield s


@pytest.fixture(autouse=True)
def mlflow_env(served, plugin_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001, F811
    """MLflow pointed at the served workspace with a contributor's token, no retries (a refused
    request fails at once), and its own state clean afterwards."""
    server, _, tokens = served
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLWS_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", tokens["contributor"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    yield
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    mlflow.tracking.fluent._active_experiment_id = None


def test_artifacts_and_log_model_go_through_the_server_into_the_runs_files(
    served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sklearn.linear_model import LogisticRegression

    from mlws import Workspace

    server, ws_path, tokens = served
    mlflow.set_tracking_uri(server.url)
    mlflow.set_experiment("served-artifacts")
    src = tmp_path / "notes.txt"
    src.write_text("hello\n")
    with mlflow.start_run() as run:
        assert run.info.artifact_uri == f"mlflow-artifacts:/runs/{run.info.run_id}/artifacts"
        mlflow.log_artifact(str(src))
        mlflow.log_artifact(str(src), artifact_path="copies")
        model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn"],
        )
    rid = run.info.run_id
    client = mlflow.MlflowClient()
    top = {(f.path, f.is_dir) for f in client.list_artifacts(rid)}
    assert {("notes.txt", False), ("copies", True), ("model", True)} <= top
    inner = {f.path for f in client.list_artifacts(rid, "model")}
    assert {"model/MLmodel", "model/model.pkl"} <= inner
    sizes = {f.path: f.file_size for f in client.list_artifacts(rid, "copies")}
    assert sizes == {"copies/notes.txt": 6}
    got = mlflow.artifacts.download_artifacts(
        run_id=rid, artifact_path="copies/notes.txt", dst_path=str(tmp_path / "dl")
    )
    assert Path(got).read_text() == "hello\n"
    loaded = mlflow.pyfunc.load_model(f"runs:/{rid}/model")
    assert list(loaded.predict([[0.0], [3.0]])) == [0, 1]
    assert client.get_logged_model(info.model_id).source_run_id == rid
    with Workspace(ws_path) as ws:
        names = ws.get_run(rid).get_file_names()
        assert {"notes.txt", "copies/notes.txt", "model/MLmodel", "model/model.pkl"} <= set(names)
        blobs = {
            r[0]
            for r in ws.catalog.query(
                "SELECT blob FROM run_files WHERE run_seq = (SELECT seq FROM runs WHERE id = ?)"
                " AND path LIKE '%notes.txt'",
                (rid,),
            )
        }
        assert len(blobs) == 1  # the same content stored once

    # A reader may list and download, not upload.
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", tokens["reader"])
    assert client.list_artifacts(rid, "copies")
    import requests

    with pytest.raises(requests.HTTPError, match="PERMISSION_DENIED"):
        client.log_artifact(rid, str(src), "more")


def test_artifact_routes_refuse_dotdot_bad_paths_and_bad_tokens(served, tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    from mlws import Workspace

    server, ws_path, tokens = served
    rid = mlflow.MlflowClient().create_run("0").info.run_id
    with Workspace(ws_path) as ws:
        before = sorted(ws.get_run(rid).get_file_names())
    root = f"{server.url}/api/2.0/mlflow-artifacts/artifacts"

    def call(method: str, path: str, token: str | None, data: bytes | None = None) -> int:
        return call_url(method, root + path, token, data)

    def call_url(method: str, url: str, token: str | None, data: bytes | None = None) -> int:
        req = urllib.request.Request(url, data=data, method=method)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    writer = tokens["contributor"]
    assert call("PUT", f"/runs/{rid}/artifacts/a%2F..%2F..%2Fx", writer, b"x") == 400
    assert call("PUT", f"/runs/{rid}/artifacts/sub/%2E%2E/x", writer, b"x") == 400
    assert call("PUT", f"/runs/{rid}/artifacts/", writer, b"x") in (400, 404, 405)
    assert call("PUT", f"/elsewhere/{rid}/x", writer, b"x") == 400
    assert call("PUT", "/runs/nope/artifacts/x", writer, b"x") == 404
    assert call("PUT", f"/runs/{rid}/artifacts/x", None, b"x") == 401
    assert call("PUT", f"/runs/{rid}/artifacts/x", tokens["reader"], b"x") == 403
    assert call("DELETE", f"/runs/{rid}/artifacts/x", writer) == 400
    assert call("GET", f"/runs/{rid}/artifacts/missing.txt", tokens["reader"]) in (400, 404)
    # Past the server's request limit: a 413 on the length alone, the body never read.
    assert (
        over_limit(
            server.url, f"/api/2.0/mlflow-artifacts/artifacts/runs/{rid}/artifacts/b", writer
        )
        == 413
    )
    assert over_limit(server.url, "/api/2.0/mlflow/runs/log-batch", writer, "POST") == 413
    with Workspace(ws_path) as ws:
        assert sorted(ws.get_run(rid).get_file_names()) == before  # nothing changed
    assert call("PUT", f"/runs/{rid}/artifacts/ok.txt", writer, b"fine") == 200
    # Within the limit, a bigger upload goes through a temp file: stored whole.
    blob = bytes(range(256)) * (LIMIT // 512)
    assert call("PUT", f"/runs/{rid}/artifacts/half.bin", writer, blob) == 200
    got = mlflow.MlflowClient().download_artifacts(rid, "half.bin", str(tmp_path))
    assert Path(got).read_bytes() == blob


def over_limit(url: str, path: str, token: str, method: str = "PUT") -> int:
    """The status of a request announcing a body one byte over the limit, sending none of it
    (a server that reads it first would wait: the test would fail on its timeout)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest(method, path)
        conn.putheader("Authorization", f"Bearer {token}")
        conn.putheader("Content-Length", str(LIMIT + 1))
        conn.endheaders()
        resp = conn.getresponse()
        assert b"REQUEST_LIMIT_EXCEEDED" in resp.read()
        return resp.status
    finally:
        conn.close()


def test_an_upload_is_spooled_under_the_limit() -> None:
    """Uploads are read in chunks into a temp file (memory up to SPOOL_BYTES), and one without
    a Content-Length is refused as soon as it passes the limit."""
    import asyncio

    from mlws.errors import RequestTooLarge
    from mlws.server.mlflow_artifacts import SPOOL_BYTES, spool

    class Request:
        def __init__(self, chunks: list[bytes], length: int | None = None) -> None:
            self.headers = {} if length is None else {"content-length": str(length)}
            self.chunks, self.read = chunks, 0

        async def stream(self):  # noqa: ANN202 - the body as Starlette streams it
            for c in self.chunks:
                self.read += 1
                yield c

    big = [bytes([i]) * (SPOOL_BYTES // 2) for i in range(5)]
    f = asyncio.run(spool(Request(big), 10 * SPOOL_BYTES))
    with f:
        assert f._rolled and f.read() == b"".join(big)  # on disk past SPOOL_BYTES, whole
    req = Request(big)
    with pytest.raises(RequestTooLarge):
        asyncio.run(spool(req, SPOOL_BYTES))
    assert req.read == 3  # stopped at the chunk that passed the limit
    with pytest.raises(RequestTooLarge):
        asyncio.run(spool(Request(big, SPOOL_BYTES + 1), SPOOL_BYTES))


def test_mlws_http_uris_reach_the_server_with_mlws_own_token(
    served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlws import Workspace
    from mlws.mlflow.served import server_url

    server, ws_path, tokens = served
    uri = "mlws+" + server.url
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("MLWS_TOKEN", tokens["contributor"])
    with Workspace(server.url) as remote:
        assert remote.get_mlflow_tracking_uri() == uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("via-mlws-http")
    src = tmp_path / "notes.txt"
    src.write_text("over mlws+http\n")
    with mlflow.start_run() as run:
        mlflow.log_param("lr", "0.1")
        mlflow.log_metric("acc", 0.9)
        mlflow.log_artifact(str(src), artifact_path="docs")
    rid = run.info.run_id
    assert run.info.artifact_uri.startswith(uri + "/api/2.0/mlflow-artifacts/artifacts/runs/")
    client = mlflow.MlflowClient()
    assert [f.path for f in client.list_artifacts(rid, "docs")] == ["docs/notes.txt"]
    got = client.download_artifacts(rid, "docs/notes.txt", str(tmp_path))
    assert Path(got).read_text() == "over mlws+http\n"
    mlflow.MlflowClient().log_metric(rid, "odd", float("nan"), step=1)  # sent as "NaN"
    with Workspace(ws_path) as ws:
        r = ws.get_run(rid)
        assert r.get_properties()["lr"] == "0.1" and r.get_metrics()["acc"] == 0.9
        assert r.get_metrics()["odd"] != r.get_metrics()["odd"]  # NaN
        assert "docs/notes.txt" in r.get_file_names()
    # No token anywhere (no MLWS_TOKEN, no tokens file in this HOME): refused, in MLflow's terms.
    monkeypatch.delenv("MLWS_TOKEN")
    with pytest.raises(mlflow.exceptions.MlflowException) as e:
        mlflow.MlflowClient(uri).get_run(rid)
    assert e.value.error_code == "UNAUTHENTICATED"
    for bad in ("mlws+http://", "mlws+ftp://host:1", "http://host:1"):
        with pytest.raises(mlflow.exceptions.MlflowException):
            server_url(bad)


def test_the_model_registry_through_the_server_and_mlws_http(
    served, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sklearn.linear_model import LinearRegression

    from mlws import Model, Workspace

    server, ws_path, tokens = served
    mlflow.set_tracking_uri(server.url)
    mlflow.set_experiment("served-registry")
    est = LinearRegression().fit([[0.0], [1.0]], [1.0, 3.0])
    with mlflow.start_run() as run:
        info = mlflow.sklearn.log_model(
            est,
            name="model",
            serialization_format="cloudpickle",
            registered_model_name="line",
            pip_requirements=["scikit-learn"],
        )
    rid = run.info.run_id
    assert str(info.registered_model_version) == "1"
    assert mlflow.register_model(f"runs:/{rid}/model", "line").version == "2"
    client = mlflow.MlflowClient()
    with pytest.raises(mlflow.exceptions.MlflowException) as e:
        client.create_registered_model("line")
    assert e.value.error_code == "RESOURCE_ALREADY_EXISTS"
    assert client.get_model_version("line", "2").run_id == rid
    assert [v.version for v in client.get_latest_versions("line")] == ["2"]
    assert client.get_registered_model("line").latest_versions[0].version == "2"
    assert sorted(v.version for v in client.search_model_versions("name = 'line'")) == ["1", "2"]
    assert [m.name for m in client.search_registered_models()] == ["line"]
    client.set_model_version_tag("line", "1", "k", "v")
    client.update_model_version("line", "1", description="first")
    with Workspace(ws_path) as ws:
        m = Model(ws, "line", version=1)
        assert (m.tags, m.description, m.created_by) == ({"k": "v"}, "first", "contributor")
        assert "model/MLmodel" in m.get_file_names() and m.run_id == rid
    loaded = mlflow.pyfunc.load_model("models:/line/1")
    assert loaded.predict([[2.0]])[0] == pytest.approx(5.0)
    before = workspace_fingerprint(ws_path)
    for bad, code in (
        (
            lambda: client.transition_model_version_stage("line", "1", "Production"),
            "NOT_IMPLEMENTED",
        ),
        (lambda: client.get_model_version("line", "9"), "RESOURCE_DOES_NOT_EXIST"),
        (lambda: client.set_registered_model_alias("line", "best", "1"), "NOT_IMPLEMENTED"),
        (lambda: client.create_model_version("line", "s3://b/m", rid), "INVALID_PARAMETER_VALUE"),
        (
            lambda: client.create_model_version(
                "line", f"mlflow-artifacts:/runs/{rid}/artifacts/../x", rid
            ),
            "INVALID_PARAMETER_VALUE",
        ),
    ):
        with pytest.raises(mlflow.exceptions.MlflowException) as e:
            bad()
        assert e.value.error_code == code
    assert workspace_fingerprint(ws_path) == before  # refused: nothing changed
    # A reader reads the registry and registers nothing.
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", tokens["reader"])
    assert client.get_model_version("line", "1").tags == {"k": "v"}
    with pytest.raises(mlflow.exceptions.MlflowException) as e:
        client.create_model_version("line", f"runs:/{rid}/model", rid)
    assert e.value.error_code == "PERMISSION_DENIED"
    for write in (
        lambda: client.delete_model_version("line", "2"),
        lambda: client.set_registered_model_alias("line", "best", "1"),
        lambda: client.set_model_version_tag("line", "1", "k", "w"),
    ):
        with pytest.raises(mlflow.exceptions.MlflowException) as e:
            write()
        assert e.value.error_code == "PERMISSION_DENIED"
    # Through an mlws+http URI, with mlws's own token: the registry and the files.
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN")
    monkeypatch.setenv("MLWS_TOKEN", tokens["contributor"])
    mlflow.set_tracking_uri("mlws+" + server.url)
    mlws_client = mlflow.MlflowClient()
    assert mlws_client.get_model_version("line", "2").source
    loaded = mlflow.pyfunc.load_model("models:/line/2")
    assert loaded.predict([[0.0]])[0] == pytest.approx(1.0)
    mlws_client.delete_model_version_tag("line", "1", "k")
    mlws_client.delete_model_version("line", "2")
    assert [v.version for v in mlws_client.search_model_versions("name = 'line'")] == ["1"]
    with Workspace(ws_path) as ws:
        assert Model(ws, "line", version=1).tags == {}


def test_run_json_is_what_mlflows_protobuf_json_gives() -> None:

    from mlflow.entities import (
        LoggedModelOutput,
        Metric,
        Param,
        Run,
        RunData,
        RunInfo,
        RunInputs,
        RunOutputs,
        RunTag,
    )
    from mlflow.utils.proto_json_utils import message_to_json

    from mlws.server.mlflow_api import info_json, run_json

    def run(metrics: list, end: int | None, outputs: list) -> Run:
        info = RunInfo("r1", "7", "u", "FINISHED", 1000, end, "ACTIVE", "uri", run_name="n")
        data = RunData(metrics, [Param("p", "1")], [RunTag("t", "v")])
        return Run(info, data, RunInputs([]), RunOutputs(outputs))

    odd = [Metric("a", 0.5, 5, 2), Metric("b", float("nan"), 6, 0), Metric("c", float("inf"), 7, 1)]
    for r in (run(odd, 2000, [LoggedModelOutput("m-1", 3)]), run([], None, [])):
        assert run_json(r) == json.loads(message_to_json(r.to_proto()))
        assert info_json(r.info) == json.loads(message_to_json(r.info.to_proto()))


def test_mlflow_runs_hold_a_longer_lease_than_the_servers_own(
    served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow clients send no heartbeat: their runs outlive the server's lease (60 s) and fail
    (ClientLost) only after MLflow's (24 h). Time is moved by setting back the lease's clock;
    the expiry is asked in this process too (the server fails no run in its first lease)."""
    import json
    import time

    from mlws import Workspace
    from mlws.errors import ServerError
    from mlws.server.leases import (
        DEFAULT_MLFLOW_LEASE_S,
        MLFLOW_LEASE_ENV,
        expire,
        mlflow_lease_seconds,
    )

    server, ws_path, _ = served
    client = mlflow.MlflowClient(server.url)
    rid = client.create_run("0").info.run_id
    client.log_metric(rid, "loss", 1.0, step=0)

    def silent_for(seconds: float) -> int:
        """Set the lease back by ``seconds``; how many runs the server's 60 s lease then fails."""
        with Workspace(ws_path) as ws:
            with ws.catalog.write() as conn:
                conn.execute(
                    "UPDATE runs SET lease_seen = lease_seen - ? WHERE id = ?", (seconds, rid)
                )
            return expire(ws, 60.0, rid)

    assert silent_for(2 * 3600) == 0  # far past the server's lease, within MLflow's
    assert client.get_run(rid).info.status == "RUNNING"
    client.log_metric(rid, "loss", 0.5, step=1)  # a write renews the lease
    with Workspace(ws_path) as ws:
        assert ws.catalog.scalar("SELECT lease_seen FROM runs WHERE id = ?", (rid,)) > (
            time.time() - 60
        )
    assert silent_for(DEFAULT_MLFLOW_LEASE_S + 60) == 1
    assert client.get_run(rid).info.status == "FAILED"
    with pytest.raises(mlflow.exceptions.MlflowException, match="ClientLost"):
        client.log_metric(rid, "loss", 0.1, step=9)
    with Workspace(ws_path) as ws:
        run = ws.get_run(rid)
        assert run.get_status() == "Failed" and run.get_metrics()["loss"] == [1.0, 0.5]
        error = json.loads(ws.catalog.scalar("SELECT error FROM runs WHERE id = ?", (rid,)))
        assert error["code"] == "ClientLost" and "86400 s" in error["message"]
    # The lease is configurable (never shorter than the server's); nonsense is one error.
    assert mlflow_lease_seconds(60.0) == DEFAULT_MLFLOW_LEASE_S
    monkeypatch.setenv(MLFLOW_LEASE_ENV, "3600")
    assert mlflow_lease_seconds(60.0) == 3600.0
    assert mlflow_lease_seconds(7200.0) == 7200.0
    monkeypatch.setenv(MLFLOW_LEASE_ENV, "soon")
    with pytest.raises(ServerError, match="positive number|number of seconds"):
        mlflow_lease_seconds(60.0)


def test_mlflow_routes_read_bodies_and_queries_as_starlette_did(served) -> None:
    """The MLflow routes are plain ASGI apps (no Starlette ``Request``): a chunked body, a
    body that is not an object, GET's repeated fields, a wrong method, a one-metric write."""
    import http.client
    from urllib.parse import urlsplit

    server, _, tokens = served
    client = mlflow.MlflowClient()
    exp = client.create_experiment("asgi-bodies")
    rid = client.create_run(exp).info.run_id
    parts = urlsplit(server.url)
    api = "/api/2.0/mlflow"

    def call(method: str, path: str, chunks: list[bytes] | None = None) -> tuple[int, dict]:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            conn.putrequest(method, api + path)
            conn.putheader("Authorization", f"Bearer {tokens['contributor']}")
            if chunks is not None:
                conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            for c in chunks or []:  # one ASGI message per chunk: more_body until the last
                conn.send(b"%x\r\n%s\r\n" % (len(c), c))
            if chunks is not None:
                conn.send(b"0\r\n\r\n")
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"{}")
        finally:
            conn.close()

    body = json.dumps({"run_id": rid, "key": "acc", "value": 0.5, "timestamp": 7, "step": 3})
    half = len(body) // 2
    assert call("POST", "/runs/log-metric", [body[:half].encode(), body[half:].encode()]) == (
        200,
        {},
    )
    status, err = call("POST", "/runs/log-metric", [b"[1, 2]"])
    assert status == 400 and err["error_code"] == "INVALID_PARAMETER_VALUE"
    status, err = call("POST", "/runs/log-metric", [b"{not json"])
    assert status == 400 and err["error_code"] == "INVALID_PARAMETER_VALUE"
    assert call("GET", "/runs/log-metric")[0] == 405
    status, got = call("GET", f"/metrics/get-history?run_id={rid}&metric_key=acc&unused=")
    assert status == 200 and [(m["key"], m["value"], m["step"]) for m in got["metrics"]] == [
        ("acc", 0.5, 3)
    ]
    [metric] = client.get_run(rid).data._metric_objs
    assert (metric.key, metric.value, metric.timestamp, metric.step) == ("acc", 0.5, 7, 3)
