"""Daemonized children of a script end with its run on an ``ssh`` host too (issue 11, §2b)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sshd import attach_ssh_target
from test_run_faults import assert_daemons_ended, daemon_run

from mlws import Workspace


@pytest.mark.timeout(120)
def test_daemons_a_remote_script_started_end_with_its_run(
    ws: Workspace, tmp_path: Path, ssh_server
) -> None:  # noqa: ANN001 - the sshd fixture's server
    attach_ssh_target(ws, "lab", [ssh_server], tmp_path, python_path="/usr/bin/python3")
    run, pids = daemon_run(ws, tmp_path, target="lab")
    assert_daemons_ended(run.wait_for_completion(timeout=90, raise_on_error=False), pids)
