"""Daemonized children of a script end with its run on an ``ssh`` host too (issue 11, §2b)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sshd import attach_ssh_target
from test_run_faults import alive, daemon_run, kill_left

from mlws import Workspace


@pytest.mark.timeout(120)
def test_daemons_a_remote_script_started_end_with_its_run(
    ws: Workspace, tmp_path: Path, ssh_server
) -> None:  # noqa: ANN001 - the sshd fixture's server
    attach_ssh_target(ws, "lab", [ssh_server], tmp_path, python_path="/usr/bin/python3")
    run, pids = daemon_run(ws, tmp_path, target="lab")
    details = run.wait_for_completion(timeout=90, raise_on_error=False)
    session, bare = (int((pids / n).read_text()) for n in ("session", "bare"))
    try:
        assert details["status"] == "Completed", details
        assert not alive(session), "a daemon in its own session outlived the run"
        assert not alive(bare), "a daemon with a scrubbed environment outlived the run"
    finally:
        kill_left(session, bare)
