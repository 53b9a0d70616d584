"""Script runs submitted to a remote workspace: recorded on the server, executed on this machine
by a detached supervisor that streams metrics, logs and outputs, ends them, and holds their lease.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
from helpers import SCRIPT_PRELUDE, served_workspace, start_server, wait_until
from test_distributed import MEET

from mlws import Experiment, Model, ScriptRunConfig, Workspace
from mlws.errors import ActivityFailedException, NotAvailableRemotely, RunStateError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - (server, ws path, tokens)
    with served_workspace(tmp_path_factory.mktemp("submit")) as served:
        yield served


@pytest.fixture
def remote(served, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201 - a Workspace
    server, _ws_path, tokens = served
    monkeypatch.setenv("MLWS_TOKEN", tokens["contributor"])
    ws = Workspace(server.url)
    yield ws
    ws.close()


def _source(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_text(body)
    return folder


def _run_example(served, name: str):  # noqa: ANN001, ANN202 - a CompletedProcess
    """Run examples/<name>/driver.py with MLWS_WORKSPACE = the server's URL; checks it exits 0."""
    import subprocess
    import sys

    server, _ws_path, tokens = served
    env = dict(os.environ, MLWS_WORKSPACE=server.url, MLWS_TOKEN=tokens["contributor"])
    driver = REPO / "examples" / name / "driver.py"
    done = subprocess.run(
        [sys.executable, str(driver)], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


TRAIN = """
import os, sys
from mlws import Run
run = Run.get_context()
run.log("mlws_file", __import__("mlws").__file__)
run.log("acc", float(sys.argv[1]))
run.tag("where", "remote")
print("hello from the script", flush=True)
os.makedirs("outputs", exist_ok=True)
open("outputs/model.txt", "w").write("weights")
if sys.argv[1] == "0":
    raise SystemExit("bad accuracy")
"""


def test_submit_runs_here_and_lands_on_the_server(served, remote, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    src = _source(tmp_path / "src", TRAIN)
    exp = Experiment(remote, "sub")
    run = exp.submit(ScriptRunConfig(src, "train.py", arguments=[0.5]), tags={"a": "1"})
    assert run.get_status() in ("NotStarted", "Queued", "Preparing", "Running", "Completed")
    details = run.wait_for_completion(show_output=True)
    assert details["status"] == "Completed", details
    out = capsys.readouterr().out
    assert "hello from the script" in out
    metrics = run.get_metrics()
    assert metrics["acc"] == 0.5
    # The script imported mlws from this checkout (the supervisor put it first on PYTHONPATH).
    assert metrics["mlws_file"].startswith(str(REPO))
    assert run.get_tags() == {"a": "1", "where": "remote"}
    names = run.get_file_names()
    assert "outputs/model.txt" in names and "logs/driver.log" in names
    assert "hello from the script" in run.get_details_with_logs()["logFiles"]["logs/driver.log"]
    props = run.get_properties()
    assert props["ContentSnapshotId"] == details["snapshotId"]
    assert details["runDefinition"]["script"] == "train.py"
    # A second submit of the same folder sends no file blob again: the server has them.
    before = dict(remote.remote.counters)
    run2 = exp.submit(ScriptRunConfig(src, "train.py", arguments=[0]))
    assert remote.remote.counters["PUT blobs"] == before.get("PUT blobs", 0)
    with pytest.raises(ActivityFailedException, match="bad accuracy"):
        run2.wait_for_completion()
    d2 = run2.get_details()
    assert d2["status"] == "Failed"
    assert d2["error"]["error"]["code"] == "UserError"
    assert "outputs/model.txt" in run2.get_file_names()


def test_unported_submits_are_one_line_errors_and_send_nothing(
    served, remote, tmp_path: Path
) -> None:  # noqa: ANN001
    from mlws import Dataset
    from mlws.errors import UserErrorException
    from mlws.hyperdrive import GridParameterSampling, HyperDriveConfig, PrimaryMetricGoal, choice

    src = _source(tmp_path / "src", TRAIN)
    exp = Experiment(remote, "sub-bad")
    before = dict(remote.remote.counters)
    # Data of this machine, for a run or a sweep the server executes: it cannot read it.
    here = Dataset.File.from_files(str(src)).as_named_input("here").as_mount()
    with pytest.raises(UserErrorException, match="is a path of this machine: upload it first"):
        exp.submit(ScriptRunConfig(src, "train.py", arguments=[here], compute_target="gpu"))
    with pytest.raises(UserErrorException, match="is a path of this machine: upload it first"):
        exp.submit(
            HyperDriveConfig(
                run_config=ScriptRunConfig(src, "train.py", arguments=[here]),
                hyperparameter_sampling=GridParameterSampling({"x": choice(1)}),
                primary_metric_name="acc",
                primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
                max_total_runs=1,
            )
        )
    from mlws.errors import EnvironmentNotFound

    with pytest.raises(EnvironmentNotFound, match="never-registered"):
        exp.submit(ScriptRunConfig(src, "train.py", environment="never-registered"))
    writes = {k: v for k, v in remote.remote.counters.items() if not k.startswith("GET")}
    assert writes == {k: v for k, v in before.items() if not k.startswith("GET")}


def test_datasets_example_runs_unchanged_against_a_server(served, tmp_path: Path) -> None:  # noqa: ANN001
    """examples/datasets with MLWS_WORKSPACE = the server's URL: an upload to the default
    datastore, a tabular dataset registered and read here, a run with the dataset mounted and
    an output registered on completion; the lineage both ways is on the server."""

    from mlws import Dataset

    _server, ws_path, _tokens = served
    done = _run_example(served, "datasets")
    assert "Dataset iris:1: 150 rows" in done.stdout
    assert "counts.csv: {'setosa': '50', 'versicolor': '50', 'virginica': '50'}" in done.stdout
    assert "The run read iris:1 (Mount)" in done.stdout
    with Workspace(ws_path) as local:  # the server's own folder
        iris = Dataset.get_by_name(local, "iris")
        assert iris.created_by == "contributor" and [r["direction"] for r in iris.runs()] == [
            "input"
        ]
        made = Dataset.get_by_name(local, "iris_by_species")
        assert made.created_by == "contributor" and made.runs()[0]["direction"] == "output"
        assert len(made.to_path()) == 4


def test_cancel_stops_the_local_process(served, remote, tmp_path: Path) -> None:  # noqa: ANN001
    src = _source(
        tmp_path / "src",
        "import time\nprint('waiting', flush=True)\ntime.sleep(60)\n",
    )
    run = Experiment(remote, "sub-cancel").submit(ScriptRunConfig(src, "train.py"))
    wait_until(lambda: run.get_status() == "Running", 20, "the run to start")
    run.cancel()
    wait_until(lambda: run.get_status() == "Canceled", 20, "the run to be canceled")
    assert "logs/driver.log" in run.get_file_names()
    # Interactive runs still cannot be canceled remotely; a finished run's cancel is a no-op.
    run.cancel()


def test_cancel_of_a_run_elsewhere_is_one_line(served, remote, tmp_path: Path) -> None:  # noqa: ANN001
    from mlws.remote.submit import record_path

    src = _source(tmp_path / "src", "import time\ntime.sleep(60)\n")
    run = Experiment(remote, "sub-else").submit(ScriptRunConfig(src, "train.py"))
    wait_until(lambda: run.get_status() == "Running", 20, "the run to start")
    record = record_path(remote.remote.url, run.id)
    saved = record.read_text()
    record.unlink()  # as on another machine: no supervisor of this one runs it
    with pytest.raises(RunStateError, match="cancel it there"):
        run.cancel()
    record.write_text(saved)
    run.cancel()
    wait_until(lambda: run.get_status() == "Canceled", 20, "the run to be canceled")


def test_killed_supervisor_fails_by_lease(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import json

    from helpers import server_token

    from mlws.remote.submit import record_path

    ws_path = tmp_path / "srv"
    Workspace.create(ws_path, _remember_name=False).close()
    token = server_token(ws_path, "c", "contributor")
    # 5 s: the detached supervisor must send its first heartbeat within the lease, and on a
    # loaded machine its interpreter alone can take a couple of seconds to start.
    server = start_server("-m", "mlws.server", str(ws_path), "--port", "0", "--run-lease-s", "5")
    try:
        monkeypatch.setenv("MLWS_TOKEN", token)
        pidfile = tmp_path / "script.pid"
        src = _source(
            tmp_path / "src",
            f"import os, time\nopen({str(pidfile)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n",
        )
        with Workspace(server.url) as ws:
            run = Experiment(ws, "killed").submit(ScriptRunConfig(src, "train.py"))
            wait_until(lambda: run.get_status() == "Running", 20, "the run to start")
            # The script runs (its pid written) before its supervisor is killed: on a loaded
            # machine it may start well after the run shows Running.
            script = wait_until(lambda: pidfile.exists() and pidfile.read_text(), 30, "its pid")
            pid = json.loads(record_path(ws.remote.url, run.id).read_text())["pid"]
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: run.get_status() == "Failed", 20, "the lease to lapse")
            assert run.get_details()["error"]["error"]["code"] == "ClientLost"
            # The orphaned script (its own process group): ended by its pid.
            os.killpg(int(script), signal.SIGKILL)
    finally:
        assert server.stop() == 0, server.lines


def test_quickstart_runs_unchanged_against_a_server(served, tmp_path: Path) -> None:  # noqa: ANN001
    """Issue 14's acceptance: examples/quickstart with MLWS_WORKSPACE = the server's URL.
    (pipeline, datasets and deploy: the tests around; distributed, which needs torch:
    tests/test_distributed_torch.py.)"""
    import subprocess
    import sys

    server, ws_path, tokens = served
    env = dict(os.environ, MLWS_WORKSPACE=server.url, MLWS_TOKEN=tokens["contributor"])
    driver = REPO / "examples" / "quickstart" / "driver.py"
    done = subprocess.run(
        [sys.executable, str(driver)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    ids = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("Submitted ")]
    assert len(ids) == 3
    # On the server's side, from its own folder: the runs, their metrics, logs and outputs.
    with Workspace(ws_path) as local:
        for run_id in ids:
            run = local.get_run(run_id)
            assert run.get_status() == "Completed"
            assert {"alpha", "r2", "rmse", "coef"} <= set(run.get_metrics())
            names = run.get_file_names()
            assert "outputs/model.pkl" in names and "logs/driver.log" in names
            assert run.get_details()["snapshotId"]


def test_deploy_example_runs_unchanged_against_a_server(served) -> None:  # noqa: ANN001
    """examples/deploy with MLWS_WORKSPACE = the server's URL: the run trains on this machine,
    the model is registered on the server, the service runs here (two replicas, scored by
    ``service.run`` and a plain POST with its key) and its record on the server goes with it."""
    _server, ws_path, _tokens = served
    out = _run_example(served, "deploy").stdout
    assert "service.run: [0]" in out and "/score: [0]" in out and "Service iris-svc deleted" in out
    with Workspace(ws_path) as ws:
        versions = [m.version for m in Model.list(ws, name="iris")]
        assert versions and Model(ws, "iris").created_by == "contributor"
        assert not ws.catalog.query("SELECT 1 FROM service_records WHERE name = 'iris-svc'")


def test_submission_route_checks_everything_first(served) -> None:  # noqa: ANN001
    server, ws_path, tokens = served
    c = tokens["contributor"]
    good = {"runId": "route_1", "snapshotId": "sha256:" + "0" * 64, "definition": {}}
    status, body = server.api("POST", "/experiments/route-x/submissions", c, good)
    assert status == 404 and "sha256:" in body["error"]["message"]  # no such manifest
    for bad, words in (
        ({**good, "target": "gpu"}, "submitting machine"),
        ({**good, "definition": []}, "definition"),
        ({**good, "color": 1}, "unknown field"),
        ({"definition": {}}, "snapshotId"),
    ):
        status, body = server.api("POST", "/experiments/route-x/submissions", c, bad)
        assert status == 400 and words in body["error"]["message"], body
    status, _ = server.api("POST", "/experiments/route-x/submissions", tokens["reader"], good)
    assert status == 403
    # Nothing was created: not the run, not the experiment.
    status, body = server.api("GET", "/runs/route_1", c)
    assert status == 404
    status, body = server.api("GET", "/experiments", c)
    assert "route-x" not in {e["name"] for e in body["value"]}
    # A status move of an interactive run is refused (only submitted runs move so).
    status, run = server.api("POST", "/experiments/route-x2/runs", c, {})
    status, body = server.api("POST", f"/runs/{run['runId']}/status", c, {"status": "Queued"})
    assert status == 409, body
    status, body = server.api("POST", f"/runs/{run['runId']}/status", c, {"status": "Done"})
    assert status == 400, body


def test_cli_run_submit_waits_and_streams(served, remote, tmp_path: Path) -> None:  # noqa: ANN001
    from helpers import invoke

    server, _ws_path, _tokens = served
    src = _source(tmp_path / "src", TRAIN)
    args = ["-w", server.url, "run", "submit", "-e", "cli", "-d", str(src), "train.py", "--wait"]
    ok = invoke(*args, "--", "0.7")
    assert ok.exit_code == 0, ok.output
    assert "hello from the script" in ok.output and "Completed" in ok.output
    bad = invoke(*args, "--", "0")
    assert bad.exit_code == 1
    errors = [ln for ln in bad.output.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 1 and "bad accuracy" in errors[0], bad.output
    # A target the server does not have: its one-line refusal, nothing submitted.
    gpu = invoke(
        "-w", server.url, "run", "submit", "-e", "cli", "-t", "gpu", "-d", str(src), "train.py"
    )
    assert gpu.exit_code == 1 and "no compute target named 'gpu'" in gpu.output, gpu.output


# -- submissions the server executes (mlws.remote.execute, mlws.server.execution) ---------------
#: Ranks meet at MASTER_ADDR:MASTER_PORT over plain TCP (no torch): rank 0 logs the sum.
RANKS = SCRIPT_PRELUDE + MEET


@contextlib.contextmanager
def as_server_admin(served):  # noqa: ANN001, ANN201 - a Workspace
    """The server's workspace opened from its own folder with the server's HOME (its key
    vault's key, its clusters' state), as its admin on that machine would."""
    _server, ws_path, _tokens = served
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(ws_path.parent / "home"))
        for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
            mp.delenv(var, raising=False)
        with Workspace(ws_path) as local:
            yield local


@pytest.fixture
def cpu_target(served):  # noqa: ANN001, ANN201 - None
    """An AmlCompute target 'cpu' on the server's side (as its admin would register it); its
    local cluster is stopped at the end (it would idle on for half an hour)."""
    from mlws.compute import AmlCompute, ComputeTarget
    from mlws.compute.dask import stop_cluster

    with as_server_admin(served) as local:
        ComputeTarget.create(local, "cpu", AmlCompute.provisioning_configuration(max_nodes=2))
    yield
    with as_server_admin(served) as local:
        assert stop_cluster(local, "cpu")


@pytest.fixture(scope="module")
def server_targets(served, ssh_servers, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001, ANN201 - None
    """The server's own ``ssh`` target "lab" (a real sshd on 127.0.0.1) and Dask target "pool"
    (a scheduler this test module starts, one worker process), attached by its admin."""
    from distributed import LocalCluster
    from sshd import attach_ssh_target

    from mlws.compute import ComputeTarget, DaskCompute

    folder = tmp_path_factory.mktemp("server-targets")
    with as_server_admin(served) as local, pytest.MonkeyPatch.context() as mp:
        # The worker imports this checkout's mlws and keeps its caches in the server's HOME.
        mp.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        cluster = LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        )
        try:
            ssh_servers[0].start()
            # The host's Python has this mlws installed (shipping it is test_compute_ssh's).
            python = folder / "python"
            python.write_text(
                f'#!/bin/sh\nPYTHONPATH={REPO}:"$PYTHONPATH" exec {sys.executable} "$@"\n'
            )
            python.chmod(0o755)
            attach_ssh_target(local, "lab", ssh_servers[:1], folder, python_path=str(python))
            ComputeTarget.attach(
                local, "pool", DaskCompute.attach_configuration(cluster.scheduler_address)
            )
        except BaseException:
            cluster.close()
            raise
    try:
        yield
    finally:
        cluster.close()


def test_server_executes_targets_distributed_jobs_and_sweeps(
    served, remote, cpu_target, tmp_path: Path, capsys
) -> None:  # noqa: ANN001
    """A target registered on the server, a distributed job (target local = the server's
    machine) and a sweep: executed by the server, followed, canceled from the client."""
    from mlws import PyTorchConfiguration
    from mlws.hyperdrive import GridParameterSampling, HyperDriveConfig, PrimaryMetricGoal, choice

    exp = Experiment(remote, "on-server")
    src = _source(tmp_path / "src", TRAIN)
    run = exp.submit(ScriptRunConfig(src, "train.py", arguments=[0.25], compute_target="cpu"))
    ranks = exp.submit(
        ScriptRunConfig(
            _source(tmp_path / "ranks", RANKS),
            "train.py",
            distributed_job_config=PyTorchConfiguration(process_count=2),
        )
    )
    sweep = exp.submit(
        HyperDriveConfig(
            run_config=ScriptRunConfig(
                _source(
                    tmp_path / "trial",
                    "import sys\n" + TRAIN.replace("sys.argv[1]", "sys.argv[-1]"),
                ),
                "train.py",
                compute_target="cpu",
            ),
            hyperparameter_sampling=GridParameterSampling({"x": choice(0.75)}),
            primary_metric_name="acc",
            primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
            max_total_runs=1,
        )
    )
    for folder in ("src", "ranks", "trial"):  # the server runs its snapshots, not the folders
        shutil.rmtree(tmp_path / folder)
    assert run.wait_for_completion(show_output=True)["status"] == "Completed"
    assert "hello from the script" in capsys.readouterr().out
    assert run.get_metrics()["acc"] == 0.25
    assert run.get_metrics()["mlws_file"].startswith(str(REPO))  # the server's runs: this checkout
    details = run.get_details()
    assert details["target"] == "cpu" and details["submittedBy"] == "contributor", details
    assert "outputs/model.txt" in run.get_file_names()
    assert not list(
        (Path(os.environ["HOME"]) / ".cache").rglob(f"{run.id}.json")
    )  # no supervisor here
    assert ranks.wait_for_completion(raise_on_error=False)["status"] == "Completed"
    assert ranks.get_metrics()["rank_sum"] == 1
    sweep.wait_for_completion(show_output=False)
    assert sweep.get_status() == "Completed"
    assert len(sweep.get_children()) == 1
    best = sweep.get_best_run_by_primary_metric()
    assert best is not None and best.get_metrics()["acc"] == 0.75
    (ranked,) = sweep.get_children_sorted_by_primary_metric()
    assert ranked["best_primary_metric"] == 0.75 and ranked["hyperparameters"] == '{"x": 0.75}'
    # Cancel: the server stops what it runs.
    slow = _source(tmp_path / "slow", "import time\nprint('waiting', flush=True)\ntime.sleep(60)\n")
    held = exp.submit(ScriptRunConfig(slow, "train.py", compute_target="cpu"))
    wait_until(lambda: held.get_status() == "Running", 20, "the run to start")
    held.cancel()
    wait_until(lambda: held.get_status() == "Canceled", 20, "the run to be canceled")


def test_server_submissions_are_checked_first(served, remote, tmp_path: Path) -> None:  # noqa: ANN001
    """A target the server does not have, a reader's token, a bad body: one-line errors, and
    nothing is created (no run, no experiment)."""
    from mlws.errors import ComputeTargetException, Forbidden

    server, _ws_path, tokens = served
    src = _source(tmp_path / "src", TRAIN)
    with pytest.raises(ComputeTargetException, match="no compute target named 'gpu'"):
        Experiment(remote, "never-made").submit(
            ScriptRunConfig(src, "train.py", compute_target="gpu")
        )
    reader = Workspace(server.url, token=tokens["reader"])
    try:
        with pytest.raises(Forbidden):
            Experiment(reader, "never-made").submit(
                ScriptRunConfig(src, "train.py", compute_target="cpu")
            )
    finally:
        reader.close()
    c = tokens["contributor"]
    path = "/experiments/never-made/executions"
    for bad, words in (
        ({"kind": "shell", "definition": {}}, "kind must be"),
        ({"kind": "script", "definition": {"runConfig": []}}, "runConfig"),
        ({"kind": "pipeline", "definition": {"pipeline": {"steps": []}}}, "steps"),
        ({"kind": "sweep", "definition": {"hyperdrive": {}}}, "sampling"),
        ({"kind": "script", "definition": {}, "color": 1}, "unknown field"),
    ):
        status, body = server.api("POST", path, c, bad)
        assert status == 400 and words in body["error"]["message"], body
    script = {"runConfig": {"script": "train.py"}, "sourceDirectory": "/x"}
    status, body = server.api(
        "POST",
        path,
        c,
        {
            "kind": "script",
            "definition": {**script, "snapshot": {"manifest": "sha256:" + "0" * 64}},
        },
    )
    assert status == 404, body
    # Data the server cannot take: checked before anything is made.
    snapshot = {"manifest": remote.blobs.put_manifest([])}
    local = {
        "name": "d",
        "mode": "mount",
        "dataset": {"definition": {"type": "file", "sources": [{"local": "/etc"}]}},
    }
    unknown = {**local, "dataset": {"name": "no-such-dataset", "version": 1}}
    output = {"name": "o", "datastore": "no_such_store", "path": "x/{run-id}"}
    data = {**script, "snapshot": snapshot, "arguments": [{"mlwsInput": "d"}]}
    for definition, want, words in (
        ({**data, "inputs": [local]}, 400, "a served workspace's datasets read datastore paths"),
        ({**data, "inputs": [unknown]}, 404, "no-such-dataset"),
        ({**data, "arguments": [{"mlwsInput": "e"}], "inputs": [local]}, 400, "neither text"),
        ({**data, "arguments": [{"mlwsInput": ["d"]}], "inputs": [local]}, 400, "neither text"),
        ({**data, "inputs": [local, local]}, 400, "a name each, once"),
        ({**data, "arguments": [{"mlwsOutput": "o"}], "outputs": [output]}, 404, "no_such_store"),
    ):
        status, body = server.api("POST", path, c, {"kind": "script", "definition": definition})
        assert status == want and words in body["error"]["message"], body
    step = {"name": "s", "upstream": [], "runConfig": {}, "snapshot": snapshot, "datasets": [local]}
    status, body = server.api(
        "POST", path, c, {"kind": "pipeline", "definition": {"pipeline": {"steps": [step]}}}
    )
    assert status == 400 and "datastore paths" in body["error"]["message"], body
    status, body = server.api("GET", "/experiments", c)
    assert "never-made" not in {e["name"] for e in body["value"]}
    status, body = server.api("POST", "/runs/no-such-run/cancel", c, {})
    assert status == 404, body


def test_pipeline_example_runs_unchanged_against_a_server(served, tmp_path: Path) -> None:  # noqa: ANN001
    """examples/pipeline with MLWS_WORKSPACE = the server's URL: the server's controller runs
    the steps, reuses them against its catalog, and registers the model there."""

    from mlws import Model

    _server, ws_path, _tokens = served
    done = _run_example(served, "pipeline")
    assert "Submitted again unchanged: 4 of 4 steps reused" in done.stdout
    assert "Latest model: diabetes-ridge:2" in done.stdout
    with Workspace(ws_path) as local:
        assert Model(local, "diabetes-ridge").version == 2
        runs = list(Experiment(local, "pipeline-example").get_runs())
        assert len(runs) == 3 and {r.get_status() for r in runs} == {"Completed"}
        assert {r.get_details()["submittedBy"] for r in runs} == {"contributor"}
        # Its steps too, and the model its register step made: the token's user, not the OS
        # user the server runs the steps as.
        steps = [s for r in runs for s in r.get_children()]
        assert {s.get_details()["submittedBy"] for s in steps} == {"contributor"}
        assert {m.created_by for m in Model.list(local, "diabetes-ridge")} == {"contributor"}
    # The client's PipelineRun: its steps, and a step's output downloaded through the server.
    server, _ws_path, tokens = served
    with Workspace(server.url, token=tokens["reader"]) as remote:
        last = remote.get_run(next(iter(Experiment(remote, "pipeline-example").get_runs())).id)
        assert type(last).__name__ == "PipelineRun" and len(last.get_steps()) == 4
        assert last.get_graph()["train"] == ["prep"]
        (train,) = last.find_step_run("train")
        folder = train.get_output_data("model").download(tmp_path)
        assert (Path(folder) / "weights.npy").stat().st_size > 0


def test_publish_from_a_client_and_submit_it(served, remote, tmp_path: Path) -> None:  # noqa: ANN001
    """pipeline.publish(...) from a client records it on the server (its snapshot frozen there);
    get, list, endpoint, submit through its REST address; enable/disable stay on the server."""
    from mlws import Pipeline, PipelineParameter, PythonScriptStep
    from mlws.pipelines.published import PublishedPipeline

    server, _ws_path, tokens = served
    src = _source(tmp_path / "src", TRAIN)
    step = PythonScriptStep(
        "train.py", arguments=[PipelineParameter("acc", default_value=0.5)], source_directory=src
    )
    published = Pipeline(remote, [step]).publish("client-made", description="from a client")
    (src / "train.py").write_text("raise SystemExit('changed after publishing')\n")
    assert published.endpoint == f"{server.url}/api/v1/pipelines/{published.id}"
    assert PublishedPipeline.get(remote, published.id).get_step_names() == ["train.py"]
    assert published.id in {p.id for p in PublishedPipeline.list(remote)}
    run = published.submit(remote, "published-remote", pipeline_parameters={"acc": 0.75})
    assert run.wait_for_completion(show_output=False)["status"] == "Completed"
    (step_run,) = run.get_steps()
    assert step_run.get_metrics()["acc"] == 0.75
    with pytest.raises(NotAvailableRemotely):
        published.disable()
    # A pipeline run's cancel from the client: the server's controller stops its steps.
    slow = _source(tmp_path / "slow", "import time\ntime.sleep(60)\n")
    held = Experiment(remote, "published-remote").submit(
        Pipeline(remote, [PythonScriptStep("train.py", source_directory=slow)])
    )
    wait_until(
        lambda: [s.get_status() for s in held.get_steps()] == ["Running"], 30, "the step to run"
    )
    held.cancel()
    wait_until(lambda: held.get_status() == "Canceled", 30, "the pipeline to be canceled")
    assert [s.get_status() for s in held.get_steps()] == ["Canceled"]
    status, body = server.api("POST", "/pipelines", tokens["reader"], {"name": "x", "pipeline": {}})
    assert status == 403, body


#: TRAIN, then a model registered from the script (argv[2] names it): its createdBy is the
#: submitting token's user, not the OS user the server runs scripts as.
TARGET_TRAIN = (
    TRAIN
    + """
from mlws import Model
Model.register(run.experiment.workspace, "outputs/model.txt", "srvexec-" + sys.argv[2])
"""
)


def test_server_executes_on_its_ssh_and_dask_targets(
    served, remote, server_targets, tmp_path: Path, capsys
) -> None:  # noqa: ANN001
    """A client's submits to the server's ssh host and Dask scheduler: executed there, the
    run's metrics, streamed log, outputs and the model its script registers visible from the
    client, all made by the token's user."""
    from mlws import Model

    src = _source(tmp_path / "src", TARGET_TRAIN)
    exp = Experiment(remote, "on-ssh-and-dask")
    runs = {
        t: exp.submit(ScriptRunConfig(src, "train.py", arguments=[0.5, t], compute_target=t))
        for t in ("lab", "pool")
    }
    shutil.rmtree(src)  # the server runs its snapshot, not the folder
    for target, run in runs.items():
        details = run.wait_for_completion(show_output=True, raise_on_error=False)
        assert details["status"] == "Completed", (target, details, run.get_file_names())
        assert "hello from the script" in capsys.readouterr().out, target
        assert run.get_metrics()["acc"] == 0.5 and run.get_tags()["where"] == "remote"
        assert details["target"] == target and details["submittedBy"] == "contributor"
        names = run.get_file_names()
        assert "outputs/model.txt" in names and "logs/driver.log" in names, (target, names)
        got = run.download_file("outputs/model.txt", tmp_path / target / "model.txt")
        assert Path(got).read_text() == "weights"
        log = run.get_details_with_logs()["logFiles"]["logs/driver.log"]
        assert "hello from the script" in log
        model = Model(remote, f"srvexec-{target}")
        assert model.created_by == "contributor", (target, model.created_by)


#: Reads a mounted dataset (argv[1]) and a downloaded DataPath (argv[2]), writes their file
#: count to the output folder (argv[3]) and logs it.
DATA_TRAIN = """
import os, sys
from mlws import Run
run = Run.get_context()
mounted, copied, out = sys.argv[1], sys.argv[2], sys.argv[3]
run.log("mounted", len(os.listdir(mounted)))
run.log("copied", len(os.listdir(copied)))
run.log("acc", float(sys.argv[-1]) if len(sys.argv) > 4 else 0.0)
open(os.path.join(out, "n.txt"), "w").write(str(len(os.listdir(mounted))))
"""

#: A sweep's trial: the dataset downloaded (argv[1]), the hyperparameter last.
TRIAL = """
import os, sys
from mlws import Run
run = Run.get_context()
run.log("files", len(os.listdir(sys.argv[1])))
run.log("acc", float(sys.argv[-1]))
"""


def test_server_executed_runs_and_sweeps_take_data(
    served, remote, server_targets, tmp_path: Path
) -> None:  # noqa: ANN001
    """A registered dataset mounted, a DataPath downloaded and an output registered on
    completion, in a run the server executes on its Dask target, and a sweep over the
    dataset on its ssh host: the server resolves the data against its catalog and records
    the lineage."""
    from mlws import Dataset, OutputFileDatasetConfig
    from mlws.hyperdrive import GridParameterSampling, HyperDriveConfig, PrimaryMetricGoal, choice

    data = tmp_path / "data"
    data.mkdir()
    for name in ("a.csv", "b.csv"):
        (data / name).write_text("x\n1\n")
    store = remote.get_default_datastore()
    store.upload(str(data), target_path="srvexec/data", overwrite=True, show_progress=False)
    ds = Dataset.File.from_files((store, "srvexec/data")).register(
        remote, "srvexec-data", create_new_version=True
    )
    out = OutputFileDatasetConfig("counts").register_on_complete("srvexec-counts")
    exp = Experiment(remote, "on-server-data")
    run = exp.submit(
        ScriptRunConfig(
            _source(tmp_path / "src", DATA_TRAIN),
            "train.py",
            arguments=[
                ds.as_named_input("data").as_mount(),
                store.path("srvexec/data").as_download(),
                out,
            ],
            compute_target="pool",
        )
    )
    sweep = exp.submit(
        HyperDriveConfig(
            run_config=ScriptRunConfig(
                _source(tmp_path / "trial", TRIAL),
                "train.py",
                arguments=[ds.as_named_input("data").as_download()],
                compute_target="lab",
            ),
            hyperparameter_sampling=GridParameterSampling({"x": choice(0.5)}),
            primary_metric_name="acc",
            primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
            max_total_runs=1,
        )
    )
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Completed", (details, run.get_details_with_logs()["logFiles"])
    assert run.get_metrics()["mounted"] == 2 and run.get_metrics()["copied"] == 2
    (used,) = [d for d in details["inputDatasets"] if d["dataset"]["name"]]
    assert used["dataset"]["id"] == ds.id and used["consumptionDetails"]["mechanism"] == "Mount"
    made = run.output_datasets["counts"]
    assert made.name == "srvexec-counts" and made.created_by == "contributor"
    sweep.wait_for_completion(show_output=False)
    (trial,) = sweep.get_children()
    assert trial.get_metrics() == {"files": 2, "acc": 0.5}
    assert trial.get_details()["submittedBy"] == "contributor"
    with as_server_admin(served) as local:  # the lineage, on the server
        by = {r["run"]: r["direction"] for r in Dataset.get_by_name(local, ds.name).runs()}
        assert by[run.id] == "input" and by[trial.id] == "input"
        assert [r["run"] for r in Dataset.get_by_name(local, "srvexec-counts").runs()] == [run.id]
