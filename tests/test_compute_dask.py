"""Integration tests of the ``dask`` compute target: real local clusters, real workers, real faults.

Every test that starts a cluster stops it at teardown (``dask_target`` / ``own_cluster``), and
``no_leftovers`` then checks that no process started by the test (found by the test's private
``HOME`` in its environment) is still alive. Scripts never sleep for a fixed time: they block on a
*gate file* that the test creates (or never creates), write their pid to a file the test reads,
and give up on their own after ``SCRIPT_GIVE_UP_S`` so nothing outlives a broken test for long.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import (
    SCRIPT_PRELUDE,
    V1_TRAIN,
    assert_a_pipeline_runs_on,
    assert_a_sweep_runs_on,
    kill_run_processes,
    processes_of_test,
    wait_until,
)

from mlws import Experiment, ScriptRunConfig, Workspace, get_result, run_parallel
from mlws.compute import ComputeTarget
from mlws.compute.dask import AmlCompute, DaskCompute
from mlws.errors import ComputeTargetException
from mlws.lifecycle import ACTIVE, process_alive, reconcile_active
from mlws.maintenance import fsck
from mlws.runs import Run

# Prepended to every script.
PRELUDE = (
    SCRIPT_PRELUDE
    + """
def claim_attempt(folder):
    # Atomically creates folder/attempt-N (holding this pid) for the first free N; returns N.
    tmp = os.path.join(folder, f".{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    n = 1
    while True:
        try:
            os.link(tmp, os.path.join(folder, f"attempt-{n}"))
            break
        except FileExistsError:
            n += 1
    os.unlink(tmp)
    return n
"""
)


# -- helpers ---------------------------------------------------------------------------------------
def make_source(tmp_path: Path, body: str, name: str = "src") -> Path:
    src = tmp_path / name
    src.mkdir()
    (src / "train.py").write_text(PRELUDE + textwrap.dedent(body))
    return src


def submit(ws: Workspace, src: Path, *args: Any, target: str = "cpu", exp: str = "e") -> Run:
    cfg = ScriptRunConfig(
        source_directory=str(src),
        script="train.py",
        arguments=[str(a) for a in args],
        compute_target=target,
    )
    return Experiment(ws, exp).submit(cfg)


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text else None


def wait_pid(path: Path, timeout: float = 20.0) -> int:
    return wait_until(lambda: read_pid(path), timeout, f"a pid in {path}")


def pid_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie counts as gone: it runs no code)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_status(run: Run, statuses: tuple[str, ...] | str, timeout: float = 20.0) -> str:
    wanted = (statuses,) if isinstance(statuses, str) else statuses
    return wait_until(
        lambda: (s := run.get_status()) in wanted and s, timeout, f"run {run.id} to reach {wanted}"
    )


def error_of(run: Run) -> dict[str, Any]:
    return run.get_details().get("error", {}).get("error", {})


def state_file(home: Path, ws: Workspace, target: str) -> Path:
    """Where a local cluster's state lives: keyed by the workspace folder (a copy of the
    workspace shares its id, never its folder)."""
    return home / ".cache" / "mlws" / "dask" / f"{ws.folder_key}-{target}.json"


def cluster_pid(home: Path, ws: Workspace, target: str) -> int:
    return int(json.loads(state_file(home, ws, target).read_text())["pid"])


def target_names(ws: Workspace) -> list[str]:
    return [t.name for t in ComputeTarget.list(ws)]


def run_count(ws: Workspace) -> int:
    return int(ws.catalog.scalar("SELECT count(*) FROM runs"))


def assert_workspace_sound(ws: Workspace) -> None:
    """fsck finds nothing, no run is left active, and reading runs changes nothing."""
    report = fsck(ws)
    assert report.ok, report.as_dict()
    assert report.temp_files == 0, report.as_dict()
    assert reconcile_active(ws) == 0
    marks = ",".join("?" * len(ACTIVE))
    assert not ws.catalog.query(f"SELECT id, status FROM runs WHERE status IN ({marks})", ACTIVE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture
def no_leftovers(ws: Workspace, isolated_home: Path) -> Iterator[None]:
    """At teardown (after the clusters are stopped): no process of this test may be alive."""
    yield
    kill_run_processes(ws)
    try:
        wait_until(lambda: not processes_of_test(isolated_home), 20, "the test's processes to end")
    except AssertionError:
        left = processes_of_test(isolated_home)
        desc = [(p.pid, " ".join(p.info["cmdline"] or [])[:120]) for p in left]
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass
        raise AssertionError(f"processes left behind: {desc}") from None


@pytest.fixture
def dask_target(ws: Workspace, no_leftovers: None) -> Iterator[Callable[..., AmlCompute]]:
    """``make(name="cpu", **provisioning)`` records a local-cluster target (min 1, max 2 nodes
    unless told); every one made is stopped at teardown."""
    made: list[AmlCompute] = []

    def make(name: str = "cpu", **kwargs: Any) -> AmlCompute:
        kwargs = {"min_nodes": 1, "max_nodes": 2, **kwargs}
        target = ComputeTarget.create(ws, name, AmlCompute.provisioning_configuration(**kwargs))
        assert isinstance(target, AmlCompute)
        made.append(target)
        return target

    yield make
    kill_run_processes(ws)
    for target in made:
        target.stop()  # works after delete() too: it only needs the workspace and the name


@pytest.fixture
def own_cluster(ws: Workspace, no_leftovers: None) -> Iterator[Any]:
    """A LocalCluster this test starts itself (to attach); its worker processes inherit the
    test's PYTHONPATH, so they import this checkout's mlws."""
    from distributed import LocalCluster

    cluster = LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    )
    try:
        yield cluster
    finally:
        kill_run_processes(ws)
        cluster.close()


# -- 1. happy path, same as local, cluster reused --------------------------------------------------
HAPPY = """
from mlws import Run
run = Run.get_context()
alpha = float(sys.argv[1])
run.log("alpha", alpha)
for loss in (3.0, 2.0, 1.5):
    run.log("loss", loss)
run.tag("model", "linear")
os.makedirs("outputs/sub", exist_ok=True)
with open("outputs/model.txt", "w") as f:
    f.write(f"weights for alpha={alpha}")
with open("outputs/sub/extra.json", "w") as f:
    f.write("{}")
with open(f"/proc/{os.getppid()}/stat") as f:
    grandparent = int(f.read().rsplit(")", 1)[1].split()[1])
print(f"ppid={os.getppid()} gppid={grandparent}")
print(f"trained with alpha={alpha}")
"""


def log_pids(run: Run) -> tuple[int, int]:
    line = next(ln for ln in "".join(run.iter_log()).splitlines() if ln.startswith("ppid="))
    ppid, gppid = (int(part.split("=")[1]) for part in line.split())
    return ppid, gppid


def outputs_of(run: Run, into: Path) -> dict[str, str]:
    names = sorted(n for n in run.get_file_names() if n.startswith("outputs/"))
    return {n: run.download_file(n, into / run.id / n).read_text() for n in names}


@pytest.mark.timeout(90)
def test_same_config_completes_on_local_and_dask_alike_and_cluster_is_reused(
    ws: Workspace, tmp_path: Path, isolated_home: Path, dask_target: Callable[..., AmlCompute]
) -> None:
    target = dask_target()
    # Recording the target starts nothing.
    assert target.get_status() == "Stopped"
    assert target.scheduler_address is None and target.nodes() == []
    assert not state_file(isolated_home, ws, "cpu").exists()

    src = make_source(tmp_path, HAPPY)
    cfg = ScriptRunConfig(
        source_directory=str(src), script="train.py", arguments=["0.5"], compute_target="cpu"
    )
    exp = Experiment(ws, "e")
    on_dask = exp.submit(cfg)
    cfg.run_config.target = "local"
    on_local = exp.submit(cfg)

    for run in (on_dask, on_local):
        details = run.wait_for_completion(timeout=60, raise_on_error=False)
        assert details["status"] == "Completed", (details, "".join(run.iter_log()))
    assert on_dask.get_details()["target"] == "cpu" and on_local.get_details()["target"] == "local"

    expected = {"alpha": 0.5, "loss": [3.0, 2.0, 1.5]}
    assert on_dask.get_metrics() == expected
    assert on_local.get_metrics() == expected
    assert on_dask.get_tags()["model"] == on_local.get_tags()["model"] == "linear"
    dask_outputs = outputs_of(on_dask, tmp_path / "dl")
    assert dask_outputs == {
        "outputs/model.txt": "weights for alpha=0.5",
        "outputs/sub/extra.json": "{}",
    }
    assert outputs_of(on_local, tmp_path / "dl") == dask_outputs
    assert "trained with alpha=0.5" in "".join(on_dask.iter_log())
    assert "trained with alpha=0.5" in "".join(on_local.iter_log())

    # The dask run ran on a worker of the cluster mlws started (not under its supervisor); the
    # local one under its supervisor.
    pid = cluster_pid(isolated_home, ws, "cpu")
    ppid, gppid = log_pids(on_dask)
    supervisor = ws.catalog.scalar("SELECT supervisor_pid FROM runs WHERE id = ?", (on_dask.id,))
    assert gppid == pid and ppid != supervisor
    local_supervisor = ws.catalog.scalar(
        "SELECT supervisor_pid FROM runs WHERE id = ?", (on_local.id,)
    )
    assert log_pids(on_local)[0] == local_supervisor
    assert "mlws.retried" not in on_dask.get_properties()

    address = on_dask.get_properties()["mlws.dask.scheduler"]
    assert address == target.scheduler_address and address.startswith("tcp://127.0.0.1:")
    assert target.get_status() == "Running"
    assert 1 <= len(target.nodes()) <= 2
    assert all(n.startswith("tcp://127.0.0.1:") for n in target.nodes())

    # A second run reuses the running cluster.
    again = submit(ws, src, "0.25")
    assert again.wait_for_completion(timeout=60)["status"] == "Completed"
    assert again.get_properties()["mlws.dask.scheduler"] == address
    assert again.get_metrics()["alpha"] == 0.25
    assert cluster_pid(isolated_home, ws, "cpu") == pid

    assert target.stop() is True
    assert target.get_status() == "Stopped" and not state_file(isolated_home, ws, "cpu").exists()
    assert pid_gone(pid)
    assert target.stop() is False


# -- 2. cancel ---------------------------------------------------------------------------------------
BLOCKING = """
import signal, subprocess
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only the SIGKILL after the grace period ends it
pidfile, gate = sys.argv[1], sys.argv[2]
child = subprocess.Popen(
    [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"]
)
write_pid(pidfile + ".child", child.pid)
write_pid(pidfile)
print("started", flush=True)
wait_gate(gate)
print("gate opened")
"""


def test_an_unchanged_v1_training_script_completes_on_dask(
    ws: Workspace, tmp_path: Path, dask_target: Callable[..., AmlCompute]
) -> None:
    """``from azureml.core import Run`` in a run on a Dask worker finds the layer by itself."""
    dask_target()
    src = tmp_path / "v1"
    src.mkdir()
    (src / "train.py").write_text(V1_TRAIN)
    run = Experiment(ws, "v1").submit(ScriptRunConfig(str(src), "train.py", compute_target="cpu"))
    details = run.wait_for_completion(timeout=60, raise_on_error=False)
    assert details["status"] == "Completed", (details, "".join(run.iter_log()))
    assert run.get_metrics() == {"accuracy": 0.91}
    assert outputs_of(run, tmp_path / "dl") == {"outputs/model.txt": "weights"}
    log = "".join(run.iter_log())
    assert "azureml from" in log and "v1/shim/azureml" in log, log


def test_a_sweeps_trials_run_on_dask(
    ws: Workspace, tmp_path: Path, dask_target: Callable[..., AmlCompute]
) -> None:
    """HyperDrive trials are script runs on the sweep's target: here, a Dask cluster."""
    dask_target()
    assert_a_sweep_runs_on(ws, tmp_path, "cpu")


def test_a_pipelines_steps_run_on_dask(
    ws: Workspace, tmp_path: Path, dask_target: Callable[..., AmlCompute]
) -> None:
    """Pipeline steps are script runs on their target, PipelineData passed between them."""
    dask_target()
    assert_a_pipeline_runs_on(ws, tmp_path, "cpu")


@pytest.mark.timeout(90)
def test_cancel_running_and_queued_dask_runs(
    ws: Workspace, tmp_path: Path, dask_target: Callable[..., AmlCompute]
) -> None:
    target = dask_target(min_nodes=1, max_nodes=1)  # one worker, one thread: a second run queues
    src = make_source(tmp_path, BLOCKING)
    gate = tmp_path / "gate"  # never opened
    first = submit(ws, src, tmp_path / "pid1", gate)
    pid = wait_pid(tmp_path / "pid1")
    child = wait_pid(tmp_path / "pid1.child")
    wait_status(first, "Running")
    worker = psutil.Process(pid).parent()

    # A second run waits for the only worker; canceled there, it never starts.
    second = submit(ws, src, tmp_path / "pid2", gate)
    wait_until(
        lambda: "mlws.dask.scheduler" in second.get_properties(), 20, "the second run to be sent"
    )
    assert second.get_status() == "Queued"
    second.cancel()
    wait_status(second, "Canceled", timeout=10)

    # The running one: its task kills the script's process group (SIGTERM is ignored: SIGKILL
    # after MLWS_CANCEL_GRACE_S=2).
    first.cancel()
    wait_status(first, "Canceled", timeout=15)
    wait_until(lambda: pid_gone(pid) and pid_gone(child), 5, "the canceled script's group to die")
    assert "gate opened" not in "".join(first.iter_log())

    # The worker survived the cancel and serves the next run; had the second run's task not
    # been dropped, it would have run before this one.
    assert worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE
    third = submit(ws, src, tmp_path / "pid3", tmp_path / "gate3")
    (tmp_path / "gate3").touch()
    assert third.wait_for_completion(timeout=30)["status"] == "Completed"
    assert not (tmp_path / "pid2").exists(), "a run canceled while queued must never start"
    assert second.get_details()["startTimeUtc"] is None
    assert target.get_status() == "Running"
    assert_workspace_sound(ws)


# -- 3. worker killed: retried once, then WorkerDied -----------------------------------------------
ATTEMPTS = """
from mlws import Run
folder, gate, block_on = sys.argv[1], sys.argv[2], int(sys.argv[3])
n = claim_attempt(folder)
print(f"attempt {n}", flush=True)
if n <= block_on:
    wait_gate(gate)  # never opened: the test kills this attempt's worker
Run.get_context().log("attempt", n)
print(f"attempt {n} done")
"""


def kill_worker_of(script_pid: int, cluster: int) -> psutil.Process:
    """SIGKILL the Dask worker process running the script (its parent)."""
    worker = psutil.Process(script_pid).parent()
    assert worker is not None and worker.ppid() == cluster, "the script's parent is not a worker"
    worker.send_signal(signal.SIGKILL)
    return worker


@pytest.mark.timeout(90)
def test_worker_killed_once_the_run_is_retried_and_completes(
    ws: Workspace, tmp_path: Path, isolated_home: Path, dask_target: Callable[..., AmlCompute]
) -> None:
    dask_target()
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    run = submit(ws, make_source(tmp_path, ATTEMPTS), attempts, tmp_path / "gate", 1)
    first = wait_pid(attempts / "attempt-1")
    wait_status(run, "Running")
    killed = kill_worker_of(first, cluster_pid(isolated_home, ws, "cpu"))
    # The script dies with its worker (PR_SET_PDEATHSIG).
    wait_until(lambda: pid_gone(first), 10, "the first attempt's script to die with its worker")

    details = run.wait_for_completion(timeout=60, raise_on_error=False)
    assert details["status"] == "Completed", (details, "".join(run.iter_log()))
    second = read_pid(attempts / "attempt-2")
    assert second is not None and second != first
    assert not (attempts / "attempt-3").exists()
    assert run.get_properties().get("mlws.retried")
    assert run.get_metrics() == {"attempt": 2}
    log = "".join(run.iter_log())
    assert log.splitlines()[0].startswith("mlws: the worker running this run died"), log
    assert "attempt 2 done" in log
    assert pid_gone(first) and pid_gone(killed.pid)
    assert_workspace_sound(ws)


@pytest.mark.timeout(90)
def test_worker_killed_on_both_attempts_fails_with_worker_died(
    ws: Workspace, tmp_path: Path, isolated_home: Path, dask_target: Callable[..., AmlCompute]
) -> None:
    target = dask_target()
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    src = make_source(tmp_path, ATTEMPTS)
    run = submit(ws, src, attempts, tmp_path / "gate", 2)
    pids: list[int] = []
    for n in (1, 2):
        pid = wait_pid(attempts / f"attempt-{n}", timeout=30)
        wait_status(run, "Running")
        kill_worker_of(pid, cluster_pid(isolated_home, ws, "cpu"))
        wait_until(lambda p=pid: pid_gone(p), 10, f"attempt {n}'s script to die with its worker")
        pids.append(pid)

    details = run.wait_for_completion(timeout=60, raise_on_error=False)
    assert details["status"] == "Failed", details
    error = error_of(run)
    assert error["code"] == "WorkerDied", error
    assert "worker" in error["message"] and "died" in error["message"], error
    assert run.get_properties().get("mlws.retried")
    assert not (attempts / "attempt-3").exists(), "Dask must give up after the second death"
    # Both attempts' logs are kept: the first set aside by the retry, the second by the failure.
    names = run.get_file_names()
    assert {"logs/attempt-1/driver.log", "logs/driver.log"} <= set(names), names
    assert "attempt 2" in "".join(run.iter_log())
    assert all(pid_gone(p) for p in pids)

    # The cluster survived both deaths and serves the next run.
    again = submit(ws, src, attempts, tmp_path / "gate", 0)
    assert again.wait_for_completion(timeout=60)["status"] == "Completed"
    assert again.get_properties()["mlws.dask.scheduler"] == target.scheduler_address
    assert_workspace_sound(ws)


# -- 4. an existing scheduler ---------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_attached_scheduler_runs_the_script_on_its_worker(
    ws: Workspace, tmp_path: Path, isolated_home: Path, own_cluster: Any
) -> None:
    address = own_cluster.scheduler_address
    target = ComputeTarget.attach(ws, "ext", DaskCompute.attach_configuration(address))
    assert isinstance(target, AmlCompute)
    assert target.scheduler_address == address
    assert target.get_status() == "Succeeded"
    assert len(target.nodes()) == 1

    run = submit(ws, make_source(tmp_path, HAPPY), "0.5", target="ext")
    details = run.wait_for_completion(timeout=60, raise_on_error=False)
    assert details["status"] == "Completed", (details, "".join(run.iter_log()))
    assert run.get_properties()["mlws.dask.scheduler"] == address
    assert run.get_metrics() == {"alpha": 0.5, "loss": [3.0, 2.0, 1.5]}
    assert "outputs/model.txt" in run.get_file_names()
    # The script ran on this test's worker (whose parent is this process).
    _, gppid = log_pids(run)
    assert gppid == os.getpid()
    # mlws started no cluster of its own for an attached target, and detaching leaves the
    # scheduler alone.
    assert not (isolated_home / ".cache" / "mlws" / "dask").exists()
    assert target.stop() is False
    target.detach()
    assert target_names(ws) == ["local"]
    assert len(own_cluster.scheduler_info["workers"]) == 1
    assert_workspace_sound(ws)


def test_attaching_an_unreachable_scheduler_is_refused(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    import distributed

    # The check waits up to 5 s for an answer (retrying refused connections): 0.5 s here.
    client = distributed.Client
    monkeypatch.setattr(
        distributed, "Client", lambda address, **kw: client(address, **{**kw, "timeout": 0.5})
    )
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(ComputeTargetException):
        ComputeTarget.attach(ws, "ext", DaskCompute.attach_configuration(address))
    assert target_names(ws) == ["local"]


@pytest.mark.timeout(60)
def test_cancel_just_before_the_script_starts_still_stops_it(
    ws: Workspace, tmp_path: Path, isolated_home: Path, own_cluster: Any
) -> None:
    from distributed import Client

    window, go = tmp_path / "in-window", tmp_path / "go"

    def pause_before_script_starts(window: str, go: str) -> bool:
        # On the worker: hold the task after set_status("Starting") and before the script's
        # Popen and pid are recorded (script_env is called in between), until ``go`` exists.
        import os
        import time

        import mlws.compute.script

        original = mlws.compute.script.script_env

        def paused(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            open(window, "w").close()
            deadline = time.monotonic() + 30
            while not os.path.exists(go) and time.monotonic() < deadline:
                time.sleep(0.01)
            return original(*args, **kwargs)

        mlws.compute.script.script_env = paused
        return True

    with Client(own_cluster.scheduler_address, set_as_default=False) as client:
        assert all(client.run(pause_before_script_starts, str(window), str(go)).values())
    ComputeTarget.attach(ws, "ext", DaskCompute.attach_configuration(own_cluster.scheduler_address))
    src = make_source(tmp_path, "write_pid(sys.argv[1])\nwait_gate(sys.argv[2])\n")
    run = submit(ws, src, tmp_path / "pid", tmp_path / "gate", target="ext")
    wait_until(window.exists, 30, "the task to reach the window")
    assert run.get_status() == "Starting"
    run.cancel()
    wait_status(run, ("Canceled",), timeout=10)
    go.touch()
    workdir = isolated_home / ".cache" / "mlws" / "runs" / run.id

    def task_over_and_no_script() -> bool:
        pid = read_pid(tmp_path / "pid")
        return not workdir.exists() and (pid is None or pid_gone(pid))

    wait_until(task_over_and_no_script, 6, "the task to end with no script running")
    assert run.get_status() == "Canceled"


# -- 5. idle scale-down -----------------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_idle_cluster_shuts_itself_down_and_restarts_on_the_next_run(
    ws: Workspace, tmp_path: Path, isolated_home: Path, dask_target: Callable[..., AmlCompute]
) -> None:
    target = dask_target(idle_seconds_before_scaledown=2)
    src = make_source(tmp_path, HAPPY)
    run = submit(ws, src, "0.5")
    assert run.wait_for_completion(timeout=60)["status"] == "Completed"
    pid = cluster_pid(isolated_home, ws, "cpu")
    family = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    assert target.get_status() == "Running"

    wait_until(lambda: not process_alive(pid, None), 20, "the idle cluster to exit by itself")
    wait_until(lambda: all(pid_gone(p.pid) for p in family), 10, "the cluster's workers to exit")
    assert target.get_status() == "Stopped"
    assert not state_file(isolated_home, ws, "cpu").exists()
    assert target.scheduler_address is None and target.nodes() == []

    # The next run starts a new cluster.
    again = submit(ws, src, "0.25")
    assert again.wait_for_completion(timeout=60)["status"] == "Completed"
    assert cluster_pid(isolated_home, ws, "cpu") != pid
    assert (
        again.get_properties()["mlws.dask.scheduler"] != run.get_properties()["mlws.dask.scheduler"]
    )


# -- 6. run_parallel on dask ------------------------------------------------------------------------
def square(x: int) -> tuple[int, int]:
    Run.get_context().log("x", x)
    if x == -1:
        raise ValueError("negative input")
    return x * x, os.getppid()


def log_then_linger(i: int) -> int:
    """Logs its index, then stays inside the call a while: were two calls in threads of one
    worker to overlap, the second would see the first's run context and working folder."""
    import time

    Run.get_context().log("x", i)
    time.sleep(0.3)
    Path("outputs").mkdir(exist_ok=True)
    Path("outputs", "mine.txt").write_text(str(i))
    return i


@pytest.mark.timeout(90)
def test_run_parallel_children_run_as_dask_tasks(
    ws: Workspace, isolated_home: Path, dask_target: Callable[..., AmlCompute]
) -> None:
    dask_target()
    parent = run_parallel(
        Experiment(ws, "fan"), square, range(40), max_concurrent=4, compute_target="cpu"
    )
    assert parent.get_status() == "Completed", parent.get_details()
    children = parent.get_children()
    assert len(children) == 40
    assert {c.get_status() for c in children} == {"Completed"}
    metrics = parent.get_metrics(recursive=True)
    assert sorted(m["x"] for rid, m in metrics.items() if rid != parent.id) == list(range(40))
    by_index = {int(c.get_tags()["mlws.index"]): c for c in children}
    cluster = cluster_pid(isolated_home, ws, "cpu")
    results = {i: get_result(c) for i, c in by_index.items()}
    assert {i: r[0] for i, r in results.items()} == {i: i * i for i in range(40)}
    # Every call ran in a worker of the cluster (whose parent is the cluster process).
    assert {r[1] for r in results.values()} == {cluster}
    pids = {ws.catalog.scalar("SELECT pid FROM runs WHERE id = ?", (c.id,)) for c in children}
    assert os.getpid() not in pids

    parent = run_parallel(
        Experiment(ws, "fan"), square, [1, -1, 3, 4], max_concurrent=4, compute_target="cpu"
    )
    details = parent.get_details()
    assert details["status"] == "Failed"
    assert "1 of 4 child runs" in details["error"]["error"]["message"]
    statuses = sorted(c.get_status() for c in parent.get_children())
    assert statuses == ["Completed", "Completed", "Completed", "Failed"]
    failed = next(c for c in parent.get_children() if c.get_status() == "Failed")
    assert "ValueError: negative input" in error_of(failed)["message"]
    assert_workspace_sound(ws)


@pytest.mark.timeout(60)
def test_run_parallel_children_sharing_a_worker_keep_their_own_context(
    ws: Workspace, dask_target: Callable[..., AmlCompute]
) -> None:
    # Two threads in one worker: the calls take turns (a call's run context and working folder
    # are process-wide), so each child records only its own metric and output.
    dask_target(min_nodes=1, max_nodes=1, threads_per_worker=2)
    parent = run_parallel(
        Experiment(ws, "fan"), log_then_linger, [0, 1, 2, 3], max_concurrent=4, compute_target="cpu"
    )
    by_index = {int(c.get_tags()["mlws.index"]): c for c in parent.get_children()}
    errors = {i: (c.get_status(), error_of(c).get("message")) for i, c in by_index.items()}
    assert parent.get_status() == "Completed", (errors, parent.get_details().get("error"))
    assert {i: c.get_metrics() for i, c in by_index.items()} == {i: {"x": i} for i in range(4)}
    assert {i: get_result(c) for i, c in by_index.items()} == {i: i for i in range(4)}
    for i, c in by_index.items():
        c.download_file("outputs/mine.txt", str(Path(ws.path).parent / f"mine-{i}.txt"))
        assert Path(ws.path).parent.joinpath(f"mine-{i}.txt").read_text() == str(i)


def test_run_parallel_local_target_uses_loky(ws: Workspace) -> None:
    parent = run_parallel(
        Experiment(ws, "fan"), square, [2, 3], max_concurrent=2, compute_target="local"
    )
    assert parent.get_status() == "Completed"
    children = parent.get_children()
    assert sorted(get_result(c)[0] for c in children) == [4, 9]
    # loky workers are children of this process, not of a Dask cluster.
    assert {get_result(c)[1] for c in children} == {os.getpid()}


# -- 7. unhappy paths -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_nodes": 3, "max_nodes": 2}, "min_nodes <= max_nodes"),
        ({"min_nodes": 0, "max_nodes": 0}, "max_nodes >= 1"),
        ({"min_nodes": -1, "max_nodes": 2}, "min_nodes must be a whole number >= 0"),
        ({"min_nodes": 1.5, "max_nodes": 2}, "min_nodes must be a whole number"),
        ({"min_nodes": 1, "max_nodes": 2, "threads_per_worker": 0}, "threads_per_worker"),
    ],
    ids=["min-above-max", "max-zero", "min-negative", "min-not-int", "zero-threads"],
)
def test_invalid_provisioning_is_refused_and_nothing_recorded(
    ws: Workspace, isolated_home: Path, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ComputeTargetException, match=match):
        ComputeTarget.create(ws, "cpu", AmlCompute.provisioning_configuration(**kwargs))
    assert target_names(ws) == ["local"]
    assert not (isolated_home / ".cache" / "mlws" / "dask").exists()


@pytest.mark.parametrize("address", ["127.0.0.1:8786", "", "tcp-127.0.0.1-8786", 8786, None])
def test_bad_scheduler_address_is_refused(ws: Workspace, address: Any) -> None:
    with pytest.raises(ComputeTargetException, match="tcp://host:8786"):
        ComputeTarget.attach(ws, "ext", DaskCompute.attach_configuration(address))
    assert target_names(ws) == ["local"]


def test_unknown_target_is_refused_and_nothing_recorded(ws: Workspace, tmp_path: Path) -> None:
    ComputeTarget.create(ws, "cpu", AmlCompute.provisioning_configuration(min_nodes=1, max_nodes=2))
    with pytest.raises(ComputeTargetException, match="already exists"):
        ComputeTarget.create(ws, "cpu", AmlCompute.provisioning_configuration(max_nodes=1))
    with pytest.raises(ComputeTargetException, match="no compute target named 'gpu'.*cpu"):
        run_parallel(Experiment(ws, "fan"), square, [1, 2], compute_target="gpu")
    with pytest.raises(ComputeTargetException, match="no compute target named 'gpu'"):
        submit(ws, make_source(tmp_path, HAPPY), "0.5", target="gpu")
    with pytest.raises(ComputeTargetException, match="no compute target named 'gpu'"):
        ComputeTarget(ws, "gpu")
    assert run_count(ws) == 0
    assert target_names(ws) == ["cpu", "local"]


@pytest.mark.timeout(90)
def test_delete_is_refused_while_a_run_is_active_then_stops_the_cluster(
    ws: Workspace, tmp_path: Path, isolated_home: Path, dask_target: Callable[..., AmlCompute]
) -> None:
    target = dask_target()
    gate = tmp_path / "gate"
    run = submit(ws, make_source(tmp_path, BLOCKING), tmp_path / "pid", gate)
    wait_pid(tmp_path / "pid")
    wait_status(run, "Running")
    pid = cluster_pid(isolated_home, ws, "cpu")
    with pytest.raises(ComputeTargetException, match="1 active run"):
        target.delete()
    assert "cpu" in target_names(ws)
    assert target.get_status() == "Running" and process_alive(pid, None)
    assert run.get_status() == "Running"

    gate.touch()
    assert run.wait_for_completion(timeout=30)["status"] == "Completed"
    target.delete()
    assert target_names(ws) == ["local"]
    assert pid_gone(pid) and not state_file(isolated_home, ws, "cpu").exists()
    assert target.get_status() == "Stopped"
    with pytest.raises(ComputeTargetException):
        ComputeTarget(ws, "cpu")
    assert_workspace_sound(ws)
