"""Serving the studio on uvicorn: in the foreground (``mlws studio``) or on a background thread
(tests, notebooks). The socket is bound here, before uvicorn starts, so port 0 (any free port)
gives a URL that can be printed at once."""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from ..errors import UserErrorException

if TYPE_CHECKING:
    from ..workspace import Workspace


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free one).

    :raises UserErrorException: the address cannot be bound (in use, not this machine's).
    """
    if not host.strip():
        # socket.bind reads "" as every interface: never what an empty --host meant.
        raise UserErrorException("--host needs an address, e.g. 127.0.0.1")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as e:
        sock.close()
        reason = getattr(e, "strerror", None) or str(e)
        raise UserErrorException(f"cannot listen on {host}:{port}: {reason}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def is_loopback(sock: socket.socket) -> bool:
    """Whether a bound socket answers this machine only."""
    import ipaddress

    return ipaddress.ip_address(sock.getsockname()[0]).is_loopback


def url_of(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class StudioServer:
    """The studio of a workspace served by uvicorn on a socket bound at construction, without
    sign-in, so on a loopback address only.

    :raises UserErrorException: the address cannot be bound, or is not a loopback one.
    """

    def __init__(self, ws: Workspace, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        from .app import studio_app

        self.sock = bind(host, port)
        if not is_loopback(self.sock):
            # No sign-in here: anyone who could reach the port could read every run and file.
            self.sock.close()
            raise UserErrorException(
                f"mlws studio has no sign-in, so it serves this machine only: use a loopback "
                f"--host such as 127.0.0.1, not {host}; a team's studio is mlws serve "
                "(its users sign in with their tokens)"
            )
        #: Where the studio answers, e.g. ``http://127.0.0.1:8765``.
        self.url = url_of(self.sock)
        config = uvicorn.Config(
            # Open event streams end as soon as a shutdown begins (uvicorn sets should_exit).
            studio_app(ws, stopping=lambda: self.server.should_exit),
            log_level="warning",
            # Open event streams end with their run; on shutdown they get this long.
            timeout_graceful_shutdown=2,
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def serve_forever(self) -> None:
        """Serve in this thread until SIGINT/SIGTERM; either ends it cleanly (exit status 0)."""
        import signal

        # uvicorn shuts down on the signal, then re-raises it to the handler that was there
        # before its own: this one only asks it to stop, so SIGTERM ends the command with 0
        # (not -15) and Ctrl-C with no traceback, and a signal that comes before uvicorn's
        # handlers are in place still stops it once it has started.
        def stop(_signum: int, _frame: Any) -> None:
            self.server.should_exit = True

        old = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.server.run(sockets=[self.sock])
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def start(self, timeout: float = 10.0) -> StudioServer:
        """Serve on a background thread; return once it accepts connections.

        :raises UserErrorException: it did not start within ``timeout`` seconds.
        """
        # A background thread cannot install signal handlers; the owner calls stop().
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise UserErrorException(f"the studio did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self.sock.close()

    def __enter__(self) -> StudioServer:
        return self.start()

    def __exit__(self, *_exc: Any) -> None:
        self.stop()
