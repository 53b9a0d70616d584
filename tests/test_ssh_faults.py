"""Faults of the ``ssh`` target, injected for real against real sshd (``tests/sshd.py``): a host
whose login home is not where mlws was told, a dead host in a list, an environment build on the
host, a killed agent.

A third sshd here logs every session in with its own home (``ForceCommand`` sets ``HOME`` and
changes there), so the default ``work_dir`` (``.mlws`` under the login's home) lands in a
temporary folder, never in this machine's real home.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import SCRIPT_PRELUDE, kill_run_processes, wait_until
from sshd import SshServer, free_ports, keygen

from mlws import Experiment, ScriptRunConfig, Workspace
from mlws.compute import ComputeTarget
from mlws.compute.ssh import RemoteCompute
from mlws.runs import Run


# -- helpers -----------------------------------------------------------------------------------------
def make_source(tmp_path: Path, body: str, name: str = "src") -> Path:
    src = tmp_path / name
    src.mkdir()
    (src / "train.py").write_text(SCRIPT_PRELUDE + textwrap.dedent(body))
    return src


def submit(ws: Workspace, src: Path, *args: Any, target: str, **kwargs: Any) -> Run:
    return Experiment(ws, "e").submit(
        ScriptRunConfig(
            source_directory=str(src),
            script="train.py",
            arguments=[str(a) for a in args],
            compute_target=target,
            **kwargs,
        )
    )


def error_of(run: Run) -> dict[str, Any]:
    return dict(run.get_details().get("error", {}).get("error", {}))


def attach(
    ws: Workspace, name: str, servers: list[SshServer], tmp_path: Path, **overrides: Any
) -> RemoteCompute:
    for s in servers:
        s.start()  # an earlier test may have killed it
    kwargs: dict[str, Any] = {
        "hosts": [f"{s.address}:{s.port}" for s in servers],
        "username": servers[0].username,
        "private_key_file": servers[0].private_key_file,
        "ssh_options": ["StrictHostKeyChecking=no", f"UserKnownHostsFile={tmp_path}/known_hosts"],
    }
    kwargs.update(overrides)
    target = ComputeTarget.attach(ws, name, RemoteCompute.attach_configuration(**kwargs))
    assert isinstance(target, RemoteCompute)
    return target


#: Each call of the hosts' environment installer takes this much longer: a build on the host
#: is then reliably slower than a short max_run_duration_seconds (and still quick: uv).
SLOW_INSTALLER_S = 1.5


class HomedServer(SshServer):
    """An sshd whose sessions run with ``home`` as their login home (HOME and the start folder),
    with ``bin`` first on PATH (a slow ``uv``)."""

    home: Path
    bin: Path

    def _write_config(self) -> Path:
        config = super()._write_config()
        with open(config, "a") as f:
            f.write(
                f"ForceCommand export HOME={self.home} PATH={self.bin}:$PATH;"
                ' cd "$HOME" && eval "$SSH_ORIGINAL_COMMAND"\n'
            )
        return config


@pytest.fixture(scope="module")
def homed(
    ssh_servers: list[SshServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomedServer]:
    """A host whose login home is a temporary folder (mlws is shipped there once a module)."""
    first = ssh_servers[0]
    folder = tmp_path_factory.mktemp("sshd-homed")
    keygen(folder / "host")
    shutil.copyfile(Path(first.private_key_file).with_suffix(".pub"), folder / "authorized_keys")
    (folder / "authorized_keys").chmod(0o600)
    taken = {s.port for s in ssh_servers}
    port = next(p for p in free_ports(len(taken) + 1) if p not in taken)
    server = HomedServer("127.0.0.1", port, first.username, first.private_key_file, folder)
    server.home = tmp_path_factory.mktemp("login-home")
    server.bin = tmp_path_factory.mktemp("host-bin")
    uv = Path(sys.executable).parent / "uv"
    # The host reaches the package index as this machine does (its CA bundle, its proxy).
    reach = "".join(
        f"export {k}={shlex.quote(v)}\n"
        for k, v in os.environ.items()
        if k in ("SSL_CERT_FILE", "SSL_CERT_DIR") or k.lower().endswith("_proxy")
    )
    (server.bin / "uv").write_text(f'#!/bin/sh\n{reach}sleep {SLOW_INSTALLER_S}\nexec {uv} "$@"\n')
    (server.bin / "uv").chmod(0o755)
    server.start()
    try:
        yield server
    finally:
        server.kill_all()


@pytest.fixture(autouse=True)
def kill_leftovers(ws: Workspace) -> Iterator[None]:
    yield
    kill_run_processes(ws)


# -- 1. the default (relative) work_dir ----------------------------------------------------------------
HELLO = """
from mlws import Run
run = Run.get_context()
run.log("x", 1)
os.makedirs("outputs", exist_ok=True)
with open("outputs/o.txt", "w") as f:
    f.write("made on the host")
print("hello from the host", flush=True)
"""


@pytest.mark.timeout(120)
# Resolved at attach (checked), or at the run's first connect (attached unchecked).
@pytest.mark.parametrize(("work_dir", "check"), [(None, True), ("./.mlws", False)])
def test_default_and_relative_work_dir_run_on_a_host_without_mlws(
    ws: Workspace, homed: HomedServer, tmp_path: Path, work_dir: str | None, check: bool
) -> None:
    extra = {} if work_dir is None else {"work_dir": work_dir}
    attach(ws, "bare", [homed], tmp_path, check=check, **extra)
    run = submit(ws, make_source(tmp_path, HELLO), target="bare")
    details = run.wait_for_completion(timeout=90, raise_on_error=False)
    assert details["status"] == "Completed", error_of(run)
    assert run.get_metrics() == {"x": 1}
    assert "hello from the host" in "".join(run.iter_log())
    # Everything went under the login's home, where a relative work_dir means.
    where = homed.home / ".mlws"
    assert any((where / "lib").glob("mlws-*/mlws/__init__.py")), sorted(homed.home.rglob("*"))[:20]
    if work_dir is None:  # the first run shipped mlws, and its log says how much and how long
        log = run.download_file("logs/remote.log", tmp_path / "remote.log").read_text()
        assert re.search(r"shipped \d+ files, [\d.]+ MB in [\d.]+ s", log), log
    wait_until(lambda: not (where / "runs" / run.id).exists(), 15, "the remote run folder removal")


# -- 2. a dead host in the list ------------------------------------------------------------------------
def _closed_port() -> int:
    return free_ports(1)[0]  # nothing listens there: "Connection refused", like a dead sshd


@pytest.mark.timeout(120)
def test_a_dead_host_is_skipped_and_the_queue_runs_on_the_other(
    ws: Workspace, ssh_servers: list[SshServer], homed: HomedServer, tmp_path: Path
) -> None:
    dead = ssh_servers[0]
    lab = attach(ws, "pair", [dead, homed], tmp_path)
    dead.kill_all()  # its sshd goes down after the target is attached
    try:
        src = make_source(tmp_path, HELLO)
        runs = [submit(ws, src, target="pair") for _ in range(3)]
        for run in runs:
            details = run.wait_for_completion(timeout=90, raise_on_error=False)
            assert details["status"] == "Completed", error_of(run)
            assert run.get_properties()["mlws.node"] == lab.nodes()[1]
    finally:
        dead.start()


@pytest.mark.timeout(60)
def test_when_no_host_answers_the_run_fails_naming_them(
    ws: Workspace, ssh_servers: list[SshServer], tmp_path: Path
) -> None:
    user = ssh_servers[0].username
    hosts = [f"127.0.0.1:{_closed_port()}", f"127.0.0.1:{_closed_port()}"]
    attach(ws, "gone", ssh_servers[:1], tmp_path, hosts=hosts, check=False, work_dir="/nowhere")
    run = submit(ws, make_source(tmp_path, HELLO), target="gone")
    details = run.wait_for_completion(timeout=40, raise_on_error=False)
    assert details["status"] == "Failed"
    message = error_of(run)["message"]
    assert "no host of" in message and all(f"{user}@{h}" in message for h in hosts), message


# -- 3 and 5. an environment built on the host ---------------------------------------------------------
def _managed(name: str, python_version: str | None = None) -> Any:
    from mlws import Environment
    from mlws.environments import CondaDependencies

    env = Environment(name)
    env.python.user_managed_dependencies = False
    env.python.conda_dependencies = CondaDependencies.create(
        pip_packages=["six"], python_version=python_version
    )
    return env


@pytest.mark.timeout(180)
def test_max_run_duration_is_the_scripts_not_the_hosts_environment_build(
    ws: Workspace, homed: HomedServer, tmp_path: Path
) -> None:
    lab = attach(ws, "envs", [homed], tmp_path, cache_dir=str(tmp_path / "host-cache"))
    src = make_source(tmp_path, "import six\nprint('six', six.__version__, flush=True)\n")
    limit = 2
    run = submit(
        ws, src, target="envs", environment=_managed("six-env"), max_run_duration_seconds=limit
    )
    details = run.wait_for_completion(timeout=150, raise_on_error=False)
    assert details["status"] == "Completed", error_of(run)
    env_log = "".join(run.iter_log("logs/environment.log"))
    # The build alone took longer than the limit: the fault was there to hit.
    built = float(env_log.split("Environment built in ")[1].split()[0])
    assert built > limit, env_log
    # The build on the host is in the catalog, as local builds are.
    rows = ws.catalog.query("SELECT * FROM environment_builds")
    assert [(r["host"], r["tool"]) for r in rows] == [(lab.nodes()[0], "uv")], rows
    assert rows[0]["path"].startswith(str(tmp_path / "host-cache"))
    assert "six==" in rows[0]["freeze"]


@pytest.mark.timeout(120)
def test_a_failed_build_on_the_host_brings_its_environment_log_home(
    ws: Workspace, homed: HomedServer, tmp_path: Path
) -> None:
    attach(ws, "envs", [homed], tmp_path, cache_dir=str(tmp_path / "host-cache"))
    src = make_source(tmp_path, "print('never runs')\n")
    run = submit(ws, src, target="envs", environment=_managed("old", python_version="3.1"))
    details = run.wait_for_completion(timeout=90, raise_on_error=False)
    assert details["status"] == "Failed"
    assert "python_version=3.1" in error_of(run)["message"], error_of(run)
    assert "logs/environment.log" in run.get_file_names()
    env_log = "".join(run.iter_log("logs/environment.log"))
    assert "Environment 'old' on" in env_log and "python_version=3.1" in env_log, env_log
    wait_until(
        lambda: not (homed.home / ".mlws" / "runs" / run.id).exists(), 15, "the host's run folder"
    )


# -- 4. the agent killed on the host -------------------------------------------------------------------
KEEPER = """
os.makedirs("outputs", exist_ok=True)
with open("outputs/partial.txt", "w") as f:
    f.write("written before the agent died")
print("waiting", flush=True)
write_pid(sys.argv[2])
wait_gate(sys.argv[1])
"""


@pytest.mark.timeout(90)
def test_a_killed_agent_is_not_a_lost_host_and_its_outputs_come_home(
    ws: Workspace, homed: HomedServer, tmp_path: Path
) -> None:
    attach(ws, "solo", [homed], tmp_path)
    gate, pid_file = tmp_path / "gate", tmp_path / "script.pid"
    run = submit(ws, make_source(tmp_path, KEEPER), gate, pid_file, target="solo")
    script = psutil.Process(
        int(wait_until(pid_file.exists, 60, "the script") and pid_file.read_text())
    )
    agent = script.parent()
    assert agent is not None and "mlws.compute.agent" in " ".join(agent.cmdline())
    wait_until(lambda: run.get_status() == "Running", 20, "Running")
    agent.kill()
    details = run.wait_for_completion(timeout=40, raise_on_error=False)
    assert details["status"] == "Failed"
    error = error_of(run)
    assert error.get("code") == "AgentDied", error
    assert "went away" not in error["message"] and "agent" in error["message"], error
    wait_until(lambda: not script.is_running() or script.status() == psutil.STATUS_ZOMBIE, 10)
    assert "outputs/partial.txt" in run.get_file_names()
    assert "waiting" in "".join(run.iter_log())
    wait_until(
        lambda: not (homed.home / ".mlws" / "runs" / run.id).exists(), 15, "the host's run folder"
    )


# -- 6. a network stall --------------------------------------------------------------------------------
HUNDRED = """
from mlws import Run
run = Run.get_context()
for i in range(10):
    run.log("i", i)
write_pid(sys.argv[2])
wait_gate(sys.argv[1])
for i in range(10, 100):
    run.log("i", i)
os.makedirs("outputs", exist_ok=True)
with open("outputs/after.txt", "w") as f:
    f.write("made during the stall")
print("finished", flush=True)
"""


def _sessions(server: SshServer) -> list[psutil.Process]:
    """The sshd processes serving the connections open now (not the listener)."""
    assert server.proc is not None
    children = psutil.Process(server.proc.pid).children(recursive=True)
    return [p for p in children if p.name().startswith("sshd")]


@pytest.mark.timeout(120)
def test_a_network_stall_reconnects_and_fetches_what_the_host_has(
    ws: Workspace, homed: HomedServer, tmp_path: Path
) -> None:
    # The client gives a silent connection up after ~2 s here (5 s x 3 by default).
    alive = ["ServerAliveInterval=1", "ServerAliveCountMax=2"]
    attach(ws, "solo", [homed], tmp_path, ssh_options=alive + ["StrictHostKeyChecking=no"])
    gate, pid_file = tmp_path / "gate", tmp_path / "script.pid"
    run = submit(ws, make_source(tmp_path, HUNDRED), gate, pid_file, target="solo")
    script = psutil.Process(
        int(wait_until(pid_file.exists, 60, "the script") and pid_file.read_text())
    )
    wait_until(lambda: len(run.get_metrics().get("i", [])) == 10, 20, "10 metrics home")
    stalled = _sessions(homed)
    assert stalled
    try:
        for p in stalled:  # every open connection stalls; new ones are answered
            p.suspend()
        gate.touch()
        wait_until(lambda: not script.is_running() or script.status() == "zombie", 30, "the end")
        details = run.wait_for_completion(timeout=60, raise_on_error=False)
    finally:
        for p in stalled:
            try:
                p.resume()
            except psutil.NoSuchProcess:
                pass
    assert details["status"] == "Completed", error_of(run)
    assert run.get_metrics()["i"] == list(range(100))
    assert "outputs/after.txt" in run.get_file_names()
    assert "finished" in "".join(run.iter_log())
    wait_until(
        lambda: not (homed.home / ".mlws" / "runs" / run.id).exists(), 15, "the host's run folder"
    )


@pytest.mark.parametrize("value", [-1, "10", True, 1e9])
def test_a_bad_reconnect_seconds_is_one_clear_error_and_records_nothing(
    ws: Workspace, value: Any
) -> None:
    from mlws import ComputeTargetException

    with pytest.raises(ComputeTargetException, match="reconnect_seconds must be a number"):
        RemoteCompute.attach_configuration("127.0.0.1", reconnect_seconds=value, check=False)
    assert [t.name for t in ComputeTarget.list(ws)] == ["local"]
