"""Progress bars: drawn on a terminal (a real pseudo-terminal here), never into a pipe or with
``--json`` (issue 11, section 2)."""

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import write

import mlws


def in_terminal(*args: str, timeout: float = 60) -> str:
    """``python -m mlws ARGS`` with standard output and error on a pseudo-terminal: all it
    wrote there."""
    master, slave = pty.openpty()
    p = subprocess.Popen(
        [sys.executable, "-m", "mlws", *args], stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal has closed it
                break
            if not chunk:
                break
            out += chunk
        assert p.wait(timeout=max(1.0, deadline - time.monotonic())) is not None
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    return out.decode(errors="replace")


def in_pipe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlws", *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def ws_path(tmp_path: Path) -> str:
    ws = mlws.Workspace.create(tmp_path / "ws")
    r = mlws.Experiment(ws, "e").start_logging()
    for i in range(5):
        r.upload_file(f"outputs/{i}.txt", str(write(tmp_path / f"{i}.txt", f"file {i}")))
    r.complete()
    ws.close()
    return str(tmp_path / "ws")


def test_fsck_draws_a_bar_on_a_terminal_only(ws_path: str) -> None:
    shown = in_terminal("-w", ws_path, "fsck")
    assert "Checking blobs" in shown and "100%" in shown, shown
    assert "blobs checked: " in shown

    piped = in_pipe("-w", ws_path, "fsck")
    assert piped.returncode == 0, piped.stderr
    assert "Checking blobs" not in piped.stdout + piped.stderr
    assert "%" not in piped.stderr

    as_json = in_terminal("-w", ws_path, "fsck", "--json")
    assert "Checking blobs" not in as_json
    assert json.loads(as_json[as_json.index("{") :])["ok"] is True
