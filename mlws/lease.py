"""The writer lease: one writing machine at a time on a workspace in a shared (network) folder.

Why it exists (measured on two sshfs mounts of one folder, i.e. two machines): ``flock``, POSIX
locks and SQLite's own locks do not cross the mounts, and each client caches pages, attributes
and folder listings. Writers on two machines corrupted the catalog every time; a *reader* on the
second machine "recovered" the first one's live journal and destroyed its writes. Within one
machine (one mount) everything held. So one machine writes; the others only read, through
connections that can neither write nor roll back a journal (:mod:`mlws.catalog`).

What crosses the mounts reliably (checked on sshfs and the basis of this design): exclusive
creation by ``os.link`` (and ``mkdir``), fresh negative look-ups (a file another machine just
created is seen at once), and file *contents* read by ``open`` + ``read``. What does not:
folder listings and ``stat`` results (mtimes, sizes, deleted files) stay cached for seconds.
So nothing here lists a folder or trusts an mtime:

- ``locks/writer/<generation>.json`` — the holder (machine, user, pid, since) of generation N,
  created exclusively with ``os.link``: of machines taking a generation at once, one wins.
- ``locks/writer/<generation>.beat`` — the holder's heartbeat: its wall-clock time, rewritten
  by every writing process of the holder every :data:`HEARTBEAT_S` (temp file + rename).
- ``locks/writer/current`` — a hint of the newest generation; readers probe past it, since its
  writer may have died before updating it.

A machine whose heartbeat is older than :data:`STALE_S` (by the reader's clock: machines
sharing a folder are assumed to keep time with NTP) — or whose boot id changed — has lost the
lease, and another machine may take it by creating generation N+1. Every write transaction of the
holder checks, just before ``COMMIT``, that generation N+1 does not exist; a holder that was
frozen (a suspended laptop) and wakes after a takeover gets :class:`LeaseLost` and writes nothing.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .dirs import write_atomic
from .errors import LeaseLost, WriterLeaseHeld
from .machine import Machine, process_user, this_machine


def _env_float(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, ""))
        return value if value > 0 else default
    except ValueError:
        return default


#: A holder whose last heartbeat is older than this has lost the lease.
STALE_S = _env_float("MLWS_LEASE_STALE_S", 60.0)
#: How often a writing process of the holder refreshes the heartbeat.
HEARTBEAT_S = _env_float("MLWS_LEASE_HEARTBEAT_S", min(10.0, STALE_S / 4))
#: How long a machine that takes the lease over from another waits before its first write.
SETTLE_S = _env_float("MLWS_LEASE_SETTLE_S", 2.0)
_WIDTH = 12


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) generation ``generation`` of a workspace's writer lease."""

    generation: int
    machine: Machine
    user: str
    pid: int
    since: float
    beat: float | None = None
    released: bool = False

    def describe(self) -> str:
        """The holder in words for error messages: machine, user, pid, since when and how long ago
        it last wrote."""
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        ago = (
            ""
            if self.beat is None
            else f", last active {max(0, time.time() - self.beat):.0f} s ago"
        )
        return (
            f"machine {self.machine.hostname!r} (user {self.user}, pid {self.pid}) since "
            f"{since}{ago}"
        )


class WriterLease:
    """The writer lease of the workspace whose lock folder is ``locks_dir``."""

    def __init__(self, locks_dir: Path, workspace_name: str = "") -> None:
        self.dir = Path(locks_dir) / "writer"
        self.workspace_name = workspace_name
        # Re-entrant: acquire() checks (and so beats) while it holds it.
        self._lock = threading.RLock()
        self.generation: int | None = None  # the generation this process knows it holds
        self._last_beat = 0.0
        self._thread: threading.Thread | None = None

    # -- files ------------------------------------------------------------------------------
    def _record(self, gen: int) -> Path:
        return self.dir / f"{gen:0{_WIDTH}d}.json"

    def _beat_file(self, gen: int) -> Path:
        return self.dir / f"{gen:0{_WIDTH}d}.beat"

    def _read_json(self, path: Path) -> dict[str, Any] | None:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            return data if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None

    def _newest(self) -> int:
        """The newest generation that exists: from the hint, then probing upwards (fresh
        negative look-ups, unlike folder listings, cross the mounts)."""
        gen = 0
        try:
            with open(self.dir / "current", encoding="ascii") as f:
                gen = max(0, int(f.read().strip() or 0))
        except (OSError, ValueError):
            gen = 0
        while gen > 0 and not os.path.exists(self._record(gen)):
            gen -= 1  # a hint from a damaged or restored folder: walk back to a real record
        while os.path.exists(self._record(gen + 1)):
            gen += 1
        return gen

    def holder(self) -> Holder | None:
        """The current holder (possibly stale or released), or None when no machine ever wrote."""
        gen = self._newest()
        if gen == 0:
            return None
        rec = self._read_json(self._record(gen)) or {}
        beat = self._read_json(self._beat_file(gen)) or {}
        return Holder(
            generation=gen,
            machine=Machine.from_dict(rec.get("machine") or {}),
            user=str(rec.get("user", "?")),
            pid=int(rec.get("pid", 0) or 0),
            since=float(rec.get("since", 0) or 0),
            beat=float(beat["time"]) if isinstance(beat.get("time"), (int, float)) else None,
            released=bool(beat.get("released")),
        )

    def _is_free(self, h: Holder, me: Machine) -> bool:
        if h.released:
            return True
        if h.machine.same_machine(me):
            return not h.machine.same_boot(me)  # this machine rebooted: no old process lives
        last = h.beat if h.beat is not None else h.since
        return time.time() - last > STALE_S

    # -- taking and keeping -------------------------------------------------------------------
    def acquire(self) -> int:
        """Hold the lease for this machine (a no-op while it does); returns the generation.

        :raises WriterLeaseHeld: another machine holds a live lease.
        """
        with self._lock:
            if self.generation is not None:
                self.check()
                return self.generation
            me = this_machine()
            self.dir.mkdir(parents=True, exist_ok=True)
            for _ in range(100):
                gen = self._newest()
                if gen:
                    h = self.holder()
                    assert h is not None
                    if h.generation != gen:
                        continue  # taken meanwhile: look again
                    if h.machine.same_boot(me) and not h.released:
                        self._hold(gen)
                        return gen
                    if not self._is_free(h, me):
                        raise WriterLeaseHeld(self._held_message(h))
                record = {
                    "machine": me.as_dict(),
                    "user": process_user(),
                    "pid": os.getpid(),
                    "since": time.time(),
                }
                if _write_lease(self._record(gen + 1), json.dumps(record).encode(), exclusive=True):
                    if gen and not h.machine.same_machine(me):
                        # A process of the old holder may have passed its check() just before
                        # the takeover and be committing now; its commit takes milliseconds.
                        # Its next check() sees this generation and refuses.
                        time.sleep(SETTLE_S)
                    self._hold(gen + 1)
                    _write_lease(self.dir / "current", f"{gen + 1}\n".encode(), exclusive=False)
                    self._forget_old(gen + 1)
                    return gen + 1
                # Another machine (or process) took gen + 1 first: look at it again.
            raise WriterLeaseHeld(
                f"cannot take the writer lease of {self.dir}: too much contention"
            )

    def _held_message(self, h: Holder) -> str:
        name = f"workspace {self.workspace_name!r}" if self.workspace_name else "this workspace"
        return (
            f"{name} is in a shared folder and its writing machine is {h.describe()}; this machine "
            f"({this_machine().hostname}) can read it but not write. Wait until that machine's "
            f"mlws processes end (the lease lapses {STALE_S:.0f} s after its last write), or run "
            "'mlws serve' on the folder's host so that every machine writes through it"
        )

    def _hold(self, gen: int) -> None:
        self.generation = gen
        self.beat(force=True)
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._beat_loop, name="mlws-lease-heartbeat", daemon=True
            )
            self._thread.start()

    def _beat_loop(self) -> None:
        while True:
            time.sleep(HEARTBEAT_S)
            try:
                if self.generation is None or self.taken_over():
                    return
                self.beat(force=True)
            except Exception:  # noqa: BLE001 - a heartbeat must never kill the process
                pass

    def beat(self, force: bool = False) -> None:
        """Refresh the heartbeat (at most every ``HEARTBEAT_S / 2`` unless ``force``)."""
        # Under the lease's lock: a heartbeat thread that read the generation just before
        # release() must not write its beat over the release (the lease would look held again,
        # and the other machine refused, for up to STALE_S).
        with self._lock:
            gen = self.generation
            if gen is None:
                return
            now = time.time()
            if not force and now - self._last_beat < HEARTBEAT_S / 2:
                return
            self._last_beat = now
            _write_lease(
                self._beat_file(gen),
                json.dumps({"time": now, "pid": os.getpid()}).encode(),
                exclusive=False,
            )

    def taken_over(self) -> bool:
        """Whether another machine has taken the lease over from this holder (generation N+1
        exists): from then on this machine must not write. False when this process holds no lease.
        """
        gen = self.generation
        return gen is not None and os.path.exists(self._record(gen + 1))

    def check(self) -> None:
        """Called inside every write transaction, just before COMMIT.

        :raises LeaseLost: another machine took the lease since this process got it.
        """
        if self.generation is None:
            raise LeaseLost("this process does not hold the writer lease")
        if self.taken_over():
            h = self.holder()
            self.generation = None
            raise LeaseLost(
                "another machine took over writing to this shared workspace"
                + (f" ({h.describe()})" if h else "")
                + " after this machine was silent for over "
                f"{STALE_S:.0f} s; nothing was written. Start again from that machine, or wait "
                "until it is done"
            )
        self.beat()

    def release(self) -> bool:
        """Give the lease up now (other machines may write at once). Returns False when this
        machine does not hold it."""
        with self._lock:
            h = self.holder()
            if h is None or not h.machine.same_boot(this_machine()) or h.released:
                return False
            _write_lease(
                self._beat_file(h.generation),
                json.dumps({"time": time.time(), "released": True}).encode(),
                exclusive=False,
            )
            self.generation = None
            return True

    def _forget_old(self, gen: int) -> None:
        """Remove records of generations long gone (keep a few for the history)."""
        for old in range(max(1, gen - 20), gen - 4):
            for p in (self._record(old), self._beat_file(old)):
                try:
                    p.unlink()
                except OSError:
                    pass


def _write_lease(path: Path, data: bytes, *, exclusive: bool) -> bool:
    """Write a lease file whole; with ``exclusive``, only if nobody created it first (``os.link``
    is atomic across the mounts): False when someone did. 0600, as the lease files always were."""
    return write_atomic(path, data, 0o600, exclusive=exclusive)
