"""One ssh host of a compute target: commands and file copies over one ControlMaster
connection, and mlws shipped to the host when its Python cannot run the agent (see
``compute.ssh`` for the design)."""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..errors import ComputeTargetException, MlwsError
from . import secret_name

if TYPE_CHECKING:
    from ..workspace import Workspace

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


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


# -- one host --------------------------------------------------------------------------------------
class Connection:
    """Commands and file transfers to one node, over one ControlMaster connection."""

    def __init__(
        self,
        ws: Workspace,
        target: str,
        config: dict[str, Any],
        node: Node,
        key_text: str | None = None,
        key_secret: str | None = None,
    ) -> None:
        """``target``: the name the connection's socket and key files go by (a compute
        target's; an ssh datastore's is ``ds_<name>``, which no target name can be).
        ``key_text``: check a key that is not in the key vault yet (attach); such a
        connection gets a master connection of its own, so it proves this key works and
        closing it cuts nobody else's session. ``key_secret``: the key vault name of the key
        when ``config["key"]`` says there is one (default: the compute target's)."""
        self.ws = ws
        self.target = target
        self.key_secret = key_secret or secret_name(target, "private-key")
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
        from ..dirs import write_atomic

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

    # -- mlws on the host --------------------------------------------------------------------
    def lib_path(self) -> str:
        """Where this very mlws lives on the host once shipped (version and source hash)."""
        from .. import __version__

        return f"{self.work_dir()}/lib/mlws-{__version__}-{_source_hash()}"

    def ensure_mlws(self, log: IO[str]) -> str:
        """Make ``mlws.compute.agent`` importable by the host's Python; returns the PYTHONPATH
        to use there (the shipped copy, which wins over any other mlws on the host)."""
        from .. import __version__

        python = self.config["python"]
        lib = self.lib_path()
        probe = (
            "import sys, json, sysconfig\n"
            "r = {'py': list(sys.version_info[:2]), 'platform': sysconfig.get_platform()}\n"
            "try:\n"
            "    import mlws, mlws.compute.agent\n"
            "    mlws.compute.agent.check()\n"
            "    r['mlws'] = mlws.__version__; r['file'] = mlws.__file__\n"
            "    r['protocol'] = mlws.compute.agent.PROTOCOL\n"
            "except Exception as e:\n"
            "    r['error'] = f'{type(e).__name__}: {e}'\n"
            "print(json.dumps(r))\n"
        )
        cmd = f"PYTHONPATH={shlex.quote(lib)} {shlex.quote(python)} -"

        def ask() -> dict[str, Any]:
            out = self.check(cmd, "checking Python", input=probe)
            try:
                return json.loads(out.strip().splitlines()[-1])
            except (ValueError, IndexError):
                raise ComputeTargetException(
                    f"{self.node}: unexpected answer from {python}: {out!r}"
                ) from None

        from .agent import PROTOCOL

        info = ask()
        if info.get("mlws") == __version__ and info.get("protocol") == PROTOCOL:
            where = info.get("file", "")
            if f"/lib/mlws-{__version__}-" not in where:
                log.write(f"{self.node}: using mlws {__version__} installed there ({where})\n")
            return lib
        log.write(
            f"{self.node}: shipping mlws {__version__} to {lib}"
            f" ({info.get('error') or 'mlws ' + str(info.get('mlws'))} there)\n"
        )
        self.rsync(
            str(_PACKAGE_DIR) + "/",
            f":{lib}/mlws/",
            options=("--delete", "--exclude=__pycache__"),
            make_dest=lib,
        )
        info = ask()
        if "error" in info:
            # Something mlws needs is missing there: ship its dependencies too (pure-Python ones
            # work anywhere; compiled ones only on the same Python version and platform).
            log.write(f"{self.node}: {info['error']}; shipping mlws's dependencies too\n")
            for base, names in _dependency_files().items():
                self.rsync(base + "/", f":{lib}/", files_from="\n".join(names) + "\n")
            info = ask()
        if "error" in info:
            raise ComputeTargetException(
                f"{self.node}: {python} cannot run mlws even after shipping it ({info['error']});"
                f" install mlws's dependencies there: {python} -m pip install {_requirements()}"
            )
        return lib


_SOURCE_HASH: str | None = None


def _source_hash() -> str:
    """A hash of this mlws's source files: a changed checkout ships again."""
    global _SOURCE_HASH
    if _SOURCE_HASH is None:
        h = hashlib.sha256()
        for p in sorted(_PACKAGE_DIR.rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                h.update(p.relative_to(_PACKAGE_DIR).as_posix().encode() + b"\0")
                h.update(p.read_bytes())
        _SOURCE_HASH = h.hexdigest()[:12]
    return _SOURCE_HASH


def _requirements() -> str:
    from importlib import metadata

    try:
        reqs = metadata.requires("mlws") or []
    except metadata.PackageNotFoundError:
        return "mlws"
    return " ".join(shlex.quote(r.split(";")[0].strip()) for r in reqs if "extra ==" not in r)


def _dependency_files() -> dict[str, list[str]]:
    """The installed files of mlws's runtime dependencies (recursively), by site folder."""
    from importlib import metadata

    out: dict[str, list[str]] = {}
    seen: set[str] = set()
    todo = ["mlws"]
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for req in dist.requires or []:
            if "extra ==" not in req:
                m = re.match(r"[A-Za-z0-9._-]+", req)
                if m:
                    todo.append(m.group())
        if key == "mlws":
            continue  # shipped from its source folder
        base = str(dist.locate_file(""))
        for f in dist.files or []:
            if f.parts and f.parts[0] != ".." and "__pycache__" not in f.parts:
                out.setdefault(base.rstrip("/"), []).append(f.as_posix())
    return out


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
