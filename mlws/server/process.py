"""The ``mlws serve`` process: checks before it binds, the bound socket, its state file, a
clean stop, and starting it detached.

One process owns the workspace: it is always ``python -m mlws.server <workspace> ...`` (the
CLI checks the options, then starts or becomes that process), so ``mlws serve stop`` can tell
it from any other by its command line and start time before signalling it. Its pid, start time
and address are kept in the per-user state ``~/.cache/mlws/servers/<folder key>.json`` while it
serves. SIGTERM (and Ctrl-C) stop it cleanly: uvicorn stops accepting, lets in-flight requests
finish, then the workspace is closed (buffered metrics written) and the state file removed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..dirs import user_cache_dir, write_atomic
from ..errors import ServerError

if TYPE_CHECKING:
    from ..workspace import Workspace

#: The module a server process runs; ``mlws serve stop`` signals only a process running it.
MODULE = "mlws.server"
DEFAULT_PORT = 8787
#: How long ``serve stop`` waits for in-flight requests to finish after SIGTERM.
STOP_TIMEOUT_S = 30.0
#: How long ``serve --detach`` waits for the server to listen.
START_TIMEOUT_S = 30.0


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost`` (reachable from this machine only)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_options(
    host: str, port: int, certfile: str | None, keyfile: str | None, insecure: bool
) -> None:
    """Refuse what must not start: an address beyond loopback without TLS or ``insecure``, half
    a TLS pair, a missing certificate file, a bad port.

    :raises ServerError: one line saying what to give instead.
    """
    if not 0 <= port <= 65535:
        raise ServerError(f"--port must be 0-65535, got {port}")
    if (certfile is None) != (keyfile is None):
        raise ServerError("TLS needs both --certfile and --keyfile")
    for f in (certfile, keyfile):
        if f is not None and not os.path.isfile(f):
            raise ServerError(f"no such file: {f}")
    if not is_loopback(host) and certfile is None and not insecure:
        raise ServerError(
            f"refusing to serve on {host} without TLS: tokens would cross the network in clear "
            "text; give --certfile and --keyfile, or --insecure on a network you trust"
        )


def state_file(ws: Workspace) -> Path:
    """Where the running server of ``ws`` records its pid and address (per user and folder)."""
    return user_cache_dir() / "servers" / f"{ws.folder_key}.json"


def running(ws: Workspace) -> dict[str, Any] | None:
    """The state of this workspace's live server (``pid``, ``start``, ``url``, ...), or None;
    a state file left by a server that died is removed."""
    path = state_file(ws)
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(state, dict) and _is_server(ws, state.get("pid"), state.get("start")):
        return state
    # A server that died without cleaning up (kill -9, a reboot), or a pid reused since.
    path.unlink(missing_ok=True)
    return None


def _is_server(ws: Workspace, pid: Any, start: Any) -> bool:
    from ..processes import owned_process

    if not isinstance(pid, int) or not owned_process(ws, pid, start):
        return False
    import psutil

    try:
        args = psutil.Process(pid).cmdline()
    except (psutil.Error, OSError):
        return False
    return "-m" in args and args[args.index("-m") + 1 : args.index("-m") + 2] == [MODULE]


def server_argv(
    ws_path: str,
    *,
    host: str,
    port: int,
    certfile: str | None,
    keyfile: str | None,
    insecure: bool,
    max_body: int,
    run_lease_s: float | None = None,
) -> list[str]:
    """The arguments of ``python -m mlws.server`` for these options."""
    argv = [
        os.path.abspath(ws_path),
        "--host",
        host,
        "--port",
        str(port),
        "--max-body",
        str(max_body),
    ]
    if certfile:
        argv += [
            "--certfile",
            os.path.abspath(certfile),
            "--keyfile",
            os.path.abspath(str(keyfile)),
        ]
    if insecure:
        argv.append("--insecure")
    if run_lease_s is not None:
        argv += ["--run-lease-s", repr(float(run_lease_s))]
    return argv


def exec_server(argv: list[str]) -> None:
    """Become the server process (``os.execve``: same pid, the server's command line)."""
    from ..processes import python_path

    env = dict(os.environ)
    env["PYTHONPATH"] = python_path(env.get("PYTHONPATH"))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", MODULE, *argv], env)


def start_detached_server(ws: Workspace, argv: list[str]) -> dict[str, Any]:
    """Start the server in the background (surviving this process) and wait until it listens;
    returns its state. :raises ServerError: it exited first (its log's last line says why)."""
    from ..processes import start_detached

    log_path = state_file(ws).with_suffix(".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = start_detached(MODULE, *argv, log=log, reap=False)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        state = running(ws)
        if state is not None and state.get("pid") == proc.pid:
            return state
        if proc.poll() is not None:
            lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
            last = lines[-1].removeprefix("Error: ") if lines else ""
            raise ServerError(last or f"the server exited with status {proc.returncode}")
        time.sleep(0.05)
    raise ServerError(
        f"the server (pid {proc.pid}) did not start listening in {START_TIMEOUT_S:.0f} s; see {log_path}"
    )


def stop(ws: Workspace, timeout: float = STOP_TIMEOUT_S) -> dict[str, Any]:
    """Stop this workspace's server (SIGTERM: in-flight requests finish) and wait for it to end;
    returns the state it had.

    :raises ServerError: no server of this workspace runs, or it did not end in ``timeout``.
    """
    import psutil

    state = running(ws)
    if state is None:
        raise ServerError(f"no server is running for the workspace at {ws.path}")
    pid = int(state["pid"])
    try:
        proc = psutil.Process(pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        raise ServerError(f"the server (pid {pid}) did not stop within {timeout:.0f} s") from None
    state_file(ws).unlink(missing_ok=True)
    return state


#: The lock a server holds for its whole life (its open file descriptor, never closed).
_held: list[int] = []


def _hold_server_lock(ws: Workspace) -> None:
    """Take ``locks/server.lock`` of the workspace for this process's life: two servers of one
    workspace (two users, or two starts racing past the state-file check) would each think
    they own it. The kernel drops the lock when the process ends, however it ends."""
    import fcntl

    fd = os.open(ws.path / "locks" / "server.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ServerError(
            "another server already serves this workspace (its lock locks/server.lock is held, "
            "maybe by another user); stop that one first"
        ) from None
    _held.append(fd)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Inherited by accepted sockets: no Nagle + delayed-ACK stall on keep-alive clients (a
    # ~40 ms floor per request was measured without it, see TESTING.md).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ServerError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(1024)
    return sock


def serve(
    ws_path: str,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    certfile: str | None = None,
    keyfile: str | None = None,
    insecure: bool = False,
    max_body: int | None = None,
    run_lease_s: float | None = None,
) -> None:
    """Serve the workspace at ``ws_path`` until SIGTERM or Ctrl-C (this process's main loop).

    Prints ``Serving <workspace> at <url>`` once it listens (``--port 0``: the port chosen).
    ``run_lease_s``: how long a run created over HTTP lives without hearing from its client
    (see :mod:`.leases`).

    :raises ServerError: bad options, a server already running, the port taken.
    """
    import uvicorn

    from ..processes import process_start_time
    from ..workspace import Workspace
    from .app import DEFAULT_MAX_BODY, build_app
    from .leases import lease_seconds

    check_options(host, port, certfile, keyfile, insecure)
    lease = lease_seconds(run_lease_s)
    ws = Workspace(ws_path)
    try:
        other = running(ws)
        if other is not None:
            raise ServerError(
                f"a server already serves this workspace at {other['url']} (pid {other['pid']}); "
                "stop it with 'mlws serve stop'"
            )
        _hold_server_lock(ws)
        sock = _bind(host, port)
    except BaseException:
        ws.close()
        raise
    scheme = "https" if certfile else "http"
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"{scheme}://{shown}:{bound}"
    state = {
        "pid": os.getpid(),
        "start": process_start_time(os.getpid()),
        "host": host,
        "port": bound,
        "url": url,
        "workspace": str(ws.path),
        "started": time.time(),
    }
    path = state_file(ws)
    path.parent.mkdir(parents=True, exist_ok=True)
    early: list[int] = []

    def started() -> None:
        # Runs once uvicorn handles SIGTERM/SIGINT itself: only now is the server announced
        # (state file, the "Serving" line), so a stop sent as soon as it is seen is never lost.
        if early:  # a signal came before uvicorn's handlers: stop right after starting
            server.should_exit = True
        write_atomic(path, json.dumps(state, indent=2) + "\n", 0o600)
        print(f"Serving workspace {ws.name!r} at {url} (pid {os.getpid()})", flush=True)

    def shutdown() -> None:
        ws.close()

    app = build_app(
        ws,
        max_body=max_body or DEFAULT_MAX_BODY,
        on_startup=started,
        on_shutdown=shutdown,
        run_lease_s=lease,
        stopping=lambda: server.should_exit,  # open studio event streams end when a stop begins
    )
    config = uvicorn.Config(
        app,
        lifespan="on",
        access_log=False,
        log_level="warning",
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        timeout_graceful_shutdown=int(STOP_TIMEOUT_S),
    )
    server = uvicorn.Server(config)
    # uvicorn stops gracefully on SIGTERM/SIGINT, then re-raises the signal to the handler that
    # was there before it: one that only notes it, so the process ends with status 0 after
    # cleaning up (Python's own SIGINT handler would end a Ctrl-C'd server with a traceback),
    # and a signal that comes before uvicorn's handlers are in place still stops it.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _f: early.append(signum))
    try:
        server.run(sockets=[sock])
    finally:
        ws.close()
        try:
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
        except (OSError, ValueError):
            pass
    print("Stopped.", flush=True)
