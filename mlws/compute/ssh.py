"""The ``ssh`` compute target (Azure's RemoteCompute): runs on one or more hosts over OpenSSH.

Design choices, and why:

- The **system OpenSSH client** in ``BatchMode`` (never a prompt), so ``~/.ssh/config``, agents
  and jump hosts work as they do for the user. One ControlMaster connection per host is opened
  explicitly (``-fN``) and shared by every command of a run, which makes each later command a
  local socket hop instead of a new handshake.
- **rsync** moves the snapshot there and ``outputs/``, ``logs/`` and uploaded files back.
- **mlws is shipped** to the host (into ``<work_dir>/lib/mlws-<version>-<source hash>``, with its
  dependencies when the host lacks them) unless that host's Python already imports the same mlws.
- On the host, ``python -m mlws.compute.agent`` runs the script against a copy of the run's
  catalog rows and streams log text and catalog changes back over the ssh channel while the run
  runs (``compute.agent``, ``compute.remote_catalog``).
- A node is a host; a list of hosts acts as a small cluster, each with ``max_concurrent_runs``
  slots (lock files in the workspace's ``locks/``, as the hosts are shared by everyone who
  shares the workspace).
- The SSH key is stored in the workspace key vault, never as a path in the catalog; it is
  written to a 0600 file in a 0700 per-user folder only while it is used.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ComputeTargetException
from ..sshhost import (
    Connection,
    Node,
    check_host_path,
    check_login_home,
    key_dir,
    parse_host,
    read_key,
)
from . import ComputeConfiguration, ComputeTarget, register_type, secret_name

if TYPE_CHECKING:
    from ..workspace import Workspace

KEY_SECRET = "private-key"


def connection(
    ws: Workspace, target: str, config: dict[str, Any], node: Node, key_text: str | None = None
) -> Connection:
    """A connection to one of target ``target``'s hosts, with the target's key from the key
    vault (or ``key_text``, a key being checked at attach)."""
    return Connection(
        ws, target, config, node, key_secret=secret_name(target, KEY_SECRET), key_text=key_text
    )


class RemoteCompute(ComputeTarget):
    """An ``ssh`` target: one host, or a list of hosts used as nodes of a small cluster."""

    _type = "ssh"

    @classmethod
    def max_nodes(cls, config: dict[str, Any]) -> int | None:
        """A distributed run spans up to every host of the target, one node each
        (``compute.sshnodes``)."""
        return len(config.get("nodes") or [])

    @staticmethod
    def attach_configuration(
        address: str | None = None,
        ssh_port: int = 22,
        username: str | None = None,
        password: str | None = None,
        private_key_file: str | os.PathLike[str] | None = None,
        private_key_passphrase: str | None = None,
        resource_id: str | None = None,
        *,
        hosts: list[str] | None = None,
        python_path: str = "/usr/bin/python3",
        work_dir: str = ".mlws",
        max_concurrent_runs: int = 1,
        ssh_options: list[str] | None = None,
        check: bool = True,
        cache_dir: str | None = None,
        reconnect_seconds: float = 30.0,
    ) -> ComputeConfiguration:
        """Describe hosts to attach (Azure v1 signature, plus mlws options).

        :param address: the host (``address`` or ``hosts``, or both).
        :param hosts: more hosts, as ``host``, ``host:port`` or ``user@host:port``; each is a node.
        :param private_key_file: the key to log in with; its content goes to the key vault
            (decrypted with ``private_key_passphrase`` first, so no prompt is ever needed).
            Without it, ssh uses the user's own keys, agent and ``~/.ssh/config``.
        :param python_path: the Python on the hosts, by absolute path (a non-interactive ssh
            session has a bare PATH).
        :param work_dir: where runs live on the hosts (relative paths are under the login's home).
        :param max_concurrent_runs: runs at once per host.
        :param ssh_options: extra ``-o`` options, e.g. ``["UserKnownHostsFile=/path"]``.
        :param check: connect to every host before recording the target.
        :param cache_dir: where the hosts keep built environments (default ``~/.cache/mlws``).
        :param reconnect_seconds: how long a run whose ssh session dropped (a network stall)
            keeps trying to reach its host again before it fails with ``ConnectionLost``.
        :raises ComputeTargetException: bad arguments, unreadable key, password login.
        """
        if password is not None:
            raise ComputeTargetException(
                "password login is not supported: mlws uses OpenSSH in BatchMode, which never "
                "prompts; attach with private_key_file (or leave it out to use your ssh agent)"
            )
        del resource_id  # an Azure resource; nothing to point at here
        specs = ([address] if address else []) + list(hosts or [])
        if not specs:
            raise ComputeTargetException("give the host: address='host' or hosts=['h1', 'h2:2222']")
        nodes = [parse_host(spec, username, ssh_port) for spec in specs]
        if len({(n["host"], n["port"], n["user"]) for n in nodes}) != len(nodes):
            raise ComputeTargetException(f"the same host is listed twice: {specs}")
        check_host_path(python_path, "python_path", absolute=True)
        # These reach the hosts' shell and rsync: plain path characters only (no '~', spaces
        # or quotes; a relative work_dir is under the login's home).
        check_host_path(work_dir, "work_dir")
        if not isinstance(max_concurrent_runs, int) or max_concurrent_runs < 1:
            raise ComputeTargetException(
                f"max_concurrent_runs must be a whole number >= 1, got {max_concurrent_runs!r}"
            )
        if cache_dir is not None:
            check_host_path(cache_dir, "cache_dir", absolute=True)
        if (
            isinstance(reconnect_seconds, bool)
            or not isinstance(reconnect_seconds, (int, float))
            or not 0 <= reconnect_seconds <= 86400
        ):
            raise ComputeTargetException(
                f"reconnect_seconds must be a number of seconds from 0 to 86400, got {reconnect_seconds!r}"
            )
        secrets = {}
        if private_key_file is not None:
            secrets[KEY_SECRET] = read_key(Path(private_key_file), private_key_passphrase)
        return ComputeConfiguration(
            "ssh",
            {
                "nodes": nodes,
                "python": str(python_path),
                "workDir": str(work_dir).rstrip("/") or ".",
                "maxConcurrentRunsPerNode": max_concurrent_runs,
                "sshOptions": [str(o) for o in ssh_options or []],
                "key": bool(secrets),
                "check": check,
                "cacheDir": cache_dir,
                "reconnectS": float(reconnect_seconds),
            },
            secrets,
        )

    def nodes(self) -> list[str]:
        return [str(n) for n in nodes_of(self.config)]

    @classmethod
    def _validate(cls, ws: Workspace, name: str, config: ComputeConfiguration) -> None:
        if not config.config.get("check", True):
            return
        key = config.secrets.get(KEY_SECRET)
        homes: dict[str, str] = {}
        for node in nodes_of(config.config):
            conn = connection(ws, name, config.config, node, key_text=key)
            try:
                conn.open()
                python = config.config["python"]
                # The login's home comes in the same round trip: a relative work_dir is
                # resolved against it once, here, and recorded (see Connection.work_dir).
                r = conn.run(
                    f"test -x {shlex.quote(python)} && {shlex.quote(python)} -c 'import sys; print(sys.version_info[:2] >= (3, 8))' && pwd"
                )
                lines = r.stdout.split("\n")
                if r.returncode != 0 or lines[0].strip() != "True":
                    raise ComputeTargetException(
                        f"host {node}: no Python 3.8+ at {python}; pass python_path= with the "
                        "absolute path of the host's python"
                    )
                homes[str(node)] = check_login_home(node, lines[1] if len(lines) > 1 else "")
            finally:
                conn.close()
        if not config.config["workDir"].startswith("/"):
            config.config["homes"] = homes

    def _release(self) -> None:
        # No run of this target is active (delete checks): its master connections can go.
        for node in nodes_of(self.config):
            connection(self.workspace, self.name, self.config, node).close()
        mine = re.compile(rf"{re.escape(self.workspace.id[:8])}-{re.escape(self.name)}-\d+\.key")
        for leftover in key_dir().iterdir():
            if mine.fullmatch(leftover.name):  # not target "gpu-2"'s when deleting "gpu"
                leftover.unlink(missing_ok=True)


register_type("ssh", RemoteCompute, executor="mlws.compute.sshrun")


def nodes_of(config: dict[str, Any]) -> list[Node]:
    """The hosts of an ``ssh`` target's configuration, in order."""
    return [
        Node(n["host"], None if n.get("port") is None else int(n["port"]), n.get("user"))
        for n in config["nodes"]
    ]
