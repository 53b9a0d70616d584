"""The ``ssh`` compute target (Azure's RemoteCompute): runs on one or more hosts over OpenSSH.

Design choices, and why:

- The **system OpenSSH client** in ``BatchMode`` (never a prompt), so ``~/.ssh/config``, agents
  and jump hosts work as they do for the user. One ControlMaster connection per host is opened
  explicitly (``-fN``) and shared by every command of a run, which makes each later command a
  local socket hop instead of a new handshake.
- **rsync** moves the snapshot there and ``outputs/``, ``logs/`` and uploaded files back.
- **mlws is shipped** to the host (into ``<work_dir>/lib/mlws-<version>-<source hash>``, with its
  dependencies when the host lacks them) unless that host's Python already imports the same mlws.
- On the host, ``python -m mlws.compute.agent`` runs the script against a replica of the run's
  catalog rows and streams log text and catalog changes back over the ssh channel while the run
  runs (``compute.agent``, ``compute.replica``).
- A node is a host; a list of hosts acts as a small cluster, each with ``max_concurrent_runs``
  slots (lock files in the workspace's ``locks/``, as the hosts are shared by everyone who
  shares the workspace).
- The SSH key is stored in the workspace key vault, never as a path in the catalog; it is
  written to a 0600 file in a 0700 per-user folder only while it is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shlex
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..errors import ComputeTargetException, MlwsError
from . import ComputeConfiguration, ComputeTarget, register_type, replica, secret_name

if TYPE_CHECKING:
    from ..runner import _Supervisor
    from ..workspace import Workspace

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
_HOST = re.compile(
    r"^(?:(?P<user>[^@\s:]+)@)?(?P<host>[^@\s:]+|\[[0-9A-Fa-f:]+\])(?::(?P<port>\d+))?$"
)
#: Python on the host must find these for the agent to run (mlws's runtime dependencies).
_KEY_SECRET = "private-key"
#: Logs written on this side of a run (mlws's notes, the ssh client's stderr): never copied over.
_LOCAL_LOGS = ("--exclude=/logs/remote.log", "--exclude=/logs/ssh.log")


@dataclass(frozen=True)
class Node:
    host: str
    port: int
    user: str | None

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        return f"{self.destination}:{self.port}"

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9.-]", "_", str(self))


class RemoteCompute(ComputeTarget):
    """An ``ssh`` target: one host, or a list of hosts used as nodes of a small cluster."""

    _type = "ssh"

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
        nodes = []
        for spec in specs:
            m = _HOST.match(str(spec).strip())
            if not m:
                raise ComputeTargetException(
                    f"invalid host {spec!r}: expected host, host:port or user@host:port"
                )
            nodes.append(
                {
                    "host": m["host"],
                    "port": int(m["port"] or ssh_port),
                    "user": m["user"] or username,
                }
            )
        if len({(n["host"], n["port"], n["user"]) for n in nodes}) != len(nodes):
            raise ComputeTargetException(f"the same host is listed twice: {specs}")
        if not str(python_path).startswith("/"):
            raise ComputeTargetException(
                f"python_path must be an absolute path on the hosts, got {python_path!r}"
            )
        if not isinstance(max_concurrent_runs, int) or max_concurrent_runs < 1:
            raise ComputeTargetException(
                f"max_concurrent_runs must be a whole number >= 1, got {max_concurrent_runs!r}"
            )
        if cache_dir is not None and not str(cache_dir).startswith("/"):
            raise ComputeTargetException(
                f"cache_dir must be an absolute path on the hosts, got {cache_dir!r}"
            )
        secrets = {}
        if private_key_file is not None:
            secrets[_KEY_SECRET] = _read_key(Path(private_key_file), private_key_passphrase)
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
            },
            secrets,
        )

    def nodes(self) -> list[str]:
        return [str(n) for n in _nodes(self.config)]

    @classmethod
    def _validate(cls, ws: Workspace, name: str, config: ComputeConfiguration) -> None:
        if not config.config.get("check", True):
            return
        key = config.secrets.get(_KEY_SECRET)
        for node in _nodes(config.config):
            conn = Connection(ws, name, config.config, node, key_text=key)
            try:
                conn.open()
                python = config.config["python"]
                r = conn.run(
                    f"test -x {shlex.quote(python)} && {shlex.quote(python)} -c 'import sys; print(sys.version_info[:2] >= (3, 8))'"
                )
                if r.returncode != 0 or r.stdout.strip() != "True":
                    raise ComputeTargetException(
                        f"host {node}: no Python 3.8+ at {python}; pass python_path= with the "
                        "absolute path of the host's python"
                    )
            finally:
                conn.close()

    def _release(self) -> None:
        # No run of this target is active (delete checks): its master connections can go.
        for node in _nodes(self.config):
            Connection(self.workspace, self.name, self.config, node).close()
        for leftover in _key_dir().glob(f"{self.workspace.id[:8]}-{self.name}-*.key"):
            leftover.unlink(missing_ok=True)


register_type("ssh", RemoteCompute)


def _nodes(config: dict[str, Any]) -> list[Node]:
    return [Node(n["host"], int(n["port"]), n.get("user")) for n in config["nodes"]]


def _read_key(path: Path, passphrase: str | None) -> str:
    try:
        data = path.expanduser().read_bytes()
    except OSError as e:
        raise ComputeTargetException(f"cannot read private_key_file {path}: {e.strerror}") from None
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_ssh_private_key(data, passphrase.encode() if passphrase else None)
    except ValueError:
        try:
            key = serialization.load_pem_private_key(
                data, passphrase.encode() if passphrase else None
            )
        except (ValueError, TypeError) as e:
            raise ComputeTargetException(
                f"{path} is not a private key ssh can use, or the passphrase is wrong: {e}"
            ) from None
    except TypeError as e:  # a passphrase given for a plain key, or missing for an encrypted one
        raise ComputeTargetException(f"{path}: {e}") from None
    # Stored decrypted (the key vault encrypts it at rest): BatchMode ssh cannot ask for a
    # passphrase, and the passphrase need not be kept anywhere.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()


def _key_dir() -> Path:
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
    ) -> None:
        """``key_text``: check a key that is not in the key vault yet (attach); such a
        connection gets a master connection of its own, so it proves this key works and
        closing it cuts nobody else's session."""
        self.ws = ws
        self.target = target
        self.config = config
        self.node = node
        self._key_text = key_text
        self._key_file: Path | None = None
        # One master connection per (workspace, target, host): another target on the same
        # host (another key, another user) never rides on, or closes, this target's sessions.
        if key_text is None:
            ident = hashlib.sha256(f"{ws.id}\0{target}".encode()).hexdigest()[:10]
        else:
            ident = f"check{os.getpid()}"
        self._control = f"{ident}-%C"

    def key_file(self) -> Path | None:
        if self._key_file is not None:
            return self._key_file
        text = self._key_text
        if text is None and self.config.get("key"):
            text = self.ws.get_default_keyvault().get_secret(secret_name(self.target, _KEY_SECRET))
        if text is None:
            return None
        from ..workspace import _write_atomic

        # Per process, removed when the run (or check) is done (forget_key).
        path = _key_dir() / f"{self.ws.id[:8]}-{self.target}-{os.getpid()}.key"
        _write_atomic(path, text.encode(), 0o600)
        self._key_file = path
        return path

    def forget_key(self) -> None:
        """Remove this process's copy of the key (an open master connection does not need it)."""
        if self._key_file is not None:
            self._key_file.unlink(missing_ok=True)
            self._key_file = None

    def options(self) -> list[str]:
        opts = [
            "-o", "BatchMode=yes",
            "-o", f"ControlPath={_key_dir()}/{self._control}",
            "-o", "ConnectTimeout=10",
            "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=3",
            "-o", "StrictHostKeyChecking=accept-new",
            "-p", str(self.node.port),
        ]  # fmt: skip
        key = self.key_file()
        if key is not None:
            opts += ["-i", str(key), "-o", "IdentitiesOnly=yes"]
        for o in self.config.get("sshOptions", []):
            opts += ["-o", o]
        return opts

    def ssh_command(self, remote: str) -> list[str]:
        return ["ssh", *self.options(), "-o", "ControlMaster=no", self.node.destination, remote]

    def open(self) -> None:
        """Start the shared connection unless it runs already. :raises ComputeTargetException:"""
        base = ["ssh", *self.options()]
        if (
            subprocess.run(
                [*base, "-O", "check", self.node.destination], capture_output=True
            ).returncode
            == 0
        ):
            return
        # -f: ssh goes to the background once logged in; its stdio must not be our pipes, or
        # reading them would wait for the master to exit (ControlPersist keeps it alive).
        with tempfile.TemporaryFile() as err:
            rc = subprocess.run(
                [*base, "-o", "ControlMaster=yes", "-o", "ControlPersist=120", "-fN",
                 self.node.destination],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                timeout=60,
            ).returncode  # fmt: skip
            if rc != 0:
                err.seek(0)
                raise ComputeTargetException(
                    f"cannot connect to {self.node}: {_last_line(err.read())}"
                )

    def close(self) -> None:
        """End this connection's master (and so every session on it) and forget the key."""
        # Only the socket is needed to talk to the master: no key (which may not be readable
        # on this machine: deleting a target must work without it).
        subprocess.run(
            ["ssh", "-o", f"ControlPath={_key_dir()}/{self._control}", "-p", str(self.node.port),
             "-O", "exit", self.node.destination],
            capture_output=True,
        )  # fmt: skip
        self.forget_key()

    def run(
        self, remote: str, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                self.ssh_command(remote),
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise ComputeTargetException(f"{self.node}: no answer within {timeout} s") from None

    def check(self, remote: str, what: str, input: str | None = None) -> str:
        r = self.run(remote, input=input)
        if r.returncode != 0:
            raise ComputeTargetException(f"{self.node}: {what} failed: {_last_line(r.stderr)}")
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
        r = subprocess.run(argv, input=files_from, capture_output=True, text=True, timeout=3600)
        if r.returncode != 0:
            raise ComputeTargetException(
                f"{self.node}: copying {' '.join(paths[:-1])} to {paths[-1]} failed: {_last_line(r.stderr)}"
            )

    # -- mlws on the host --------------------------------------------------------------------
    def lib_path(self) -> str:
        """Where this very mlws lives on the host once shipped (version and source hash)."""
        from .. import __version__

        return f"{self.config['workDir']}/lib/mlws-{__version__}-{_source_hash()}"

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


def _ssh_said(path: Path) -> str:
    """The last thing the ssh client wrote to stderr, or what its silence means."""
    try:
        text = path.read_bytes()[-4096:]
    except OSError:
        text = b""
    line = _last_line(text)
    return line if line != "no message" else "the host or its sshd went away"


def _last_line(err: bytes | str) -> str:
    text = err.decode("utf-8", "replace") if isinstance(err, bytes) else err
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


# -- a run on a node -------------------------------------------------------------------------------
def execute(sup: _Supervisor, target: str, config: dict[str, Any]) -> None:
    """Run ``sup``'s run on a free node of an ``ssh`` target (waits ``Queued`` for one)."""
    from ..runs import set_status
    from .local import hold_slot

    nodes = _nodes(config)
    per_node = int(config.get("maxConcurrentRunsPerNode", 1))
    slots = [f"{n.slug}-{i}" for i in range(per_node) for n in nodes]
    by_slot = {f"{n.slug}-{i}": n for i in range(per_node) for n in nodes}

    def keep_waiting() -> bool:
        return sup.status() not in ("CancelRequested", "Canceled", "Failed", "Completed")

    folder = sup.ws.path / "locks" / "compute" / target
    with hold_slot(folder, lambda: slots, keep_waiting, may_start=sup.first_in_line) as name:
        if name is None:
            set_status(sup.ws, sup.run_id, "Canceled")
            return
        run = _SshRun(sup, target, config, by_slot[name])
        try:
            run.run()
        finally:
            run.conn.forget_key()


class _SshRun:
    def __init__(self, sup: _Supervisor, target: str, config: dict[str, Any], node: Node) -> None:
        self.sup = sup
        self.ws = sup.ws
        self.run_id = sup.run_id
        self.config = config
        self.node = node
        self.conn = Connection(sup.ws, target, config, node)
        self.remote_dir = f"{config['workDir']}/runs/{sup.run_id}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._t0 = time.monotonic()
        me = sup.ws.catalog.one(
            "SELECT supervisor_pid, supervisor_start FROM runs WHERE id = ?", (sup.run_id,)
        )
        self.home = replica.Home(
            sup.ws, sup.row, me[0] if me else os.getpid(), me[1] if me else None
        )

    def run(self) -> None:
        from ..runs import set_status
        from . import replica

        sup, ws, d = self.sup, self.ws, self.sup.definition
        if not set_status(ws, self.run_id, "Preparing"):
            sup.cancel_if_requested()
            return
        with ws.catalog.write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO run_properties VALUES (?, 'mlws.node', ?)",
                (sup.row["seq"], str(self.node)),
            )
        workdir = sup.prepare_workdir()
        # The local working folder holds the streamed log: `mlws run logs -f` reads it live.
        with ws.catalog.write() as conn:
            conn.execute(
                "UPDATE runs SET working_dir = ? WHERE id = ?", (str(workdir), self.run_id)
            )
        err_path = workdir / "logs" / "remote.log"
        self._t0 = time.monotonic()
        self._note(err_path, f"run {self.run_id} on {self.node} ({self.remote_dir})")
        self.conn.open()
        self._note(err_path, "connected")
        # The agent starts (Python, imports: the slow part on a host) while the snapshot is
        # copied; it waits for its instructions, which are sent once the copy is complete.
        ssh_err = workdir / "logs" / "ssh.log"
        events = self._start_agent(ssh_err)
        self.conn.rsync(
            str(workdir) + "/",
            f":{self.remote_dir}/",
            options=_LOCAL_LOGS,
            make_dest=self.remote_dir,
        )
        self._note(err_path, "snapshot copied")
        if not d["environment"].get("managed"):
            # A user-managed environment names the host's interpreter, or means the target's.
            explicit = (d["environment"].get("python") or {}).get("interpreterPath")
            use = explicit if explicit and explicit != "python" else self.config["python"]
            d["environment"]["interpreter"] = use
        spec = {
            "workspaceName": ws.name,
            "run": dict(sup.row),
            "ancestors": _ancestors(ws, sup.row),
            "experiment": dict(ws.catalog.one("SELECT * FROM experiments WHERE name = ?", (sup.row["experiment"],))),
            "run_tags": [list(r) for r in ws.catalog.query("SELECT * FROM run_tags WHERE run_seq = ?", (sup.row["seq"],))],
            "run_properties": [list(r) for r in ws.catalog.query("SELECT * FROM run_properties WHERE run_seq = ?", (sup.row["seq"],))],
            "definition": d,
            "cancelGraceS": _cancel_grace(),
            "keep": bool(os.environ.get("MLWS_KEEP_WORKDIR")),
        }  # fmt: skip
        # Optimistic: start the agent with the shipped copy's path; only when it answers that
        # it cannot run (absent, another version, a missing dependency) is mlws shipped.
        refusal = self._hello(events, ssh_err)
        if refusal is not None:
            with open(err_path, "a") as log:
                log.write(f"{self.node}: {refusal}\n")
                self.conn.ensure_mlws(log)
            events = self._start_agent(ssh_err)
            refusal = self._hello(events, ssh_err)
            if refusal is not None:
                raise MlwsError(f"{self.node}: the mlws agent cannot run there: {refusal}")
        self._note(err_path, "agent ready")
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(spec, default=str) + "\n").encode())
            self.proc.stdin.flush()
        except OSError:
            pass  # the session died at once: the reader sees the end and says so
        outcome, deferred = self._follow(events, workdir)
        lost = outcome[1] is not None and outcome[1].get("code") == "ConnectionLost"
        if outcome[0] != "Canceled":
            set_status(ws, self.run_id, "Finalizing")
        self._note(err_path, f"script ended: {outcome[0]}")
        warnings: list[str] = []
        if not lost:
            # One round trip brings outputs, logs and the blobs of uploaded files home.
            sources = [f":{self.remote_dir}/outputs", f":{self.remote_dir}/logs"]
            if deferred:
                sources.append(f":{self.remote_dir}/.mlws-replica/blobs")
            try:
                self.conn.rsync(*sources, str(workdir) + "/", options=_LOCAL_LOGS)
            except MlwsError:
                try:  # once more, over a new connection if the master went away
                    self.conn.open()
                    self.conn.rsync(*sources, str(workdir) + "/", options=_LOCAL_LOGS)
                except MlwsError as e:
                    copied = False
                    warnings.append(str(e))
                    if outcome[0] == "Completed":
                        outcome = (
                            "Failed",
                            {
                                "code": "OutputsLost",
                                "message": f"the script completed, but its outputs could not be"
                                f" copied home from {self.node}:{self.remote_dir} ({e});"
                                " they are still there",
                            },
                        )
                else:
                    copied = True
            else:
                copied = True
            if copied:
                self._note(err_path, "outputs and logs copied home")
                self._send("done")  # the agent removes the run's folder on the host and exits
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.close()
        except OSError:
            pass  # the session is gone (and "done" with it)
        if deferred:
            warnings += replica.apply_files(self.home, deferred, workdir / "blobs")
        warnings += self.home.warnings
        if warnings:
            with open(err_path, "a") as log:
                log.writelines(f"Warning: {w}\n" for w in warnings)
        sup.collect(workdir)
        sup.finish(outcome)
        assert self.proc is not None
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def _note(self, path: Path, what: str) -> None:
        """A timed line in ``logs/remote.log``: where a remote run's time goes."""
        with open(path, "a") as log:
            log.write(f"[{time.monotonic() - self._t0:7.3f} s] {what}\n")

    def _start_agent(self, err_path: Path) -> queue.Queue[dict[str, Any] | None]:
        from ..runner import die_with_parent

        python = self.config["python"]
        cache = self.config.get("cacheDir")
        folder = shlex.quote(self.remote_dir)
        remote = (
            f"mkdir -p {folder} && cd {folder} && PYTHONPATH={shlex.quote(self.conn.lib_path())}"
            + (f" XDG_CACHE_HOME={shlex.quote(cache)}" if cache else "")
            + f" exec {shlex.quote(python)} -u -m mlws.compute.agent ."
        )
        with open(err_path, "ab") as err:
            self.proc = subprocess.Popen(
                self.conn.ssh_command(remote),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        # No pid is recorded: the script's pid is on the host, and signalling the ssh client
        # would cut the session instead of cancelling gracefully. The client dies with this
        # process (PR_SET_PDEATHSIG), and the agent then kills the script on the host.
        self.sup.proc = self.proc
        events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=_read_events, args=(self.proc.stdout, events), daemon=True).start()
        return events

    def _hello(self, events: queue.Queue[dict[str, Any] | None], err_path: Path) -> str | None:
        """Wait for the agent's first line; ``None`` when it can run this run, else why not."""
        from .. import __version__
        from .agent import PROTOCOL

        assert self.proc is not None
        try:
            ev = events.get(timeout=120)
        except queue.Empty:
            ev = None
        if ev is None or ev.get("t") != "hello":
            self.proc.kill()
            self.proc.wait()
            return f"no mlws agent answered ({_ssh_said(err_path)})"
        if ev.get("missing") or ev.get("protocol") != PROTOCOL or ev.get("version") != __version__:
            self.proc.kill()  # an agent of another version waits for instructions: end it
            self.proc.wait()
            return ev.get("missing") or f"mlws {ev.get('version')} there, not {__version__}"
        return None

    def _follow(
        self, events: queue.Queue[dict[str, Any] | None], workdir: Path
    ) -> tuple[tuple[str, dict[str, Any] | None], list[dict[str, Any]]]:
        from ..runner import exit_outcome
        from ..runs import set_status
        from . import replica

        assert self.proc is not None and self.proc.stdin is not None
        sup, ws = self.sup, self.ws
        limit = sup.definition.get("maxRunDurationSeconds")
        started = time.monotonic()
        deferred: list[dict[str, Any]] = []
        canceled = timed_out = False
        log = open(workdir / "logs" / "driver.log", "a", encoding="utf-8")  # noqa: SIM115
        try:
            while True:
                try:
                    ev = events.get(timeout=0.25)
                except queue.Empty:
                    ev = {"t": "tick"}
                if ev is None:
                    self.proc.wait()
                    if canceled or sup.status() == "CancelRequested":
                        return ("Canceled", None), deferred
                    return (
                        "Failed",
                        {
                            "code": "ConnectionLost",
                            "message": f"lost the connection to {self.node} while the run was running"
                            f" (ssh exit {self.proc.returncode}: {_ssh_said(workdir / 'logs' / 'ssh.log')})",
                        },
                    ), deferred
                kind = ev.get("t")
                if kind == "log":
                    log.write(ev["data"])
                    log.flush()
                elif kind == "changes":
                    deferred += replica.apply_changes(self.home, ev["changes"])
                elif kind == "interpreter":
                    set_status(ws, self.run_id, "Starting")
                elif kind == "started":
                    set_status(ws, self.run_id, "Running")
                elif kind == "secrets":
                    self._answer_secrets(ev)
                elif kind == "error":
                    err = MlwsError(f"on {self.node}: {ev.get('message')}")
                    err.remote_trace = ev.get("trace")  # type: ignore[attr-defined]
                    raise err
                elif kind == "exit":
                    rc = int(ev["rc"])
                    break
                if not canceled and sup.status() == "CancelRequested":
                    canceled = True
                    self._send("cancel")
                if limit and not timed_out and time.monotonic() - started > float(limit):
                    timed_out = True
                    self._send("kill")
        finally:
            log.close()
        if canceled or sup.status() == "CancelRequested":
            return ("Canceled", None), deferred
        if timed_out:
            return (
                "Failed",
                {
                    "code": "RunTimeout",
                    "message": f"the run exceeded max_run_duration_seconds={limit} and was killed",
                },
            ), deferred
        requested = ws.catalog.scalar(
            "SELECT requested_status FROM runs WHERE id = ?", (self.run_id,)
        )
        if requested == "Failed":
            return ("Failed", None), deferred
        return exit_outcome(rc, workdir / "logs" / "driver.log"), deferred

    def _answer_secrets(self, ev: dict[str, Any]) -> None:
        """The script asked for secrets: decrypt here, send only those values."""
        try:
            names = [str(n) for n in ev.get("names") or []]
            values = self.ws.get_default_keyvault().get_secrets(names)
            answer: dict[str, Any] = {"id": ev.get("id"), "values": values}
        except MlwsError as e:
            answer = {"id": ev.get("id"), "error": str(e)}
        self._send(json.dumps(answer))

    def _send(self, command: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(f"{command}\n".encode())
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass  # the session is gone


def _read_events(stream: IO[bytes], events: queue.Queue[dict[str, Any] | None]) -> None:
    for line in stream:
        try:
            ev = json.loads(line)
        except ValueError:
            continue  # not ours (a login banner); the agent only writes JSON objects
        if isinstance(ev, dict):
            events.put(ev)
    events.put(None)


def _ancestors(ws: Workspace, row: Any) -> list[dict[str, Any]]:
    out = []
    parent = row["parent_id"]
    while parent:
        r = ws.catalog.one("SELECT * FROM runs WHERE id = ?", (parent,))
        if r is None:
            break
        out.insert(0, dict(r))
        parent = r["parent_id"]
    return out


def _cancel_grace() -> float:
    from ..runner import CANCEL_GRACE_S

    return CANCEL_GRACE_S
