"""Which mlws an ssh host runs: its own only when it is this very source, else a shipped copy.

No sshd here: a stand-in connection runs the probe with a local Python whose path holds another
mlws of the same version, as a host with mlws installed (or an older development commit) has.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import mlws
from mlws.compute import shipping

PACKAGE = Path(mlws.__file__).resolve().parent


class FakeConnection:
    """The part of ``sshhost.Connection`` that ``ensure_mlws`` uses, run on this machine."""

    node = "fake-host"

    def __init__(self, tmp_path: Path, site: Path) -> None:
        python = tmp_path / "python3"
        # The host's python finds ``site``'s mlws after PYTHONPATH (the shipped copy's folder).
        python.write_text(
            f'#!/bin/sh\nPYTHONPATH="$PYTHONPATH:{site}" exec {sys.executable} "$@"\n'
        )
        python.chmod(0o755)
        self.config: dict[str, Any] = {"python": str(python)}
        self.root = tmp_path / "work"
        self.shipped: list[str] = []

    def work_dir(self) -> str:
        return str(self.root)

    def check(self, remote: str, what: str, input: str | None = None) -> str:
        r = subprocess.run(
            ["sh", "-c", remote],
            input=input,
            capture_output=True,
            text=True,
            check=True,
            cwd=self.root.parent,
        )
        return r.stdout

    def rsync(self, src: str, dest: str, options: tuple[str, ...] = (), **kw: Any) -> None:
        self.shipped.append(dest)
        shutil.copytree(
            src, dest.lstrip(":"), ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True
        )


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """Another copy of this mlws, as installed on the host."""
    shutil.copytree(
        PACKAGE, tmp_path / "site" / "mlws", ignore=shutil.ignore_patterns("__pycache__")
    )
    return tmp_path / "site"


def test_the_hosts_own_mlws_is_used_only_when_its_source_is_this_one(
    tmp_path: Path, site: Path
) -> None:
    conn = FakeConnection(tmp_path, site)
    log = io.StringIO()
    lib = shipping.ensure_mlws(conn, log)  # type: ignore[arg-type]
    assert conn.shipped == [] and "using mlws" in log.getvalue(), log.getvalue()

    # Same version, one file changed (another development commit): shipped, then used.
    (site / "mlws" / "compute" / "agent.py").write_text(
        (PACKAGE / "compute" / "agent.py").read_text() + "\n# another commit\n"
    )
    log = io.StringIO()
    assert shipping.ensure_mlws(conn, log) == lib  # type: ignore[arg-type]
    assert conn.shipped == [f":{lib}/mlws/"], log.getvalue()
    assert "of other source files" in log.getvalue()
    assert shipping.package_hash(Path(lib) / "mlws") == shipping.package_hash(PACKAGE)

    # The shipped copy is found first from now on, and is not hashed again.
    log = io.StringIO()
    shipping.ensure_mlws(conn, log)  # type: ignore[arg-type]
    assert len(conn.shipped) == 1 and log.getvalue() == ""


def _hello(site: Path, tmp_path: Path) -> dict[str, Any]:
    """The first line of an agent run from ``site``'s mlws (stdin closed: it ends after it,
    removing its run folder)."""
    import json
    import os

    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    r = subprocess.run(
        [sys.executable, "-m", "mlws.compute.agent", str(run_dir)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=run_dir,
    )
    return json.loads(r.stdout.splitlines()[0])


def test_the_agent_says_which_source_it_runs_unless_it_is_a_shipped_copy(
    tmp_path: Path, site: Path
) -> None:
    # The agent started optimistically may find the host's own mlws of this version (the
    # shipped copy is not there yet): its hello carries that copy's hash, which the supervisor
    # compares with its own before giving it the run.
    hello = _hello(site, tmp_path)
    assert hello["t"] == "hello" and hello["file"].startswith(str(site))
    assert hello["hash"] == shipping.source_hash()
    (site / "mlws" / "compute" / "shipping.py").write_text(
        (PACKAGE / "compute" / "shipping.py").read_text() + "\n# another commit\n"
    )
    assert _hello(site, tmp_path)["hash"] != shipping.source_hash()
    # A shipped copy's folder is named by its hash: not hashed again.
    shipped = tmp_path / f"mlws-{mlws.__version__}-{shipping.source_hash()}"
    shutil.copytree(PACKAGE, shipped / "mlws", ignore=shutil.ignore_patterns("__pycache__"))
    assert "hash" not in _hello(shipped, tmp_path)
