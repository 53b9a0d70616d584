"""The offline buffer of a remote workspace's client: writes of a run made while its server was
away, on disk, delivered in order when it answers again.

Layout: ``user_cache_dir()/remote-spool/<server key>/`` holds ``server.json`` (the URL) and a
folder per run, ``<run id>/<number>.json``, one request per file (method, path, JSON body),
numbered in the order they were made; the file contents an upload needs are copied into
``<run id>/blobs/`` (named by hash) and sent, those the server lacks, before their request. Metric batches carry a ``batchId``, so a batch sent
again after a crash between the server's answer and the file's removal can be recognised.
Delivery holds a file lock per run folder, so the run's own process and ``mlws remote sync``
never send one request twice at the same time. The whole spool is bounded (``MLWS_SPOOL_MB``,
default 512): when full, a write is refused with :class:`~mlws.errors.SpoolFull` — never
dropped silently.

A request the server refuses when it is delivered (a run failed meanwhile as ``ClientLost``,
a property conflict) is moved to ``<run id>/rejected/`` with a warning on stderr: it cannot be
delivered, and must not block the requests after it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..dirs import user_cache_dir, write_atomic
from ..errors import MlwsError, ServerUnreachable, SpoolFull
from .backend import server_key

if TYPE_CHECKING:
    from .client import RemoteClient

#: The bound of the spool on this machine, in MB.
SPOOL_MB_ENV = "MLWS_SPOOL_MB"
DEFAULT_SPOOL_MB = 512

_size_lock = threading.Lock()


def spool_root() -> Path:
    """Where every server's spool lives on this machine."""
    return user_cache_dir() / "remote-spool"


def spool_limit() -> int:
    """The spool's bound in bytes (``MLWS_SPOOL_MB``)."""
    try:
        return int(float(os.environ.get(SPOOL_MB_ENV, DEFAULT_SPOOL_MB)) * 1024 * 1024)
    except ValueError:
        return DEFAULT_SPOOL_MB * 1024 * 1024


def spool_size() -> int:
    """Bytes held by the spool of every server on this machine now."""
    total = 0
    root = spool_root()
    if root.is_dir():
        for p in root.rglob("*"):
            try:
                total += p.stat().st_size
            except OSError:
                pass
    return total


class Spool:
    """The spooled requests of one run of one server, oldest first."""

    def __init__(self, url: str, run_id: str) -> None:
        self.url = url
        self.server_dir = spool_root() / server_key(url)
        self.dir = self.server_dir / run_id
        self.run_id = run_id
        self._lock = threading.Lock()
        self._next: int | None = None

    def entries(self) -> list[Path]:
        """The spooled request files, in the order they were made."""
        try:
            return sorted(p for p in self.dir.iterdir() if p.suffix == ".json")
        except FileNotFoundError:
            return []

    def __len__(self) -> int:
        return len(self.entries())

    def append(
        self, method: str, path: str, body: Any, blobs: dict[str, str | bytes] | None = None
    ) -> Path:
        """Keep one request for later, with copies of the ``blobs`` it needs sent first
        (``{hash: file path or bytes}``).

        :raises SpoolFull: the spool reached ``MLWS_SPOOL_MB`` (nothing is written)."""
        request = {"method": method, "path": path, "body": body, "blobs": sorted(blobs or ())}
        data = json.dumps(request, default=str).encode()
        with _size_lock:
            limit = spool_limit()
            needed = len(data) + sum(
                len(src) if isinstance(src, bytes) else os.stat(src).st_size
                for src in (blobs or {}).values()
            )
            if spool_size() + needed > limit:
                raise SpoolFull(
                    f"the offline buffer for {self.url} is full ({limit // (1024 * 1024)} MB in"
                    f" {spool_root()}): writes are refused until the server answers again (or"
                    f" 'mlws remote sync' delivers them); raise {SPOOL_MB_ENV} to keep more"
                )
            with self._lock:
                if self._next is None:
                    self.dir.mkdir(parents=True, exist_ok=True)
                    marker = self.server_dir / "server.json"
                    if not marker.exists():
                        write_atomic(marker, json.dumps({"url": self.url}) + "\n", 0o600)
                    have = self.entries()
                    self._next = int(have[-1].stem) + 1 if have else 1
                # Made again if a delivery (mlws remote sync) removed it meanwhile.
                self.dir.mkdir(parents=True, exist_ok=True)
                for digest, src in (blobs or {}).items():
                    self._keep_blob(digest, src)
                target = self.dir / f"{self._next:012d}.json"
                self._next += 1
                write_atomic(target, data, 0o600)
        return target

    def _blob_path(self, digest: str) -> Path:
        from ..manifests import check_hash

        return self.dir / "blobs" / check_hash(digest).replace(":", "-")

    def _keep_blob(self, digest: str, src: str | bytes) -> None:
        target = self._blob_path(digest)
        if target.exists():
            return
        target.parent.mkdir(exist_ok=True)
        write_atomic(target, src if isinstance(src, bytes) else Path(src).read_bytes(), 0o600)

    def deliver(self, client: RemoteClient, retry_s: float = 0.5) -> bool:
        """Send the spooled requests in order, each removed once the server acknowledged it;
        True when the spool is empty, False when the server is still away (or another process
        is delivering it now)."""
        if not self.dir.is_dir():
            return True
        from filelock import FileLock, Timeout

        try:
            with FileLock(str(self.dir) + ".lock", timeout=0):
                for entry in self.entries():
                    try:
                        req = json.loads(entry.read_bytes())
                    except (OSError, ValueError):
                        self._reject(entry, "unreadable")
                        continue
                    try:
                        blobs = {d: str(self._blob_path(d)) for d in req.get("blobs") or ()}
                        if blobs:
                            from .backend import send_blobs

                            send_blobs(client, blobs, retry_s=retry_s)
                        client.request(req["method"], req["path"], req["body"], retry_s=retry_s)
                    except ServerUnreachable:
                        return False
                    except MlwsError as e:
                        self._reject(entry, str(e))
                        continue
                    entry.unlink()
        except Timeout:
            return False
        try:
            if not self.entries():
                shutil.rmtree(self.dir / "blobs", ignore_errors=True)
            self.dir.rmdir()
            self._next = None
        except OSError:
            pass  # rejected requests stay, for the user to see
        return not self.entries()

    def _reject(self, entry: Path, why: str) -> None:
        bad = self.dir / "rejected"
        bad.mkdir(exist_ok=True)
        os.replace(entry, bad / entry.name)
        print(
            f"Warning: the server {self.url} refused a buffered write of run {self.run_id}"
            f" ({why}); it is kept in {bad}",
            file=sys.stderr,
        )


def pending_runs() -> list[tuple[str, str]]:
    """``(server URL, run id)`` of every run with spooled requests on this machine."""
    out = []
    root = spool_root()
    if not root.is_dir():
        return out
    for server in sorted(root.iterdir()):
        try:
            url = json.loads((server / "server.json").read_text())["url"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for run in sorted(server.iterdir()):
            if run.is_dir() and any(p.suffix == ".json" for p in run.iterdir()):
                out.append((url, run.name))
    return out


def sync(progress: Any = None) -> dict[str, int]:
    """Deliver every spooled request on this machine to its server (``mlws remote sync``);
    returns ``{"delivered": runs emptied, "waiting": runs whose server is still away}``.
    ``progress(url, run_id, done)`` is called per run."""
    from .client import RemoteClient

    done = waiting = 0
    clients: dict[str, RemoteClient] = {}
    for url, run_id in pending_runs():
        client = clients.setdefault(url, RemoteClient(url))
        ok = Spool(url, run_id).deliver(client, retry_s=2.0)
        done += ok
        waiting += not ok
        if progress is not None:
            progress(url, run_id, ok)
    return {"delivered": done, "waiting": waiting}
