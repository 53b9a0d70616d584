"""Process plumbing: liveness, start times, child Pythons and detached starts.

A ground-floor module: it imports nothing of mlws, so run execution (``compute/``), serving
(``serving/``) and the run lifecycle all use it without importing each other. ``psutil`` is
imported where it is needed, so ``import mlws`` stays cheap.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

#: The folder holding the ``mlws`` package: first on a child Python's path, so the child
#: imports this very mlws (an editable checkout, a shipped copy) and not another one.
PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)


def python_path(existing: str | None) -> str:
    """``PYTHONPATH`` with mlws importable first (``existing`` after it, without duplicates),
    so a supervisor, a run's script or a scoring replica sees this mlws."""
    parts = [PACKAGE_PARENT] + [
        p for p in (existing or "").split(os.pathsep) if p and p != PACKAGE_PARENT
    ]
    return os.pathsep.join(parts)


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


def _load_prctl() -> Any:
    # Looked up once, here: a child between fork and exec must not import or dlopen anything
    # (in a multi-threaded parent that can deadlock on a lock held by another thread).
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn``: the child is killed when its parent dies (Linux PR_SET_PDEATHSIG), so a
    script never outlives the Dask worker, ssh agent or supervisor that owns it, nor a scoring
    replica its service supervisor."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


def start_detached(
    module: str,
    *args: str,
    env: dict[str, str] | None = None,
    log: IO[bytes] | None = None,
    reap: bool = True,
) -> subprocess.Popen[bytes]:
    """Start ``python -m module args...`` (this interpreter) in a new session, so it survives
    the caller and a Ctrl-C or hang-up of the caller's terminal: the run supervisor, the service
    supervisor, a local Dask cluster.

    ``env``: its environment (default: this process's), with mlws importable first on
    ``PYTHONPATH``; ``log``: where its stdout and stderr go (default: nowhere). ``reap``: a
    daemon thread waits for it, so if the caller outlives it no zombie lingers (if the caller
    exits first, init adopts and reaps it); leave it off to ``poll()`` the process yourself.

    :raises OSError: the process could not be started.
    """
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
    )
    if reap:
        threading.Thread(target=proc.wait, name=f"mlws-reap-{proc.pid}", daemon=True).start()
    return proc
