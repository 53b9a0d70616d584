"""Every test gets its own HOME and workspace, so none touches the real home or another test."""

from __future__ import annotations

import faulthandler
import os
import sys
from pathlib import Path

import pytest

# A hung test dies with a traceback of every thread instead of silently eating CI time.
faulthandler.enable()

ROOT = Path(__file__).resolve().parent.parent

# Real sshd servers for the ssh target (tests/sshd.py); real scoring services (serving_helpers.py).
pytest_plugins = ["sshd", "serving_helpers"]


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in (
        "XDG_DATA_HOME",
        "XDG_CONFIG_HOME",
        "XDG_CACHE_HOME",
        "MLWS_RUN_ID",
        "AZUREML_RUN_ID",
        "MLWS_NETWORK_FS",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLWS_WORKSPACE", str(tmp_path / "ws"))
    # `mlws v1 enable` (the CLI fuzz runs it too) must never change the venv running the tests
    monkeypatch.setenv("MLWS_V1_SITE_PACKAGES", str(tmp_path / "site-packages"))
    monkeypatch.setenv("MLWS_CANCEL_GRACE_S", "2")
    # Warm launchers (compute/launcher.py) of the many short-lived test workspaces end soon.
    monkeypatch.setenv("MLWS_LAUNCHER_IDLE_S", "3")
    # Subprocesses (supervisors, scripts) must import this checkout's mlws.
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    from mlws.runs import Run

    monkeypatch.setattr(Run, "_context", None)
    return home


@pytest.fixture
def ws(tmp_path: Path):
    from mlws import Workspace

    w = Workspace.create(tmp_path / "ws")
    yield w
    w.close()
    from mlws.compute import launcher

    launcher.stop(w.path)


@pytest.fixture
def python() -> str:
    return sys.executable
