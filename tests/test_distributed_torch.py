"""The torch example (``examples/distributed/``): real ``torch.distributed`` (gloo, CPU) on two
ranks, in a managed environment with ``torch==2.13.0`` (built with uv from the CPU wheel in pip's
find-links folder), run unchanged against ``mlws serve`` (issue 14: the examples with
``MLWS_WORKSPACE`` = the server's URL): the server builds the environment and runs the ranks
with the same local machinery a local submit ends in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import served_workspace

from mlws import Experiment, Workspace


# -- the torch example (slow: it builds an environment with torch) -------------------------------
def _torch_wheel_on_disk() -> bool:
    """torch 2.13.0's CPU wheel lies in a folder pip's configuration points at (find-links):
    anywhere else, installing it would download a multi-GB CUDA build."""
    r = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60
    )
    folders = [
        line.split("=", 1)[1].strip().strip("'\"")
        for line in r.stdout.splitlines()
        if "find-links" in line.split("=", 1)[0]
    ]
    folders += os.environ.get("PIP_FIND_LINKS", "").split()
    return any(
        any(Path(f.removeprefix("file://")).glob("torch-2.13.0*.whl"))
        for line in folders
        for f in line.split()
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_torch_example_trains_on_two_gloo_ranks_on_a_server(tmp_path):
    if not _torch_wheel_on_disk():
        pytest.skip(
            "torch==2.13.0 (CPU) is not on this machine's disk where pip looks (find-links):"
            " installing it would download a multi-GB CUDA build"
        )
    root = Path(__file__).resolve().parent.parent
    (tmp_path / "served").mkdir()
    with served_workspace(tmp_path / "served") as (server, ws_path, tokens):
        r = subprocess.run(
            [sys.executable, str(root / "examples" / "distributed" / "driver.py"), "-q"],
            env={**os.environ, "MLWS_WORKSPACE": server.url, "MLWS_TOKEN": tokens["contributor"]},
            capture_output=True,
            text=True,
            timeout=280,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        with Workspace(ws_path) as ws:  # the server's own record of the run
            (run,) = Experiment(ws, "distributed").get_runs()
            assert (
                run.get_status() == "Completed"
                and run.get_details()["submittedBy"] == "contributor"
            )
    assert "Status: Completed" in r.stdout
    assert "world_size=2 ranks_in_step=True" in r.stdout
    error = float(r.stdout.split("weight_error=")[1].split()[0])
    assert error < 0.05, r.stdout
    assert "logs/std_log_process_0.txt, logs/std_log_process_1.txt" in r.stdout
