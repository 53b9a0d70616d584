"""A remote workspace: ``Workspace("http://127.0.0.1:PORT")`` over a real ``mlws serve``
subprocess (free loopback port, a HOME of its own, stopped by pid) — the same classes as a local
workspace, errors in one line, uploads that send only what the server lacks, and writes made
while the server is away delivered exactly once when it is back. Secrets (the key stays on the
server; readers see no part of the vault, contributors no credential), environments, metadata
edits and services (run where deployed, recorded on the server) by role, refusals changing
nothing."""

from __future__ import annotations

import json
import math
import os
import re
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

from mlws import Dataset, Datastore, Environment, Experiment, Model, Run, ScriptRunConfig, Workspace
from mlws.errors import (
    EnvironmentNotFound,
    ExperimentNotFound,
    Forbidden,
    InvalidWorkspace,
    ModelNotFound,
    NotAvailableRemotely,
    PropertyConflict,
    RunNotFound,
    RunStateError,
    SecretNotFound,
    ServerUnreachable,
    SpoolFull,
    Unauthorized,
    UnsafePath,
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


def test_a_sweeps_metrics_read_remotely_have_v1s_shapes(served, remote) -> None:  # noqa: ANN001
    """A sweep's ``get_metrics()`` is its trials' (v1's HyperDriveRun); its own metrics (the
    best-trial table) are ``Run.get_metrics(sweep)``, over the server as here."""
    from mlws.hyperdrive import HyperDriveRun
    from mlws.lifecycle import insert_run, set_status
    from mlws.metrics import write_values

    _server, ws_path, _tokens = served
    with Workspace(ws_path) as ws:
        Experiment(ws, "hd")  # created on first use
        sweep = insert_run(ws, "hd", run_type="hyperdrive", status="Running")
        trial = insert_run(ws, "hd", run_type="azureml.scriptrun", status="Completed",
                           parent_id=sweep["id"])  # fmt: skip
        write_values(ws.catalog, sweep["seq"], [("own", "scalar", 1, None)])
        write_values(ws.catalog, trial["seq"], [("accuracy", "scalar", 0.5, None)])
    try:
        there = remote.get_run(sweep["id"])
        assert isinstance(there, HyperDriveRun)
        assert there.get_metrics() == {trial["id"]: {"accuracy": 0.5}}
        assert Run.get_metrics(there) == {"own": 1}
    finally:
        # Ended: a "Running" sweep with no controller, left in the module's shared workspace,
        # is failed ("never started", lifecycle.reconcile) by whichever later read meets it
        # past its start grace: a catalog write at a moment no later test chooses, such as
        # inside a "bad input changes nothing" check (which failed once in CI, likely so).
        with Workspace(ws_path) as ws:
            set_status(ws, sweep["id"], "Completed")


def test_small_runs_travel_whole_and_read_their_own_writes(served, remote, monkeypatch) -> None:  # noqa: ANN001
    """After a client's first run, a run is created with the client's next send: many small
    runs (properties, values, tags, end) are one ``POST /runs/batch`` (bench 17e). Another
    client finds them once the creating one flushed; a read of the run sends it first."""
    from mlws.experiments import query_runs

    monkeypatch.setattr("mlws.remote.tracker.FLUSH_S", 60.0)  # no tick: sends are the test's
    counters = remote.remote.counters
    exp = Experiment(remote, "small")
    exp.start_logging().complete()  # the client's first run is created at once (heartbeat)
    other_client = Workspace(served[0].url, token=served[2]["reader"])
    before = sum(counters.values())
    runs = []
    for i in range(5):
        run = exp.start_logging(tags={"i": str(i)})
        run.add_properties({"p": "1"})
        run.add_properties({"p": "1", "q": str(i)})  # add-only, checked here: same value is fine
        with pytest.raises(PropertyConflict, match="already '1'"):
            run.add_properties({"p": "2", "r": "x"})  # nothing of it added
        for j in range(3):
            run.log(f"m{j}", j * 0.5)
        run.set_tags({"a": "1", "b": "x"})
        run.complete()
        runs.append(run)
    assert sum(counters.values()) == before  # nothing sent yet
    with pytest.raises(RunNotFound):
        Run(Experiment(other_client, "small"), runs[0].id)
    remote.remote.flush()
    assert sum(counters.values()) - before == 1
    for i, run in enumerate(runs):
        there = Run(Experiment(other_client, "small"), run.id)
        assert there.get_status() == "Completed"
        assert there.get_tags() == {"i": str(i), "a": "1", "b": "x"}
        assert there.get_properties() == {"p": "1", "q": str(i)}
        assert there.get_metrics() == {"m0": 0.0, "m1": 0.5, "m2": 1.0}
    numbers = [r.number for r in runs]  # given by the server, read from it
    assert numbers == sorted(numbers) and len(set(numbers)) == 5
    # Times as the client saw them: created in the order started, ended after starting.
    details = [Run(Experiment(other_client, "small"), r.id).get_details() for r in runs]
    starts = [d["startTimeUtc"] for d in details]
    assert starts == sorted(starts) and all(d["endTimeUtc"] >= d["startTimeUtc"] for d in details)
    other_client.close()
    # A read of a run not sent yet sends it first (read your writes).
    other = exp.start_logging()
    other.tag("seen", "yes")
    assert other.get_tags() == {"seen": "yes"}
    other.tag("listed")
    assert [r.id for r in exp.get_runs(tags={"listed": None})] == [other.id]
    other.log("x", 1.0)
    other.fail("it broke", "Boom")
    assert other.get_details()["error"]["error"]["code"] == "Boom"
    assert other.get_metrics() == {"x": 1.0} and other.get_status() == "Failed"
    # A child of a run not sent yet: the parent is sent first.
    parent = exp.start_logging()
    kid = parent.child_run("kid")
    assert [c.id for c in parent.get_children()] == [kid.id]
    kid.complete()
    parent.complete()
    # Ended before it was sent: its end travels with its creation; a listing sends it first.
    quick = exp.start_logging(display_name="quick")
    quick.fail("at once", "Quick")
    (row,) = [r for r in query_runs(remote, experiment="small") if r["id"] == quick.id]
    assert row["status"] == "Failed" and row["display_name"] == "quick"


def test_a_refused_deferred_run_is_said_in_one_line(served, tmp_path: Path) -> None:  # noqa: ANN001
    """A run created with the next send that the server refuses (here: its token was revoked
    meanwhile): ``complete()`` returned already, so the refusal is raised by the client's next
    flush or ``start_logging``, and by every read or log of the run; nothing is stored."""
    from mlws.server.auth import revoke_token

    server, ws_path, tokens = served
    token = _token(ws_path, "soon-revoked", "contributor")
    ws = Workspace(server.url, token=token)
    try:
        exp = Experiment(ws, "refused")
        exp.start_logging().complete()  # the first run: created at once, the token is good
        with Workspace(ws_path) as local:
            revoke_token(local, "soon-revoked")
        run = exp.start_logging()
        run.log("m", 1.0)
        run.complete()  # queued with its creation: no request, no error yet
        with pytest.raises(Unauthorized) as e:
            ws.remote.flush()
        assert "\n" not in str(e.value)
        with pytest.raises(Unauthorized):  # the run's own calls keep saying it
            run.get_status()
        with pytest.raises(RunStateError, match="was not created"):
            run.log("m", 2.0)
        second = exp.start_logging()
        second.complete()
        ws.remote.tracker.send_creates()  # what the sender's tick does
        with pytest.raises(Unauthorized):  # said at the next start_logging
            exp.start_logging()
        with Workspace(ws_path) as local:
            assert not local.catalog.one(
                "SELECT 1 FROM runs WHERE id IN (?, ?)", (run.id, second.id)
            )
    finally:
        ws.close()


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
    server, _ws_path, _tokens = served
    with pytest.raises(NotAvailableRemotely) as e:
        Datastore.register_ssh(remote, "far", "host", "/data")
    assert str(e.value) == (
        f"Datastore.register_ssh is not available on a remote workspace yet ({server.url}); run"
        " it on the server's machine"
    )
    with pytest.raises(InvalidWorkspace, match="created where it is served"):
        Workspace.create(server.url)


def test_cancel_an_interactive_run(served, as_role) -> None:  # noqa: ANN001
    server, _ws_path, tokens = served
    holder = as_role("contributor")
    run = Experiment(holder, "cancels").start_logging()
    run.log("before", 1)
    # A reader cannot; bad input is one line; a submitted run is not the server's to cancel.
    with pytest.raises(Forbidden, match="contributor"):
        as_role("reader").get_run(run.id).cancel()
    status, answer = server.api("POST", f"/runs/{run.id}/cancel", tokens["owner"], {"force": 1})
    assert status == 400, answer
    assert holder.get_run(run.id).get_status() == "Running"
    # Another client cancels it: the holder sees Canceled on its next call, and ending it
    # changes nothing (as a local run's), its values stored.
    out = _with_token(tokens["contributor"], "-w", server.url, "run", "cancel", run.id)
    assert out.exit_code == 0, out.output
    assert run.get_status() == "Canceled"
    run.log("after", 2)  # stored still (v1 keeps a canceled run's values)
    run.complete()
    assert run.get_status() == "Canceled"
    assert run.get_metrics() == {"before": 1, "after": 2}
    # The holder cancels its own run: what it logged goes first.
    own = Experiment(holder, "cancels").start_logging()
    own.log("x", 2)
    own.cancel()
    assert own.get_status() == "Canceled" and own.get_metrics() == {"x": 2}
    assert own.id not in holder.remote.tracker.held
    own.cancel()  # ended: nothing to do


def _with_token(token: str, *args: str, cwd: Path | None = None, input: str | None = None):  # noqa: ANN202, A002 - a Result
    old = os.environ.get("MLWS_TOKEN")
    os.environ["MLWS_TOKEN"] = token
    try:
        return invoke(*args, cwd=cwd, input=input)
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
    remote.remote.flush()  # created with this client's next send: now, for the CLI's reads
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


# -- datastores and datasets -----------------------------------------------------------------------
def test_datastores_and_datasets(served, remote, tmp_path: Path) -> None:  # noqa: ANN001
    server, ws_path, tokens = served
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(20):
        (src / f"f{i:02d}.csv").write_text(f"a,b\n{i},{i * 2}\n")
    (src / "sub" / "deep.txt").write_text("deep")
    store = remote.get_default_datastore()
    assert store.name == "workspaceblobstore" and store.is_default
    assert set(remote.datastores) == {"workspaceblobstore"}
    # Upload: content-addressed, only what the server lacks; written into the server's folder.
    counters = remote.remote.counters
    before = counters["PUT blobs"]
    store.upload(src, "data", show_progress=False)
    assert counters["PUT blobs"] - before == 21 + 1 and store.last_upload["copied"] == 21
    on_server = ws_path / "datastores" / "workspaceblobstore" / "data"
    assert (on_server / "sub" / "deep.txt").read_text() == "deep"
    (src / "f00.csv").write_text("a,b\n100,200\n")
    before = counters["PUT blobs"]
    store.upload(src, "data", overwrite=True, show_progress=False)
    assert counters["PUT blobs"] - before == 1 + 1  # the changed file, and the manifest
    assert (on_server / "f00.csv").read_text() == "a,b\n100,200\n"
    n = store.download(tmp_path / "dl", prefix="data/sub", show_progress=False)
    assert n == 1 and (tmp_path / "dl" / "data" / "sub" / "deep.txt").read_text() == "deep"
    # A file dataset and a tabular one over datastore paths, fingerprinted on the server.
    files = Dataset.File.from_files((store, "data/*.csv"))
    v1 = files.register(remote, "csvs", description="twenty", tags={"k": "v"})
    assert (v1.version, v1.created_by, v1.tags) == (1, "contributor", {"k": "v"})
    assert len(v1.to_path()) == 20 and "/data/f03.csv" in v1.to_path()
    got = v1.download(tmp_path / "csvs")
    assert len(got) == 20 and (tmp_path / "csvs" / "data" / "f03.csv").read_text() == "a,b\n3,6\n"
    assert not v1.has_changed()
    table = Dataset.Tabular.from_delimited_files((store, "data/f0[1-3].csv"))
    tab = table.register(remote, "table")
    assert tab.to_pandas_dataframe().to_dict("list") == {"a": [1, 2, 3], "b": [2, 4, 6]}
    assert Dataset.get_by_name(remote, "table", 1).created_by == "contributor"
    assert set(remote.datasets) >= {"csvs", "table"}
    (on_server / "f03.csv").write_text("a,b\n3,7\n")  # the data changes on the server
    assert Dataset.get_by_name(remote, "csvs").changes().modified == ["data/f03.csv"]
    with pytest.raises(UserErrorException, match="exists"):
        files.register(remote, "csvs")
    with pytest.raises(UserErrorException, match="upload it first"):
        Dataset.File.from_files(str(src), validate=False).register(remote, "local")
    # A registration sent twice (its answer lost) makes one version.
    from mlws.remote.datasets import register

    again = [register(remote, files, "csvs", None, None, True, request_id="reg-1") for _ in "ab"]
    assert again[0].version == again[1].version == 2 == Dataset.get_by_name(remote, "csvs").version
    # The CLI over the same calls, a reader's token.
    out = _with_token(tokens["reader"], "-w", server.url, "dataset", "list")
    assert out.exit_code == 0 and "csvs" in out.output and "table" in out.output
    out = _with_token(tokens["reader"], "-w", server.url, "datastore", "list")
    assert out.exit_code == 0 and "workspaceblobstore" in out.output
    out = _with_token(tokens["reader"], "-w", server.url, "dataset", "show", "csvs:1", "--json")
    assert out.exit_code == 0 and json.loads(out.output)["createdBy"] == "contributor"
    tok = tokens["contributor"]
    up = ("datastore", "upload", "workspaceblobstore", str(src / "f05.csv"), "-t", "cli")
    assert _with_token(tok, "-w", server.url, *up).exit_code == 0
    reg = ("dataset", "register", "cli_t", "cli/f05.csv", "--datastore", "workspaceblobstore")
    out = _with_token(tok, "-w", server.url, *reg, "--tabular")
    assert out.exit_code == 0, out.output
    out = _with_token(tokens["reader"], "-w", server.url, "dataset", "head", "cli_t", "--json")
    assert out.exit_code == 0 and json.loads(out.output) == [{"a": 5, "b": 10}], out.output
    # Registering a server folder is an owner's; a relative path is refused here.
    lab = tmp_path / "server-lab"
    with pytest.raises(Forbidden, match="owner"):
        Datastore.register_local(remote, "lab", lab)
    with pytest.raises(UserErrorException, match="absolute"):
        Datastore.register_local(remote, "lab", "relative/lab")
    with Workspace(server.url, token=tokens["owner"]) as owner:
        with pytest.raises(UserErrorException, match="workspace's own folder"):
            Datastore.register_local(owner, "inside", ws_path / "blobs")
        made = Datastore.register_local(owner, "lab", lab)
        assert made.root == lab and lab.is_dir() and made.datastore_type == "local"
    Datastore.get(remote, "lab").upload_files([src / "f01.csv"], target_path="x")
    assert (lab / "x" / "f01.csv").exists()


def test_datasets_refuse_readers_and_path_tricks(served, remote) -> None:  # noqa: ANN001
    server, ws_path, tokens = served
    remote.get_default_datastore().upload_files([__file__], target_path="t", overwrite=True)
    outside = ws_path.parent / "secret.txt"
    outside.write_text("not the datastore's")
    link = ws_path / "datastores" / "workspaceblobstore" / "out"
    if not link.is_symlink():
        link.symlink_to(outside)  # a link on the datastore that leads out of it
    before = workspace_fingerprint(ws_path)
    with Workspace(server.url, token=tokens["reader"]) as reader:
        store = Datastore(reader, "workspaceblobstore")
        with pytest.raises(Forbidden, match="contributor"):
            store.upload_files([__file__], target_path="r")
        with pytest.raises(Forbidden, match="contributor"):
            Dataset.File.from_files((store, "t")).register(reader, "nope")
    assert workspace_fingerprint(ws_path) == before
    tok = tokens["contributor"]
    base = "/datastores/workspaceblobstore"
    tricks = [
        ("POST", base + "/fetch", {"paths": ["../../mlws.db"]}),
        ("POST", base + "/fetch", {"paths": ["/etc/passwd"]}),
        ("POST", base + "/match", {"patterns": ["../*"]}),
        ("GET", base + "/files?prefix=../..", None),
        ("POST", base + "/upload", {"manifest": "sha256:" + "0" * 64, "targetPath": "../x"}),
        ("GET", "/datastores/..%2F..", None),
        ("POST", base + "/fetch", {"paths": ["out"]}),
        ("POST", "/runs/nope/datasets", {"data": [{"name": "x", "mode": "mount"}]}),
        (
            "POST",
            "/datasets/x/versions",
            {"definition": {"type": "file", "sources": [{"local": "/etc"}]}},
        ),
        (
            "POST",
            "/datasets/x/versions",
            {
                "definition": {
                    "type": "file",
                    "sources": [{"datastore": "workspaceblobstore", "path": "../../"}],
                }
            },
        ),  # fmt: skip
    ]
    for method, path, body in tricks:
        status, answer = server.api(method, path, tok, body)
        assert status in (400, 404) and "\n" not in answer["error"]["message"], (path, answer)
    with pytest.raises(UnsafePath, match="outside"):  # the same files as "t": no new blob
        remote.get_default_datastore().upload_files([__file__], target_path="out", overwrite=True)
    status, answer = server.api("POST", base + "/match", tok, {"patterns": ["*"]})
    assert status == 200 and "out" not in {f["path"] for f in answer["matches"][0]}
    assert workspace_fingerprint(ws_path) == before


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
        # Runs started while it is away: each run's spool starts with its creation.
        late = run.experiment.start_logging()
        late.add_properties({"p": "1"})
        late.log("y", 1.0)
        late.flush()
        late.log("y", 2.0)
        quick = run.experiment.start_logging()
        quick.log("z", 3.0)
        quick.complete()  # no wait: its creation and end travel together, later
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
        late.complete()
        ws.remote.flush()
        assert late.get_metrics() == {"y": [1.0, 2.0]} and late.get_status() == "Completed"
        assert late.get_properties() == {"p": "1"}
        assert quick.get_metrics() == {"z": 3.0} and quick.get_status() == "Completed"
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


# -- secrets, environments, edits, services --------------------------------------------------------
@pytest.fixture
def as_role(served, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201 - role -> Workspace
    """``as_role("reader")``: the served workspace opened with that role's token."""
    server, _ws_path, tokens = served
    monkeypatch.delenv("MLWS_TOKEN", raising=False)
    opened: list[Workspace] = []

    def open_as(role: str) -> Workspace:
        opened.append(Workspace(server.url, token=tokens[role]))
        return opened[-1]

    yield open_as
    for ws in opened:
        ws.close()


def test_secrets_through_the_server_by_role(served, as_role, tmp_path: Path) -> None:  # noqa: ANN001
    server, ws_path, tokens = served
    kv = as_role("contributor").get_default_keyvault()
    kv.set_secret("db-password", "hunter2")
    kv.set_secrets({"api-key": "k1", "other": "o"})
    assert kv.get_secret("db-password") == "hunter2"
    assert kv.get_secrets(["api-key", "other"]) == {"api-key": "k1", "other": "o"}
    assert {"api-key", "db-password", "other"} <= {s["name"] for s in kv.list_secrets()}
    # The key stays with the server: nothing on this machine (its HOME) holds it.
    assert not list((Path(os.environ["HOME"]) / ".config" / "mlws").glob("keys/*"))
    with Workspace(ws_path) as local:  # encrypted at rest in the server's catalog
        stored = local.catalog.scalar("SELECT value FROM secrets WHERE name = 'db-password'")
        assert b"hunter2" not in bytes(stored)
    with pytest.raises(SecretNotFound):
        kv.get_secret("nope")
    with pytest.raises(UserErrorException, match="invalid secret name"):
        kv.set_secret("bad name", "x")
    # A contributor never reads or replaces a credential (the ssh key of a compute target).
    owner_kv = as_role("owner").get_default_keyvault()
    owner_kv.set_secret("compute-gpu1", "PRIVATE KEY")
    with pytest.raises(Forbidden, match="owner"):
        kv.get_secret("compute-gpu1")
    with pytest.raises(Forbidden, match="owner"):
        kv.set_secret("compute-gpu1", "mine now")
    assert owner_kv.get_secret("compute-gpu1") == "PRIVATE KEY"
    # A reader sees nothing of the vault; a contributor deletes nothing; nothing changes.
    before = workspace_fingerprint(ws_path)
    reader_kv = as_role("reader").get_default_keyvault()
    for call in (
        lambda: reader_kv.get_secret("db-password"),
        reader_kv.list_secrets,
        lambda: reader_kv.set_secret("db-password", "x"),
        lambda: kv.delete_secret("db-password"),
    ):
        with pytest.raises(Forbidden):
            call()
    status, body = server.api("POST", "/secrets/values", tokens["reader"], {"names": ["other"]})
    assert status == 403 and "k1" not in json.dumps(body)
    status, body = server.api("PUT", "/secrets", tokens["contributor"], {"secrets": {"a": 1}})
    assert status == 400 and "must be a string" in body["error"]["message"]
    assert workspace_fingerprint(ws_path) == before
    owner_kv.delete_secret("other")
    with pytest.raises(SecretNotFound):
        owner_kv.delete_secret("other")
    # The CLI, with -w URL.
    out = _with_token(
        tokens["contributor"], "-w", server.url, "secret", "set", "cli-s", input="v\n"
    )
    assert out.exit_code == 0, out.output
    out = _with_token(tokens["contributor"], "-w", server.url, "secret", "get", "cli-s")
    assert out.output.strip() == "v"
    line = one_error_line(_with_token(tokens["reader"], "-w", server.url, "secret", "get", "cli-s"))
    assert "403" not in line and "contributor" in line
    line = one_error_line(_with_token(tokens["owner"], "-w", server.url, "secret", "export-key"))
    assert "not available on a remote workspace" in line  # the key never leaves the server


def test_environments_registered_on_the_server(served, as_role) -> None:  # noqa: ANN001
    server, ws_path, tokens = served
    ws = as_role("contributor")
    env = Environment("team-py")
    env.python.interpreter_path = sys.executable
    env.environment_variables = {"TEAM": "blue"}
    assert env.register(ws).version == "1"
    assert env.register(ws).version == "1"  # the same definition: the same version
    env.environment_variables = {"TEAM": "red"}
    assert env.register(ws).version == "2"
    got = Environment.get(ws, "team-py")
    assert (got.version, got.environment_variables) == ("2", {"TEAM": "red"})
    assert Environment.get(ws, "team-py", version=1).environment_variables == {"TEAM": "blue"}
    assert "team-py" in Environment.list(as_role("reader"))
    status, page = server.api("GET", "/environments/team-py/versions", tokens["reader"])
    assert status == 200 and [v["version"] for v in page["value"]] == ["2", "1"]
    assert page["value"][0]["createdBy"] == "contributor"
    with pytest.raises(EnvironmentNotFound):
        Environment.get(ws, "team-py", version=9)
    with pytest.raises(EnvironmentNotFound):
        Environment.get(ws, "never")
    before = workspace_fingerprint(ws_path)
    with pytest.raises(Forbidden):
        Environment("by-reader").register(as_role("reader"))
    bad = {"python": {"condaDependencies": {"pip": [1]}}}
    status, body = server.api("POST", "/environments/x/versions", tokens["contributor"], bad)
    assert status == 400 and "list of strings" in body["error"]["message"]
    status, body = server.api("POST", "/environments/bad%20name/versions", tokens["owner"], {})
    assert status == 400 and "invalid environment name" in body["error"]["message"]
    assert workspace_fingerprint(ws_path) == before
    out = _with_token(tokens["reader"], "-w", server.url, "environment", "list")
    assert out.exit_code == 0 and "team-py" in out.output


SCRIPT = """
import os, sys
from mlws import Run
run = Run.get_context()
run.log("team", os.environ.get("TEAM", "none"))
run.log("secret", run.get_secret("db-password"))
run.log("python", sys.executable)
import tabulate  # only in the managed environment
run.fail("the data was bad", "BadData")
"""


def test_submitted_run_uses_a_registered_environment_reads_secrets_and_fails(
    served,
    as_role,
    tmp_path: Path,
    monkeypatch,  # noqa: ANN001
) -> None:
    server, _ws_path, tokens = served
    monkeypatch.setenv("MLWS_TOKEN", tokens["contributor"])
    ws = as_role("contributor")
    from mlws import CondaDependencies
    from mlws.environments import envs_dir

    env = Environment("run-env")  # managed: built on this machine by the run's supervisor
    env.python.user_managed_dependencies = False
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=["tabulate"])
    env.environment_variables = {"TEAM": "green"}
    env.register(ws)
    ws.get_default_keyvault().set_secret("db-password", "s3cret")
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(SCRIPT)
    config = ScriptRunConfig(src, "train.py", environment="run-env")
    run = Experiment(ws, "renv").submit(config)
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed", details
    assert details["error"]["error"]["code"] == "BadData"
    assert "the data was bad" in details["error"]["error"]["message"]
    metrics = run.get_metrics()
    assert (metrics["team"], metrics["secret"]) == ("green", "s3cret")
    assert metrics["python"].startswith(str(envs_dir())) and metrics["python"] != sys.executable
    assert "Ready:" in run.download_file("logs/environment.log", tmp_path / "e.log").read_text()


def test_model_and_run_metadata_edits(served, as_role, tmp_path: Path) -> None:  # noqa: ANN001
    server, ws_path, tokens = served
    ws = as_role("contributor")
    (tmp_path / "w.bin").write_bytes(b"weights")
    model = Model.register(ws, tmp_path / "w.bin", "meta", tags={"a": "1", "b": "2"})
    model.add_tags({"c": 3})
    model.remove_tags("a")
    model.add_properties({"p": "1"})
    with pytest.raises(PropertyConflict):
        model.add_properties({"p": "2"})
    model.update(description="better")
    fresh = Model(ws, "meta")
    assert fresh.tags == {"b": "2", "c": "3"} and fresh.properties == {"p": "1"}
    assert fresh.description == "better" and model.description == "better"
    model.update(tags={"only": "this"})
    assert Model(ws, "meta").tags == {"only": "this"}
    # v1's combined edit: one request, all or nothing.
    model.update_tags_properties(add_tags={"n": 1}, remove_tags="only", add_properties={"q": "2"})
    assert Model(ws, "meta").tags == {"n": "1"} and model.properties == {"p": "1", "q": "2"}
    with pytest.raises(PropertyConflict):
        model.update_tags_properties(add_tags={"lost": "1"}, add_properties={"p": "other"})
    assert Model(ws, "meta").tags == {"n": "1"}
    model.update(tags={"only": "this"})
    run = Experiment(ws, "meta").start_logging(tags={"x": "1", "y": "2"})
    run.remove_tags(["x", "absent"])
    run.display_name = "renamed"
    assert run.display_name == "renamed" and ws.get_run(run.id).display_name == "renamed"
    assert run.get_tags() == {"y": "2"}
    # Ended first: a running run's heartbeats renew its lease, which the fingerprint sees.
    run.complete()
    # A reader changes nothing; a contributor deletes nothing; bad input is one line.
    before = workspace_fingerprint(ws_path)
    reader = as_role("reader")
    for call in (
        lambda: Model(reader, "meta").add_tags({"r": "1"}),
        lambda: reader.get_run(run.id).remove_tags("y"),
        lambda: setattr(reader.get_run(run.id), "display_name", "mine"),
        lambda: Model(ws, "meta").delete(),
    ):
        with pytest.raises(Forbidden):
            call()
    path = "/models/meta/versions/1"
    for body in ({"addTags": {"a": 1}, "description": "d"}, {"removeTags": [1]}, {"nope": 1}, {}):
        status, answer = server.api("PATCH", path, tokens["contributor"], body)
        assert status == 400, answer
    status, answer = server.api("PATCH", f"/runs/{run.id}", tokens["owner"], {"displayName": " "})
    assert status == 400
    assert workspace_fingerprint(ws_path) == before
    line = one_error_line(
        _with_token(tokens["contributor"], "-w", server.url, "model", "delete", "meta:1")
    )
    assert "owner" in line
    assert workspace_fingerprint(ws_path) == before
    run.complete()
    owner = as_role("owner")
    Model(owner, "meta").delete()
    with pytest.raises(ModelNotFound):
        Model(owner, "meta", version=1)
    out = _with_token(tokens["contributor"], "-w", server.url, "model", "list")
    assert out.exit_code == 0 and "meta" not in out.output


def test_a_service_deployed_from_a_client_runs_here_and_is_recorded_on_the_server(
    served,
    as_role,
    tmp_path: Path,
) -> None:  # noqa: ANN001
    from helpers import processes_of_test, wait_until
    from serving_helpers import SCORE, register, write_source

    from mlws.errors import ModelInUse, NotAvailableRemotely, WebserviceException
    from mlws.serving import InferenceConfig, LocalWebservice, Webservice

    server, ws_path, tokens = served
    ws = as_role("contributor")
    model = register(ws, tmp_path, "m", 2)
    config = InferenceConfig(
        entry_script="score.py", source_directory=str(write_source(tmp_path, SCORE))
    )
    before = workspace_fingerprint(ws_path)
    with pytest.raises(Forbidden):
        Model.deploy(as_role("reader"), "svc-r", [model], config)
    with pytest.raises(WebserviceException, match="invalid service name"):
        Model.deploy(ws, "Bad_Name", [model], config)
    assert workspace_fingerprint(ws_path) == before
    assert not processes_of_test(Path(os.environ["HOME"]))  # nothing was started
    svc = Model.deploy(ws, "svc-remote", [model], config, LocalWebservice.deploy_configuration())
    try:
        svc.wait_for_deployment(timeout_sec=60)
        assert isinstance(svc, Webservice) and svc.state == "Healthy"
        assert svc.run(json.dumps({"data": [1, 2.5]})) == {"result": [2, 5.0]}
        assert [m.id for m in svc.models] == [model.id]
        # The team sees it through the server: name, scoring URI, state, models.
        listed = Webservice.list(as_role("reader"))
        assert [s.name for s in listed] == ["svc-remote"]
        theirs = listed[0]
        assert (theirs.state, theirs.scoring_uri) == ("Healthy", svc.scoring_uri)
        out = _with_token(tokens["reader"], "-w", server.url, "service", "list")
        assert out.exit_code == 0 and re.search(r"svc-remote\s+Healthy\s+http", out.output)
        out = _with_token(tokens["reader"], "-w", server.url, "service", "show", "svc-remote")
        assert out.exit_code == 0 and f"scoringUri: {svc.scoring_uri}" in out.output
        status, record = server.api("GET", "/services/svc-remote", tokens["reader"])
        assert record["createdBy"] == "contributor" and record["models"] == [model.id]
        with pytest.raises(Forbidden):
            theirs.delete()
        with pytest.raises(WebserviceException, match="exists"):
            Model.deploy(ws, "svc-remote", [model], config)
        with pytest.raises(ModelInUse):
            Model(as_role("owner"), "m", version=model.version).delete()
        status, body = server.api("PATCH", "/services/svc-remote", tokens["owner"], {"state": "Up"})
        assert status == 400 and "state must be" in body["error"]["message"]
        # A service recorded from another machine: its record is read here; what needs the
        # live service says where it runs; its deployer removes the record.
        far = {"name": "svc-far", "models": [model.id], "machine": "lab-gpu-7", "state": "Healthy"}
        far["scoringUri"] = "http://lab-gpu-7:5001/score"
        status, _ = server.api("POST", "/services", tokens["contributor"], far)
        assert status == 201
        remote_svc = Webservice(ws, "svc-far")
        assert (remote_svc.state, remote_svc.scoring_uri) == ("Healthy", far["scoringUri"])
        with pytest.raises(NotAvailableRemotely, match="lab-gpu-7"):
            remote_svc.run({"data": [1]})
        remote_svc.delete()
    finally:
        svc.delete()
    wait_until(lambda: not processes_of_test(Path(os.environ["HOME"])), 20, "the service to stop")
    assert Webservice.list(ws) == []
    with pytest.raises(WebserviceException, match="no service"):
        Webservice(ws, "svc-remote")


# -- fsck and gc on the server -------------------------------------------------------------------
def test_fsck_and_gc_run_on_the_server_by_role(served, as_role) -> None:  # noqa: ANN001
    import sqlite3

    from mlws.maintenance import FsckReport, GcReport, fsck, gc

    server, ws_path, tokens = served
    orphan = as_role("contributor").blobs.put_bytes(b"nothing references this blob")
    report = fsck(as_role("reader"))  # a read: any role
    assert isinstance(report, FsckReport) and report.ok and report.blobs_checked > 0
    out = _with_token(tokens["reader"], "-w", server.url, "fsck", "--json")
    assert out.exit_code == 0 and json.loads(out.output)["ok"] is True
    # A service record naming a model version the catalog lacks is damage fsck reports.
    db = sqlite3.connect(ws_path / "mlws.db")
    with db:
        db.execute(
            "INSERT INTO service_records (name, models, state, machine, created, updated)"
            " VALUES ('ghost-svc', '[\"ghost:9\"]', 'Healthy', 'm', 0, 0)"
        )
    try:
        report = fsck(as_role("reader"))
        assert not report.ok
        assert report.catalog_problems == ["service record 'ghost-svc': no model 'ghost:9'"]
    finally:
        with db:
            db.execute("DELETE FROM service_records WHERE name = 'ghost-svc'")
        db.close()
    # gc: owners only; refused or bad input changes nothing.
    before = workspace_fingerprint(ws_path)
    with pytest.raises(Forbidden, match="owner"):
        gc(as_role("contributor"), grace_s=0)
    with pytest.raises(UserErrorException, match="grace"):
        gc(as_role("owner"), grace_s=-1)
    for body in ({"graceSeconds": -1}, {"nope": 1}, {"dryRun": "yes"}):
        status, answer = server.api("POST", "/maintenance/gc", tokens["owner"], body)
        assert status == 400, answer
    status, _ = server.api("POST", "/maintenance/fsck", tokens["reader"], {"repair": True})
    assert status == 400
    line = one_error_line(_with_token(tokens["contributor"], "-w", server.url, "gc"))
    assert "owner" in line
    assert workspace_fingerprint(ws_path) == before
    dry = gc(as_role("owner"), dry_run=True, grace_s=0)
    assert isinstance(dry, GcReport) and dry.dry_run and dry.removed >= 1
    with Workspace(ws_path) as local:
        assert local.blobs.has(orphan)  # a dry run removes nothing
    done = gc(as_role("owner"), grace_s=0)
    assert done.removed == dry.removed and not done.dry_run
    with Workspace(ws_path) as local:
        assert not local.blobs.has(orphan)
    assert fsck(as_role("owner")).ok


# -- listings sorted and filtered by the server ----------------------------------------------------
def test_run_listings_sorted_and_filtered_by_the_server(served, as_role) -> None:  # noqa: ANN001
    from mlws.experiments import query_runs

    server, ws_path, tokens = served
    ws, owner = as_role("contributor"), as_role("owner")
    exp = Experiment(ws, "sorting")
    a = exp.start_logging(display_name="alpha", tags={"k": "2"})
    b = exp.start_logging(display_name="beta", tags={"k": "1"})
    # b is sent with the client's next send and numbered then: sent now, so that it is numbered
    # before c, which another client creates at once (the default order is by number).
    ws.remote.flush()
    c = Experiment(owner, "sorting").start_logging(display_name="gamma")
    a.add_properties({"p": "b"})
    b.add_properties({"p": "a"})
    kid = a.child_run("kid")
    kid.tag("deep", "yes")
    grandkid = kid.child_run()
    grandkid.set_tags({"deep": "yes"})
    grandkid.add_properties({"level": "2"})
    grandkid.complete()
    kid.complete()
    for r in (c, b, a):  # a lasts longest, c shortest
        r.complete()

    def listed(**f: object) -> list[str]:
        return [r["id"] for r in query_runs(ws, experiment="sorting", **f)]

    assert listed(sort_by="duration") == [a.id, b.id, c.id]
    assert listed(sort_by="duration", ascending=True) == [c.id, b.id, a.id]
    assert listed(sort_by="tag:k", ascending=True) == [b.id, a.id, c.id]  # no value: last
    assert listed(sort_by="property:p") == [a.id, b.id, c.id]
    assert listed(sort_by="submitter_user", ascending=True) == [b.id, a.id, c.id]
    assert listed(properties={"p": "a"}) == [b.id] and listed(properties="p") == [b.id, a.id]
    assert listed(text="amm") == [c.id] and listed(offset=1, limit=1) == [b.id]
    assert listed(after=(0, b.id)) == [a.id] and listed(after=(0, b.id), ascending=True) == [c.id]
    assert listed(include_children=True, run_type=kid.type, properties="level") == [grandkid.id]
    # get_children(recursive=True) with tags or properties: the whole tree, filtered.
    assert [r.id for r in a.get_children(recursive=True, tags={"deep": "yes"})] == [
        kid.id,
        grandkid.id,
    ]
    assert [r.id for r in a.get_children(recursive=True, properties="level")] == [grandkid.id]
    # A page at a time in any order: the token carries the position.
    seen, token = [], None
    while True:
        path = "/runs?experiment=sorting&sortBy=duration&limit=1"
        status, page = server.api(
            "GET", path + (f"&continuationToken={token}" if token else ""), tokens["reader"]
        )
        assert status == 200, page
        seen += [s["runId"] for s in page["value"]]
        token = page["continuationToken"]
        if not token:
            break
    assert seen == [a.id, b.id, c.id]
    # Bad input: one line (400), nothing changed.
    before = workspace_fingerprint(ws_path)
    for query in (
        "sortBy=weight",
        "sortBy=tag:",
        "property==x",
        "offset=-1",
        "afterRun=nope",
        "sortBy=duration&afterRun=" + a.id,
        "sortBy=duration&continuationToken=" + "W10",
    ):
        status, answer = server.api("GET", f"/runs?{query}", tokens["reader"])
        assert status == 400 and "\n" not in answer["error"]["message"], (query, answer)
    with pytest.raises(UserErrorException, match="cannot sort by"):
        listed(sort_by="weight")
    assert workspace_fingerprint(ws_path) == before


def test_start_logging_with_a_snapshot_directory(served, as_role, tmp_path: Path) -> None:  # noqa: ANN001
    from mlws.errors import SnapshotError
    from mlws.rundownload import download_run

    server, ws_path, tokens = served
    ws = as_role("contributor")
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "train.py").write_text("print('a snapshot taken by start_logging')\n")
    (src / "pkg" / "util.py").write_text("X = 1\n")
    exp = Experiment(ws, "snapped")
    with exp.start_logging(snapshot_directory=str(src)) as run:
        snapshot = run.get_details()["snapshotId"]
        assert snapshot and snapshot.startswith("sha256:")
    done = download_run(ws.get_run(run.id), str(tmp_path / "back"), what="snapshot")
    assert done.count == 2 and (tmp_path / "back" / "pkg" / "util.py").read_text() == "X = 1\n"
    # The same folder again sends no blob: the server has them all.
    before = ws.remote.counters["PUT blobs"]
    assert before >= 3  # the two files and the manifest, the first time
    again = exp.start_logging(snapshot_directory=str(src))
    assert again.get_details()["snapshotId"] == snapshot
    assert ws.remote.counters["PUT blobs"] == before
    # Once only; another manifest, a missing one, bad input: one line, nothing changed.
    path = f"/runs/{again.id}/snapshot"
    status, _ = server.api("PUT", path, tokens["contributor"], {"snapshotId": snapshot})
    assert status == 200  # the same again: nothing to do
    before_fp = ws.get_run(again.id).get_details()
    for body, code in (
        ({"snapshotId": "sha256:" + "0" * 64}, 404),
        ({"snapshotId": "nope"}, 400),
        ({}, 400),
        ({"snapshotId": snapshot, "extra": 1}, 400),
    ):
        status, answer = server.api("PUT", path, tokens["contributor"], body)
        assert status == code, (body, answer)
    status, _ = server.api("PUT", path, tokens["reader"], {"snapshotId": snapshot})
    assert status == 403
    assert ws.get_run(again.id).get_details()["snapshotId"] == before_fp["snapshotId"]
    again.complete()
    status, _ = server.api("PUT", path, tokens["contributor"], {"snapshotId": snapshot})
    assert status == 409  # ended
    runs_before = len(list(exp.get_runs()))
    with pytest.raises(SnapshotError):
        exp.start_logging(snapshot_directory=str(tmp_path / "absent"))
    assert len(list(exp.get_runs())) == runs_before  # a bad folder makes no run


def test_runs_started_while_a_batch_is_sent_do_not_wait_for_it(monkeypatch) -> None:  # noqa: ANN001
    """Only a write to a run inside the ``POST /runs/batch`` on its way waits for its answer
    (and then goes after it); runs started meanwhile are made and changed at once."""
    import threading

    from mlws.remote.tracker import Tracker

    monkeypatch.setattr("mlws.remote.tracker.FLUSH_S", 60.0)  # sends are the test's own

    class Server:  # a client whose batch request blocks until released
        url = "http://127.0.0.1:9"

        def __init__(self) -> None:
            self.sent: list[tuple[str, str, object]] = []
            self.entered, self.release = threading.Event(), threading.Event()

        def path(self, *segments: str) -> str:
            return "/" + "/".join(segments)

        def request(self, method: str, path: str, body=None, **_: object) -> object:  # noqa: ANN001
            self.sent.append((method, path, body))
            if path == "/runs/batch":
                self.entered.set()
                assert self.release.wait(10)
                return {"created": len(body["runs"])}
            return {}

    server = Server()
    tracker = Tracker(server)  # type: ignore[arg-type]
    tracker.heartbeat_known = True
    tracker.defer_create("r1", {"experiment": "e", "runId": "r1"})
    sender = threading.Thread(target=tracker.send_creates)
    sender.start()
    assert server.entered.wait(10)  # r1's creation is on its way, unanswered
    tracker.defer_create("r2", {"experiment": "e", "runId": "r2"})
    quick: list[bool] = []
    other = threading.Thread(
        target=lambda: quick.append(
            tracker.update_deferred("r2", lambda f: f.update(properties={"p": "1"}))
        )
    )
    other.start()
    other.join(10)
    assert quick == [True] and not server.release.is_set()  # done while r1's is unanswered
    late: list[bool] = []
    writer = threading.Thread(target=lambda: late.append(tracker.update_deferred("r1", dict.clear)))
    writer.start()
    server.release.set()
    sender.join(10)
    writer.join(10)
    assert late == [False]  # r1 was sent: its write goes to the server, after its creation
    tracker.send_creates()
    (first, second) = [b for m, p, b in server.sent if p == "/runs/batch"]
    assert [r["runId"] for r in first["runs"]] == ["r1"]
    assert second["runs"][0]["runId"] == "r2" and second["runs"][0]["properties"] == {"p": "1"}
    assert set(tracker.held) == {"r1", "r2"}  # left running: heartbeats keep their lease
    tracker.close()


def test_a_process_that_exits_delivers_its_unsent_runs(served, remote) -> None:  # noqa: ANN001
    """A run ended just before its process exits (created with the next send) reaches the
    server at exit; a process killed before its send leaves no trace of it."""
    import subprocess

    server, _ws_path, tokens = served
    script = (
        "import os, sys\n"
        "import mlws.remote.tracker\n"
        "from mlws import Experiment, Workspace\n"
        "mlws.remote.tracker.FLUSH_S = 3600.0\n"  # no tick: only the exit (or nothing) sends
        "ws = Workspace(sys.argv[1], token=sys.argv[2])\n"
        "exp = Experiment(ws, 'exits')\n"
        "exp.start_logging().complete()\n"  # the first: created at once
        "run = exp.start_logging()\n"
        "run.log('m', 1.0)\n"
        "run.complete()\n"
        "print(run.id, flush=True)\n"
        "if sys.argv[3] == 'kill':\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    ids = {}
    for how in ("exit", "kill"):
        done = subprocess.run(
            [sys.executable, "-c", script, server.url, tokens["contributor"], how],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        ids[how] = done.stdout.split()[0]
    run = Run(Experiment(remote, "exits"), ids["exit"])
    assert run.get_status() == "Completed" and run.get_metrics() == {"m": 1.0}
    with pytest.raises(RunNotFound):
        Run(Experiment(remote, "exits"), ids["kill"])
