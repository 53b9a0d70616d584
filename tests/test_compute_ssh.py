"""Integration tests of the ``ssh`` compute target (``RemoteCompute``) against real sshd.

Two OpenSSH servers on 127.0.0.1 (``tests/sshd.py``) play two hosts. Runs go through the whole
path: a detached supervisor, rsync of the snapshot, mlws shipped to the host, the remote agent
streaming logs and catalog changes home, outputs rsync'd back.

Scripts never sleep for a fixed time: they wait for a *gate file* the test creates, write their
own pid to a file the test reads, and give up on their own after ``SCRIPT_GIVE_UP_S``. The test
side polls with :func:`wait_until` and a deadline. Every process a test leaves behind (local
supervisors from the catalog, remote scripts from their pid files) is killed at teardown.

The hosts share one ``work_dir`` for the whole module (mlws is shipped there once); each test
has its own workspace and HOME (conftest).
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
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
    wait_until,
)
from sshd import SshServer

from mlws import ComputeTargetException, Experiment, Model, ScriptRunConfig, Workspace
from mlws.compute import ComputeTarget
from mlws.compute.ssh import RemoteCompute
from mlws.errors import ModelNotFound
from mlws.maintenance import fsck
from mlws.runs import Run

SECRET_NAME = "db-password"
SECRET_VALUE = "s3cret"
PRELUDE = SCRIPT_PRELUDE


# -- helpers -----------------------------------------------------------------------------------------
def make_source(tmp_path: Path, body: str, name: str = "src") -> Path:
    src = tmp_path / name
    src.mkdir()
    (src / "train.py").write_text(PRELUDE + textwrap.dedent(body))
    return src


def config(src: Path, *args: Any, target: str = "lab", **kwargs: Any) -> ScriptRunConfig:
    return ScriptRunConfig(
        source_directory=str(src),
        script="train.py",
        arguments=[str(a) for a in args],
        compute_target=target,
        **kwargs,
    )


def submit(ws: Workspace, src: Path, *args: Any, target: str = "lab", **kwargs: Any) -> Run:
    return Experiment(ws, "e").submit(config(src, *args, target=target, **kwargs))


def wait_status(run: Run, statuses: tuple[str, ...] | str, timeout: float = 20.0) -> str:
    wanted = (statuses,) if isinstance(statuses, str) else statuses
    return wait_until(
        lambda: (s := run.get_status()) in wanted and s, timeout, f"run {run.id} to reach {wanted}"
    )


def error_of(run: Run) -> dict[str, Any]:
    return dict(run.get_details().get("error", {}).get("error", {}))


def read_pid(path: Path, timeout: float = 20.0) -> int:
    wait_until(path.exists, timeout, f"the script to write {path}")
    return int(path.read_text())


def pid_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie counts as gone: it runs no code)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def remote_run_dir(work_dir: Path, run: Run) -> Path:
    return work_dir / "runs" / run.id


def snapshot_of_targets(ws: Workspace) -> tuple[list[str], list[dict[str, str]]]:
    names = [t.name for t in ComputeTarget.list(ws)]
    return names, ws.get_default_keyvault().list_secrets()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hosts' work_dir, shared by the module's tests: mlws is shipped there once."""
    return tmp_path_factory.mktemp("remote")


@pytest.fixture
def attach(
    ws: Workspace, ssh_servers: list[SshServer], work_dir: Path, tmp_path: Path
) -> Callable[..., RemoteCompute]:
    """``attach(name="lab", servers=None, **overrides)``: attach an ssh target (default: both
    hosts, one run at a time per host)."""

    def _attach(
        name: str = "lab", servers: list[SshServer] | None = None, **overrides: Any
    ) -> RemoteCompute:
        servers = ssh_servers if servers is None else servers
        for s in servers:
            s.start()  # an earlier test may have killed it
        kwargs: dict[str, Any] = {
            "hosts": [f"{s.address}:{s.port}" for s in servers],
            "username": servers[0].username,
            "private_key_file": servers[0].private_key_file,
            "python_path": "/usr/bin/python3",
            "work_dir": str(work_dir),
            "ssh_options": [
                "StrictHostKeyChecking=no",
                f"UserKnownHostsFile={tmp_path}/known_hosts",
            ],
            "max_concurrent_runs": 1,
        }
        kwargs.update(overrides)
        target = ComputeTarget.attach(ws, name, RemoteCompute.attach_configuration(**kwargs))
        assert isinstance(target, RemoteCompute)
        return target

    return _attach


@pytest.fixture
def lab(attach: Callable[..., RemoteCompute]) -> RemoteCompute:
    """The ``lab`` target: both hosts, max_concurrent_runs=1 per host."""
    return attach()


@pytest.fixture(autouse=True)
def kill_leftovers(ws: Workspace, tmp_path: Path) -> Iterator[None]:
    """After each test, kill what it left running: supervisors and recorded script pids (from
    the catalog), then remote scripts (from the pid files they wrote)."""
    yield
    kill_run_processes(ws)
    for pid_file in tmp_path.glob("*.pid"):
        try:
            p = psutil.Process(int(pid_file.read_text()))
            if "train.py" in " ".join(p.cmdline()):
                p.kill()
        except (ValueError, OSError, psutil.Error):
            pass


# -- 1. happy path, and the same config on local ------------------------------------------------------
HAPPY = """
from mlws import Run
run = Run.get_context()
scale = float(sys.argv[sys.argv.index("--scale") + 1])
print(f"hello from train.py, scale={scale}")
run.log("alpha", 0.5 * scale)
for loss in (3.0, 2.0, 1.5):
    run.log("loss", loss * scale)
run.log_list("curve", [1, 2, 3])
run.log_row("table", epoch=1, acc=0.75)
run.tag("framework", "plain")
child = run.child_run(name="fold-0")
child.log("fold_acc", 0.9)
child.complete()
with open("extra.txt", "w") as f:
    f.write("uploaded content")
run.upload_file("uploaded/extra.txt", "extra.txt")
os.makedirs("outputs", exist_ok=True)
with open("outputs/model.txt", "w") as f:
    f.write(f"weights scale={scale}")
print("done training")
"""


def _outputs(run: Run, dest: Path) -> dict[str, str]:
    names = [n for n in run.get_file_names() if n.startswith(("outputs/", "uploaded/"))]
    return {n: run.download_file(n, dest / n).read_text() for n in names}


@pytest.mark.timeout(90)
def test_happy_path_same_metrics_and_outputs_as_local(
    ws: Workspace, lab: RemoteCompute, work_dir: Path, tmp_path: Path
) -> None:
    src = make_source(tmp_path, HAPPY)
    run = Experiment(ws, "e").submit(config(src, "--scale", 2, target="lab"))
    details = run.wait_for_completion(timeout=60, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")

    expected_metrics = {
        "alpha": 1.0,
        "loss": [6.0, 4.0, 3.0],
        "curve": [1, 2, 3],
        "table": {"epoch": 1, "acc": 0.75},
    }
    metrics = run.get_metrics()
    assert metrics == expected_metrics
    assert run.get_tags().get("framework") == "plain"

    names = set(run.get_file_names())
    assert {"outputs/model.txt", "uploaded/extra.txt", "logs/driver.log"} <= names, names
    remote_outputs = _outputs(run, tmp_path / "dl-ssh")
    assert remote_outputs["outputs/model.txt"] == "weights scale=2.0"
    assert remote_outputs["uploaded/extra.txt"] == "uploaded content"

    children = run.get_children()
    assert [c.display_name for c in children] == ["fold-0"]
    assert children[0].get_status() == "Completed"
    assert children[0].get_metrics() == {"fold_acc": 0.9}

    log = run.get_details_with_logs()["logFiles"]["logs/driver.log"]
    assert "hello from train.py, scale=2.0" in log and "done training" in log, log
    assert log.index("hello from train.py") < log.index("done training")

    node = run.get_properties().get("mlws.node")
    assert node in lab.nodes(), (node, lab.nodes())
    # The remote run folder is removed once the outputs are home (right after the outcome).
    wait_until(
        lambda: not remote_run_dir(work_dir, run).exists(), 15, "the remote run folder removal"
    )

    # The same configuration on the local target: same metrics, same output files and contents.
    local = Experiment(ws, "e").submit(config(src, "--scale", 2, target="local"))
    local_details = local.wait_for_completion(timeout=60, raise_on_error=False)
    assert local_details["status"] == "Completed", local_details.get("error")
    assert local.get_metrics() == metrics
    assert _outputs(local, tmp_path / "dl-local") == remote_outputs
    local_children = local.get_children()
    assert [c.get_metrics() for c in local_children] == [c.get_metrics() for c in children]
    assert "mlws.node" not in local.get_properties()


def test_an_unchanged_v1_training_script_completes_on_ssh(
    ws: Workspace, lab: RemoteCompute, tmp_path: Path
) -> None:
    """``from azureml.core import Run`` on a host: the layer is shipped with mlws and found by
    the run's interpreter there (the host's /usr/bin/python3 has no azureml of its own)."""
    src = tmp_path / "v1"
    src.mkdir()
    (src / "train.py").write_text(V1_TRAIN)
    run = Experiment(ws, "v1").submit(ScriptRunConfig(str(src), "train.py", compute_target="lab"))
    details = run.wait_for_completion(timeout=60, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")
    assert run.get_metrics() == {"accuracy": 0.91}
    assert _outputs(run, tmp_path / "dl")["outputs/model.txt"] == "weights"
    log = run.get_details_with_logs()["logFiles"]["logs/driver.log"]
    assert "azureml from" in log and "v1/shim/azureml" in log, log


def test_a_sweeps_trials_run_on_ssh_hosts(
    ws: Workspace, tmp_path: Path, lab: RemoteCompute
) -> None:
    """HyperDrive trials are script runs on the sweep's target: here, an ssh target's hosts."""
    assert_a_sweep_runs_on(ws, tmp_path, "lab")


def test_a_pipelines_steps_run_on_ssh_hosts(
    ws: Workspace, tmp_path: Path, lab: RemoteCompute
) -> None:
    """Pipeline steps are script runs on their target, PipelineData passed between them."""
    assert_a_pipeline_runs_on(ws, tmp_path, "lab")


# -- 2. two hosts, one run each ------------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_two_runs_use_both_hosts(ws: Workspace, lab: RemoteCompute, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    src = make_source(tmp_path, "print('waiting', flush=True)\nwait_gate(sys.argv[1])\n")
    runs = [submit(ws, src, gate), submit(ws, src, gate)]
    for run in runs:
        wait_status(run, "Running", timeout=40)
    nodes = [r.get_properties().get("mlws.node") for r in runs]
    assert nodes[0] != nodes[1], nodes
    assert sorted(nodes) == sorted(lab.nodes())
    gate.touch()
    for run in runs:
        details = run.wait_for_completion(timeout=30, raise_on_error=False)
        assert details["status"] == "Completed", details.get("error")


# -- 3. live metrics and logs --------------------------------------------------------------------------
LIVE = """
from mlws import Run
run = Run.get_context()
print("step-1", flush=True)
run.log("live", 1)
wait_gate(sys.argv[1])
print("step-2", flush=True)
"""


class _Follower:
    """``mlws run logs -f RUN_ID`` in a subprocess, its stdout collected by a thread."""

    def __init__(self, ws: Workspace, run_id: str) -> None:
        env = {**os.environ, "MLWS_WORKSPACE": str(ws.path)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlws.cli", "run", "logs", "-f", run_id],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.read1(65536):  # type: ignore[attr-defined]
            with self._lock:
                self._chunks.append(chunk)

    def text(self) -> str:
        with self._lock:
            return b"".join(self._chunks).decode("utf-8", "replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._thread.join(timeout=10)


@pytest.mark.timeout(60)
def test_metrics_and_log_are_live_while_the_remote_script_runs(
    ws: Workspace, lab: RemoteCompute, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    src = make_source(tmp_path, LIVE)
    run = submit(ws, src, gate)
    follower = _Follower(ws, run.id)
    try:
        try:
            wait_until(
                lambda: ws.get_run(run.id).get_metrics().get("live") == 1,
                30,
                "the live metric at home",
            )
            wait_until(lambda: "step-1" in follower.text(), 10, "'step-1' from 'mlws run logs -f'")
            # The gate is closed: the run is mid-way, and -f has not seen the end.
            assert run.get_status() == "Running"
            assert "step-2" not in follower.text()
            assert follower.proc.poll() is None
        finally:
            gate.touch()  # whatever happened, let the run end
        details = run.wait_for_completion(timeout=30, raise_on_error=False)
        assert details["status"] == "Completed", details.get("error")
        assert run.get_metrics() == {"live": 1}
        follower.proc.wait(timeout=15)  # -f ends by itself once the run has ended
        follower._thread.join(timeout=10)
        text = follower.text()
        assert follower.proc.returncode == 0, follower.proc.stderr.read()  # type: ignore[union-attr]
        assert text.count("step-1") == 1 and text.count("step-2") == 1, text
        assert text.index("step-1") < text.index("step-2")
    finally:
        follower.stop()


# -- 4. secrets ----------------------------------------------------------------------------------------
SECRET_SCRIPT = """
import hashlib
from mlws import Model, Run
run = Run.get_context()
value = run.get_secret(sys.argv[1])
os.makedirs("outputs", exist_ok=True)
with open("outputs/secret-check.txt", "w") as f:
    f.write("match" if hashlib.sha256(value.encode()).hexdigest() == sys.argv[2] else "mismatch")
# v1: the registered models are at home; they are sent to the host when asked for.
got = [Model.get_model_path(*ask) for ask in (("weights",), ("weights", 1))]
got.append(Model.get_model_path("twin", _workspace=run.experiment.workspace))  # the replica
got.append(Model.get_model_path("weights", version=1))  # there now: nothing asked
try:
    Model.get_model_path("nope")
except Exception as e:
    got.append(f"{type(e).__name__}: {e}")
with open("outputs/models.txt", "w") as f:
    f.write("|".join([open(p).read() for p in got[:4]] + [os.path.basename(got[1]), got[4]]))
# v1's Model(ws, name[, version]) and .download(): the record from home, the host's copy's files.
ws = run.experiment.workspace
latest, first = Model(ws, "weights"), Model(ws, "weights", version=1)
seen = [latest.id, first.id, ",".join(latest.get_file_names())]
seen.append(open(first.download("dl")).read())
try:
    latest.download("dl")  # v1: a file there already and not exist_ok
except Exception as e:
    seen.append(type(e).__name__)
seen.append(open(latest.download("dl", exist_ok=True)).read())
seen.append(latest.read_file("model.pkl").decode())
seen.append(",".join(m.id for m in Model.list(ws, name="weights")))
try:
    Model(ws, "nope")
except Exception as e:
    seen.append(f"{type(e).__name__}: {e}")
with open("outputs/model-objects.txt", "w") as f:
    f.write("|".join(seen))
"""


def _files_containing(root: Path, needle: bytes) -> list[str]:
    hits = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            try:
                if p.is_file() and not p.is_symlink() and needle in p.read_bytes():
                    hits.append(str(p))
            except OSError:
                pass
    return hits


@pytest.mark.timeout(60)
def test_secret_reaches_the_remote_script_and_is_stored_nowhere_in_clear(
    ws: Workspace, lab: RemoteCompute, work_dir: Path, tmp_path: Path
) -> None:
    ws.get_default_keyvault().set_secret(SECRET_NAME, SECRET_VALUE)
    digest = hashlib.sha256(SECRET_VALUE.encode()).hexdigest()
    src = make_source(tmp_path, SECRET_SCRIPT)
    files = tmp_path / "models"
    files.mkdir()
    models = []
    for name, text in (("weights", "w-v1"), ("weights", "w-v2"), ("twin", "w-v1")):
        (files / "model.pkl").write_text(text)
        models.append(Model.register(ws, str(files / "model.pkl"), name))
    with pytest.raises(ModelNotFound) as unknown:
        Model(ws, "nope")
    run = submit(ws, src, SECRET_NAME, digest)
    details = run.wait_for_completion(timeout=60, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")
    out = run.download_file("outputs/secret-check.txt", tmp_path / "dl")
    assert out.read_text() == "match"
    # Model.get_model_path on the host: each version asked for, the unknown one as locally.
    got = run.download_file("outputs/models.txt", tmp_path / "dl").read_text().split("|")
    assert got == ["w-v2", "w-v1", "w-v1", "w-v1", "model.pkl", f"ModelNotFound: {unknown.value}"]
    # Model(ws, name[, version]) and download() on the host: home's records, exist_ok as locally.
    seen = run.download_file("outputs/model-objects.txt", tmp_path / "dl").read_text().split("|")
    assert seen == [
        "weights:2",
        "weights:1",
        "model.pkl",
        "w-v1",
        "UserErrorException",
        "w-v2",
        "w-v2",
        "weights:2,weights:1",
        f"ModelNotFound: {unknown.value}",
    ], seen
    # On the host once per content: "twin" has weights:1's files, so it reuses their copy.
    held = {p.name for p in (work_dir / "models").iterdir()}
    assert held == {m.manifest.split(":")[1] for m in models}, held
    wait_until(
        lambda: not remote_run_dir(work_dir, run).exists(), 15, "the remote run folder removal"
    )
    needle = SECRET_VALUE.encode()
    for root in (ws.path, work_dir, tmp_path / "home"):
        assert _files_containing(root, needle) == [], f"{SECRET_VALUE!r} in clear under {root}"


# -- 5. faults: each ends in a final status with a reason ----------------------------------------------
BLOCKER = """
write_pid(sys.argv[2])
print("blocking", flush=True)
wait_gate(sys.argv[1])
"""


def _assert_fsck_ok(ws: Workspace) -> None:
    report = fsck(ws)
    assert report.ok, report.as_dict()


@pytest.mark.timeout(60)
def test_remote_script_killed_by_sigkill_fails_with_signal(
    ws: Workspace, lab: RemoteCompute, tmp_path: Path
) -> None:
    gate, pid_file = tmp_path / "gate", tmp_path / "script.pid"
    src = make_source(tmp_path, BLOCKER)
    run = submit(ws, src, gate, pid_file)
    pid = read_pid(pid_file, 30)
    wait_status(run, "Running")
    os.kill(pid, signal.SIGKILL)
    details = run.wait_for_completion(timeout=30, raise_on_error=False)
    assert details["status"] == "Failed"
    error = error_of(run)
    assert "signal 9" in error["message"] and "SIGKILL" in error["message"], error
    assert "logs/driver.log" in run.get_file_names()
    _assert_fsck_ok(ws)


@pytest.mark.timeout(60)
def test_host_going_away_fails_the_run_and_leaves_nothing_running(
    ws: Workspace,
    attach: Callable[..., RemoteCompute],
    ssh_server: SshServer,
    tmp_path: Path,
) -> None:
    # A host that stays away is waited for reconnect_seconds (30 s by default) first.
    solo = attach("solo", servers=[ssh_server], reconnect_seconds=2)
    gate, pid_file = tmp_path / "gate", tmp_path / "script.pid"
    src = make_source(tmp_path, BLOCKER)
    run = submit(ws, src, gate, pid_file, target="solo")
    try:
        pid = read_pid(pid_file, 30)
        wait_status(run, "Running")
        assert run.get_properties()["mlws.node"] == solo.nodes()[0]
        t0 = time.monotonic()
        ssh_server.kill_all()
        details = run.wait_for_completion(timeout=30, raise_on_error=False)
        took = time.monotonic() - t0
        assert details["status"] == "Failed"
        assert took < 20, f"the lost host was noticed only after {took:.1f} s"
        wait_until(lambda: pid_gone(pid), 5, f"the remote script (pid {pid}) to be gone")
    finally:
        ssh_server.start()
    _assert_fsck_ok(ws)
    error = error_of(run)
    assert error.get("code") == "ConnectionLost", error
    assert "lost the connection" in error["message"], error
    assert solo.nodes()[0] in error["message"], error


@pytest.mark.timeout(60)
def test_cancel_stops_the_remote_script(ws: Workspace, lab: RemoteCompute, tmp_path: Path) -> None:
    gate, pid_file = tmp_path / "gate", tmp_path / "script.pid"
    src = make_source(tmp_path, BLOCKER)
    run = submit(ws, src, gate, pid_file)
    pid = read_pid(pid_file, 30)
    wait_status(run, "Running")
    run.cancel()
    wait_until(lambda: run.get_status() in ("Canceled", "Failed", "Completed"), 20, "an outcome")
    status, error = run.get_status(), error_of(run)
    wait_until(lambda: pid_gone(pid), 10, f"the remote script (pid {pid}) to be gone")
    assert status == "Canceled", (status, error)
    assert error == {}, error
    _assert_fsck_ok(ws)


@pytest.mark.timeout(60)
def test_max_run_duration_fails_the_remote_run(
    ws: Workspace, lab: RemoteCompute, tmp_path: Path
) -> None:
    pid_file = tmp_path / "script.pid"
    src = make_source(tmp_path, "write_pid(sys.argv[1])\ntime.sleep(60)\n")
    t0 = time.monotonic()
    run = submit(ws, src, pid_file, max_run_duration_seconds=2)
    pid = read_pid(pid_file, 30)
    details = run.wait_for_completion(timeout=40, raise_on_error=False)
    assert details["status"] == "Failed"
    assert time.monotonic() - t0 < 30
    error = error_of(run)
    assert error.get("code") == "RunTimeout", error
    assert "max_run_duration_seconds=2" in error["message"], error
    wait_until(lambda: pid_gone(pid), 5, f"the remote script (pid {pid}) to be gone")
    _assert_fsck_ok(ws)


# -- 6. non-zero exit ----------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_exit_code_fails_with_last_error_line(
    ws: Workspace, lab: RemoteCompute, tmp_path: Path
) -> None:
    src = make_source(
        tmp_path,
        """
        print("working")
        print("ValueError: bad alpha", file=sys.stderr)
        sys.exit(3)
        """,
    )
    run = submit(ws, src)
    details = run.wait_for_completion(timeout=60, raise_on_error=False)
    assert details["status"] == "Failed"
    message = error_of(run)["message"]
    assert "exited with code 3" in message and "ValueError: bad alpha" in message, message


# -- 7. attach errors and delete -----------------------------------------------------------------------
def _bad_attach_cases(tmp_path: Path) -> dict[str, tuple[dict, str]]:
    return {
        "password": ({"password": "hunter2"}, "password login is not supported"),
        "closed-port": ({"hosts": [f"127.0.0.1:{free_port()}"]}, "cannot connect to"),
        "missing-python": ({"python_path": "/nonexistent/bin/python3"}, "no Python 3.8+"),
        "relative-python": ({"python_path": "python3"}, "python_path must be an absolute path"),
        "missing-key": (
            {"private_key_file": str(tmp_path / "no-such-key")},
            "cannot read private_key_file",
        ),
        "bad-host": ({"hosts": ["a b"]}, "invalid host"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "password",
        "closed-port",
        "missing-python",
        "relative-python",
        "missing-key",
        "bad-host",
        "duplicate",
    ],
)
@pytest.mark.timeout(60)
def test_attach_errors_are_clear_and_record_nothing(
    ws: Workspace,
    attach: Callable[..., RemoteCompute],
    tmp_path: Path,
    case: str,
) -> None:
    if case == "duplicate":
        attach("lab")
        overrides, expected = {"max_concurrent_runs": 2}, "already exists"
    else:
        overrides, expected = _bad_attach_cases(tmp_path)[case]
    before = snapshot_of_targets(ws)
    with pytest.raises(ComputeTargetException) as ei:
        attach("lab", **overrides)
    assert expected in str(ei.value), str(ei.value)
    assert snapshot_of_targets(ws) == before


@pytest.mark.timeout(60)
def test_delete_refused_while_a_run_is_active_then_removes_the_key(
    ws: Workspace, lab: RemoteCompute, tmp_path: Path
) -> None:
    vault = ws.get_default_keyvault()
    assert any(s["name"].startswith("compute-lab-") for s in vault.list_secrets())
    gate = tmp_path / "gate"
    src = make_source(tmp_path, "wait_gate(sys.argv[1])\n")
    run = submit(ws, src, gate)
    wait_status(run, "Running", timeout=30)
    with pytest.raises(ComputeTargetException, match="active run"):
        lab.delete()
    assert "lab" in [t.name for t in ComputeTarget.list(ws)]
    gate.touch()
    details = run.wait_for_completion(timeout=30, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")
    lab.delete()
    assert [t.name for t in ComputeTarget.list(ws)] == ["local"]
    assert not any(s["name"].startswith("compute-lab-") for s in vault.list_secrets())
    with pytest.raises(ComputeTargetException):
        ComputeTarget(ws, "lab")


# -- 8. loading and listing ----------------------------------------------------------------------------
def test_target_loads_as_remote_compute_with_both_hosts(
    ws: Workspace, lab: RemoteCompute, ssh_servers: list[SshServer]
) -> None:
    target = ComputeTarget(ws, "lab")
    assert type(target) is RemoteCompute and target == lab
    assert target.nodes() == [f"{s.username}@127.0.0.1:{s.port}" for s in ssh_servers]
    names = [t.name for t in ComputeTarget.list(ws)]
    assert "local" in names and "lab" in names
    with pytest.raises(ComputeTargetException, match="no compute target named 'nope'"):
        ComputeTarget(ws, "nope")


# -- 9. a target's connections are its own -------------------------------------------------------------


@pytest.mark.parametrize("action", ["attach", "delete"])
@pytest.mark.timeout(60)
def test_another_target_on_the_same_host_leaves_a_running_run_alone(
    ws: Workspace,
    attach: Callable[..., RemoteCompute],
    ssh_server: SshServer,
    tmp_path: Path,
    action: str,
) -> None:
    attach("solo", servers=[ssh_server])
    other = attach("other", servers=[ssh_server]) if action == "delete" else None
    gate, pid_file = tmp_path / "gate", tmp_path / "script.pid"
    src = make_source(tmp_path, BLOCKER)
    run = submit(ws, src, gate, pid_file, target="solo")
    try:
        read_pid(pid_file, 30)
        wait_status(run, "Running")
        if other is None:
            attach("other", servers=[ssh_server])  # connects to check the host, then hangs up
        else:
            other.delete()  # no run uses "other"
    finally:
        gate.touch()
    details = run.wait_for_completion(timeout=30, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")


@pytest.mark.timeout(60)
def test_attach_checks_the_key_even_while_another_target_is_connected(
    ws: Workspace, attach: Callable[..., RemoteCompute], ssh_server: SshServer, tmp_path: Path
) -> None:
    attach("solo", servers=[ssh_server])
    src = make_source(tmp_path, "print('hi')\n")
    run = submit(ws, src, target="solo")  # leaves its connection up for the next ones
    details = run.wait_for_completion(timeout=60, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")
    stranger = tmp_path / "stranger"  # a key the host does not accept
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    before = snapshot_of_targets(ws)
    with pytest.raises(ComputeTargetException, match="cannot connect"):
        attach("stranger", servers=[ssh_server], private_key_file=str(stranger))
    assert snapshot_of_targets(ws) == before
