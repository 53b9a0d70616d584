"""Hardening of run supervision, metrics, process identity and slots (issue 10, "Nothing lost,
nothing leaked"): real supervisors, real ``kill -9``, real copies of a workspace, real HOMEs.

Scripts wait for gate files (``helpers.SCRIPT_PRELUDE``), never for a fixed time; the test side
polls with a deadline. Everything a test starts is killed at teardown if still alive.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import kill_run_processes, make_source, submit, wait_until

from mlws import Workspace
from mlws.compute import local


def row(ws: Workspace, run_id: str) -> Any:
    return ws.catalog.one("SELECT * FROM runs WHERE id = ?", (run_id,))


@pytest.fixture(autouse=True)
def kill_leftovers(ws: Workspace) -> Iterator[None]:
    yield
    kill_run_processes(ws)


# -- 4. run slots are per machine and workspace, not per HOME ------------------------------------
SUBMIT_AS = """
import os, sys
os.umask(0)  # the workspace is shared by two users: what either creates, both may write
from mlws import Experiment, ScriptRunConfig, Workspace
ws = Workspace(sys.argv[1])
for _ in range(int(sys.argv[3])):
    cfg = ScriptRunConfig(source_directory=sys.argv[2], script="train.py", arguments=[sys.argv[4]])
    print(Experiment(ws, "slots").submit(cfg).id, flush=True)
"""

#: A run that finds another one inside says so (exit 3): an overlap is seen directly, not only
#: from the recorded times.
ONE_AT_A_TIME = """
try:
    fd = os.open(sys.argv[1], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
except FileExistsError:
    sys.exit(3)
os.close(fd)
time.sleep(0.3)  # a run long enough for an overlap to happen if slots allowed it
os.unlink(sys.argv[1])
"""


def _submit_as_two_users(ws: Workspace, base: Path, users: list[list[str]]) -> None:
    """Each of ``users`` (a command starting Python, as that user) submits two runs to ``ws`` at
    once, each with its own HOME, with max_concurrent_runs=1; all four complete, never overlapping."""
    import sysconfig

    local.configure(ws, 1)
    inside = base / "inside"
    src = make_source(base, ONE_AT_A_TIME)
    procs = []
    for i, prefix in enumerate(users):
        home = base / f"home{i}"
        # The venv's packages for a Python that is not the venv's (another uid may not run it).
        path = os.pathsep.join([os.environ["PYTHONPATH"], sysconfig.get_paths()["purelib"]])
        env = {**os.environ, "HOME": str(home), "PYTHONPATH": path}
        procs.append(
            subprocess.Popen(
                [*prefix, "-c", SUBMIT_AS, str(ws.path), str(src), "2", str(inside)],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    ids = []
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        ids += out.split()
    assert len(ids) == 4
    for rid in ids:
        wait_until(lambda rid=rid: row(ws, rid)["status"] in ("Completed", "Failed"), 60, rid)
    rows = sorted((row(ws, rid) for rid in ids), key=lambda r: r["start_time"])
    assert [r["status"] for r in rows] == ["Completed"] * 4, [dict(r) for r in rows]
    assert len({r["submitter_user"] for r in rows}) == len({tuple(u) for u in users})
    for a, b in zip(rows, rows[1:], strict=False):
        assert b["start_time"] >= a["end_time"], "two runs held the single slot at once"


def test_two_homes_share_the_local_slots(ws: Workspace, tmp_path: Path) -> None:
    """Two users (two HOMEs, so two per-user caches) submitting to one workspace with
    max_concurrent_runs=1: their runs never overlap."""
    for i in range(2):
        (tmp_path / f"home{i}").mkdir()
    _submit_as_two_users(ws, tmp_path, [[sys.executable], [sys.executable]])


def _system_python_like_ours() -> bool:
    """/usr/bin/python3 is this Python's version (so it can use the venv's packages)."""
    try:
        out = subprocess.run(
            ["/usr/bin/python3", "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except OSError:
        return False
    return out == str(sys.version_info[:2])


def _others_can_reach(path: Path) -> bool:
    """Whether another user (nobody) can get to ``path``: a checkout under a 0700 folder
    (``mktemp -d``) cannot be imported by nobody."""
    import stat

    return all(os.stat(p).st_mode & stat.S_IXOTH for p in [path, *path.parents])


@pytest.mark.skipif(
    os.geteuid() != 0
    or not Path("/usr/bin/setpriv").exists()
    or not _system_python_like_ours()
    or not _others_can_reach(Path(__file__).resolve().parent.parent),
    reason="needs root, setpriv, a system Python of this version and a checkout others can read",
)
def test_two_real_users_share_the_local_slots(tmp_path: Path) -> None:
    """The same with two real uids (root and nobody) on one workspace both may write."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="mlws-two-users-"))  # outside root's private tmp_path
    try:
        base.chmod(0o777)
        old = os.umask(0)
        try:
            shared = Workspace.create(base / "ws", _remember_name=False)
        finally:
            os.umask(old)
        for f in shared.path.rglob("*"):
            f.chmod(0o777 if f.is_dir() else 0o666)
        # Root (umask 022) stores a blob first: the gc lock it makes must still open for nobody.
        shared.blobs.put_bytes(b"root was here first")
        for i in range(2):
            (base / f"home{i}").mkdir()
        os.chown(base / "home1", 65534, 65534)
        # This Python may live where nobody cannot run it (e.g. /root/.pyenv): the system one.
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3"]
        try:
            _submit_as_two_users(shared, base, [[sys.executable], nobody])
        finally:
            kill_run_processes(shared)
            shared.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- 2. what a kill -9 can lose of the logged metrics is bounded --------------------------------
LOG_FAST = """
import sys
from mlws import Experiment, Workspace
ws = Workspace(sys.argv[1])
run = Experiment(ws, "metrics").start_logging()
print("run", run.id, flush=True)
i = 0
while True:
    for _ in range(500):
        i += 1
        run.log("x", i)
    print(i, flush=True)  # values 1..i are acknowledged: run.log returned for each of them
"""


def test_kill_9_loses_at_most_the_metric_bound(ws: Workspace) -> None:
    """A script logging as fast as it can is killed with SIGKILL at a random moment; of the values
    whose run.log had returned, at most ``metrics.MAX_PENDING`` are missing (the count bound;
    the time bound, ``FLUSH_INTERVAL_S``, only ever flushes earlier)."""
    import random
    import signal

    from mlws import metrics

    rnd = random.Random()
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", LOG_FAST, str(ws.path)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None
            run_id = proc.stdout.readline().split()[1]
            kill_after = rnd.randrange(1_000, 30_000)
            acknowledged = 0
            for line in proc.stdout:
                acknowledged = int(line)
                if acknowledged >= kill_after:
                    break
            os.kill(proc.pid, signal.SIGKILL)
            # Lines printed before it died were acknowledged too: the check uses the last one.
            for line in proc.stdout:
                acknowledged = int(line)
        finally:
            proc.kill()
            proc.wait()
        seq = row(ws, run_id)["seq"]
        stored = ws.catalog.scalar(
            "SELECT count(*) FROM metrics WHERE run_seq = ? AND value <= ?", (seq, acknowledged)
        )
        lost = acknowledged - stored
        assert lost <= metrics.MAX_PENDING, (
            f"killed after value {acknowledged}: {lost} acknowledged values lost, "
            f"more than the bound of {metrics.MAX_PENDING}"
        )
        # What was stored is a prefix: values are committed in the order they were logged.
        assert ws.catalog.scalar(
            "SELECT max(value) FROM metrics WHERE run_seq = ? AND value <= ?", (seq, acknowledged)
        ) in (stored, None)


# -- 1. a killed supervisor's run keeps its logs and outputs -------------------------------------
RECONCILE = """
import os, sys, time
from mlws import Workspace
ws = Workspace(sys.argv[1])
deadline = time.monotonic() + 30
while not os.path.exists(sys.argv[3]) and time.monotonic() < deadline:
    time.sleep(0.001)
print(ws.get_run(sys.argv[2]).get_status(), flush=True)
"""


def test_kill_9_supervisor_attaches_logs_and_outputs_once(ws: Workspace, tmp_path: Path) -> None:
    """``kill -9`` the supervisor of a running run; several processes then read the run at once.
    The run ends Failed with the script's driver.log and outputs/ as run files (collected by
    exactly one of them: the note the collector adds is there once), and no working folder is
    left in the per-user cache."""
    import signal

    src = make_source(
        tmp_path,
        """
        os.makedirs("outputs", exist_ok=True)
        with open("outputs/partial.txt", "w") as f:
            f.write("epoch 1")
        print("training started", flush=True)
        wait_gate(sys.argv[1])
        """,
    )
    for round_ in range(3):
        gate, go = tmp_path / f"gate{round_}", tmp_path / f"go{round_}"
        run = submit(ws, src, gate)
        r = wait_until(
            lambda run=run: (
                (x := row(ws, run.id))["status"] == "Running" and x["working_dir"] and x
            ),
            30,
            "the run to be Running",
        )
        workdir = Path(r["working_dir"])
        wait_until(
            lambda w=workdir: b"training started" in (w / "logs" / "driver.log").read_bytes(), 30
        )
        os.kill(r["supervisor_pid"], signal.SIGKILL)
        readers = [
            subprocess.Popen(
                [sys.executable, "-c", RECONCILE, str(ws.path), run.id, str(go)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        go.touch()
        outs = [p.communicate(timeout=60)[0].strip() for p in readers]
        assert outs == ["Failed"] * 3, outs
        assert run.get_status() == "Failed"
        assert "supervising process" in run.get_details()["error"]["error"]["message"]
        names = set(run.get_file_names())
        assert {"logs/driver.log", "outputs/partial.txt"} <= names, names
        log = run.get_details_with_logs()["logFiles"]["logs/driver.log"]
        assert "training started" in log
        assert log.count("stored this run's files") == 1, log
        assert not workdir.exists(), "the working folder was left in the cache"
        wait_until(lambda r=r: not _alive(r["pid"]), 10, "the orphaned script to be killed")
    runs_cache = Path(os.environ["HOME"]) / ".cache" / "mlws" / "runs"
    assert [p for p in runs_cache.rglob("*") if p.is_file()] == []


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# -- 3. a copied workspace never acts on the original's processes --------------------------------
SCORE = """\
def init():
    pass

def run(raw_data):
    return {"ok": raw_data}
"""


def _score(port: int) -> int:
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        c.request(
            "POST", "/score", body='{"data": 1}', headers={"Content-Type": "application/json"}
        )
        return c.getresponse().status
    finally:
        c.close()


def test_copy_of_a_workspace_never_signals_the_originals_processes(
    ws: Workspace, tmp_path: Path
) -> None:
    """``cp -a`` a workspace while a run and a service run in it. In the copy, ``run cancel``
    refuses with one line and ``service delete`` removes only the copy's record: the original's
    run goes on to complete and its service keeps answering."""
    from click.testing import CliRunner
    from helpers import one_error_line

    from mlws import Model
    from mlws.cli import cli
    from mlws.serving import InferenceConfig, LocalWebservice, Webservice

    gate = tmp_path / "gate"
    src = make_source(tmp_path, "print('up', flush=True)\nwait_gate(sys.argv[1])\nprint('done')\n")
    run = submit(ws, src, gate)
    wait_until(lambda: run.get_status() == "Running", 30, "the run to be Running")
    (tmp_path / "m.txt").write_text("2")
    model = Model.register(ws, tmp_path / "m.txt", "m")
    score_src = tmp_path / "score"
    score_src.mkdir()
    (score_src / "score.py").write_text(SCORE)
    svc = Model.deploy(
        ws,
        "svc",
        [model],
        InferenceConfig(entry_script="score.py", source_directory=str(score_src)),
        LocalWebservice.deploy_configuration(auth_enabled=False),
    )
    try:
        svc.wait_for_deployment(timeout_sec=60)
        port = svc.port
        assert _score(port) == 200
        copy = tmp_path / "copy"
        subprocess.run(["cp", "-a", str(ws.path), str(copy)], check=True)
        r = row(ws, run.id)

        cli_runner = CliRunner()
        line = one_error_line(cli_runner.invoke(cli, ["-w", str(copy), "run", "cancel", run.id]))
        assert str(ws.path) in line, line
        from mlws.dirs import user_cache_dir

        live = user_cache_dir() / "services" / ws.folder_key / "svc"
        assert live.is_dir()  # the original's replica folder (model and scoring code)
        out = cli_runner.invoke(cli, ["-w", str(copy), "service", "delete", "svc"])
        assert out.exit_code == 0, out.output
        assert live.is_dir(), "deleting the copy's service removed the original's files"
        with Workspace(copy) as c:
            assert [s.name for s in Webservice.list(c)] == []
            # In the copy nothing runs the run: it is Failed there, and says why.
            copied = c.get_run(run.id)
            assert copied.get_status() == "Failed"
            assert str(ws.path) in copied.get_details()["error"]["error"]["message"]

        # The originals are untouched: the same processes, still working.
        assert _alive(r["supervisor_pid"]) and _alive(r["pid"])
        assert run.get_status() == "Running"
        assert svc.state == "Healthy" and _score(port) == 200
        gate.touch()
        assert run.wait_for_completion(timeout=60)["status"] == "Completed"
        log = run.get_details_with_logs()["logFiles"]["logs/driver.log"]
        assert "done" in log
    finally:
        svc.delete()


def test_a_supervisor_caught_mid_exec_is_not_taken_for_another_workspaces(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Just past execve() a process's command line and environment read empty for a moment, and
    its starter may already have recorded its pid: a status read then must not call the run's
    live supervisor foreign and fail the run (seen in CI: runs Failed at once, "ProcessDied")."""
    import psutil

    from mlws.lifecycle import owned_process, process_start_time

    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env={**os.environ, "MLWS_WORKSPACE": str(ws.path)},
    )
    try:
        wait_until(lambda: "-c" in psutil.Process(proc.pid).cmdline(), 10)
        real_cmdline, real_environ = psutil.Process.cmdline, psutil.Process.environ
        reads = {"n": 0}

        def mid_exec_cmdline(self: psutil.Process) -> list[str]:
            reads["n"] += 1
            return [] if reads["n"] <= 3 else real_cmdline(self)

        def mid_exec_environ(self: psutil.Process) -> dict[str, str]:
            return {} if reads["n"] <= 3 else real_environ(self)

        monkeypatch.setattr(psutil.Process, "cmdline", mid_exec_cmdline)
        monkeypatch.setattr(psutil.Process, "environ", mid_exec_environ)
        assert owned_process(ws, proc.pid, process_start_time(proc.pid))
        assert reads["n"] > 3
    finally:
        proc.kill()
        proc.wait()
