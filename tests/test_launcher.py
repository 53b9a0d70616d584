"""The warm launcher (``mlws.compute.launcher``): supervisors forked from a process that has
mlws imported, tied to their workspace folder like directly started ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from helpers import wait_until

from mlws import Experiment, ScriptRunConfig, Workspace
from mlws.compute import launcher
from mlws.lifecycle import owned_process

SCRIPT = textwrap.dedent(
    """
    import json, os
    os.makedirs("outputs", exist_ok=True)
    json.dump({"var": os.environ.get("LAUNCHER_TEST_VAR"), "cwd": os.getcwd()},
              open("outputs/seen.json", "w"))
    """
)


@pytest.fixture(autouse=True)
def no_workspace_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    # A launcher's environment then names no workspace: its command line must.
    monkeypatch.delenv("MLWS_WORKSPACE")
    # Not the suite's short idle time: a loaded machine must not end a launcher mid-test (the
    # ws fixture stops them).
    monkeypatch.setenv("MLWS_LAUNCHER_IDLE_S", "120")


def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "t.py").write_text(SCRIPT)
    return src


def launchers_of(ws: Workspace) -> list[psutil.Process]:
    found = []
    for record in launcher.socket_folder().glob("l-*.json"):
        try:
            info = json.loads(record.read_text())
            if os.path.samefile(info["workspace"], ws.path):
                found.append(psutil.Process(int(info["pid"])))
        except (OSError, ValueError, psutil.Error):
            continue
    return found


def submit(ws: Workspace, src: Path) -> tuple[str, int, str]:
    run = Experiment(ws, "e").submit(ScriptRunConfig(str(src), "t.py"))
    pid = ws.catalog.scalar("SELECT supervisor_pid FROM runs WHERE id = ?", (run.id,))
    run.wait_for_completion(timeout=60, raise_on_error=False)
    return run.get_status(), int(pid), run.id


def launched_by_launcher(pid_cmdline: list[str]) -> bool:
    return "mlws.compute.launcher" in pid_cmdline


def test_the_second_submission_warms_a_launcher_and_later_ones_are_forked_by_it(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = source(tmp_path)
    status, _, _ = submit(ws, src)
    assert status == "Completed" and launchers_of(ws) == []  # a lone submission starts none
    status, _, _ = submit(ws, src)
    assert status == "Completed"
    (warm,) = wait_until(lambda: launchers_of(ws), 30, "a launcher")
    wait_until(lambda: launcher.socket_path(ws.path, dict(os.environ)).exists(), 30, "its socket")
    # The submitter's environment of this moment reaches the script, not the launcher's.
    monkeypatch.setenv("LAUNCHER_TEST_VAR", "given at submit")
    (src / "slow.py").write_text("import time; time.sleep(1)\n" + SCRIPT)
    run = Experiment(ws, "e").submit(ScriptRunConfig(str(src), "slow.py"))
    sup = psutil.Process(
        ws.catalog.scalar("SELECT supervisor_pid FROM runs WHERE id = ?", (run.id,))
    )
    # The launcher's child: its command line, its parent.
    assert launched_by_launcher(sup.cmdline()) and sup.ppid() == warm.pid
    run.wait_for_completion(timeout=60)
    assert json.loads(run._read_file_text("outputs/seen.json"))["var"] == "given at submit"
    # A pipeline's controller does not wait for the launcher's answer: the run may still be
    # NotStarted when it returns; its supervisor (the launcher's child) records itself.
    from mlws.runconfig import submit_script

    run = submit_script(
        Experiment(ws, "e"), ScriptRunConfig(str(src), "t.py"), wait_for_start=False
    )
    pid = wait_until(
        lambda: ws.catalog.scalar("SELECT supervisor_pid FROM runs WHERE id = ?", (run.id,)), 30
    )
    assert psutil.Process(pid).ppid() == warm.pid
    assert run.wait_for_completion(timeout=60)["status"] == "Completed"
    # A request the launcher refuses, not waited for: handed over (0), nothing hangs, and the
    # launcher goes on serving.
    env = dict(os.environ)
    assert launcher.launch(ws.path, ["x"], env, warm_up=False, module="json.tool", wait=False) == 0
    assert launcher.launch(ws.path, ["x"], env, warm_up=False, module="json.tool") == 0
    status, _, _ = submit(ws, src)
    assert status == "Completed"


def test_a_launched_supervisor_is_this_folders_and_survives_its_submitter(
    ws: Workspace, tmp_path: Path
) -> None:
    src = source(tmp_path)
    (src / "slow.py").write_text("import time; time.sleep(1.5)\n")
    for _ in range(2):
        submit(ws, src)
    wait_until(lambda: launcher.socket_path(ws.path, dict(os.environ)).exists(), 30, "a launcher")
    # A submitter that exits at once: its run goes on, supervised by the launcher's child.
    code = textwrap.dedent(
        f"""
        from mlws import Experiment, ScriptRunConfig, Workspace
        ws = Workspace({str(ws.path)!r})
        r = Experiment(ws, "e").submit(ScriptRunConfig({str(src)!r}, "slow.py"))
        print(r.id)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    run_id = out.stdout.split()[-1]
    row = ws.catalog.one(
        "SELECT supervisor_pid, supervisor_start FROM runs WHERE id = ?", (run_id,)
    )
    assert launched_by_launcher(psutil.Process(row[0]).cmdline())
    assert owned_process(ws, row[0], row[1])
    run = ws.get_run(run_id)
    run.wait_for_completion(timeout=60)
    assert run.get_status() == "Completed"


def test_a_copy_of_the_workspace_does_not_own_the_originals_launched_supervisor(
    ws: Workspace, tmp_path: Path
) -> None:
    src = source(tmp_path)
    (src / "slow.py").write_text("import time; time.sleep(3)\n")
    for _ in range(2):
        submit(ws, src)
    wait_until(lambda: launcher.socket_path(ws.path, dict(os.environ)).exists(), 30, "a launcher")
    run = Experiment(ws, "e").submit(ScriptRunConfig(str(src), "slow.py"))
    row = ws.catalog.one(
        "SELECT supervisor_pid, supervisor_start FROM runs WHERE id = ?", (run.id,)
    )
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(ws.path), str(copy)], check=True)
    assert owned_process(ws, row[0], row[1])
    assert not owned_process(Workspace(copy), row[0], row[1])
    run.wait_for_completion(timeout=60)
    assert run.get_status() == "Completed"


def test_other_settings_get_another_launcher_and_stop_ends_only_launchers(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = source(tmp_path)
    (src / "slow.py").write_text("import time; time.sleep(2)\n")
    for _ in range(2):
        submit(ws, src)
    first = wait_until(lambda: launchers_of(ws), 30, "a launcher")
    monkeypatch.setenv("MLWS_CANCEL_GRACE_S", "3")  # read at import: a launcher of its own
    submit(ws, src)
    both = wait_until(lambda: len(launchers_of(ws)) == 2 and launchers_of(ws), 30, "two")
    assert {p.pid for p in first} < {p.pid for p in both}
    run = Experiment(ws, "e").submit(ScriptRunConfig(str(src), "slow.py"))
    sup = ws.catalog.scalar("SELECT supervisor_pid FROM runs WHERE id = ?", (run.id,))
    assert sorted(launcher.stop(ws.path)) == sorted(p.pid for p in both)
    wait_until(lambda: not launchers_of(ws), 15, "the launchers gone")
    assert psutil.Process(sup).is_running()  # a supervisor is not a launcher
    run.wait_for_completion(timeout=60)
    assert run.get_status() == "Completed"


def test_no_launcher_when_turned_off(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLWS_LAUNCHER", "0")
    src = source(tmp_path)
    for _ in range(3):
        status, pid, _ = submit(ws, src)
        assert status == "Completed"
    assert launchers_of(ws) == []


def test_the_socket_folder_must_be_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    folder = tmp_path / f"mlws-{os.getuid()}"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    with pytest.raises(OSError, match="not a private folder"):
        launcher.socket_folder()
    # ...and a submission then simply starts its supervisor itself.
    assert launcher.launch(tmp_path, ["x", "y"], dict(os.environ), warm_up=True) is None


def test_a_request_handed_over_but_unanswered_never_starts_a_second_supervisor(
    ws: Workspace, tmp_path: Path
) -> None:
    """A launcher that took the request may have forked the supervisor before it failed to
    answer: the submitter must not start another one for the same run."""
    import socket
    import threading

    env = dict(os.environ)
    path = launcher.socket_path(ws.path, env)
    path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    got = []

    def take_and_hang_up() -> None:
        conn, _ = server.accept()
        got.append(conn.recv(65536))
        conn.close()  # no answer

    t = threading.Thread(target=take_and_hang_up)
    t.start()
    try:
        assert launcher.launch(ws.path, ["x", "y"], env, warm_up=True) == 0
        t.join(10)
        assert got and b'"args": ["x", "y"]' in got[0]
    finally:
        server.close()
        path.unlink(missing_ok=True)


def test_a_supervisor_that_cannot_take_its_run_up_ends_it_failed_with_the_reason(ws, monkeypatch):
    import sqlite3

    from mlws import Experiment
    from mlws.compute import supervisor, warmstart

    run = Experiment(ws, "x").start_logging()

    def refuse(self, ws, run_id, claim=True):  # noqa: ANN001, ANN202 - RunSupervisor's own
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(warmstart, "start_zygote", lambda: None)  # no fork of pytest
    monkeypatch.setattr(supervisor.RunSupervisor, "__init__", refuse)
    assert supervisor.main([str(ws.path), run.id]) == 1
    details = ws.get_run(run.id).get_details()
    assert details["status"] == "Failed"
    assert details["error"]["error"]["message"] == (
        "the run's supervising process failed to start: sqlite3.OperationalError: database is locked"
    )


def test_a_process_mlws_started_finds_the_launcher_its_starter_started(tmp_path, monkeypatch):
    # A sweep's controller runs with PYTHONPATH as processes.start_detached sets it; the
    # submitter that started it (and its launcher) has its own: both name the same launcher.
    from mlws.compute import launcher
    from mlws.processes import python_path

    for mine in ({}, {"PYTHONPATH": "/src"}):
        theirs = dict(mine, PYTHONPATH=python_path(mine.get("PYTHONPATH")))
        assert launcher.key(tmp_path, mine) == launcher.key(tmp_path, theirs)
    assert launcher.key(tmp_path, {"MLWS_X": "1"}) != launcher.key(tmp_path, {})
    # None listening: the wait ends at its timeout, or at once with launchers turned off.
    assert launcher.wait_ready(tmp_path, {}, 0.05) is False
    monkeypatch.setenv("MLWS_LAUNCHER", "0")
    assert launcher.wait_ready(tmp_path, {}, 60) is False
