"""Process-level tests of submitted runs (``mlws.compute.supervisor``, ``mlws.compute.local``): real supervisors, real scripts.

Scripts never sleep for a fixed time: they wait for a *gate file* the test creates, and give up on
their own after ``SCRIPT_GIVE_UP_S`` so nothing outlives a broken test for long. The test side
polls conditions with :func:`wait_until` and a deadline. Every process a test starts (supervisors
and scripts, found by pid + start time in the catalog) is killed at teardown if still alive.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import SCRIPT_GIVE_UP_S, SCRIPT_PRELUDE, kill_run_processes, wait_until

from mlws import ActivityFailedException, Experiment, ScriptRunConfig, Workspace
from mlws.compute import local
from mlws.runs import TERMINAL, Run, process_alive

MLWS = Path(sys.executable).with_name("mlws")
ACTIVE_NOT_TERMINAL = ("NotStarted", "Queued", "Preparing", "Starting", "Running")
# Prepended to every script: wait_gate(path) blocks until the test creates ``path``.
GATE_PRELUDE = SCRIPT_PRELUDE


def pid_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie counts as gone: it runs no code)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    out = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (ProcessLookupError, PermissionError):
            pass
    return out


def row(ws: Workspace, run_id: str) -> Any:
    return ws.catalog.one("SELECT * FROM runs WHERE id = ?", (run_id,))


def error_message(run: Run) -> str:
    return str(run.get_details().get("error", {}).get("error", {}).get("message", ""))


def make_source(tmp_path: Path, body: str, name: str = "src") -> Path:
    src = tmp_path / name
    src.mkdir()
    (src / "train.py").write_text(GATE_PRELUDE + textwrap.dedent(body))
    return src


def submit(ws: Workspace, src: Path, *args: Any, exp: str = "exp", **kwargs: Any) -> Run:
    cfg = ScriptRunConfig(
        source_directory=src, script="train.py", arguments=[str(a) for a in args], **kwargs
    )
    return Experiment(ws, exp).submit(cfg)


def wait_status(run: Run, statuses: tuple[str, ...] | str, timeout: float = 15.0) -> str:
    wanted = (statuses,) if isinstance(statuses, str) else statuses
    return wait_until(
        lambda: (s := run.get_status()) in wanted and s, timeout, f"run {run.id} to reach {wanted}"
    )


@pytest.fixture(autouse=True)
def kill_leftovers(ws: Workspace) -> Iterator[None]:
    """After each test, kill the supervisors and script process groups it left running."""
    yield
    kill_run_processes(ws)


# -- 1. submit, metrics, outputs, logs -------------------------------------------------------------
def test_submit_returns_at_once_then_completes_with_metrics_outputs_and_log(
    ws: Workspace, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    src = make_source(
        tmp_path,
        """
        from mlws import Run
        run = Run.get_context()
        alpha = float(sys.argv[sys.argv.index("--alpha") + 1])
        print(f"training with alpha={alpha}")
        wait_gate(sys.argv[1])
        run.log("alpha", alpha)
        for loss in (3.0, 2.0, 1.5):
            run.log("loss", loss)
        os.makedirs("outputs/sub", exist_ok=True)
        with open("outputs/model.txt", "w") as f:
            f.write("weights")
        with open("outputs/sub/extra.json", "w") as f:
            f.write("{}")
        print("to stderr", file=sys.stderr)
        print("done training")
        """,
    )
    t0 = time.monotonic()
    run = submit(ws, src, gate, "--alpha", 0.5)
    elapsed = time.monotonic() - t0
    # The script cannot end before the gate opens, so a terminal status here would be a bug.
    assert run.get_status() in ACTIVE_NOT_TERMINAL
    assert elapsed < 5, f"submit took {elapsed:.1f} s; it must return at once"

    wait_status(run, "Running")
    r = row(ws, run.id)
    assert r["pid"] and process_alive(r["pid"], r["pid_start"])
    assert r["supervisor_pid"] != os.getpid() and r["pid"] != r["supervisor_pid"]
    # While it runs, its live log is visible.
    wait_until(lambda: "logs/driver.log" in run.get_file_names(), 10, "live driver.log")

    gate.touch()
    details = run.wait_for_completion(timeout=30)
    assert details["status"] == "Completed"
    assert details["runDefinition"]["arguments"] == [str(gate), "--alpha", "0.5"]
    assert details["startTimeUtc"] and details["endTimeUtc"]

    assert run.get_metrics() == {"alpha": 0.5, "loss": [3.0, 2.0, 1.5]}
    names = run.get_file_names()
    assert {"outputs/model.txt", "outputs/sub/extra.json", "logs/driver.log"} <= set(names), names
    log = run.get_details_with_logs()["logFiles"]["logs/driver.log"]
    assert "training with alpha=0.5" in log
    assert "to stderr" in log
    assert log.index("training with alpha=0.5") < log.index("done training")
    out = run.download_file("outputs/model.txt", tmp_path / "dl")
    assert out.read_text() == "weights"
    # The working folder is removed once the outputs are stored.
    assert not Path(r["working_dir"]).exists()
    assert pid_gone(r["pid"]) and wait_until(
        lambda: pid_gone(r["supervisor_pid"]), 10, "supervisor exit"
    )


# -- 2. the run outlives the submitting process ------------------------------------------------------
def test_run_survives_the_submitting_process(ws: Workspace, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    src = make_source(tmp_path, "wait_gate(sys.argv[1])\nprint('survived')\n")
    code = textwrap.dedent(
        """
        import sys
        from mlws import Experiment, ScriptRunConfig, Workspace
        ws = Workspace(sys.argv[1])
        cfg = ScriptRunConfig(source_directory=sys.argv[2], script="train.py", arguments=[sys.argv[3]])
        run = Experiment(ws, "survive").submit(cfg)
        print(run.id)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(ws.path), str(src), str(gate)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip().splitlines()[-1]
    run = ws.get_run(run_id)
    # The submitter is gone; the gate is closed, so the run must still be going.
    assert run.get_status() in ACTIVE_NOT_TERMINAL
    sup = row(ws, run_id)["supervisor_pid"]
    assert sup and not pid_gone(sup)
    wait_status(run, "Running")
    gate.touch()
    details = run.wait_for_completion(timeout=30)
    assert details["status"] == "Completed"
    assert "survived" in run.get_details_with_logs()["logFiles"]["logs/driver.log"]


# -- 3. mlws run logs -f streams live ------------------------------------------------------------------
def test_cli_logs_follow_streams_output_live(ws: Workspace, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    src = make_source(tmp_path, "print('tick 0')\nwait_gate(sys.argv[1])\nprint('tick 1')\n")
    run = submit(ws, src, gate)
    env = {**os.environ, "MLWS_WORKSPACE": str(ws.path)}
    follower = subprocess.Popen(
        [str(MLWS), "run", "logs", "-f", run.id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 20
        while "tick 0\n" not in seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"'tick 0' not streamed within 20 s; got {seen!r}"
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            assert line is not None, (
                f"follower ended early: {seen!r}, stderr {follower.stderr.read()!r}"
            )  # type: ignore[union-attr]
            seen.append(line)
        assert "tick 1\n" not in seen
        assert run.get_status() == "Running"  # the gate is closed: the run is mid-way
        gate.touch()
        follower.wait(timeout=30)
        while (line := lines.get(timeout=10)) is not None:
            seen.append(line)
        assert follower.returncode == 0, follower.stderr.read()  # type: ignore[union-attr]
        assert seen.count("tick 0\n") == 1 and seen.count("tick 1\n") == 1, seen
        assert seen.index("tick 0\n") < seen.index("tick 1\n")
        assert run.get_status() == "Completed"
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait(timeout=10)


# -- 4. the script is killed ---------------------------------------------------------------------------
def test_script_killed_by_sigkill_fails_with_signal(ws: Workspace, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    src = make_source(tmp_path, "print('waiting')\nwait_gate(sys.argv[1])\n")
    run = submit(ws, src, gate)
    wait_status(run, "Running")
    r = row(ws, run.id)
    assert process_alive(r["pid"], r["pid_start"])
    os.kill(r["pid"], signal.SIGKILL)
    details = run.wait_for_completion(raise_on_error=False, timeout=30)
    assert details["status"] == "Failed"
    msg = details["error"]["error"]["message"]
    assert "signal 9" in msg and "SIGKILL" in msg, msg
    assert "logs/driver.log" in run.get_file_names()


def test_file_names_of_a_run_whose_folder_goes_while_they_are_listed(
    ws: Workspace, tmp_path: Path, monkeypatch
) -> None:
    # The supervisor stores a run's files, then removes its folder: a listing walking that
    # folder meanwhile (a cancel's details on `mlws serve`) raised FileNotFoundError, a 500.
    gate = tmp_path / "gate"
    src = make_source(tmp_path, "print('live', flush=True)\nwait_gate(sys.argv[1])\n")
    run = submit(ws, src, gate)
    wait_status(run, "Running")
    wait_until(lambda: "logs/driver.log" in run.get_file_names(), 10, "the live log")

    def gone(self, pattern):  # noqa: ANN001, ANN202 - Path.rglob's
        raise FileNotFoundError(2, "No such file or directory", str(self))

    monkeypatch.setattr(Path, "rglob", gone)
    assert run.get_file_names() == []  # nothing stored yet; no error
    monkeypatch.undo()
    gate.write_text("")
    assert run.wait_for_completion(raise_on_error=False, timeout=30)["status"] == "Completed"
    assert "logs/driver.log" in run.get_file_names()


# -- 5. the supervisor is killed -----------------------------------------------------------------------
def test_supervisor_killed_fails_run_on_next_read_and_kills_orphan(
    ws: Workspace, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    src = make_source(tmp_path, "print('waiting')\nwait_gate(sys.argv[1])\n")
    run = submit(ws, src, gate)
    wait_status(run, "Running")
    r = row(ws, run.id)
    sup, script = r["supervisor_pid"], r["pid"]
    assert process_alive(sup, r["supervisor_start"]) and process_alive(script, r["pid_start"])
    os.kill(sup, signal.SIGKILL)
    wait_until(lambda: pid_gone(sup), 10, "the supervisor to die")
    assert not pid_gone(script), "the script should still run until someone reads the run"
    assert run.get_status() == "Failed"
    msg = error_message(run)
    assert "supervising process" in msg and str(sup) in msg, msg
    wait_until(lambda: pid_gone(script), 10, f"the orphaned script (pid {script}) to be killed")
    assert group_members(script) == []


def test_supervisor_stopped_by_sigterm_records_why_and_kills_script(
    ws: Workspace, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    src = make_source(tmp_path, "print('waiting')\nwait_gate(sys.argv[1])\n")
    run = submit(ws, src, gate)
    wait_status(run, "Running")
    r = row(ws, run.id)
    sup, script = r["supervisor_pid"], r["pid"]
    os.kill(sup, signal.SIGTERM)
    # The supervisor records the outcome itself (no reader needed) and takes the script down.
    wait_until(lambda: row(ws, run.id)["status"] == "Failed", 10, "the supervisor to record Failed")
    msg = error_message(run)
    assert "supervising process got signal 15" in msg, msg
    wait_until(lambda: pid_gone(script) and pid_gone(sup), 10, "script and supervisor to exit")


# -- 6. non-zero exit --------------------------------------------------------------------------------
def test_script_exit_code_fails_with_last_error_line(ws: Workspace, tmp_path: Path) -> None:
    src = make_source(
        tmp_path,
        """
        print("Traceback (most recent call last):", file=sys.stderr)
        print('  File "train.py", line 12, in <module>', file=sys.stderr)
        print("ValueError: bad alpha", file=sys.stderr)
        sys.exit(3)
        """,
    )
    run = submit(ws, src)
    with pytest.raises(ActivityFailedException) as ei:
        run.wait_for_completion(timeout=30)
    assert "exited with code 3" in str(ei.value) and "ValueError: bad alpha" in str(ei.value)
    details = run.wait_for_completion(raise_on_error=False, timeout=30)
    assert details["status"] == "Failed"
    msg = details["error"]["error"]["message"]
    assert "exited with code 3" in msg and "ValueError: bad alpha" in msg, msg


# -- 7. cancel -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("ignore_sigterm", [False, True], ids=["default", "ignores-sigterm"])
def test_cancel_running_run_kills_its_process_group(
    ws: Workspace, tmp_path: Path, ignore_sigterm: bool
) -> None:
    gate = tmp_path / "gate"
    child_pid_file = tmp_path / "grandchild.pid"
    src = make_source(
        tmp_path,
        f"""
        import signal, subprocess
        if {ignore_sigterm!r}:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the grandchild too
        g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep({SCRIPT_GIVE_UP_S})"])
        with open(sys.argv[2] + ".tmp", "w") as f:
            f.write(str(g.pid))
        os.replace(sys.argv[2] + ".tmp", sys.argv[2])
        wait_gate(sys.argv[1])
        """,
    )
    run = submit(ws, src, gate, child_pid_file)
    wait_status(run, "Running")
    wait_until(child_pid_file.exists, 15, "the script to start its grandchild")
    script, grandchild = row(ws, run.id)["pid"], int(child_pid_file.read_text())
    assert sorted(group_members(script)) == sorted([script, grandchild])
    t0 = time.monotonic()
    run.cancel()
    # Grace is 2 s (MLWS_CANCEL_GRACE_S in conftest); allow for a slow machine.
    wait_status(run, "Canceled", timeout=12)
    took = time.monotonic() - t0
    if not ignore_sigterm:
        assert took < 5, f"a script that obeys SIGTERM took {took:.1f} s to cancel"
    wait_until(lambda: group_members(script) == [], 10, "the script's process group to be gone")
    assert pid_gone(grandchild)
    assert error_message(run) == ""


def test_cancel_queued_run_never_starts_it(ws: Workspace, tmp_path: Path) -> None:
    local.configure(ws, 1)
    gate = tmp_path / "gate"
    marker = tmp_path / "second-ran"
    src = make_source(
        tmp_path,
        """
        if len(sys.argv) > 2:
            open(sys.argv[2], "w").close()
        wait_gate(sys.argv[1])
        """,
    )
    first = submit(ws, src, gate)
    wait_status(first, "Running")
    second = submit(ws, src, gate, marker)
    wait_until(
        lambda: process_alive(row(ws, second.id)["supervisor_pid"], None), 10, "second supervisor"
    )
    assert second.get_status() == "Queued"
    second.cancel()
    wait_status(second, "Canceled", timeout=10)
    assert first.get_status() == "Running"
    r = row(ws, second.id)
    assert r["pid"] is None and r["start_time"] is None
    gate.touch()
    assert first.wait_for_completion(timeout=30)["status"] == "Completed"
    assert not marker.exists(), "a canceled queued run must never run its script"
    assert second.get_status() == "Canceled"


def test_cancel_right_after_submit_never_runs_the_script(ws: Workspace, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    marker = tmp_path / "ran"
    src = make_source(tmp_path, "open(sys.argv[2], 'w').close()\nwait_gate(sys.argv[1])\n")
    run = submit(ws, src, gate, marker)
    run.cancel()  # the supervisor is still starting up: nothing has run yet
    wait_until(lambda: marker.exists() or run.get_status() in TERMINAL, 15, "cancel or start")
    assert not marker.exists(), f"the script ran after cancel (status {run.get_status()})"
    assert run.get_status() == "Canceled"


# -- 8. max_concurrent_runs ----------------------------------------------------------------------------
def test_max_concurrent_runs_queues_the_second_run(ws: Workspace, tmp_path: Path) -> None:
    local.configure(ws, 1)
    assert local.max_concurrent_runs(ws) == 1
    gate = tmp_path / "gate"
    src = make_source(tmp_path, "wait_gate(sys.argv[1])\n")
    runs = [submit(ws, src, gate), submit(ws, src, gate)]
    # Which of the two takes the slot first is up to the supervisors' polling (see the FIFO test
    # below); this test is about the limit, so it names them by the order they got the slot.
    running = wait_until(
        lambda: [r for r in runs if r.get_status() == "Running"], 15, "one run to be Running"
    )
    assert len(running) == 1
    first = running[0]
    second = runs[1] if first is runs[0] else runs[0]
    # Both supervisors are up; for a while (several slot polls of 0.1 s) the second must stay queued.
    wait_until(
        lambda: process_alive(row(ws, second.id)["supervisor_pid"], None), 10, "second supervisor"
    )
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        assert second.get_status() == "Queued"
        assert first.get_status() == "Running"
        time.sleep(0.05)
    assert row(ws, second.id)["pid"] is None
    gate.touch()
    assert first.wait_for_completion(timeout=30)["status"] == "Completed"
    assert second.wait_for_completion(timeout=30)["status"] == "Completed"
    a, b = row(ws, first.id), row(ws, second.id)
    assert b["start_time"] >= a["end_time"] - 0.2, (a["end_time"], b["start_time"])


def test_queued_runs_start_in_submission_order(ws: Workspace, tmp_path: Path) -> None:
    local.configure(ws, 1)
    gate = tmp_path / "gate"
    src = make_source(tmp_path, "wait_gate(sys.argv[1])\n")
    holder = submit(ws, src, gate)
    wait_status(holder, "Running")
    older = submit(ws, src, gate)
    wait_until(
        lambda: process_alive(row(ws, older.id)["supervisor_pid"], None), 10, "older supervisor"
    )
    younger = submit(ws, src, gate)
    wait_until(
        lambda: process_alive(row(ws, younger.id)["supervisor_pid"], None), 10, "younger supervisor"
    )
    # Freeze the older run's supervisor: deterministically, it is the slower of the two to notice
    # the free slot, which is the race that otherwise happens at random.
    older_sup = row(ws, older.id)["supervisor_pid"]
    os.kill(older_sup, signal.SIGSTOP)
    try:
        gate.touch()
        assert holder.wait_for_completion(timeout=30)["status"] == "Completed"
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            assert younger.get_status() == "Queued", "the younger run overtook the older queued run"
            time.sleep(0.05)
    finally:
        os.kill(older_sup, signal.SIGCONT)
    assert older.wait_for_completion(timeout=30)["status"] == "Completed"
    assert younger.wait_for_completion(timeout=30)["status"] == "Completed"
    assert row(ws, older.id)["start_time"] < row(ws, younger.id)["start_time"]


# -- 9. max_run_duration_seconds -------------------------------------------------------------------------
def test_max_run_duration_fails_the_run(ws: Workspace, tmp_path: Path) -> None:
    src = make_source(tmp_path, "print('waiting')\nwait_gate(sys.argv[1])\n")
    t0 = time.monotonic()
    run = submit(ws, src, tmp_path / "never", max_run_duration_seconds=1)
    details = run.wait_for_completion(raise_on_error=False, timeout=20)
    assert details["status"] == "Failed"
    assert time.monotonic() - t0 < 15
    msg = details["error"]["error"]["message"]
    assert "max_run_duration_seconds" in msg and "1" in msg, msg
    assert pid_gone(row(ws, run.id)["pid"])


# -- 10. run.fail() and child runs ---------------------------------------------------------------------
def test_script_calling_fail_then_exiting_zero_fails(ws: Workspace, tmp_path: Path) -> None:
    src = make_source(
        tmp_path,
        """
        from mlws import Run
        run = Run.get_context()
        run.log("before_fail", 1)
        run.fail("custom")
        print("exiting 0 after fail")
        """,
    )
    run = submit(ws, src)
    details = run.wait_for_completion(raise_on_error=False, timeout=30)
    assert details["status"] == "Failed"
    assert details["error"]["error"]["message"] == "custom"
    assert run.get_metrics() == {"before_fail": 1}
    with pytest.raises(ActivityFailedException, match="custom"):
        run.wait_for_completion(timeout=5)


def test_child_runs_are_listed_completed_and_have_recursive_metrics(
    ws: Workspace, tmp_path: Path
) -> None:
    src = make_source(
        tmp_path,
        """
        from mlws import Run
        run = Run.get_context()
        run.log("parent_metric", 7)
        done = run.child_run(name="explicit")
        done.log("x", 1)
        done.log("x", 2)
        done.complete()
        left_open = run.child_run(name="left-open")
        left_open.log("y", 3.5)
        left_open.flush()
        """,
    )
    run = submit(ws, src)
    assert run.wait_for_completion(timeout=30)["status"] == "Completed"
    # The supervisor ends open children after the parent; reading them before it exits is racy
    # (see test_child_runs_read_while_parent_finalizes_end_completed).
    sup = row(ws, run.id)["supervisor_pid"]
    wait_until(lambda: pid_gone(sup), 10, "the supervisor to exit")
    children = run.get_children()
    assert [c.display_name for c in children] == ["explicit", "left-open"]
    assert [c.get_status() for c in children] == ["Completed", "Completed"]
    assert all(c.parent == run for c in children)
    metrics = run.get_metrics(recursive=True)
    assert metrics == {
        run.id: {"parent_metric": 7},
        children[0].id: {"x": [1, 2]},
        children[1].id: {"y": 3.5},
    }


def test_child_runs_read_while_parent_finalizes_end_completed(
    ws: Workspace, tmp_path: Path
) -> None:
    # Many output files make the supervisor's collect step (between script exit and the outcome)
    # long enough that the test's polling reads children inside that window.
    src = make_source(
        tmp_path,
        """
        from mlws import Run
        run = Run.get_context()
        child = run.child_run(name="open-child")
        child.log("v", 1)
        os.makedirs("outputs", exist_ok=True)
        for i in range(400):
            with open(f"outputs/f{i}.txt", "w") as f:
                f.write(str(i) * 100)
        with open(sys.argv[1], "w") as f:
            f.write("ready")
        wait_gate(sys.argv[2])
        """,
    )
    ready, gate = tmp_path / "ready", tmp_path / "gate"
    run = submit(ws, src, ready, gate)
    wait_until(ready.exists, 20, "the script to create its child")
    gate.touch()
    deadline = time.monotonic() + 30
    while run.get_status() not in TERMINAL:  # what a UI or `mlws run list --include-children` does
        run.get_children()
        assert time.monotonic() < deadline, "the run did not end within 30 s"
    assert run.get_status() == "Completed"
    (child,) = run.get_children()
    assert child.get_status() == "Completed", error_message(child)


# -- 11. interactive runs in a process that exits ------------------------------------------------------
@pytest.mark.parametrize("completes", [False, True], ids=["exits-without-completing", "completes"])
def test_interactive_run_of_exited_process(ws: Workspace, completes: bool) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from mlws import Experiment, Workspace
        ws = Workspace(sys.argv[1])
        run = Experiment(ws, "interactive").start_logging()
        run.log("a", 1)
        run.flush()
        if {completes!r}:
            run.complete()
        print(run.id)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(ws.path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    run = ws.get_run(proc.stdout.strip().splitlines()[-1])
    assert run.get_metrics() == {"a": 1}
    if completes:
        assert run.get_status() == "Completed"
        assert error_message(run) == ""
    else:
        assert run.get_status() == "Failed"
        msg = error_message(run)
        assert "exited without completing" in msg, msg
        assert json.loads(row(ws, run.id)["error"])["code"] == "ProcessDied"


def test_a_supervisor_that_cannot_start_fails_the_run_with_one_line(ws, tmp_path, monkeypatch):
    """Neither a launcher nor a detached process: submit raises one MlwsError line and the run
    is Failed with the reason, not left NotStarted (the same path starts sweep and pipeline
    controllers: ``launcher.start_for_run``)."""
    import mlws.processes
    from mlws import Experiment, ScriptRunConfig
    from mlws.errors import MlwsError

    def refuse(*_a, **_k):
        raise OSError("no more processes")

    monkeypatch.setenv("MLWS_LAUNCHER", "0")
    monkeypatch.setattr(mlws.processes, "start_detached", refuse)
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text("print('never runs')\n")
    with pytest.raises(MlwsError, match="could not start the process supervising the run") as e:
        Experiment(ws, "e").submit(ScriptRunConfig(str(src), "train.py"))
    assert "\n" not in str(e.value)
    (row,) = ws.catalog.query("SELECT status, error FROM runs")
    assert row["status"] == "Failed"
    assert "no more processes" in json.loads(row["error"])["message"]


def test_a_waiter_fewer_than_the_slots_behind_the_first_looks_as_often_as_the_first(
    tmp_path, monkeypatch
):
    """Two slots freed together: the second in line must not sleep the slow poll (it took its
    slot ~0.1 s late). Waiters with at least as many ahead as there are slots keep it."""
    naps: list[float] = []
    ahead = iter([3, 2, 1, 0])  # what the waiter finds ahead of it at each look

    def nap(s: float) -> None:
        naps.append(s)
        if len(naps) == 3:  # the slots free up once it is first
            for fd in held:
                os.close(fd)

    held = [local.try_lock(tmp_path / f"{n}.lock") for n in ("a", "b")]
    monkeypatch.setattr(local.time, "sleep", nap)
    with local.hold_slot(
        tmp_path, lambda: ["a", "b"], lambda: True, poll_s=0.1, ahead=lambda n: next(ahead)
    ) as name:
        assert name == "a"
    # 3 and 2 ahead (not fewer than the 2 slots): the slow poll; 1 ahead: as often as the first;
    # then first, every slot still held: the first's poll until one frees.
    assert naps == [0.1, 0.1, local.FIRST_POLL_S]
