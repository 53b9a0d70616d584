"""One ssh host: checking what a user says about it (its address, paths on it, a private key)
and talking to it (commands and rsync over one OpenSSH ControlMaster connection).

Shared by the ``ssh`` compute target (:mod:`mlws.compute.ssh`) and the ``ssh`` datastore
(:mod:`mlws.sshstore`), which must not import the compute package for it. Each check raises the
caller's error class (``error=``), so a bad host is a ``ComputeTargetException`` when attaching a
target and a ``UserErrorException`` when registering a datastore.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ComputeTargetException, MlwsError

if TYPE_CHECKING:
    from .workspace import Workspace

# Host names and users reach ssh's command line (and rsync's): plain characters only.
_HOST = re.compile(
    r"(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:]+\])(?::(?P<port>\d+))?"
)
_SAFE_PATH = re.compile(r"[A-Za-z0-9._/+-]+")
#: Seconds of silence after which the remote end of a long session (an ssh run's agent, a
#: ParallelRunStep worker) writes a heartbeat. sshd's ``ChannelTimeout`` and firewalls end a
#: session with no traffic on it, and ``ServerAliveInterval`` keeps the connection alive but is
#: no traffic on a session: measured on a real sshd with ``ChannelTimeout session:command=4``,
#: a silent session ended after 3.1-3.9 s whatever the keep-alives. A few bytes a second.
SESSION_HEARTBEAT_S = 1.0


def parse_host(
    spec: str,
    username: str | None,
    port: int | None,
    error: type[MlwsError] = ComputeTargetException,
) -> dict[str, Any]:
    """``{"host", "port", "user"}`` of ``host``, ``host:port`` or ``user@host:port`` (user and
    port default to ``username`` and ``port``). :raises error: anything ssh could misread."""
    m = _HOST.fullmatch(str(spec).strip())
    if not m:
        raise error(f"invalid host {spec!r}: expected host, host:port or user@host:port")
    user = m["user"] or username
    if user is not None and not re.fullmatch(r"[A-Za-z0-9._-]+", str(user)):
        raise error(f"invalid username {user!r}")
    if user is not None and str(user).startswith("-"):
        raise error(f"invalid username {user!r}: it may not start with '-'")
    if m["host"].startswith("-"):
        raise error(f"invalid host {spec!r}: it may not start with '-'")
    port = m["port"] or port
    if port is not None and not (str(port).isdigit() and 1 <= int(port) <= 65535):
        # Checked here, or a 20-digit port is stored and fails every connection later.
        raise error(f"invalid port {port!r} for host {spec!r}: a TCP port is 1 to 65535")
    return {"host": m["host"], "port": None if port is None else int(port), "user": user}


def check_host_path(
    value: Any, what: str, absolute: bool = False, error: type[MlwsError] = ComputeTargetException
) -> str:
    """A path for a host's shell and rsync: plain characters only (no '~', spaces or quotes),
    never an option; ``absolute``: from the root. :raises error:"""
    text = str(value)
    if absolute and not (text.startswith("/") and _SAFE_PATH.fullmatch(text)):
        raise error(f"{what} must be an absolute path on the hosts, got {value!r}")
    if not _SAFE_PATH.fullmatch(text) or text.startswith("-"):
        raise error(
            f"{what} must be a plain path (letters, digits, '.', '_', '-', '/'), got {value!r}"
        )
    return text


def read_key(
    path: Path, passphrase: str | None, error: type[MlwsError] = ComputeTargetException
) -> str:
    """The private key in ``path``, decrypted with ``passphrase``, as OpenSSH PEM text.
    :raises error: unreadable, not a key, a wrong passphrase, a kind ssh cannot use here."""
    try:
        data = path.expanduser().read_bytes()
    except OSError as e:
        raise error(f"cannot read private_key_file {path}: {e.strerror}") from None
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_ssh_private_key(data, passphrase.encode() if passphrase else None)
    except ValueError:
        try:
            key = serialization.load_pem_private_key(
                data, passphrase.encode() if passphrase else None
            )
        except (ValueError, TypeError) as e:
            raise error(
                f"{path} is not a private key ssh can use, or the passphrase is wrong: {e}"
            ) from None
    except TypeError as e:  # a passphrase given for a plain key, or missing for an encrypted one
        raise error(f"{path}: {e}") from None
    except UnsupportedAlgorithm as e:  # e.g. a security-key (-sk) key: needs its device
        raise error(
            f"{path}: this kind of key cannot be used by mlws ({e}); use an ed25519 or RSA key"
        ) from None
    # Stored decrypted (the key vault encrypts it at rest): BatchMode ssh cannot ask for a
    # passphrase, and the passphrase need not be kept anywhere.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()


# -- talking to one host ---------------------------------------------------------------------
@dataclass(frozen=True)
class Node:
    """One ssh host: host name, port (None: as ``~/.ssh/config`` says) and user (None: likewise)."""

    host: str
    port: int | None  # None: whatever ~/.ssh/config says (22 by default)
    user: str | None

    @property
    def destination(self) -> str:
        """``user@host``, or ``host`` when no user is set: what ssh is given."""
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        return f"{self.destination}:{self.port}" if self.port is not None else self.destination

    @property
    def slug(self) -> str:
        """The node as a string safe in a file name (lock and socket names)."""
        return re.sub(r"[^A-Za-z0-9.-]", "_", str(self))


def key_dir() -> Path:
    """The user's private folder for ssh control sockets and decrypted keys (under ``/tmp``, short:
    a socket path must fit in 108 bytes).

    :raises MlwsError: the folder exists but is not private to this user.
    """
    # Short and per user: a ControlPath socket must fit in 108 bytes (so /tmp, not a possibly
    # long TMPDIR), and keys must not be readable by others (0700 folder, 0600 files).
    base = Path("/tmp") if os.access("/tmp", os.W_OK) else Path(tempfile.gettempdir())
    d = base / f"mlws-ssh-{os.getuid()}"
    d.mkdir(mode=0o700, exist_ok=True)
    if d.stat().st_uid != os.getuid() or d.stat().st_mode & 0o077:
        raise MlwsError(f"{d} must be a private folder of this user (mode 0700)")
    return d


class Connection:
    """Commands and file transfers to one node, over one ControlMaster connection."""

    def __init__(
        self,
        ws: Workspace,
        target: str,
        config: dict[str, Any],
        node: Node,
        *,
        key_secret: str,
        key_text: str | None = None,
    ) -> None:
        """``target``: the name the connection's socket and key files go by (a compute
        target's; an ssh datastore's is ``ds_<name>``, which no target name can be).
        ``key_text``: check a key that is not in the key vault yet (attach); such a
        connection gets a master connection of its own, so it proves this key works and
        closing it cuts nobody else's session. ``key_secret``: the key vault name of the key
        when ``config["key"]`` says there is one."""
        self.ws = ws
        self.target = target
        self.key_secret = key_secret
        self.config = config
        self.node = node
        self._key_text = key_text
        self._key_file: Path | None = None
        self._via_master = False
        self._home: str | None = None
        # One master connection per (workspace, target, host): another target on the same
        # host (another key, another user) never rides on, or closes, this target's sessions.
        if key_text is None:
            ident = hashlib.sha256(f"{ws.id}\0{target}".encode()).hexdigest()[:10]
        else:
            ident = f"check{os.getpid()}"
        self._control = f"{ident}-%C"

    def key_file(self) -> Path | None:
        """The private key as a file for ``ssh -i`` (written 0600 on first use, from the key vault
        or the key being checked), or None when the target has no key of its own.

        :raises KeyvaultKeyError: the key is in the key vault and this machine lacks the workspace's
        key.
        """
        if self._key_file is not None:
            return self._key_file
        text = self._key_text
        if text is None and self.config.get("key"):
            text = self.ws.get_default_keyvault().get_secret(self.key_secret)
        if text is None:
            return None
        from .dirs import write_atomic

        # Per process, removed when the run (or check) is done (forget_key).
        path = key_dir() / f"{self.ws.id[:8]}-{self.target}-{os.getpid()}.key"
        write_atomic(path, text.encode(), 0o600)
        self._key_file = path
        return path

    def forget_key(self) -> None:
        """Remove this process's copy of the key (an open master connection does not need it)."""
        if self._key_file is not None:
            self._key_file.unlink(missing_ok=True)
            self._key_file = None

    def options(self, with_key: bool = True) -> list[str]:
        """The ssh options for this node: the user's own first (ssh keeps the first value of an
        option), then mlws's defaults (batch mode, the control socket, timeouts, keep-alives), the
        port and, unless the master connection is up, the key."""
        # ssh keeps the first value of an option: the user's options come before mlws's
        # defaults, so they can override them (but not BatchMode: mlws must never prompt).
        opts = ["-o", "BatchMode=yes"]
        for o in self.config.get("sshOptions", []):
            opts += ["-o", o]
        opts += [
            "-o", f"ControlPath={key_dir()}/{self._control}",
            "-o", "ConnectTimeout=10",
            "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=3",
            "-o", "StrictHostKeyChecking=accept-new",
        ]  # fmt: skip
        if self.node.port is not None:
            opts += ["-p", str(self.node.port)]
        key = self.key_file() if with_key and not self._via_master else None
        if key is not None:
            opts += ["-i", str(key), "-o", "IdentitiesOnly=yes"]
        return opts

    def ssh_command(self, remote: str) -> list[str]:
        """The argv that runs ``remote`` (a shell command line) on the node, through the master
        connection if it is up."""
        return [
            "ssh",
            *self.options(),
            "-o",
            "ControlMaster=no",
            "--",
            self.node.destination,
            remote,
        ]

    def open(self) -> None:
        """Start the shared connection unless it runs already; afterwards commands go through
        it and the key file is gone. :raises ComputeTargetException:"""
        from filelock import FileLock

        # One opener at a time: two racing `ssh -fN` would leave the loser as a plain
        # background session that nothing ever closes.
        with FileLock(str(key_dir() / f"{self._control[:-3]}{self.node.slug}.lock")):
            self._via_master = False
            check = [
                "ssh",
                *self.options(with_key=False),
                "-O",
                "check",
                "--",
                self.node.destination,
            ]
            if run_tool(check, self.node, "checking the connection", timeout=30).returncode != 0:
                # -f: ssh goes to the background once logged in; its stdio must not be our
                # pipes, or reading them would wait for the master (ControlPersist keeps it).
                with tempfile.TemporaryFile() as err:
                    argv = [
                        "ssh", *self.options(), "-o", "ControlMaster=yes",
                        "-o", "ControlPersist=120", "-fN", "--", self.node.destination,
                    ]  # fmt: skip
                    rc = run_tool(
                        argv, self.node, "connecting", timeout=60, capture=False, stderr=err
                    ).returncode
                    if rc != 0:
                        err.seek(0)
                        raise ComputeTargetException(
                            f"cannot connect to {self.node}: {last_line(err.read())}"
                        )
            self._via_master = True
        self.forget_key()  # the master is logged in: the decrypted key need not stay on disk

    def close(self) -> None:
        """End this connection's master (and so every session on it) and forget the key."""
        # Only the socket is needed to talk to the master: no key (which may not be readable
        # on this machine: deleting a target must work without it).
        subprocess.run(
            ["ssh", "-o", f"ControlPath={key_dir()}/{self._control}",
             *(["-p", str(self.node.port)] if self.node.port is not None else []),
             "-O", "exit", "--", self.node.destination],
            capture_output=True,
        )  # fmt: skip
        self.forget_key()

    def run(
        self, remote: str, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run ``remote`` on the node, with ``input`` on its stdin; returns the completed process
        (text output) whatever its exit status.

        :raises ComputeTargetException: ssh cannot be started or takes over ``timeout`` seconds.
        """
        return run_tool(
            self.ssh_command(remote), self.node, "a command", timeout=timeout, input=input
        )

    def check(self, remote: str, what: str, input: str | None = None) -> str:
        """Run ``remote`` on the node and return its stdout.

        :raises ComputeTargetException: it fails: ``what`` failed, with the last line of its stderr.
        """
        r = self.run(remote, input=input)
        if r.returncode != 0:
            raise ComputeTargetException(f"{self.node}: {what} failed: {last_line(r.stderr)}")
        return r.stdout

    def rsync(
        self,
        *paths: str,
        options: tuple[str, ...] = (),
        files_from: str | None = None,
        make_dest: str | None = None,
    ) -> None:
        """rsync sources to a destination (the last path) over this connection; paths on the
        host are written ``:path``. ``make_dest``: a folder on the host to create first (in
        the same round trip)."""
        shell = shlex.join(["ssh", *self.options(), "-o", "ControlMaster=no"])
        dest = self.node.destination

        def side(p: str) -> str:
            return f"{dest}:{p[1:]}" if p.startswith(":") else p

        # To the host: -a. Home from the host: what the host sends is not trusted, so no links
        # (one could point at any file here), devices, owners or modes; plain files and folders.
        remote_source = any(p.startswith(":") for p in paths[:-1])
        flags = (
            ["-rt", "--no-links", "--no-devices", "--no-specials", "--chmod=D755,F644"]
            if remote_source
            else ["-a"]
        )
        argv = ["rsync", *flags, "--protect-args", "-e", shell, *options]
        if make_dest is not None:
            argv.append(f"--rsync-path=mkdir -p {shlex.quote(make_dest)} && rsync")
        if files_from is not None:
            argv.append("--files-from=-")
        argv += [side(p) for p in paths]
        r = run_tool(argv, self.node, "copying files", timeout=6 * 3600, input=files_from)
        if r.returncode != 0:
            raise ComputeTargetException(
                f"{self.node}: copying {' '.join(paths[:-1])} to {paths[-1]} failed: {last_line(r.stderr)}"
            )

    def work_dir(self) -> str:
        """The target's ``work_dir`` on this host as an absolute path. A relative one is under
        the login's home: resolved once, at attach (recorded in the target's ``homes``), or at
        the first use of a connection of a target attached with ``check=False``. Absolute,
        because the agent runs in the run's folder, where a relative PYTHONPATH means nothing."""
        work_dir = str(self.config["workDir"])
        if work_dir.startswith("/"):
            return work_dir
        home = (self.config.get("homes") or {}).get(str(self.node)) or self._home
        if home is None:
            # pwd, not $HOME: relative paths (rsync's too) are relative to where sshd starts a
            # session, the login's home folder.
            home = check_login_home(self.node, self.check("pwd", "finding the login's home"))
            self._home = home
        return posixpath.normpath(f"{home}/{work_dir}")


def run_tool(
    argv: list[str],
    node: Node,
    what: str,
    *,
    timeout: float,
    input: str | None = None,
    capture: bool = True,
    stderr: Any = None,
) -> subprocess.CompletedProcess[str]:
    """ssh or rsync, with their failures to start or to answer as one-line errors."""
    try:
        if capture:
            return subprocess.run(
                argv, input=input, capture_output=True, text=True, timeout=timeout
            )
        return subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            timeout=timeout,
        )
    except FileNotFoundError:
        raise ComputeTargetException(
            f"{argv[0]} is not installed here; the ssh target needs OpenSSH's client and rsync"
            " (Debian: apt-get install openssh-client rsync)"
        ) from None
    except subprocess.TimeoutExpired:
        raise ComputeTargetException(
            f"{node}: {what} got no answer within {timeout:.0f} s"
        ) from None


def check_login_home(node: Node, text: str) -> str:
    """The login's home folder as a host printed it (``pwd``). :raises ComputeTargetException:"""
    home = text.strip()
    if not home.startswith("/") or "\n" in home:
        raise ComputeTargetException(
            f"{node}: cannot tell the login's home folder (pwd said {text.strip()!r});"
            " attach with an absolute work_dir="
        )
    return home


def ssh_said(path: Path) -> str:
    """The last thing the ssh client wrote to stderr, or what its silence means."""
    try:
        text = path.read_bytes()[-4096:]
    except OSError:
        text = b""
    line = last_line(text)
    return line if line != "no message" else "the host or its sshd went away"


def last_line(err: bytes | str) -> str:
    """The last non-blank line of a tool's stderr (what ssh or rsync says went wrong), or ``no
    message``."""
    text = err.decode("utf-8", "replace") if isinstance(err, bytes) else err
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"
