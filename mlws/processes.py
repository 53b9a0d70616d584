"""Process plumbing: liveness, start times, which workspace a process works for, child Pythons
and detached starts.

A ground-floor module: it imports nothing of mlws, so run execution (``compute/``), serving
(``serving/``) and the run lifecycle all use it without importing each other. ``psutil`` is
imported where it is needed, so ``import mlws`` stays cheap.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import subprocess

#: The folder holding the ``mlws`` package: first on a child Python's path, so the child
#: imports this very mlws (an editable checkout, a shipped copy) and not another one.
PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)

#: mlws's ``azureml`` layer: the folder holding the package ``azureml`` (``mlws.v1.SHIM_DIR``,
#: the same path; spelled out here so that this module imports nothing of mlws).
V1_SHIM_DIR = str(Path(__file__).resolve().parent / "v1" / "shim")


def python_path(existing: str | None) -> str:
    """``PYTHONPATH`` with mlws importable first (``existing`` after it, without duplicates),
    so a supervisor, a run's script or a scoring replica sees this mlws; and mlws's ``azureml``
    layer last, so unchanged Azure ML v1 code imports. The layer's ``azureml/__init__.py``
    steps aside when the interpreter has a real azureml-core (see :mod:`mlws.v1`): a
    ``PYTHONPATH`` entry comes before site-packages, and no hook of ours runs before a run's
    own script could append it after them."""
    parts = [PACKAGE_PARENT] + [
        p
        for p in (existing or "").split(os.pathsep)
        if p and p not in (PACKAGE_PARENT, V1_SHIM_DIR)
    ]
    return os.pathsep.join([*parts, V1_SHIM_DIR])


def process_start_time(pid: int) -> float | None:
    """When ``pid`` started (seconds since the epoch, psutil's ``create_time``), or ``None``
    when there is no such process. Recorded beside a pid, so a reused pid is told apart."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def process_alive(pid: int | None, start: float | None) -> bool:
    """True when ``pid`` runs and is the same process that started at ``start`` (not a reuse)."""
    if not pid:
        return False
    import psutil

    try:
        p = psutil.Process(pid)
        if start is not None and abs(p.create_time() - start) > 1.0:
            return False
        return p.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, OSError):
        return False


class HasPath(Protocol):
    """A workspace, as far as process ownership goes: its folder."""

    @property
    def path(self) -> Path:
        """The workspace's folder."""


#: ``python -m <module> <folder> ...``: the processes mlws starts for a workspace, and where
#: their workspace is under that folder: an ssh host's agent is given its run folder and works
#: for the run's remote catalog in it (``compute.agent.REPLICA``).
WORKSPACE_MODULES = {
    "mlws.compute.supervisor": "",
    # The run supervisor's module up to 0.1.0: a run submitted before an upgrade
    # is still supervised by one, and must still be recognised as this workspace's.
    "mlws.runner": "",
    "mlws.serving.supervisor": "",
    "mlws.hyperdrive.controller": "",
    "mlws.pipelines.controller": "",
    "mlws.compute.trials": "",
    "mlws.server": "",
    "mlws.compute.agent": ".mlws-replica",
    # A supervisor forked by the workspace's warm launcher keeps the launcher's command line.
    "mlws.compute.launcher": "",
}


#: How long a process with no command line (mid-exec or exiting) is given to show one.
SETTLE_S = 2.0


def process_workspace(pid: int) -> str | None:
    """The workspace folder a live process works for, as the process itself says: the workspace
    argument of an mlws supervisor's command line, else ``MLWS_WORKSPACE`` in its environment
    (every run's script has it). ``None`` when it names none (or is not readable)."""
    import psutil

    try:
        p = psutil.Process(pid)
        args = p.cmdline()
        # An empty command line is a process between states, not an answer: one just past
        # execve() whose new arguments are not mapped yet (its starter already has its pid and
        # may have recorded it), or one exiting. Ask again until it settles.
        deadline = time.monotonic() + SETTLE_S
        while not args and time.monotonic() < deadline:
            time.sleep(0.005)
            args = p.cmdline()
        if "-m" in args:
            i = args.index("-m")
            if args[i + 1 : i + 2] and args[i + 1] in WORKSPACE_MODULES and len(args) > i + 2:
                sub = WORKSPACE_MODULES[args[i + 1]]
                # A relative folder is the process's own cwd's, not ours. An absolute one needs
                # no cwd, which a script in a container may not read (root there lacks the
                # capabilities of the supervisor it checks: psutil's AccessDenied).
                folder = args[i + 2]
                if not os.path.isabs(folder):
                    folder = os.path.join(p.cwd(), folder)
                return os.path.join(folder, sub) if sub else folder
        return p.environ().get("MLWS_WORKSPACE") or None
    except (psutil.Error, OSError):
        return None


def owned_process(ws: HasPath, pid: int | None, start: float | None) -> bool:
    """True when ``pid`` (started at ``start``) runs *and* works for this workspace folder.

    ``ws``: a ``Workspace`` (anything with its folder as ``.path``).

    A catalog row carries a pid, but a copy of the workspace (``cp -a``, a restored backup)
    carries the same rows while the processes belong to the original: only a process whose
    command line or environment names this folder may be signalled or adopted from here. The
    folder, not the ``mlws.json`` id, is the identity: a copy keeps the id (its key-vault key is
    found by it), never the original's path."""
    if not pid or not process_alive(pid, start):
        return False
    named = process_workspace(pid)
    return named is not None and same_folder(named, ws.path)


def same_folder(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name the same folder (by inode; by real path where one is gone)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def foreign_process_message(ws: HasPath, what: str, pid: int) -> str:
    """One line saying that ``pid`` (``what``) belongs to another workspace folder."""
    other = process_workspace(pid)
    where = f"the workspace at {other}" if other else "another workspace"
    return (
        f"{what} (pid {pid}) belongs to {where}, not to this one at {ws.path} (a copy of it?); "
        "nothing was signalled"
    )


def hostname() -> str:
    """This machine's name, as ``socket.gethostname()`` (which is ``uname``'s node name on
    POSIX) without importing :mod:`socket` (~4 ms) on every run's path (issue 12)."""
    uname = getattr(os, "uname", None)
    if uname is not None:
        return str(uname().nodename)
    import socket

    return socket.gethostname()


def _load_prctl() -> Any:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL: Any = None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """``preexec_fn``: the child is killed when its parent dies (Linux PR_SET_PDEATHSIG), so a
    script never outlives the Dask worker, ssh agent or supervisor that owns it, nor a scoring
    replica its service supervisor."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


def __getattr__(name: str) -> Any:
    # ``die_with_parent`` is handed out here, which looks up prctl (ctypes, ~2-4 ms) on that
    # first ``from mlws.processes import die_with_parent`` rather than when every run's script
    # imports this module. It is still looked up in the parent, before any fork: a child between
    # fork and exec must not import or dlopen anything (in a multi-threaded parent that can
    # deadlock on a lock held by another thread).
    global _PRCTL
    if name == "die_with_parent":
        if _PRCTL is None:
            _PRCTL = _load_prctl()
        return _die_with_parent
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def start_detached(
    module: str,
    *args: str,
    env: dict[str, str] | None = None,
    log: IO[bytes] | None = None,
    reap: bool = True,
    cwd: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``python -m module args...`` (this interpreter) in a new session, so it survives
    the caller and a Ctrl-C or hang-up of the caller's terminal: the run supervisor, the service
    supervisor, a local Dask cluster.

    ``env``: its environment (default: this process's), with mlws importable first on
    ``PYTHONPATH``; ``log``: where its stdout and stderr go (default: nowhere). ``reap``: a
    daemon thread waits for it, so if the caller outlives it no zombie lingers (if the caller
    exits first, init adopts and reaps it); leave it off to ``poll()`` the process yourself.
    ``cwd``: its working folder (default: the caller's).

    :raises OSError: the process could not be started.
    """
    import subprocess

    child_env = dict(os.environ if env is None else env)
    child_env["PYTHONPATH"] = python_path(child_env.get("PYTHONPATH"))
    out: Any = subprocess.DEVNULL if log is None else log
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL,
        start_new_session=True,
        env=child_env,
        close_fds=True,
        cwd=cwd,
    )
    if reap:
        threading.Thread(target=proc.wait, name=f"mlws-reap-{proc.pid}", daemon=True).start()
    return proc


def reap_children() -> None:
    """Collect the exit status of every child of this process that has ended (else they stay
    zombies): a launcher's forked supervisors, a sub-reaper's adopted orphans."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
