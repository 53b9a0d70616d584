"""A warm launcher: run supervisors forked from a process that has mlws imported already.

Starting ``python -m <supervisor module>`` costs a fresh interpreter plus mlws's imports, most
of a trivial run's submit-to-Completed time. So the first submission to a workspace also starts,
detached, one launcher per user, workspace folder and code version: a single-threaded process
that imports the supervisor and its dependencies once, listens on a Unix socket in a folder
only its user can enter, and for each request forks a child that becomes a new session and runs
the supervisor's ``main`` there. Later submissions ask it and get the child's pid back in about
a millisecond; when no launcher answers, the submitter starts the supervisor itself, as before.

Why it is safe:

- The launcher's command line names its workspace folder (``python -m mlws.compute.launcher
  FOLDER SOCKET``) and a forked child keeps it, so ``lifecycle.process_workspace`` ties every
  supervisor it starts to that folder, exactly as for a directly started one.
- A child gets the requester's environment, working folder and umask; module-level settings read
  from the environment at import time are the same because the launcher's key includes every
  ``MLWS_*`` variable, ``PYTHONPATH``, the interpreter and the mlws sources' modification times
  (an upgraded or edited mlws gets a new launcher; the old one idles out).
- It never opens the catalog or starts a thread, so a fork copies no SQLite connection or lock.
- The socket folder is ``0700`` and checked to be the user's own; the launcher accepts only
  connections from its own uid (``SO_PEERCRED``).
- It exits after :data:`IDLE_S` seconds without a request or when its workspace folder is gone;
  the supervisors it started are their own sessions and live on (init reaps them).
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

#: A launcher with nothing to do for this long exits (``MLWS_LAUNCHER_IDLE_S``).
IDLE_S = float(os.environ.get("MLWS_LAUNCHER_IDLE_S", "300"))
#: The module whose ``main(argv)`` a launched child runs.
SUPERVISOR = "mlws.compute.supervisor"
#: Every module a request may name instead (``main(argv)`` each): the controllers of parent
#: runs, whose fresh-interpreter start is most of a reused pipeline's submit-to-Completed.
LAUNCHABLE = (
    SUPERVISOR,
    "mlws.pipelines.controller",
    "mlws.hyperdrive.controller",
    "mlws.compute.trials",  # a local sweep's trial workers
)
#: Imported at the launcher's first idle moment: what a pipeline's controller needs beyond a
#: supervisor (a reused step is fingerprinted and recorded without starting anything).
WARM_LATER = (
    "mlws.pipelines.controller",
    "mlws.compute.trials",  # a local sweep's trial workers
    "mlws.pipelines.reuse",
    "mlws.runconfig",
    "mlws.environments",
    "mlws.datasets",
    "mlws.manifests",
)
#: Imported by the launcher before its first fork: what a supervisor of a local run needs.
WARM = (
    "mlws.compute.supervisor",
    "mlws.compute.script",
    # A run's AZUREML_* variables (compute.script): its import compiles a regular expression,
    # ~1.5 ms of CPU that every supervisor forked cold paid.
    "mlws.v1",
    "mlws.processes",
    "mlws.runs",
    "mlws.experiments",  # a run's Run.get_context() (a script forked warm: compute.warmstart)
    "mlws.lifecycle",
    "mlws.catalog",
    "mlws.blobs",
    "mlws.snapshots",
    "mlws.workspace",
    "mlws.keyvault",
    "mlws.compute.local",
    "mlws.rundata",
    "mlws.readonly",
    "mlws.reaper",
    "psutil",
    # Not sqlite_utils: only a schema migration uses it (catalog.py), and it imports numpy,
    # pandas and pyarrow where installed (~0.5 s of CPU per launcher started, ten times the
    # rest), whose state a script forked warm must not inherit (compute.warmstart).
    # 50-100 ms of imports (filelock 4 builds dataclasses, and loads this lazily on first
    # use): the blob store's gc lock, taken when a run's files are stored.
    "filelock:ReadWriteLock",
)


def enabled() -> bool:
    """The launcher is used unless ``MLWS_LAUNCHER=0`` (e.g. to debug a supervisor)."""
    return os.environ.get("MLWS_LAUNCHER", "1") != "0" and hasattr(os, "fork")


def socket_folder() -> Path:
    """The user's folder for launcher sockets: made ``0700``; refused unless it is ours."""
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    folder = Path(base) / f"mlws-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = folder.lstat()
    import stat as st_

    if not st_.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise OSError(f"{folder} is not a private folder of this user")
    return folder


_STAMP: list[str] = []


def _code_stamp() -> str:
    """The mlws sources' newest modification time: an edited or upgraded mlws gets a new key.
    Computed once per process (a walk of ~150 files, ~7 ms: a pipeline's controller submits
    many steps): this process runs the code it imported, so the launcher that matches it is
    the one of the sources as they were then."""
    if _STAMP:
        return _STAMP[0]
    root = Path(__file__).resolve().parent.parent
    newest = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                newest = max(newest, os.stat(os.path.join(dirpath, f)).st_mtime_ns)
    _STAMP.append(f"{root}:{newest}")
    return _STAMP[0]


def key(workspace: str | os.PathLike[str], env: dict[str, str]) -> str:
    """What a launcher is for: the workspace folder, this interpreter, mlws's code and every
    setting a supervisor reads from its environment at import time."""
    from ..processes import python_path

    settings = sorted((k, v) for k, v in env.items() if k.startswith("MLWS_"))
    # As every process mlws starts has it (processes.start_detached): a sweep's controller
    # and the submitter that started it then find the same launcher.
    settings.append(("PYTHONPATH", python_path(env.get("PYTHONPATH"))))
    raw = json.dumps(
        [os.path.realpath(workspace), sys.executable, _code_stamp(), settings, os.getuid()]
    )
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def socket_path(workspace: str | os.PathLike[str], env: dict[str, str]) -> Path:
    """The socket of the launcher for this workspace folder and environment (see :func:`key`), in
    the user's private :func:`socket_folder`.

    :raises OSError: that folder is not a private folder of this user.
    """
    return socket_folder() / f"l-{key(workspace, env)}.sock"


# -- the submitter's side ---------------------------------------------------------------------------
def launch(
    workspace: str | os.PathLike[str],
    args: list[str],
    env: dict[str, str],
    warm_up: bool,
    module: str = SUPERVISOR,
    wait: bool = True,
) -> int | None:
    """Start ``module``'s ``main(args)`` (the supervisor, or one of :data:`LAUNCHABLE`) through
    this workspace's launcher; its pid, or ``None`` when no launcher took the request: the
    caller starts this process itself, and, with ``warm_up``, a launcher is started for the
    next submissions.

    ``0``: the request was handed over but no answer came back. A supervisor may be running
    (it records its own pid when it claims the run), so the caller must not start a second
    one; if none started, the run is found never started and fails (``lifecycle.reconcile``).
    With ``wait=False`` that is the answer whenever a launcher accepted the connection: the
    request is handed over and not waited for (the launcher's fork and reply, tens of ms on a
    loaded machine, are off the caller's path)."""
    if not enabled():
        return None
    try:
        path = socket_path(workspace, env)
    except OSError:
        return None
    from ..dirs import current_umask

    request = {
        "args": args,
        "env": env,
        "cwd": os.getcwd(),
        "umask": current_umask(),
        "module": module,
        "reply": wait,
    }
    handed_over = False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(path))
            s.sendall(json.dumps(request).encode() + b"\n")
            handed_over = True
            if not wait:
                return 0
            answer = json.loads(_read_line(s))
        return int(answer["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        if handed_over:
            return 0  # never two supervisors for one run
        if warm_up:
            _start_launcher(workspace, path, env)
        return None


def submitter_env() -> dict[str, str]:
    """This process's environment as a run (or controller) it starts gets it: without this
    process's own run channel (a run submitted from a run must not hold its parent's pipes)."""
    from ..keyvault import CHANNEL_ENV

    return {k: v for k, v in os.environ.items() if k != CHANNEL_ENV}


def wait_ready(workspace: str | os.PathLike[str], env: dict[str, str], timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for this workspace's launcher to listen (its socket is
    put in place only then); whether one does. For a process about to submit many runs in a
    row (a sweep's controller started cold, which started a launcher): forked by it, each
    starts in milliseconds; started directly meanwhile, each would pay a fresh interpreter,
    and the first trials of a sweep, all at once on a busy machine, ~0.7 s each."""
    if not enabled():
        return False
    try:
        path = socket_path(workspace, env)
    except OSError:
        return False
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def poke(workspace: str | os.PathLike[str], env: dict[str, str]) -> None:
    """Ask this workspace's launcher (if one listens) to import what its recent runs need at
    its next idle moment (``warm_executors``, ``compute.warmstart.warm_modules``), starting
    nothing: a supervisor started cold for a run a warm one would have served faster."""
    if not enabled():
        return
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            s.connect(str(socket_path(workspace, env)))
            s.sendall(json.dumps({"warm": True}).encode() + b"\n")
    except OSError:
        pass


def start_for_run(
    ws: Any,
    run_id: str,
    module: str,
    env: dict[str, str],
    warm_up: bool,
    what: str,
    wait: bool = True,
) -> int:
    """Start the process that supervises the recorded run ``run_id`` (``python -m module
    <workspace> <run id>``: a script run's supervisor, a sweep's or a pipeline's controller):
    forked by this workspace's launcher when one answers, else started detached; then record
    it as the run's supervising process (``NotStarted`` becomes ``Queued``, unless the process
    has moved the run on already). Returns its pid, or ``0`` when the launcher took the request
    without answering (the process, if any, records itself; see :func:`launch`). ``what``
    names the run in messages ("the run", "the sweep", ...); ``wait=False``: a launcher's
    answer is not waited for (see :func:`launch`; the result is then ``0``).

    :raises MlwsError: the process could not be started (the run is then ``Failed``).
    """
    from ..errors import MlwsError
    from ..lifecycle import set_status
    from ..processes import process_start_time, start_detached

    pid = launch(ws.path, [str(ws.path), run_id], env, warm_up=warm_up, module=module, wait=wait)
    if pid == 0:
        return 0
    if pid is None:
        try:
            pid = start_detached(module, str(ws.path), run_id, env=env).pid
        except OSError as e:
            set_status(
                ws,
                run_id,
                "Failed",
                error={"code": "SystemError", "message": f"could not start {what}: {e}"},
            )
            raise MlwsError(f"could not start the process supervising {what}: {e}") from None
    with ws.catalog.write() as conn:
        # The process may already have claimed the run: only fill in what is missing.
        conn.execute(
            "UPDATE runs SET supervisor_pid = coalesce(supervisor_pid, ?),"
            " supervisor_start = coalesce(supervisor_start, ?),"
            " status = CASE status WHEN 'NotStarted' THEN 'Queued' ELSE status END WHERE id = ?",
            (pid, process_start_time(pid), run_id),
        )
    return pid


def _read_line(s: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            raise OSError("the launcher closed the connection")
        data += chunk
    return data


def _start_launcher(workspace: str | os.PathLike[str], path: Path, env: dict[str, str]) -> None:
    from ..processes import start_detached

    try:
        # In "/": it holds no folder of the caller's, and sys.path[0] shadows nothing.
        start_detached("mlws.compute.launcher", str(workspace), str(path), env=env, cwd="/")
    except OSError:
        pass


# -- the launcher ----------------------------------------------------------------------------------
def serve(workspace: str, path: str) -> int:
    """Be the launcher (``python -m mlws.compute.launcher FOLDER SOCKET``): import the supervisor
    once, listen on ``path`` and fork a supervisor for each request of this user, until idle for
    :data:`IDLE_S`, the workspace folder is gone or another launcher took the socket over. Returns 0
    (a forked child exits on its own)."""
    import importlib

    from ..processes import reap_children

    for name in WARM:
        module, _, attr = name.partition(":")
        imported = importlib.import_module(module)
        if attr:
            getattr(imported, attr)  # a package's lazy attribute (PEP 562 __getattr__)
    supervisor_main = importlib.import_module(SUPERVISOR).main
    from .warmstart import foreign_modules

    foreign_modules()  # what it finds now, each supervisor forked from here need not find again
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Bound under a temporary name, then renamed: a submitter never meets a socket that is not
    # listening yet, and of two launchers started at once the last to rename serves.
    tmp = f"{path}.{os.getpid()}"
    sock.bind(tmp)
    sock.listen(64)
    os.replace(tmp, path)
    mine = os.stat(path).st_ino
    # Who serves this socket, for stop(): the children share the launcher's command line, so
    # only this record tells the launcher apart from the supervisors it forked.
    import psutil

    record = Path(path).with_suffix(".json")
    from ..dirs import write_atomic

    info = {"pid": os.getpid(), "start": psutil.Process().create_time(), "workspace": workspace}
    write_atomic(record, json.dumps(info), 0o600)
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # through the finally below
    last = time.monotonic()
    # The executors of the target types the workspace's runs use (Dask's client: 0.5-1.5 s of
    # imports) are imported at the first idle moment after each request, not before listening:
    # local runs need none of it. In this thread, between requests, so no fork ever happens in
    # the middle of an import (a request that comes meanwhile waits for it, once per type).
    warm_pending = True
    try:
        while True:
            reap_children()
            ready, _, _ = select.select([sock], [], [], 0.2 if warm_pending else 1.0)
            if not ready and warm_pending:
                from . import warm_executors

                warm_executors(workspace)
                for name in WARM_LATER:
                    importlib.import_module(name)
                from .warmstart import warm_modules

                # A workspace running ParallelRunSteps: their drivers are forked from the
                # supervisors this forks, with pandas imported (compute.warmstart).
                warm_modules(workspace)
                foreign_modules()
                warm_pending = False
                continue
            if not ready:
                if time.monotonic() - last > IDLE_S or not _still_serving(workspace, path, mine):
                    return 0
                continue
            conn, _ = sock.accept()
            last = time.monotonic()
            with conn:
                try:
                    pid = _serve_one(conn, sock, supervisor_main)
                except (OSError, ValueError, KeyError, TypeError):
                    continue
                if pid == 0:  # the child, after its supervisor returned
                    os._exit(0)
                warm_pending = True  # a run on a target type not warmed yet, maybe
    finally:
        try:
            if os.stat(path).st_ino == mine:
                os.unlink(path)
                record.unlink()
        except OSError:
            pass


def _still_serving(workspace: str, path: str, mine: int) -> bool:
    try:
        return os.stat(path).st_ino == mine and os.path.exists(os.path.join(workspace, "mlws.json"))
    except OSError:
        return False


def _serve_one(conn: socket.socket, listener: socket.socket, supervisor_main: Any) -> int:
    conn.settimeout(5)
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    if uid != os.getuid():
        return -1
    request = json.loads(_read_line(conn))
    if request.get("warm"):
        return -1  # see poke(): the loop warms at its next idle moment
    args = [str(a) for a in request["args"]]
    module = str(request.get("module") or SUPERVISOR)
    if module not in LAUNCHABLE:
        raise ValueError(f"not a module the launcher starts: {module}")
    env = {str(k): str(v) for k, v in request["env"].items()}
    pid = os.fork()
    if pid:
        if request.get("reply", True):  # else the requester has gone on already
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        return pid
    # The child: a supervisor as if started by the requester, in its own session.
    code = 1
    try:
        conn.close()
        listener.close()
        os.setsid()
        os.umask(int(request["umask"]))
        os.environ.clear()
        os.environ.update(env)
        try:
            os.chdir(request["cwd"])
        except OSError:
            os.chdir("/")
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        import signal

        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        sys.argv = [module, *args]
        if module != SUPERVISOR:
            import importlib

            supervisor_main = importlib.import_module(module).main
        code = supervisor_main(args) or 0
    except BaseException as e:  # noqa: BLE001 - a child must never return into the launcher's loop
        code = 1
        if module == SUPERVISOR and len(args) == 2 and not isinstance(e, SystemExit):
            from .supervisor import failed_to_start

            failed_to_start(args[0], args[1], e)
    finally:
        os._exit(code)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: python -m mlws.compute.launcher WORKSPACE SOCKET", file=sys.stderr)
        sys.exit(2)
    sys.exit(serve(sys.argv[1], sys.argv[2]))


def stop(workspace: str | os.PathLike[str]) -> list[int]:
    """End this user's launchers of ``workspace`` (any code version or settings); their pids.
    The supervisors they started are their own sessions and are not touched."""
    import signal

    import psutil

    ended = []
    try:
        folder = socket_folder()
    except OSError:
        return ended
    for record in folder.glob("l-*.json"):
        try:
            info = json.loads(record.read_text())
            if not os.path.samefile(info["workspace"], workspace):
                continue
            p = psutil.Process(int(info["pid"]))
            if abs(p.create_time() - float(info["start"])) > 1.0:
                continue  # the pid is another process's now
            p.send_signal(signal.SIGTERM)
            ended.append(p.pid)
        except (OSError, ValueError, KeyError, TypeError, psutil.Error):
            continue
    return ended
