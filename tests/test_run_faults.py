"""Faults of run execution found by injecting them (issue 11, §2b): cancel of a fan-out parent,
Dask retries, cancel during an environment build, daemonized children of a script."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until
from test_compute_dask import dask_target, no_leftovers  # noqa: F401 - fixtures

from mlws import Experiment, Workspace
from mlws.compute.dask import AmlCompute
from mlws.functions import run_parallel
from mlws.lifecycle import TERMINAL

N_CHILDREN = 20


# -- 1. cancelling a run_parallel parent reaches every child ---------------------------------------
def sleep_in_c(arg: tuple[str, int]) -> int:
    """Says it started, then blocks in one long system call (a loky worker must interrupt it)."""
    folder, i = arg
    Path(folder, f"started-{i}").write_text(str(os.getpid()))
    time.sleep(30)
    return i


def sleep_in_steps(arg: tuple[str, int]) -> int:
    """Says it started, then works in short steps (a Dask task's thread is interrupted between
    bytecodes, not inside a C call)."""
    folder, i = arg
    Path(folder, f"started-{i}").write_text(str(os.getpid()))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.02)
    return i


def fan_out_then_cancel(
    ws: Workspace, tmp_path: Path, func: Callable[[Any], Any], **kwargs: Any
) -> tuple[Any, list[str]]:
    """Start a fan-out of N_CHILDREN calls (2 at a time) in a thread, cancel its parent once two
    calls are running, and return the parent once run_parallel has returned."""
    started = tmp_path / "started"
    started.mkdir()
    result: dict[str, Any] = {}

    def fan_out() -> None:
        try:
            result["parent"] = run_parallel(
                Experiment(ws, "fan"),
                func,
                [(str(started), i) for i in range(N_CHILDREN)],
                max_concurrent=2,
                **kwargs,
            )
        except BaseException as e:  # noqa: BLE001 - reported by the test
            result["error"] = e

    thread = threading.Thread(target=fan_out, daemon=True)
    thread.start()
    wait_until(lambda: len(list(started.iterdir())) >= 2, 60, "two calls to start")
    parent_id = ws.catalog.scalar(
        "SELECT id FROM runs WHERE experiment = 'fan' AND parent_id IS NULL"
    )
    ws.get_run(parent_id).cancel()
    thread.join(20)
    assert not thread.is_alive(), "run_parallel went on after its parent was canceled"
    assert "error" not in result, result
    return result["parent"], sorted(p.name for p in started.iterdir())


def assert_all_canceled(ws: Workspace, parent: Any, started: list[str]) -> None:
    assert parent.get_status() == "Canceled"
    statuses = [c.get_status() for c in parent.get_children()]
    assert len(statuses) == N_CHILDREN
    assert set(statuses) == {"Canceled"}, statuses
    # The cancel came while two were running: the queued ones never started.
    assert len(started) < N_CHILDREN // 2, started
    rows = ws.catalog.query("SELECT status, end_time FROM runs WHERE parent_id = ?", (parent.id,))
    assert all(r["status"] in TERMINAL and r["end_time"] for r in rows)


@pytest.mark.timeout(90)
def test_cancel_of_a_loky_fan_out_parent_stops_running_and_queued_children(
    ws: Workspace, tmp_path: Path
) -> None:
    parent, started = fan_out_then_cancel(ws, tmp_path, sleep_in_c)
    assert_all_canceled(ws, parent, started)


@pytest.mark.timeout(90)
def test_cancel_of_a_dask_fan_out_parent_stops_running_and_queued_children(
    ws: Workspace,
    tmp_path: Path,
    dask_target: Callable[..., AmlCompute],  # noqa: F811
) -> None:
    dask_target(min_nodes=2, max_nodes=2)
    parent, started = fan_out_then_cancel(ws, tmp_path, sleep_in_steps, compute_target="cpu")
    assert_all_canceled(ws, parent, started)


# -- 2. a Dask retry starts clean and keeps the dead attempt's log ---------------------------------
RETRIED = """
from mlws import Run
folder, ready, gate = sys.argv[1], sys.argv[2], sys.argv[3]
n = claim_attempt(folder)
print(f"attempt {n} starts", flush=True)
run = Run.get_context()
for i in range(10 if n == 1 else 150):
    run.log("i", i)
if n == 1:
    run.flush()
    write_pid(ready)
    wait_gate(gate)  # never opened: the test kills this attempt's worker
print(f"attempt {n} done")
"""


@pytest.mark.timeout(90)
def test_dask_retry_starts_with_clean_metrics_and_keeps_both_logs(
    ws: Workspace,
    tmp_path: Path,
    isolated_home: Path,
    dask_target: Callable[..., AmlCompute],  # noqa: F811
) -> None:
    from test_compute_dask import (
        cluster_pid,
        kill_worker_of,
        make_source,
        pid_gone,
        submit,
        wait_pid,
    )

    dask_target()
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    ready = tmp_path / "ready"
    run = submit(ws, make_source(tmp_path, RETRIED), attempts, ready, tmp_path / "gate")
    first = wait_pid(ready, timeout=30)
    kill_worker_of(first, cluster_pid(isolated_home, ws, "cpu"))
    wait_until(lambda: pid_gone(first), 10, "the first attempt's script to die with its worker")

    details = run.wait_for_completion(timeout=60, raise_on_error=False)
    assert details["status"] == "Completed", (details, "".join(run.iter_log()))
    # The metrics are the attempt that completed, not [0..9, 0..149].
    assert run.get_metrics()["i"] == list(range(150))
    names = run.get_file_names()
    assert "logs/driver.log" in names and "logs/attempt-1/driver.log" in names, names
    into = tmp_path / "down"
    last = run.download_file("logs/driver.log", into / "last.log").read_text()
    dead = run.download_file("logs/attempt-1/driver.log", into / "dead.log").read_text()
    assert "attempt 2 done" in last and "attempt 1" not in last, last
    assert "attempt 1 starts" in dead and "attempt 2" not in dead, dead
    # Nothing of the dead attempt is lost: its metrics are kept beside its log.
    kept = run.download_file("logs/attempt-1/metrics.json", into / "m.json").read_text()
    assert json.loads(kept) == {"i": list(range(10))}
    assert read_pid_ok(attempts / "attempt-2") and not (attempts / "attempt-3").exists()


def read_pid_ok(path: Path) -> bool:
    return path.exists() and path.read_text().strip().isdigit()


# -- 3. cancel during an environment build ------------------------------------------------------------
@pytest.fixture
def silent_index() -> Any:
    """A package index on 127.0.0.1 that accepts connections and never answers: a build that
    asks it hangs in its installer (uv), as on a slow or stalled network. Yields its URL and a
    count of connections taken."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            held.append(conn)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/simple", held
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


@pytest.mark.timeout(90)
def test_cancel_stops_an_environment_build_and_keeps_nothing_half_built(
    ws: Workspace, tmp_path: Path, silent_index: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psutil

    from mlws import CondaDependencies, Environment, ScriptRunConfig
    from mlws.environments import envs_dir

    url, held = silent_index
    monkeypatch.setenv("UV_HTTP_TIMEOUT", "120")  # the build would hang far past the test
    env = Environment("stalled")
    env.python.user_managed_dependencies = False
    env.python.conda_dependencies = CondaDependencies.create(
        pip_packages=["mlws-test-never-served"], pip_indexurl=url
    )
    src = tmp_path / "src"
    src.mkdir()
    (src / "t.py").write_text("print('never runs')\n")
    run = Experiment(ws, "envs").submit(ScriptRunConfig(src, "t.py", environment=env))
    wait_until(lambda: held, 60, "the build to ask the package index")
    installers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if url in " ".join(p.info["cmdline"] or []) and p.pid != os.getpid()
    ]
    assert installers, "no installer process asks the index"

    run.cancel()
    details = run.wait_for_completion(timeout=20, raise_on_error=False)
    assert details["status"] == "Canceled", details
    _, alive = psutil.wait_procs(installers, timeout=10)
    assert not alive, f"the installer outlived the cancel: {alive}"
    assert not (envs_dir() / env.spec_hash()).exists(), "a half-built environment was kept"
    log = "".join(run.iter_log("logs/environment.log"))
    assert "canceled" in log.lower(), log
    assert "logs/driver.log" not in run.get_file_names(), "the script started"


# -- 4. processes a script daemonized end with its run -----------------------------------------------
DAEMONS = """
import subprocess
folder = sys.argv[1]
sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
# Its own session (out of the script's process group), then orphaned when the script exits.
a = subprocess.Popen(sleeper, start_new_session=True)
write_pid(os.path.join(folder, "session"), a.pid)
# The same with a scrubbed environment: nothing in it says which run started it.
b = subprocess.Popen(sleeper, start_new_session=True, env={})
write_pid(os.path.join(folder, "bare"), b.pid)
if len(sys.argv) > 2:
    write_pid(os.path.join(folder, "script"))
    wait_gate(sys.argv[2])
print("started two daemons")
"""


def daemon_run(
    ws: Workspace, tmp_path: Path, *args: Any, target: str = "local"
) -> tuple[Any, Path]:
    from helpers import SCRIPT_PRELUDE

    from mlws import ScriptRunConfig

    src = tmp_path / "src"
    src.mkdir()
    (src / "d.py").write_text(SCRIPT_PRELUDE + DAEMONS)
    pids = tmp_path / "pids"
    pids.mkdir()
    config = ScriptRunConfig(
        src, "d.py", arguments=[str(pids), *map(str, args)], compute_target=target
    )
    return Experiment(ws, "daemons").submit(config), pids


def alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_left(*pids: int) -> None:
    import signal

    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(60)
def test_daemons_a_script_started_end_with_its_run(ws: Workspace, tmp_path: Path) -> None:
    run, pids = daemon_run(ws, tmp_path)
    assert_daemons_ended(run.wait_for_completion(timeout=30, raise_on_error=False), pids)


def assert_daemons_ended(details: dict, pids: Path) -> None:
    """The run completed and neither daemon its script started (``daemon_run``) outlived it."""
    session, bare = (int((pids / n).read_text()) for n in ("session", "bare"))
    try:
        assert details["status"] == "Completed", details
        assert not alive(session), "a daemon in its own session outlived the run"
        assert not alive(bare), "a daemon with a scrubbed environment outlived the run"
    finally:
        kill_left(session, bare)


@pytest.mark.timeout(60)
def test_daemons_end_when_the_supervisor_is_killed(ws: Workspace, tmp_path: Path) -> None:
    import signal

    from helpers import wait_until as wait

    run, pids = daemon_run(ws, tmp_path, tmp_path / "gate")
    wait(lambda: (pids / "script").exists(), 30, "the script to start its daemons")
    session, bare, script = (int((pids / n).read_text()) for n in ("session", "bare", "script"))
    supervisor = ws.catalog.scalar("SELECT supervisor_pid FROM runs WHERE id = ?", (run.id,))
    try:
        os.kill(supervisor, signal.SIGKILL)
        wait(lambda: not alive(supervisor), 10, "the supervisor to die")
        # The next read reconciles the run: its script and what it started are ended.
        assert run.get_status() == "Failed"
        wait(lambda: not alive(script), 10, "the script to be killed")
        wait(lambda: not alive(session), 10, "the session daemon to be killed")
    finally:
        kill_left(session, bare, script)


@pytest.mark.timeout(90)
def test_daemons_of_a_dask_run_carrying_its_marker_end_with_it(
    ws: Workspace,
    tmp_path: Path,
    dask_target: Callable[..., AmlCompute],  # noqa: F811
) -> None:
    from helpers import wait_until as wait

    dask_target()
    run, pids = daemon_run(ws, tmp_path, target="cpu")
    details = run.wait_for_completion(timeout=60, raise_on_error=False)
    session, bare = (int((pids / n).read_text()) for n in ("session", "bare"))
    try:
        assert details["status"] == "Completed", details
        # The sweep runs once the outcome is recorded, before the task returns.
        wait(lambda: not alive(session), 10, "the marked daemon to be killed")
        # Documented limit: on a shared Dask worker there is no sub-reaper, so a daemon that
        # scrubbed its environment is not found (it is killed here by the test).
    finally:
        kill_left(session, bare)


def test_cancel_stops_waiting_for_another_runs_build(ws: Workspace, tmp_path: Path) -> None:
    """A run whose environment another run is building waits on the build's lock: a cancel
    ends that wait too (it waited up to an hour)."""
    from filelock import FileLock

    from mlws import CondaDependencies, Environment
    from mlws.environments import envs_dir, resolve
    from mlws.errors import EnvironmentBuildCanceled

    env = Environment("busy")
    env.python.user_managed_dependencies = False
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=["tabulate"])
    envs_dir().mkdir(parents=True, exist_ok=True)
    asked = []

    def canceled_on_second_ask() -> bool:
        asked.append(1)
        return len(asked) >= 2

    with FileLock(str(envs_dir() / env.spec_hash()) + ".lock"):  # "another run" builds it
        done = threading.Event()
        outcome: dict[str, Any] = {}

        def wait_for_build() -> None:
            try:
                resolve(env, ws, should_stop=canceled_on_second_ask)
            except BaseException as e:  # noqa: BLE001 - reported by the test
                outcome["error"] = e
            done.set()

        threading.Thread(target=wait_for_build, daemon=True).start()
        assert done.wait(20), "resolve() kept waiting for the lock after the cancel"
    assert isinstance(outcome.get("error"), EnvironmentBuildCanceled), outcome
    assert not (envs_dir() / env.spec_hash()).exists()
