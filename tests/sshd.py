"""Real OpenSSH servers on 127.0.0.1 for the tests of the ssh compute target (a pytest plugin).

Registered from ``conftest.py`` as ``pytest_plugins = ["sshd"]`` (pytest puts tests/ on sys.path).

* ``ssh_servers`` (session): two started :class:`SshServer` ("two hosts") on two free ports.
* ``ssh_server`` (function): ``ssh_servers[0]``, restarted first if an earlier test killed it.
* :func:`attach_ssh_target`: an ssh compute target over some of them, its files under the test's
  ``tmp_path``, except the shipped mlws (``<work_dir>/lib``), which the session's tests share.

Every server runs ``/usr/sbin/sshd -D`` as a child of the test process with throwaway keys in its
own folder; nothing reads or writes ``~/.ssh``. A client connects with ``ssh *server.ssh_args()
server.target ...`` and ``server.kill_all()`` drops every connection at once, like a host going
away.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

SSHD = "/usr/sbin/sshd"
START_TIMEOUT_S = 10.0


def _missing_tools() -> list[str]:
    missing = [] if os.access(SSHD, os.X_OK) else [SSHD]
    missing += [tool for tool in ("ssh", "ssh-keygen", "rsync") if shutil.which(tool) is None]
    return missing


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now (all held open while choosing)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def keygen(path: Path) -> None:
    """An unencrypted ed25519 key pair at ``path`` and ``path.pub``."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mlws-test", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def is_alive(p: psutil.Process) -> bool:
    """Running, as opposed to gone or a zombie (dead, holding no sockets, not yet reaped)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass
class SshServer:
    """One sshd listening on ``address:port``, accepting ``private_key_file`` for ``username``."""

    address: str
    port: int
    username: str
    private_key_file: str
    folder: Path
    proc: subprocess.Popen | None = None
    #: Lines added to its sshd_config (see :func:`reconfigured`).
    extra: tuple[str, ...] = ()
    #: The ``lib`` folder (mlws and its dependencies, shipped) that the targets of
    #: :func:`attach_ssh_target` share (see there).
    shared_lib: Path | None = None

    @property
    def target(self) -> str:
        return f"{self.username}@{self.address}"

    @property
    def log_file(self) -> Path:
        return self.folder / "sshd.log"

    def ssh_args(self) -> list[str]:
        """Client options (for ``ssh``, or ``rsync -e``) that reach this server non-interactively."""
        return [
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            f"UserKnownHostsFile={self.folder / 'known_hosts'}",
            "-o",
            "IdentitiesOnly=yes",
            "-i",
            self.private_key_file,
            "-p",
            str(self.port),
        ]

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _write_config(self) -> Path:
        config = self.folder / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    f"ListenAddress {self.address}",
                    f"HostKey {self.folder / 'host'}",
                    f"PidFile {self.folder / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.folder / 'authorized_keys'}",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin prohibit-password",
                    "StrictModes no",
                    "UsePAM no",
                    "Subsystem sftp internal-sftp",
                    "LogLevel ERROR",
                    # Skips the default post-quantum kex: ~0.1 s less per connection here.
                    "KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org",
                    *self.extra,
                    "",
                ]
            )
        )
        check = subprocess.run(
            [SSHD, "-t", "-f", str(config)], capture_output=True, text=True, check=False
        )
        if check.returncode != 0:
            raise RuntimeError(f"sshd -t rejected {config}:\n{check.stdout}{check.stderr}")
        return config

    def start(self) -> None:
        """(Re)start the listener on the same port and wait until it accepts connections."""
        if self.is_running():
            return
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd refuses to start without it
        config = self._write_config()
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _accepts(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill_all()
                raise RuntimeError(
                    f"sshd on port {self.port} did not start (exit code {self.proc.returncode}); "
                    f"{self.log_file}:\n{self.log_file.read_text(errors='replace')}"
                )
            time.sleep(0.02)

    def kill_all(self) -> None:
        """SIGKILL the listener and every process serving one of its connections, so every
        client connection drops at once (a host going away). The server is down afterwards."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            listener = psutil.Process(self.proc.pid)
            # Stopped, the listener cannot fork a new connection between listing and killing.
            listener.send_signal(signal.SIGSTOP)
            victims = [listener, *listener.children(recursive=True)]
        except psutil.NoSuchProcess:
            victims = []
        for p in victims:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        self.proc.wait(timeout=10)  # reap the listener
        # The others are reaped by init, maybe later; dead (a zombie) already means their
        # sockets are closed.
        deadline = time.monotonic() + 10
        while any(is_alive(p) for p in victims[1:]):
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd processes survived SIGKILL: {victims[1:]}")
            time.sleep(0.01)


@pytest.fixture(scope="session")
def ssh_servers(tmp_path_factory: pytest.TempPathFactory):
    """Two running sshd ("hosts") on 127.0.0.1, different ports, same user and client key."""
    missing = _missing_tools()
    if missing:
        pytest.fail(
            f"sshd not installed (missing {', '.join(missing)}): run make test "
            "(it installs openssh-server and rsync)",
            pytrace=False,
        )
    keys = tmp_path_factory.mktemp("sshd-client")
    client = keys / "client"
    keygen(client)
    username = pwd.getpwuid(os.getuid()).pw_name
    shared_lib = tmp_path_factory.mktemp("ssh-lib")
    servers: list[SshServer] = []
    try:
        for i in range(2):
            folder = tmp_path_factory.mktemp(f"sshd{i}")
            keygen(folder / "host")
            authorized = folder / "authorized_keys"
            shutil.copyfile(keys / "client.pub", authorized)
            authorized.chmod(0o600)
            for attempt in range(3):  # a free port can be taken before sshd binds it
                taken = {s.port for s in servers}
                port = next(p for p in free_ports(len(taken) + 1) if p not in taken)
                server = SshServer(
                    "127.0.0.1", port, username, str(client), folder, shared_lib=shared_lib
                )
                try:
                    server.start()
                    break
                except RuntimeError:
                    if attempt == 2:
                        raise
            servers.append(server)
        yield servers
    finally:
        for server in servers:
            server.kill_all()


@contextlib.contextmanager
def reconfigured(server: SshServer, *lines: str):  # noqa: ANN201
    """``server`` restarted with ``lines`` added to its sshd_config (every connection to it
    drops), and restarted as it was afterwards."""
    server.kill_all()
    server.extra = lines
    try:
        server.start()
        yield server
    finally:
        server.kill_all()
        server.extra = ()
        server.start()


@pytest.fixture
def ssh_server(ssh_servers: list[SshServer]) -> SshServer:
    """The first of ``ssh_servers``, running (restarted if a previous test killed it)."""
    server = ssh_servers[0]
    server.start()
    return server


def attach_ssh_target(ws, name: str, servers, tmp_path: Path, **kwargs):  # noqa: ANN001, ANN201
    """Attach ``servers`` as the ssh compute target ``name``, with everything a test needs kept
    under ``tmp_path`` (the hosts' work and environment folders, known_hosts).

    Unless ``work_dir`` is given, its ``lib`` folder is the session's: the first run of a test
    session ships mlws and its dependencies there (2,000 files, 32 MB: 10 s and more each time
    on 2 cores), later runs find them (the folder is named by mlws's source hash). The tests of
    shipping itself give their own ``work_dir``."""
    from mlws.compute import ComputeTarget
    from mlws.compute.ssh import RemoteCompute

    if "work_dir" not in kwargs and servers[0].shared_lib is not None:
        lib = tmp_path / "remote" / "lib"
        if not lib.is_symlink():
            lib.parent.mkdir(parents=True, exist_ok=True)
            lib.symlink_to(servers[0].shared_lib, target_is_directory=True)

    options = {
        "hosts": [f"{s.address}:{s.port}" for s in servers],
        "username": servers[0].username,
        "private_key_file": servers[0].private_key_file,
        "work_dir": str(tmp_path / "remote"),
        "cache_dir": str(tmp_path / "remote-cache"),
        "ssh_options": ["StrictHostKeyChecking=no", f"UserKnownHostsFile={tmp_path}/known_hosts"],
    }
    options.update(kwargs)
    return ComputeTarget.attach(ws, name, RemoteCompute.attach_configuration(**options))
