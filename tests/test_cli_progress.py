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


def test_datastore_upload_and_download_bars(tmp_path: Path, ws_path: str) -> None:
    src = tmp_path / "data"
    for i in range(20):
        write(src / f"d{i // 5}" / f"{i}.csv", f"{i}\n")
    store = tmp_path / "store"
    store.mkdir()
    assert in_pipe("-w", ws_path, "datastore", "register", "lab", str(store)).returncode == 0

    shown = in_terminal("-w", ws_path, "datastore", "upload", "lab", str(src), "-t", "a")
    assert "Uploading" in shown and "100%" in shown, shown
    assert "Uploaded 20 file(s)" in shown
    shown = in_terminal("-w", ws_path, "datastore", "download", "lab", str(tmp_path / "back"))
    assert "Downloading" in shown and "100%" in shown, shown
    assert len(list((tmp_path / "back" / "a").rglob("*.csv"))) == 20

    piped = in_pipe("-w", ws_path, "datastore", "upload", "lab", str(src), "-t", "b")
    assert piped.returncode == 0 and "Uploaded 20 file(s)" in piped.stdout
    assert piped.stderr == ""


def test_library_progress_callbacks(tmp_path: Path, ws_path: str) -> None:
    from mlws.datastores import Datastore

    ws = mlws.Workspace(ws_path)
    try:
        store = tmp_path / "store"
        store.mkdir()
        d = Datastore.register_local(ws, "lab", str(store))
        for i in range(3):
            write(tmp_path / "src" / f"{i}.txt", "x")
        seen: list[tuple[int, int]] = []
        d.upload(
            str(tmp_path / "src"), "t", progress=lambda done, total: seen.append((done, total))
        )
        assert seen[-1] == (3, 3) and all(total == 3 for _, total in seen)
        seen.clear()
        d.download(str(tmp_path / "back"), progress=lambda done, total: seen.append((done, total)))
        assert seen == [(1, 3), (2, 3), (3, 3)]

        from mlws.maintenance import fsck

        seen.clear()
        report = fsck(ws, progress=lambda done, total: seen.append((done, total)))
        assert report.ok and seen[-1] == (report.blobs_checked, report.blobs_checked)
    finally:
        ws.close()


def test_dataset_register_and_diff_bars(tmp_path: Path, ws_path: str) -> None:
    for i in range(10):
        write(tmp_path / "data" / f"{i}.csv", f"a\n{i}\n")
    pattern = str(tmp_path / "data" / "*.csv")
    shown = in_terminal("-w", ws_path, "dataset", "register", "nums", pattern)
    assert "Fingerprinting" in shown and "100%" in shown, shown
    shown = in_terminal("-w", ws_path, "dataset", "diff", "nums")
    assert "Fingerprinting" in shown and "unchanged" in shown, shown
    as_json = in_terminal("-w", ws_path, "dataset", "diff", "nums", "--json")
    assert "Fingerprinting" not in as_json and '"changed": false' in as_json
    piped = in_pipe("-w", ws_path, "dataset", "diff", "nums")
    assert piped.stdout.strip() == "unchanged" and piped.stderr == ""


def test_run_download_bar(tmp_path: Path, ws_path: str) -> None:
    ws = mlws.Workspace(ws_path)
    try:
        [run] = list(mlws.Experiment(ws, "e").get_runs())
        run_id = run.id
        seen: list[tuple[int, int]] = []
        run.download_files("outputs", tmp_path / "lib", progress=lambda d, t: seen.append((d, t)))
        assert seen == [(i, 5) for i in range(1, 6)]
    finally:
        ws.close()
    shown = in_terminal("-w", ws_path, "run", "download", run_id, "-o", str(tmp_path / "t"))
    assert "Downloading" in shown and "100%" in shown and "Downloaded 5 file(s)" in shown, shown
    piped = in_pipe("-w", ws_path, "run", "download", run_id, "--zip", "-o", str(tmp_path / "p"))
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr


def test_environment_build_spinner(ws_path: str) -> None:
    made = in_pipe("-w", ws_path, "environment", "create", "plain", "--interpreter", sys.executable)
    assert made.returncode == 0, made.stderr
    shown = in_terminal("-w", ws_path, "environment", "build", "plain")
    assert "Building environment 'plain' version 1" in shown, shown
    assert f"Environment 'plain' version 1: {sys.executable}" in shown
    piped = in_pipe("-w", ws_path, "environment", "build", "plain")
    assert piped.returncode == 0 and "Building" not in piped.stderr + piped.stdout


def test_run_submit_bar_for_a_big_snapshot_only(tmp_path: Path, ws_path: str) -> None:
    big, small = tmp_path / "big", tmp_path / "small"
    for i in range(600):
        write(big / f"d{i // 100}" / f"{i}.txt", f"{i}\n")
    for folder in (big, small):
        write(folder / "train.py", "print('ok')\n")
    shown = in_terminal("-w", ws_path, "run", "submit", "train.py", "-d", str(big), "-e", "b")
    assert "Snapshot" in shown and "100%" in shown and "Submitted run" in shown, shown
    # Unchanged now: the stat cache vouches for every file, nothing is read, no bar.
    again = in_terminal("-w", ws_path, "run", "submit", "train.py", "-d", str(big), "-e", "b")
    assert "Snapshot" not in again and "Submitted run" in again, again
    few = in_terminal("-w", ws_path, "run", "submit", "train.py", "-d", str(small), "-e", "b")
    assert "Snapshot" not in few and "Submitted run" in few, few
    write(big / "new.txt", "changed\n")
    piped = in_pipe("-w", ws_path, "run", "submit", "train.py", "-d", str(big), "-e", "b")
    assert piped.returncode == 0 and "Snapshot" not in piped.stderr, piped.stderr

    seen: list[tuple[int, int]] = []
    ws = mlws.Workspace(ws_path)
    try:
        from mlws.snapshots import take_snapshot

        write(big / "d0" / "0.txt", "changed too\n")
        snap = take_snapshot(ws.blobs, big, progress=lambda d, t: seen.append((d, t)))
    finally:
        ws.close()
    assert snap.files == 602
    assert seen and seen[-1] == (len(seen), len(seen)) and len(seen) < 602  # the changed files
