"""Many processes creating, opening and logging to one workspace at the same time.

Eight real processes are started together and held at a gate file until all of them are up, so
``Workspace.create`` on a path that does not exist yet, the first migration, and the metric
flushes all race for real. Both catalog modes are covered: WAL (local disks) and
``journal_mode=DELETE`` + an exclusive file lock (``MLWS_NETWORK_FS=1``, network filesystems).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import wait_until

from mlws import Workspace
from mlws.maintenance import fsck

MLWS = Path(sys.executable).with_name("mlws")
PROCESSES = 8

WORKER = textwrap.dedent(
    """
    import os, sys, time
    ws_path, gate, ready, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    from mlws import Experiment, Workspace  # imported before the gate: only the real work races

    open(ready, "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            sys.exit("gate never opened")
        time.sleep(0.005)
    ws = Workspace.create(ws_path, exist_ok=True)
    exp = Experiment(ws, "conc")
    run = exp.start_logging()
    for i in range(n):
        run.log("m", i)
    run.complete()
    print(ws.id, run.id)
    ws.close()
    """
)


@pytest.mark.parametrize(
    ("network_fs", "n"), [(False, 10_000), (True, 2_000)], ids=["wal", "network-fs-delete-journal"]
)
def test_processes_create_workspace_and_log_concurrently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, network_fs: bool, n: int
) -> None:
    if network_fs:
        monkeypatch.setenv("MLWS_NETWORK_FS", "1")  # inherited by the workers and the CLI
    ws_path = tmp_path / "shared" / "ws"  # neither it nor its parent exists yet
    assert not ws_path.parent.exists()
    gate = tmp_path / "gate"
    procs = []
    try:
        for i in range(PROCESSES):
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        WORKER,
                        str(ws_path),
                        str(gate),
                        str(tmp_path / f"ready{i}"),
                        str(n),
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        wait_until(
            lambda: all((tmp_path / f"ready{i}").exists() for i in range(PROCESSES)),
            30,
            "all workers ready",
        )
        assert all(p.poll() is None for p in procs), (
            "every worker must be running before any finishes"
        )
        gate.touch()
        results = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)

    for p, (_out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
        assert err.strip() == "", err
    ws_ids = {out.split()[0] for out, _ in results}
    run_ids = [out.split()[1] for out, _ in results]
    assert len(ws_ids) == 1, f"the workers ended up in different workspaces: {ws_ids}"
    assert len(set(run_ids)) == PROCESSES

    with Workspace(ws_path) as ws:
        assert ws.id in ws_ids
        mode = ws.catalog.scalar("PRAGMA journal_mode")
        # A network workspace opened for reading: the rollback journal (persist when writing).
        assert mode == ("delete" if network_fs else "wal")
        numbers = sorted(
            r[0] for r in ws.catalog.query("SELECT number FROM runs WHERE experiment = 'conc'")
        )
        assert numbers == list(range(1, PROCESSES + 1))
        expected = list(range(n))
        for run_id in run_ids:
            run = ws.get_run(run_id)
            assert run.get_status() == "Completed"
            values = run.get_metrics()["m"]
            assert len(values) == n, f"{run_id}: {len(values)} values of m, expected {n}"
            assert values == expected, f"{run_id}: values out of order or wrong"
        report = fsck(ws)
        assert report.ok, report.as_dict()

    cli = subprocess.run(
        [str(MLWS), "-w", str(ws_path), "fsck"], capture_output=True, text=True, timeout=60
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "catalog: ok" in cli.stdout
