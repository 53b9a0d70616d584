"""Warm starts: a local run's script (``python <script>.py ...``) or one of mlws's own run
programs (``python -m <module>`` for a module of :data:`WARM_STARTABLE`: a
``ParallelRunStep``'s driver) runs in a child forked from its supervisor, which has mlws
imported, instead of a fresh interpreter.

How: a supervisor forks, first thing, before it opens its catalog (a process with SQLite open
must not fork a child that uses SQLite: the library's locks and ``-shm`` mapping are per
process), one child that waits on a socket (:func:`start_zygote`). When the run's command can
be forked (:func:`warm_script`, :func:`warm_module`) the supervisor hands it the command,
environment and file descriptors (:func:`prepare`, :func:`go`) and it becomes the script; otherwise it is told
to exit (:func:`dismiss`). It is the supervisor's child, so the exit status, pidfd wake-up and
sub-reaper work as for a started script. For the driver, the workspace's warm launcher imports
its modules (pandas, pyarrow: :func:`warm_modules`, at an idle moment, once the workspace has
run such a step), so the supervisors it forks have them.

Why: a sweep's trial or a short run spends most of its time on the machinery around a tiny
script: a fresh interpreter, ``import mlws`` and the interpreter's exit are ~50 ms of CPU of a
trial's ~90 (bench row 13); a fresh ParallelRunStep driver spends ~0.45 s on its interpreter
and the run context and ~0.6 s importing pandas and pyarrow before it reads a row (row 14g).

What the child keeps of a started script (``compute.script.start_script``): its own session
and process group (cancel and the time limit kill the group), the run's working folder as cwd,
``sys.argv``, ``sys.path[0]``, ``__main__`` (``__file__``, ``__spec__ = None``) as ``python``
sets them, the run's environment (``os.environ`` replaced), stdin from ``/dev/null``, stdout
and stderr appended to ``logs/driver.log``, only the file descriptors it is given (at their
numbers), signal dispositions of a fresh interpreter, a reseeded ``random``, an uncaught
exception reported by ``sys.excepthook`` from the script's own frame on, non-daemon threads
joined and ``atexit`` handlers run at its end, the globals of its ``__main__`` and its own
modules cleared then (a file left open is flushed), the exit code (or ``SIGINT`` for an
uncaught ``KeyboardInterrupt``) as the run's outcome, its pid and start time recorded by the
supervisor. It is named ``mlws-script`` (``/proc/<pid>/comm``, inherited by what it forks)
because its command line is its supervisor's: mlws's sweeps of leftovers must not take it for
a detached mlws process (``reaper.mlws_detached``). ``/proc/<pid>/environ`` shows the
supervisor's environment, not the run's: the sweep by environment marker (used only without a
sub-reaper) does not see it. What differs, by design: the modules mlws imported are imported
already (the standard library's and mlws's own, never a third-party library whose state comes
from its import: see :data:`NEUTRAL`), and every script forked from one launcher has its
string hash seed (``PYTHONHASHSEED``).

The script starts fresh as before when: ``MLWS_WARM_START=0``; there is no ``fork``; the
command's interpreter is not this process's or has options (``python -u``, ``-m`` of another
module, a shell command); the run is distributed or has read-only mounted inputs; this process
has a third-party module beyond :data:`NEUTRAL` imported (a launcher that warmed Dask's client
or pandas); the script's folder has a module named as one imported here (``json.py``); or the
run's environment differs from the supervisor's in a setting read at interpreter start or at
mlws's import (``PYTHON*`` and ``MLWS_*`` variables beyond the run's identity, data paths and
secret channel, ``PYTHONPATH`` beyond mlws's entries, the locale's ``LANG``/``LC_*``, ``TZ``).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from ..reaper import WARM_SCRIPT_NAME

#: Modules whose ``main(argv)`` may run in a child forked from a warm supervisor.
WARM_STARTABLE = ("mlws.pipelines.parallel_driver",)
#: The process name of a warm-started script and of everything it forks.
COMM = WARM_SCRIPT_NAME
#: Variables of the run's environment allowed to differ from the supervisor's (set per run).
PER_RUN = frozenset(
    {
        "MLWS_WORKSPACE",
        "MLWS_RUN_ID",
        "MLWS_DATA_PATHS",
        "MLWS_SECRETS_FDS",
        "MLWS_KEYVAULT_KEY",  # never given to a script: popped from its environment
        "MLWS_USER",  # the run's submitter (lifecycle.USER_ENV), read when used
        "PYTHONUNBUFFERED",  # the child writes through, as with it set
        "MLWS_FS_KINDS",  # catalog.FS_KINDS_ENV: answers keyed by host, device and folder
        "PYTHONPATH",  # compared on its own (see warm_module)
    }
)
#: How far back a workspace's runs make its launcher import a warm-startable module.
RECENT_S = 24 * 3600.0


_STARTED_WARM: list[bool] = []


def started_warm() -> bool:
    """Whether this process is a script forked by :func:`go` (for its log's first line)."""
    return bool(_STARTED_WARM)


def enabled() -> bool:
    """Warm starts are used unless ``MLWS_WARM_START=0`` (or there is no ``fork``)."""
    return os.environ.get("MLWS_WARM_START", "1") != "0" and hasattr(os, "fork")


def warm_module(argv: list[str], env: dict[str, str]) -> str | None:
    """The module of :data:`WARM_STARTABLE` that ``argv`` runs (``<python> -m <module> ...``)
    when it can be forked from this process with ``env`` (see the module docstring); else None."""
    if not enabled() or len(argv) < 3 or argv[1] != "-m" or argv[2] not in WARM_STARTABLE:
        return None
    if not _ZYGOTE and env.get("MLWS_WORKSPACE"):
        from .launcher import poke

        poke(env["MLWS_WORKSPACE"], dict(os.environ))  # so that the next one starts warm
    if os.path.abspath(argv[0]) != os.path.abspath(sys.executable):
        return None
    if not _ZYGOTE or not _imported(argv[2]) or not _same_start(env):
        return None
    return argv[2]


def warm_script(argv: list[str], env: dict[str, str], workdir: Path) -> str | None:
    """The script that ``argv`` runs (``<python> <script>.py ...``, no interpreter options)
    when it can be forked from this process with ``env`` (see the module docstring); else
    None. Besides :func:`warm_module`'s conditions: this process has imported no third-party
    module beyond :data:`NEUTRAL` (a library whose state or settings come from its import,
    such as numpy's random state, must be imported by the script itself), and no module of
    the script's folder has the name of a module imported here (in a fresh interpreter the
    script's own would win)."""
    if not enabled() or len(argv) < 2 or not argv[1].endswith(".py") or argv[1][:1] == "-":
        return None
    if os.path.abspath(argv[0]) != os.path.abspath(sys.executable):
        return None
    if not _ZYGOTE or not _same_start(env) or foreign_modules():
        return None
    script = os.path.realpath(os.path.join(workdir, argv[1]))
    try:
        names = os.listdir(os.path.dirname(script))
    except OSError:
        return None
    if not os.path.isfile(script):
        return None
    folder = os.path.dirname(script)
    for name in names:
        stem, _, ext = name.partition(".")
        if stem in sys.modules and stem != "__main__" and _importable(folder, name, ext):
            return None  # e.g. the script's own `logging.py` (or package `logging/`)
    return script


#: Third-party modules a warm-started script may find imported already: nothing they hold
#: depends on the run (mlws's own, the launcher's process and lock helpers; setuptools'
#: import hook).
NEUTRAL = frozenset({"mlws", "psutil", "filelock", "_distutils_hack"})


def _importable(folder: str, name: str, ext: str) -> bool:
    """Whether ``name`` in ``folder`` is what ``import <stem>`` finds there: a module (source,
    bytecode or extension) or a regular package (a namespace package yields to any other)."""
    if ext:
        return ext in ("py", "pyc") or ext.endswith("so")
    return os.path.isfile(os.path.join(folder, name, "__init__.py"))


#: What :func:`foreign_modules` found of each module it looked at: ``name -> (id of the module
#: object, its third-party top-level name or "")``. A supervisor forked from the launcher
#: inherits what the launcher looked at (it calls :func:`foreign_modules` once its imports are
#: done) and looks only at what it imported since: ~1 ms a run, not ~600 modules' walk.
_SEEN: dict[str, tuple[int, str]] = {}


def foreign_modules() -> list[str]:
    """Third-party top-level modules imported in this process beyond :data:`NEUTRAL`."""
    home = os.path.dirname(os.__file__) + os.sep  # the standard library's folder
    out = set()
    for name, module in list(sys.modules.items()):
        seen = _SEEN.get(name)
        if seen is None or seen[0] != id(module):
            seen = _SEEN[name] = (id(module), _foreign(name, module, home))
        if seen[1]:
            out.add(seen[1])
    return sorted(out)


def _foreign(name: str, module: Any, home: str) -> str:
    """``name``'s top-level name if it is a third-party module's, else ``""``."""
    top = name.partition(".")[0]
    # Built-in and frozen modules have no file; neither do namespace packages (their modules
    # with files count).
    path = getattr(module, "__file__", None)
    if not path or top in NEUTRAL or top[:2] == "__" or top in sys.stdlib_module_names:
        return ""
    if path.startswith(home) and "-packages" not in path[len(home) :]:
        return ""  # a private one of the standard library's (_xxsubinterpreters)
    return top


def _same_start(env: dict[str, str]) -> bool:
    """``env`` agrees with this process's environment in every setting read at interpreter
    start or at mlws's import (``PYTHON*``, ``MLWS_*`` beyond :data:`PER_RUN`, ``PYTHONPATH``
    beyond mlws's entries) and in the locale and time zone."""
    from ..processes import python_path

    if env.get("PYTHONPATH", "") != python_path(os.environ.get("PYTHONPATH")):
        return False
    for name in set(env) | set(os.environ):
        if (
            name.startswith(("PYTHON", "MLWS_", "LC_")) or name in ("LANG", "LANGUAGE", "TZ")
        ) and name not in PER_RUN:
            if env.get(name) != os.environ.get(name):
                return False
    return True


class ForkedScript:
    """The part of ``subprocess.Popen`` a supervisor uses, for a script forked by :func:`go`:
    ``pid``, ``args``, ``returncode``, ``poll()``, ``wait(timeout)``, ``send_signal``,
    ``terminate()``, ``kill()``."""

    def __init__(self, pid: int, args: list[str]) -> None:
        self.pid = pid
        self.args = args
        self.returncode: int | None = None
        self.stdin = self.stdout = self.stderr = None

    def poll(self) -> int | None:
        """Its exit code (negative: the signal that ended it) once it has ended, else None."""
        return self._reap(os.WNOHANG)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for its end; its exit code.

        :raises subprocess.TimeoutExpired: it still runs after ``timeout`` seconds."""
        if timeout is None:
            rc = self._reap(0)
            assert rc is not None
            return rc
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            rc = self.poll()
            if rc is not None:
                return rc
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(min(delay, left))  # Popen.wait's own back-off, without a pidfd
            delay = min(delay * 2, 0.05)

    def send_signal(self, sig: int) -> None:
        """Signal it, unless it has ended and been collected."""
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        """SIGTERM."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL."""
        self.send_signal(signal.SIGKILL)

    def _reap(self, flags: int) -> int | None:
        if self.returncode is not None:
            return self.returncode
        try:
            pid, status = os.waitpid(self.pid, flags)
        except ChildProcessError:  # collected elsewhere (a reaper's waitpid(-1)): unknown end
            self.returncode = 255
            return self.returncode
        if pid == 0:
            return None
        self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


_ZYGOTE: list[tuple[int, socket.socket]] = []


def start_zygote() -> int | None:
    """For a supervisor, before it opens its catalog: fork a child that waits to become the
    run's script (:func:`prepare`, :func:`go`); its pid. A process with SQLite open cannot
    fork a child that uses SQLite (the library's locks and ``-shm`` mapping are per process),
    so the child is made now, from the launcher's state. It exits when this process closes its
    end (:func:`dismiss`, or at exit). None when warm starts are off (or there is no fork).

    In a process that started a zygote server (:func:`start_server`: a trial worker, which
    has its catalog open), the server makes the child, at any time."""
    if _ZYGOTE or not enabled():
        return None
    if _SERVER:
        return _served_zygote()
    child = _fork_child(_be_zygote)
    if child is None:
        return None
    _ZYGOTE.append(child)
    return child[0]


def _fork_child(body: Any) -> tuple[int, socket.socket] | None:
    """Fork a child joined to this process by a socket pair: it runs ``body(its end)`` and
    exits, never returning here; here ``(its pid, our end)``, or None when it cannot fork."""
    mine, its = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        pid = os.fork()
    except OSError:
        mine.close()
        its.close()
        return None
    if pid:
        its.close()
        return pid, mine
    code = 0
    try:
        mine.close()
        body(its)
    except BaseException:  # noqa: BLE001 - the child must never return into its parent's code
        code = 1
    os._exit(code)


def _be_zygote(its: socket.socket) -> NoReturn:
    """The waiting child: the request, then the script (or exit, if it is not needed)."""
    code = 1
    try:
        request, fds, early = _receive(its)
        if request is None:
            code = 0  # not needed: the run's script is not warm-startable
        else:
            # Kept above the descriptors the script is given, for the word to start (go()).
            go = fcntl.fcntl(its.fileno(), fcntl.F_DUPFD, 1000)
            its.close()
            _child(request, fds, go, early)  # never returns
    except BaseException:  # noqa: BLE001 - the child must never return into the supervisor
        code = 1
    os._exit(code)


#: The zygote server of this process (:func:`start_server`): ``(pid, control socket)``.
_SERVER: list[tuple[int, socket.socket]] = []


def start_server() -> int | None:
    """For a long-lived supervisor of many runs in turn (``compute.trials``), before it opens
    its catalog and after it became a sub-reaper: fork a child that stays idle and, for each
    :func:`start_zygote`, forks the waiting child a script is forked from; its pid.

    Why: a supervisor that forked each script itself would share its pages with that child
    again at every fork, and pay a copy-on-write fault on each page it then writes (~2,000 per
    run); the idle server writes nothing, so the supervisor's pages stay its own. Each waiting
    child is forked through a short-lived middle process that exits at once, so the script is
    adopted by the sub-reaper (this process) and is its child, as :class:`ForkedScript` and
    the leftover sweep expect. None when warm starts are off (or there is no fork)."""
    if _SERVER or not enabled():
        return None
    server = _fork_child(_serve_zygotes)
    if server is None:
        return None
    server[1].settimeout(10)
    _SERVER.append(server)
    return server[0]


def server_pid() -> int | None:
    """The pid of this process's zygote server (:func:`start_server`), if it has one."""
    return _SERVER[0][0] if _SERVER else None


def stop_server() -> None:
    """End the zygote server (it exits when its control socket closes), and any waiting child."""
    dismiss()
    while _SERVER:
        pid, sock = _SERVER.pop()
        sock.close()
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _served_zygote() -> int | None:
    pid, control = _SERVER[0]
    mine, its = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        socket.send_fds(control, [b"z"], [its.fileno()])
        data = b""
        while len(data) < 4:
            chunk = control.recv(4 - len(data))
            if not chunk:
                raise OSError("the zygote server is gone")
            data += chunk
        child = struct.unpack("i", data)[0]
    except OSError:
        mine.close()
        stop_server()  # its scripts start fresh from now on
        return None
    finally:
        its.close()
    if child <= 0:
        mine.close()
        return None
    _ZYGOTE.append((child, mine))
    return child


def _serve_zygotes(control: socket.socket) -> None:
    """The zygote server's loop: for each socket it is sent, a waiting child (through a middle
    process, see :func:`start_server`), whose pid goes back once the middle one is reaped (its
    adoption by the sub-reaper is done by then)."""
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(control, 1, 1)
        except OSError:
            return
        if not msg:
            return  # the supervisor closed its end: it ended
        if not fds:
            continue
        r, w = os.pipe()
        try:
            middle = os.fork()
        except OSError:
            os.close(r)
            os.close(w)
            os.close(fds[0])
            control.sendall(struct.pack("i", 0))
            continue
        if middle == 0:
            try:
                os.close(r)
                control.close()
                child = os.fork()
                if child == 0:
                    os.close(w)
                    _be_zygote(socket.socket(fileno=fds[0]))
                os.write(w, struct.pack("i", child))
            finally:
                os._exit(0)
        os.close(w)
        os.close(fds[0])
        with os.fdopen(r, "rb") as answer:
            data = answer.read(4)
        os.waitpid(middle, 0)
        control.sendall(data if len(data) == 4 else struct.pack("i", 0))


def dismiss() -> None:
    """End the waiting child of :func:`start_zygote`, unused, or the one :func:`prepare`
    made ready, never started (they exit on their own, running nothing)."""
    while _ZYGOTE:
        _ZYGOTE.pop()[1].close()
    while _PREPARED:
        _PREPARED.pop()[1].close()


_LOG_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT
#: The child :func:`prepare` made ready: ``(pid, socket, argv)``, started by :func:`go`.
_PREPARED: list[tuple[int, socket.socket, list[str]]] = []


def prepared() -> bool:
    """Whether a child made ready by :func:`prepare` waits for :func:`go`."""
    return bool(_PREPARED)


def go() -> ForkedScript:
    """Start the script of the child :func:`prepare` made ready.

    :raises OSError: nothing was prepared, or the child is gone (start the script fresh)."""
    if not _PREPARED:
        raise OSError("no warm child prepared")
    pid, sock, argv = _PREPARED.pop()
    try:
        sock.sendall(b"g")
    finally:
        sock.close()
    return ForkedScript(pid, argv)


def prepare(
    module: str | None,
    argv: list[str],
    workdir: Path,
    env: dict[str, str],
    tie_to_parent: bool = False,
    pass_fds: tuple[int, ...] = (),
    script: str | None = None,
) -> None:
    """Make the waiting child of :func:`start_zygote` ready to run ``python -m module
    argv[3:]`` (``argv`` as :func:`warm_module` accepted it), or with ``script`` (from
    :func:`warm_script`) ``python argv[1:]``, as ``compute.script.start_script`` would start
    it (see the module docstring): it gets the request and the file descriptors ``pass_fds``,
    at the same numbers, sets itself up (working folder, environment, descriptors, the script
    compiled) and waits for :func:`go`. A run that waits for an older sibling is prepared
    meanwhile (``compute.local``), so it starts the moment it may.

    :raises OSError: there is no waiting child, or it is gone (start the script fresh).
    """
    if not _ZYGOTE:
        raise OSError("no warm child waiting")
    # The log exists from now on, as when the supervisor opens it for a fresh interpreter: a
    # script killed before the child got this far still leaves a (empty) log to store.
    os.close(os.open(workdir / "logs" / "driver.log", _LOG_FLAGS, 0o666))
    pid, sock = _ZYGOTE.pop()
    request = {
        "module": module,
        "script": script,
        "argv": argv,
        "workdir": str(workdir),
        "env": env,
        "tie": tie_to_parent,
        "fds": list(pass_fds),
    }
    try:
        data = json.dumps(request).encode() + b"\n"
        socket.send_fds(sock, [data[:4096]], list(pass_fds))
        if len(data) > 4096:
            sock.sendall(data[4096:])
        # Ready: its own session and process group from now on, so a cancel right after go()
        # reaches it (os.killpg), as it reaches a script Popen started in a new session.
        if sock.recv(1) != b"r":
            raise OSError("the warm child is gone")
    except OSError:
        sock.close()
        raise
    _PREPARED.append((pid, sock, argv))


def _receive(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int], bytes]:
    """The request (one JSON line) and its descriptors, and what came after the line: the
    word to start may come in the same read (``compute.script.start_script`` sends both at once). None when the
    supervisor closed its end before a whole request came (not needed)."""
    data, fds, _flags, _addr = socket.recv_fds(sock, 4096, 16)
    while data and b"\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    line, newline, rest = data.partition(b"\n")
    if not newline:
        for fd in fds:
            os.close(fd)
        return None, [], b""
    return json.loads(line), fds, rest


def _child(request: dict[str, Any], got: list[int], go: int, early: bytes = b"") -> None:
    code = 1
    try:
        module, argv = request["module"], request["argv"]
        workdir, env = Path(request["workdir"]), request["env"]
        os.setsid()
        _name(COMM)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as a fresh interpreter has it
        if request["tie"]:
            from ..processes import die_with_parent

            die_with_parent()
        log = os.open(workdir / "logs" / "driver.log", _LOG_FLAGS, 0o666)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        # The descriptors it was given, at the numbers its environment names (via high ones).
        wanted = [int(f) for f in request["fds"]]
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 1000) for fd in got]
        keep = {0, 1, 2, go, *high}
        for fd in [int(f) for f in os.listdir("/proc/self/fd")]:
            if fd not in keep:
                try:
                    os.close(fd)  # what Popen's close_fds does
                except OSError:
                    pass
        for fd, target in zip(high, wanted, strict=True):
            os.dup2(fd, target, inheritable=True)
            os.close(fd)
        os.chdir(workdir)
        os.environ.clear()
        os.environ.update(env)
        import atexit
        import io
        import threading

        script = request.get("script")
        # The atexit handlers here are the ones the launcher's imports registered (mlws's metrics
        # flush, logging's shutdown, filelock's release): those the same imports register in a
        # fresh interpreter, and what a run's last metrics need. Neither the launcher nor a
        # supervisor registers one of its own before this child is forked (the first thing a
        # supervisor does). They were cleared for the ParallelRunStep driver: its last metrics,
        # logged after the flusher's last pass, were lost (mini_batches_total, in CI).
        sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
        sys.stdout = sys.__stdout__ = io.TextIOWrapper(
            io.FileIO(1, "w", closefd=False), write_through=True
        )
        sys.stderr = sys.__stderr__ = io.TextIOWrapper(
            io.FileIO(2, "w", closefd=False), write_through=True, errors="backslashreplace"
        )
        from ..processes import python_path

        # sys.path as `python -m` (or `python script.py`) has it: the working folder (the
        # script's own), PYTHONPATH, then the rest.
        mine = [p for p in python_path(os.environ.get("PYTHONPATH")).split(os.pathsep) if p]
        rest = [p for p in sys.path[1:] if p not in mine]
        import importlib

        _STARTED_WARM.append(True)
        interrupted = False
        if script is not None:
            sys.path[:] = [os.path.dirname(script), *mine, *rest]
            sys.argv = list(argv[1:])
            importlib.invalidate_caches()
            before = set(sys.modules)
            import gc

            # What the launcher made stays out of the script's collections (and its pages
            # unwritten): a collection at the end then costs what the script made, not ~20 ms.
            gc.freeze()
            main, compiled = _compile_script(os.path.abspath(argv[1]))
            os.write(go, b"r")
            _wait_for_go(go, early)
            code, interrupted = _run_script(main, compiled)
        else:
            sys.path[:] = [str(workdir), *mine, *rest]
            os.write(go, b"r")
            _wait_for_go(go, early)
            target = importlib.import_module(module)
            sys.argv = [str(getattr(target, "__file__", module)), *argv[3:]]
            try:
                code = target.main(argv[3:]) or 0
            except SystemExit as e:
                code = _exit_code(e.code)
            except KeyboardInterrupt:
                code = 128 + signal.SIGINT
        try:
            threading._shutdown()  # type: ignore[attr-defined]  # non-daemon threads, as at exit
        except Exception:  # noqa: BLE001
            pass
        atexit._run_exitfuncs()
        if script is not None:
            _finalize(before, os.path.dirname(script))
            if interrupted:  # as a fresh interpreter ends on an uncaught KeyboardInterrupt
                for stream in (sys.stdout, sys.stderr):
                    stream.flush()
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGINT)
    except BaseException:  # noqa: BLE001 - the child must never return into the supervisor
        try:
            import traceback

            traceback.print_exc()
        except BaseException:  # noqa: BLE001
            pass
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001
                pass
        os._exit(code)


def _wait_for_go(go: int, early: bytes) -> None:
    """Block until the supervisor says start (:func:`go`; ``early``: the word came with the
    request); exit, running nothing, if it closed its end instead (the run was canceled, or
    is started otherwise)."""
    word = early[:1]
    try:
        word = word or os.read(go, 1)
    except OSError:
        word = b""
    os.close(go)
    if word != b"g":
        os._exit(0)


def _compile_script(path: str) -> tuple[Any, Any]:
    """The script at ``path`` as ``python path`` makes it: its ``__main__`` module, set in
    ``sys.modules``, and its code; or the error compiling raised (a ``SyntaxError``, an
    unreadable file), reported when the script is run."""
    import builtins
    import importlib.machinery
    import io
    import types

    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__cached__ = None
    main.__builtins__ = builtins
    main.__loader__ = importlib.machinery.SourceFileLoader("__main__", path)
    main.__spec__ = None
    sys.modules["__main__"] = main
    try:
        with io.open_code(path) as f:
            return main, compile(f.read(), path, "exec", dont_inherit=True)
    except Exception as e:  # noqa: BLE001 - the script's error, reported as it runs
        return main, e


def _run_script(main: Any, code: Any) -> tuple[int, bool]:
    """Run the script compiled by :func:`_compile_script` as ``python path`` would: its exit
    code, and whether it ended on an uncaught ``KeyboardInterrupt``. An uncaught exception
    goes to ``sys.excepthook`` from the script's own frame on (nothing of this module's)."""
    try:
        if isinstance(code, BaseException):
            raise code.with_traceback(None)
        exec(code, main.__dict__)
    except SystemExit as e:
        return _exit_code(e.code), False
    except BaseException as e:  # noqa: BLE001 - reported as the interpreter would
        tb = e.__traceback__.tb_next if e.__traceback__ is not None else None
        sys.excepthook(type(e), e.with_traceback(tb), tb)
        return 1, isinstance(e, KeyboardInterrupt)
    return 0, False


def _finalize(before: set[str], folder: str) -> None:
    """What an interpreter's exit does to what the script made, in part: the globals of its
    ``__main__`` and of its own modules (those in its ``folder``, imported since ``before``)
    are cleared and the garbage collected, so a file it left open is flushed and closed.
    Third-party modules it imported are left alone (their teardown is theirs to get wrong)."""
    import gc

    try:
        mains = [sys.modules.get("__main__")]
        own = [
            m
            for name, m in list(sys.modules.items())
            if name not in before
            and str(getattr(m, "__file__", None) or "").startswith(folder + os.sep)
        ]
        for m in [*mains, *reversed(own)]:
            if m is not None:
                m.__dict__.clear()
        gc.collect()
    except BaseException:  # noqa: BLE001 - as "Exception ignored" at a real exit
        pass


def _exit_code(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


def _name(name: bytes) -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(15, name, 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def _imported(module: str) -> bool:
    """``module`` and its ``WARM`` modules are imported in this process."""
    found = sys.modules.get(module)
    return found is not None and all(m in sys.modules for m in getattr(found, "WARM", ()))


def warm_modules(workspace: str | os.PathLike[str]) -> list[str]:
    """For a process that forks supervisors (the launcher): the modules of
    :data:`WARM_STARTABLE` that runs of ``workspace`` created in the last :data:`RECENT_S`
    ran, with their ``WARM`` modules, to import now (best effort: none when the workspace
    cannot be read)."""
    from ..errors import MlwsError
    from ..workspace import Workspace

    wanted: list[str] = []
    try:
        with Workspace(workspace) as ws:
            for module in WARM_STARTABLE:
                if _imported(module):
                    continue
                # The newest runs only: this runs at a launcher's idle moments.
                hit = ws.catalog.scalar(
                    "SELECT 1 FROM (SELECT created, definition FROM runs ORDER BY seq DESC"
                    " LIMIT 200) WHERE created > ? AND definition LIKE ? LIMIT 1",
                    (time.time() - RECENT_S, f'%"{module}"%'),
                )
                if hit:
                    wanted.append(module)
    except (MlwsError, OSError):
        return []
    import importlib

    out: list[str] = []
    for module in wanted:
        try:
            imported = importlib.import_module(module)
            for name in getattr(imported, "WARM", ()):
                importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a module that cannot be imported stays cold
            continue
        out.append(module)
    return out
