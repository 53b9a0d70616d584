"""The sshd fixtures (tests/sshd.py) give working, killable ssh hosts on 127.0.0.1."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import psutil
import pytest
from sshd import SshServer, is_alive


def ssh(server: SshServer, command: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", *server.ssh_args(), server.target, command],
        capture_output=True,
        text=True,
        timeout=20,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )


def test_two_hosts_run_commands(ssh_servers: list[SshServer]) -> None:
    assert len(ssh_servers) == 2
    assert ssh_servers[0].port != ssh_servers[1].port
    for server in ssh_servers:
        server.start()  # an earlier test may have killed it
        out = ssh(server, "echo hi")
        assert out.returncode == 0, out.stderr
        assert out.stdout == "hi\n"


def test_rsync_round_trip(ssh_server: SshServer, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)))
    remote = tmp_path / "remote"  # same machine, so a local path is the "remote" path
    back = tmp_path / "back"
    rsh = shlex.join(["ssh", *ssh_server.ssh_args()])

    def rsync(source: str, dest: str) -> None:
        out = subprocess.run(
            ["rsync", "-a", "-e", rsh, source, dest], capture_output=True, text=True, timeout=20
        )
        assert out.returncode == 0, out.stderr

    rsync(f"{src}/", f"{ssh_server.target}:{remote}/")
    listing = ssh(ssh_server, f"cat {shlex.quote(str(remote / 'a.txt'))}")
    assert listing.stdout == "alpha"
    rsync(f"{ssh_server.target}:{remote}/", f"{back}/")
    assert (back / "a.txt").read_text() == "alpha"
    assert (back / "sub" / "b.bin").read_bytes() == bytes(range(256))


@pytest.mark.serial  # counts sshd processes machine-wide: runs alone in make test
def test_kill_all_drops_connections_and_start_restores(ssh_server: SshServer) -> None:
    client = subprocess.Popen(
        ["ssh", *ssh_server.ssh_args(), ssh_server.target, "echo ready; exec sleep 30"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout is not None
        assert client.stdout.readline() == "ready\n"  # the connection is up and serving
        listener = psutil.Process(ssh_server.proc.pid)
        serving = listener.children(recursive=True)
        assert any("sleep" in p.name() for p in serving), serving

        ssh_server.kill_all()

        assert client.wait(timeout=10) == 255
        assert not ssh_server.is_running()
        assert not any(is_alive(p) for p in [listener, *serving])
        assert ssh(ssh_server, "echo down").returncode == 255
    finally:
        if client.poll() is None:
            client.kill()
        client.communicate(timeout=10)

    ssh_server.start()
    out = ssh(ssh_server, "echo ok")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "ok\n"
