"""A remote workspace: ``Workspace("http://127.0.0.1:PORT")`` over a real ``mlws serve``
subprocess (free loopback port, a HOME of its own, stopped by pid) — the same classes as a local
workspace, errors in one line, uploads that send only what the server lacks, and writes made
while the server is away delivered exactly once when it is back."""

from __future__ import annotations

import json
import math
import os
import re
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

from mlws import Experiment, Model, Run, Workspace
from mlws.errors import (
    ExperimentNotFound,
    Forbidden,
    InvalidWorkspace,
    ModelNotFound,
    NotAvailableRemotely,
    PropertyConflict,
    RunNotFound,
    ServerUnreachable,
    SpoolFull,
    Unauthorized,
    UserErrorException,
)

_token = server_token


def _serve(ws_path: Path, *args: str, port: int = 0):  # noqa: ANN202 - a helpers.Server
    return start_server("-m", "mlws.server", str(ws_path), "--port", str(port), *args)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - (server, ws path, tokens)
    """One server for the module's tests, with a token per role."""
    with served_workspace(tmp_path_factory.mktemp("remote")) as served:
        yield served


@pytest.fixture
def remote(served, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201 - a Workspace
    server, _ws_path, tokens = served
    monkeypatch.delenv("MLWS_TOKEN", raising=False)
    ws = Workspace(server.url, token=tokens["contributor"])
    yield ws
    ws.close()


def _local_metric_count(ws_path: Path, run_id: str) -> int:
    with Workspace(ws_path) as ws:
        return ws.catalog.scalar(
            "SELECT count(*) FROM metrics m JOIN runs r ON r.seq = m.run_seq WHERE r.id = ?",
            (run_id,),
        )


# -- the API end to end --------------------------------------------------------------------------
def test_runs_end_to_end(served, remote) -> None:  # noqa: ANN001
    _server, ws_path, _tokens = served
    assert remote.remote is not None and remote.name == "ws"
    assert remote.get_details()["user"] == {"name": "contributor", "role": "contributor"}
    exp = Experiment(remote, "e2e")
    with exp.start_logging(display_name="first", tags={"stage": "dev"}) as run:
        assert run.get_status() == "Running" and run.display_name == "first"
        for i in range(25_000):
            run.log("loss", i / 2)
        run.log("nan", float("nan"))
        run.log_list("lst", [1, 2, 3])
        run.log_row("row", a=1, b=2)
        run.log_table("tbl", {"x": [1, 2], "y": [3, 4]})
        run.log("stepped", 7, step=5)
        run.tag("t1", "v1")
        run.set_tags({"t2": None})
        run.add_properties({"p": "1"})
        run.add_properties({"p": "1"})  # the same value again: no conflict
        with pytest.raises(PropertyConflict, match="add-only"):
            run.add_properties({"p": "2"})
        child = run.child_run("kid")
        child.log("acc", 0.5)
        grandchild = child.child_run()
        grandchild.log("acc", 0.25)
        grandchild.complete()
        child.complete()
        assert run.get_tags() == {"stage": "dev", "t1": "v1", "t2": None}
        assert run.get_properties() == {"p": "1"}
        metrics = run.get_metrics()
        assert metrics["loss"] == [i / 2 for i in range(25_000)]
        assert metrics["lst"] == [1, 2, 3] and metrics["row"] == {"a": 1, "b": 2}
        assert metrics["tbl"] == {"x": [1, 2], "y": [3, 4]} and metrics["stepped"] == 7
        assert math.isnan(metrics["nan"])  # the server's "NaN" string, read back as a float
        assert run.get_metrics(name="lst") == {"lst": [1, 2, 3]}
        for name, step in (("", None), ("ok", -1), (7, None)):
            with pytest.raises(UserErrorException):  # at log(), not in a batch later
                run.log(name, 1, step=step)
    assert run.get_status() == "Completed"
    details = run.get_details()
    assert details["status"] == "Completed" and details["submittedBy"] == "contributor"
    assert _local_metric_count(ws_path, run.id) == 25_000 + 5  # what the server stored
    # Reading back: by id, by experiment, listing with filters, children.
    again = Run(exp, run.id)
    assert again.get_metrics(name="stepped") == {"stepped": 7}
    assert remote.get_run(child.id).parent.id == run.id
    assert [c.id for c in run.get_children()] == [child.id]
    assert [c.id for c in run.get_children(recursive=True)] == [child.id, grandchild.id]
    assert run.get_metrics(name="acc", recursive=True) == {
        run.id: {},
        child.id: {"acc": 0.5},
        grandchild.id: {"acc": 0.25},
    }
    assert [r.id for r in exp.get_runs()] == [run.id]
    assert [r.id for r in exp.get_runs(tags={"stage": "dev"})] == [run.id]
    assert list(exp.get_runs(tags={"stage": "prod"})) == []
    assert {r.id for r in exp.get_runs(include_children=True)} == {
        run.id,
        child.id,
        grandchild.id,
    }
    assert "e2e" in [e.name for e in Experiment.list(remote)] and "e2e" in remote.experiments
    with pytest.raises(RunNotFound):
        remote.get_run("e2e_0_nothere")
    with pytest.raises(ExperimentNotFound):
        Experiment(remote, "never_made", _create=False)
    failing = exp.start_logging()
    failing.fail("it broke", "Boom")
    assert failing.get_details()["error"]["error"]["code"] == "Boom"


def test_a_small_run_is_three_requests_and_reads_its_own_tags(served, remote) -> None:  # noqa: ANN001
    """create, properties, then one request with the run's values, tags and end (bench 17e);
    tags set and not sent yet are sent before a read or a listing shows them."""
    counters = remote.remote.counters
    exp = Experiment(remote, "small")
    exp.start_logging().complete()  # the client's first run also asks for the heartbeat
    before = sum(counters.values())
    run = exp.start_logging()
    run.add_properties({"p": "1"})
    for j in range(3):
        run.log(f"m{j}", j * 0.5)
    run.set_tags({"a": "1", "b": "x"})
    run.complete()
    assert sum(counters.values()) - before == 3
    assert run.get_status() == "Completed"
    assert run.get_tags() == {"a": "1", "b": "x"} and run.get_properties() == {"p": "1"}
    assert run.get_metrics() == {"m0": 0.0, "m1": 0.5, "m2": 1.0}
    other = exp.start_logging()
    other.tag("seen", "yes")
    assert other.get_tags() == {"seen": "yes"}  # read your writes
    other.tag("listed")
    assert [r.id for r in exp.get_runs(tags={"listed": None})] == [other.id]
    other.log("x", 1.0)
    other.fail("it broke", "Boom")
    assert other.get_details()["error"]["error"]["code"] == "Boom"
    assert other.get_metrics() == {"x": 1.0} and other.get_status() == "Failed"


def test_heartbeats_keep_a_quiet_run_alive(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    ws_path = tmp_path / "srv"
    Workspace.create(ws_path, _remember_name=False).close()
    token = _token(ws_path, "c", "contributor")
    server = _serve(ws_path, "--run-lease-s", "2")
    try:
        monkeypatch.setenv("MLWS_TOKEN", token)
        with Workspace(server.url) as ws:
            run = Experiment(ws, "quiet").start_logging()
            calls = ws.remote.counters
            # Every 0.5 s (a quarter of the lease): past the 2 s lease, the run still lives.
            wait_until(lambda: calls["POST runs"] >= 6, 15, "heartbeats")
            assert run.get_status() == "Running"
            run.complete()
            assert run.get_status() == "Completed"
    finally:
        assert server.stop() == 0, server.lines


# -- tokens and errors ---------------------------------------------------------------------------
def test_wrong_or_missing_token_and_readers_writing_are_one_line_errors(
    served,
    monkeypatch,  # noqa: ANN001
) -> None:
    server, ws_path, tokens = served
    monkeypatch.delenv("MLWS_TOKEN", raising=False)
    for token in ("mlws_wrong", None):
        with pytest.raises(Unauthorized) as e:
            Workspace(server.url, token=token)
        assert "\n" not in str(e.value) and "mlws login" in str(e.value)
    line = one_error_line(invoke("-w", server.url, "experiment", "list"))
    assert "token" in line
    before = workspace_fingerprint(ws_path)
    with Workspace(server.url, token=tokens["reader"]) as ws:
        assert Experiment.list(ws) is not None  # a reader reads
        with pytest.raises(Forbidden, match="contributor"):
            Experiment(ws, "nope").start_logging()
    assert workspace_fingerprint(ws_path) == before


def test_operations_not_ported_say_so_in_one_line(served, remote) -> None:  # noqa: ANN001
    server, _ws_path, tokens = served
    run = Experiment(remote, "np").start_logging()
    with pytest.raises(NotAvailableRemotely) as e:
        run.cancel()
    assert str(e.value) == (
        f"Run.cancel is not available on a remote workspace yet ({server.url}); run it on the"
        " server's machine"
    )
    with pytest.raises(NotAvailableRemotely, match="not available on a remote workspace"):
        remote.get_default_datastore()
    with pytest.raises(NotAvailableRemotely):
        run.remove_tags("x")
    with pytest.raises(InvalidWorkspace, match="created where it is served"):
        Workspace.create(server.url)
    run.complete()
    line = one_error_line(
        _with_token(tokens["contributor"], "-w", server.url, "run", "cancel", run.id)
    )
    assert "not available on a remote workspace" in line


def _with_token(token: str, *args: str, cwd: Path | None = None):  # noqa: ANN202 - a Result
    old = os.environ.get("MLWS_TOKEN")
    os.environ["MLWS_TOKEN"] = token
    try:
        return invoke(*args, cwd=cwd)
    finally:
        if old is None:
            del os.environ["MLWS_TOKEN"]
        else:
            os.environ["MLWS_TOKEN"] = old


# -- discovery -----------------------------------------------------------------------------------
def test_config_json_url_with_mlws_token_and_never_a_token_from_the_project(
    served,
    tmp_path: Path,
    monkeypatch,  # noqa: ANN001
) -> None:
    server, _ws_path, tokens = served
    project = tmp_path / "project"
    (project / ".azureml").mkdir(parents=True)
    # A token in the project's config is never read (the file goes with the code).
    cfg = {"url": server.url, "token": tokens["owner"]}
    (project / ".azureml" / "config.json").write_text(json.dumps(cfg))
    monkeypatch.delenv("MLWS_WORKSPACE")
    monkeypatch.delenv("MLWS_TOKEN", raising=False)
    monkeypatch.chdir(project)
    with pytest.raises(Unauthorized):
        Workspace.from_config()
    monkeypatch.setenv("MLWS_TOKEN", tokens["contributor"])
    with Workspace.from_config() as ws:
        assert ws.remote.url == server.url
        Experiment(ws, "fromcfg").start_logging().complete()
        written = json.loads(ws.write_config(tmp_path / "other").read_text())
        assert written == {"url": server.url, "workspace_name": "ws"}  # no token in it
    with Workspace.from_config(tmp_path / "other") as ws:
        assert ws.remote.url == server.url
    listed = invoke("experiment", "list", "--json", cwd=project)
    assert listed.exit_code == 0 and "fromcfg" in listed.output
    # MLWS_WORKSPACE naming the URL; the token from the per-user file (mlws login).
    monkeypatch.delenv("MLWS_TOKEN")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLWS_WORKSPACE", server.url)
    assert invoke("login", server.url, input="mlws_not_a_token\n").exit_code == 1
    assert not (Path(os.environ["HOME"]) / ".config" / "mlws" / "tokens.json").exists()
    result = invoke("login", server.url + "/", input=tokens["contributor"] + "\n")
    assert result.exit_code == 0 and "as contributor" in result.output
    tokens_file = Path(os.environ["HOME"]) / ".config" / "mlws" / "tokens.json"
    assert tokens_file.stat().st_mode & 0o777 == 0o600
    with Workspace.from_config() as ws:
        assert ws.get_details()["user"]["name"] == "contributor"


# -- the CLI over the same library calls -----------------------------------------------------------
def test_cli_reads_a_remote_workspace(served, remote, tmp_path: Path) -> None:  # noqa: ANN001
    server, _ws_path, tokens = served
    run = Experiment(remote, "cli").start_logging(tags={"k": "v"})
    run.log("acc", 0.25)
    run.log("acc", 0.75)
    run.complete()
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "w.bin").write_bytes(b"weights")
    Model.register(remote, model_dir, "cli-model")
    tok = tokens["reader"]
    out = _with_token(tok, "-w", server.url, "experiment", "list")
    assert out.exit_code == 0 and re.search(r"^cli\s+1\s", out.output, re.M), out.output
    out = _with_token(tok, "-w", server.url, "run", "list", "-e", "cli", "--json")
    listed = json.loads(out.output)
    assert [r["id"] for r in listed] == [run.id] and listed[0]["metrics"] == {"acc": 0.75}
    low = Experiment(remote, "cli").start_logging()
    low.log("acc", 0.1)
    low.complete()
    untracked = Experiment(remote, "cli").start_logging()  # no acc: listed last
    untracked.complete()
    out = _with_token(tok, "-w", server.url, "run", "list", "-e", "cli", "--json")
    assert [r["id"] for r in json.loads(out.output)] == [untracked.id, low.id, run.id]
    for args, expected in (
        ((), [run.id, low.id, untracked.id]),
        (("--ascending",), [low.id, run.id, untracked.id]),
    ):
        by = ("run", "list", "-e", "cli", "--sort-by", "metric:acc", "--json", *args)
        out = _with_token(tok, "-w", server.url, *by)
        assert [r["id"] for r in json.loads(out.output)] == expected, out.output
    out = _with_token(tok, "-w", server.url, "run", "list", "--sort-by", "number", "--limit", "1")
    assert out.exit_code == 0
    status, page = server.api("GET", "/runs?experiment=cli&latestMetrics=true", tok)
    assert status == 200 and page["value"][-1]["latestMetrics"] == {"acc": 0.75}
    out = _with_token(tok, "-w", server.url, "run", "show", run.id)
    assert out.exit_code == 0 and "tag k" in out.output and "Completed" in out.output
    out = _with_token(tok, "-w", server.url, "run", "metrics", run.id, "--json")
    assert json.loads(out.output) == {"acc": [0.25, 0.75]}
    out = _with_token(tok, "-w", server.url, "model", "list")
    assert out.exit_code == 0 and "cli-model" in out.output
    out = _with_token(tok, "-w", server.url, "model", "show", "cli-model")
    assert out.exit_code == 0 and "w.bin" in out.output


# -- files and models ----------------------------------------------------------------------------
def test_uploads_send_only_what_the_server_lacks(served, remote, tmp_path: Path) -> None:  # noqa: ANN001
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
    for i in range(1000):
        (first / f"f{i:04d}.txt").write_text(f"shared {i}")
        # 90% the same bytes under the same names, 10% new.
        (second / f"f{i:04d}.txt").write_text(f"shared {i}" if i % 10 else f"new {i}")
    run = Experiment(remote, "files").start_logging()
    counters = remote.remote.counters
    names = run.upload_folder("outputs/a", first)
    assert len(names) == 1000
    before = counters["PUT blobs"]
    run.upload_folder("outputs/b", second)
    assert counters["PUT blobs"] - before == 100 + 1  # the new 10%, and the new manifest
    before = counters["PUT blobs"]
    run.upload_folder("outputs/c", second)  # unchanged: only its manifest (a new prefix)
    assert counters["PUT blobs"] - before == 1
    run.upload_file("single.txt", str(first / "f0001.txt"))
    run.upload_files(["x/1.txt", "x/2.txt"], [str(first / "f0002.txt"), str(second / "f0010.txt")])
    assert len(run.get_file_names()) == 3003
    out = run.download_files(prefix="outputs/b", output_directory=tmp_path / "dl")
    assert len(out) == 1000
    assert (tmp_path / "dl" / "outputs" / "b" / "f0010.txt").read_text() == "new 10"
    assert run.download_file("x/2.txt", tmp_path / "two.txt").read_text() == "new 10"
    with pytest.raises(Exception, match="no file"):
        run.download_file("nothing.txt", tmp_path / "n.txt")
    run.complete()


def test_models_register_list_get_download(served, remote, tmp_path: Path) -> None:  # noqa: ANN001
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "weights.bin").write_bytes(os.urandom(2048))
    (src / "sub" / "cfg.json").write_text("{}")
    m1 = Model.register(remote, src, "clf", tags={"k": "v"}, description="first")
    assert (m1.name, m1.version, m1.path, m1.created_by) == ("clf", 1, "model", "contributor")
    assert sorted(m1.get_file_names()) == ["model/sub/cfg.json", "model/weights.bin"]
    m2 = Model.register(remote, src / "weights.bin", "clf")
    assert m2.version == 2 and Model(remote, "clf").version == 2
    assert Model(remote, "clf", version=1).tags == {"k": "v"}
    assert [m.id for m in Model.list(remote, name="clf")] == ["clf:2", "clf:1"]
    with pytest.raises(ModelNotFound, match="versions: 1, 2"):
        Model(remote, "clf", version=7)
    got = Path(m1.download(tmp_path / "dl"))
    assert (got / "weights.bin").read_bytes() == (src / "weights.bin").read_bytes()
    run = Experiment(remote, "models").start_logging()
    run.upload_folder("outputs/model", src)
    from_run = run.register_model("from-run", "outputs/model")
    assert from_run.run_id == run.id and from_run.version == 1
    assert from_run.run.id == run.id
    run.complete()


# -- offline -------------------------------------------------------------------------------------
def test_writes_while_the_server_is_away_are_delivered_once(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    ws_path = tmp_path / "srv"
    Workspace.create(ws_path, _remember_name=False).close()
    monkeypatch.setenv("MLWS_TOKEN", _token(ws_path, "c", "contributor"))
    server = _serve(ws_path)
    port = server.url.rsplit(":", 1)[1]
    try:
        ws = Workspace(server.url)
        run = Experiment(ws, "offline").start_logging()
        logged: list[float] = []

        def log(n: int) -> None:
            for _ in range(n):
                logged.append(len(logged) * 0.25)
                run.log("x", logged[-1])

        log(5000)
        run.flush()
        assert server.stop() == 0
        log(20_000)
        run.tag("while", "away")
        folder = tmp_path / "made-offline"
        folder.mkdir()
        for i in range(20):
            (folder / f"{i}.txt").write_text(f"offline {i}")
        run.upload_folder("outputs/offline", folder)
        run.upload_file("note.txt", str(folder / "3.txt"))
        log(5000)
        run.flush()
        spool = ws.remote.tracker.spool(run.id)
        # Batches (the tag rides on one of them) and the uploads, in order, on disk.
        assert len(spool) >= 4
        (folder / "3.txt").write_text("changed after the upload")  # the spool kept a copy
        server = _serve(ws_path, port=int(port))
        log(5000)
        run.complete()  # waits for the spool to drain
        assert len(spool) == 0
        assert run.get_status() == "Completed"
        assert run.get_metrics()["x"] == logged  # every value, once, in order
        assert run.get_tags() == {"while": "away"}
        assert _local_metric_count(ws_path, run.id) == len(logged)
        assert len([n for n in run.get_file_names() if n.startswith("outputs/offline/")]) == 20
        got = run.download_file("note.txt", tmp_path / "note.txt").read_text()
        assert got == "offline 3"
        assert not spool.dir.exists()  # delivered: nothing left behind
        ws.close()
    finally:
        server.stop()


def test_leftovers_are_delivered_by_remote_sync_and_the_spool_is_bounded(
    tmp_path: Path,
    monkeypatch,  # noqa: ANN001
) -> None:
    ws_path = tmp_path / "srv"
    Workspace.create(ws_path, _remember_name=False).close()
    monkeypatch.setenv("MLWS_TOKEN", _token(ws_path, "c", "contributor"))
    monkeypatch.setenv("MLWS_SPOOL_WAIT_S", "0.5")
    server = _serve(ws_path)
    port = int(server.url.rsplit(":", 1)[1])
    try:
        ws = Workspace(server.url)
        run = Experiment(ws, "leftover").start_logging()
        other = Experiment(ws, "leftover").start_logging()
        assert server.stop() == 0
        for i in range(1000):
            run.log("y", i)
        run.complete()  # the server is away: left in the spool, with a warning
        # Bounded: a tiny spool refuses new writes in one line, and keeps them in memory.
        monkeypatch.setenv("MLWS_SPOOL_MB", "0.001")
        for i in range(2000):
            other.log("z", i)
        with pytest.raises(SpoolFull, match="MLWS_SPOOL_MB"):
            other.flush()
        monkeypatch.delenv("MLWS_SPOOL_MB")
        ws.remote.tracker.close()  # this process goes away: what it holds goes to disk
        # (nothing was dropped: the 2,000 values refused by the full spool arrive below)
        server = _serve(ws_path, port=port)
        result = invoke("remote", "sync")
        assert result.exit_code == 0 and "2 run(s) delivered" in result.output, result.output
        with Workspace(server.url) as fresh:
            done = fresh.get_run(run.id)
            assert done.get_status() == "Completed"
            assert done.get_metrics()["y"] == list(range(1000))
            assert fresh.get_run(other.id).get_metrics()["z"] == list(range(2000))
        assert invoke("remote", "sync").output.strip() == "0 run(s) delivered, 0 waiting"
    finally:
        server.stop()


def test_https_with_a_self_signed_certificate(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    certfile, keyfile = self_signed_cert(tmp_path)
    ws_path = tmp_path / "srv"
    Workspace.create(ws_path, _remember_name=False).close()
    monkeypatch.setenv("MLWS_TOKEN", _token(ws_path, "c", "contributor"))
    server = start_server(
        "-m", "mlws.server", str(ws_path), "--host", "localhost", "--port", "0",
        "--certfile", str(certfile), "--keyfile", str(keyfile),
    )  # fmt: skip
    try:
        assert server.url.startswith("https://localhost:")
        with pytest.raises(ServerUnreachable, match="MLWS_CA_BUNDLE") as e:
            Workspace(server.url)  # the system's CA store does not know it: one line, at once
        assert "\n" not in str(e.value)
        with Workspace(server.url, ca_file=str(certfile)) as ws:
            with Experiment(ws, "tls").start_logging() as run:
                run.log("a", 1)
            assert run.get_metrics() == {"a": 1}
        monkeypatch.setenv("MLWS_CA_BUNDLE", str(certfile))
        with Workspace(server.url) as ws:
            assert ws.get_run(run.id).get_status() == "Completed"
    finally:
        assert server.stop() == 0, server.lines
