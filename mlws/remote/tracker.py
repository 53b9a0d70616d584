"""The background half of a remote workspace's client: batched metrics, heartbeats, the spool.

``run.log`` only appends to the run's in-memory buffer (:class:`RemoteMetricWriter`, as the
local :class:`~mlws.metrics.MetricWriter`). One daemon thread per client (:class:`Tracker`)
sends each run's buffer as ``POST /runs/{id}/metrics`` batches (a ``batchId`` on each, so a
re-sent batch can be recognised) every :data:`FLUSH_S` seconds or as soon as
:data:`FLUSH_AT` values wait, and renews the lease of each run this process created
(``POST /runs/{id}/heartbeat`` every ``heartbeatSeconds`` the server names, when nothing else
was sent). Writes that must stay in order after the metrics logged before them (tags,
properties, complete, fail) go through :meth:`Tracker.send`.

Runs started after the client's first are created with the next send (:meth:`Tracker.defer_create`):
each travels whole — creation, properties, values, tags, end — with the other runs started
meanwhile, in one ``POST /runs/batch`` (:meth:`Tracker.send_creates`).

When the server does not answer, batches and ordered writes go to the run's on-disk
:class:`~mlws.remote.spool.Spool` instead, and everything after them too, so the server
receives them in the order they were made, once it answers again.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from ..errors import MlwsError, RunStateError, ServerUnreachable, UserErrorException
from .spool import Spool

if TYPE_CHECKING:
    from .client import RemoteClient

#: The time bound: buffered values are sent at least this often.
FLUSH_S = 0.25
#: A buffer this full wakes the sender early.
FLUSH_AT = 20_000
#: Values per ``POST /runs/{id}/metrics``.
BATCH = 20_000
#: The memory bound: past this many unsent values, ``run.log`` sends (or spools) itself.
MAX_PENDING = 200_000
#: How long ``complete()`` waits for a run's spool to drain (``MLWS_SPOOL_WAIT_S``).
WAIT_ENV = "MLWS_SPOOL_WAIT_S"
DEFAULT_WAIT_S = 30.0
#: How long one batch retries before it is spooled.
SEND_RETRY_S = 1.0
#: Runs per ``POST /runs/batch`` (the server takes up to 1,000).
CREATE_RUNS = 500


def check_metric(name: Any, step: Any) -> None:
    """:raises UserErrorException: ``name`` is not a non-empty string, or ``step`` not None or a
    whole number >= 0 (what the server takes)."""
    from ..errors import UserErrorException

    if not isinstance(name, str) or not name.strip():
        raise UserErrorException(f"a metric name is a non-empty string, got {name!r}")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
        raise UserErrorException(f"a metric step is a whole number >= 0, got {step!r}")


class RemoteMetricWriter:
    """The metric buffer of one run of a remote workspace in this process (the interface of
    :class:`mlws.metrics.MetricWriter`: ``add``, ``add_scalar``, ``flush``, ``pending``)."""

    def __init__(self, tracker: Tracker, run_id: str) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self.catalog = None  # read by mlws.metrics' bookkeeping of local writers
        #: Why the server refuses this run's values for good (its lease lapsed), or None.
        self.refused: str | None = None
        #: ``(name, kind or None for a scalar, value, step)``, oldest first.
        self._buf: list[tuple[str, str | None, Any, int | None]] = []
        #: Tags set and not sent yet: they travel with the run's next batch (see Tracker.pump).
        self.tags: dict[str, Any] = {}
        #: The run's creation while the server has not been sent it (see Tracker.defer_create):
        #: the fields of its item in ``POST /runs/batch``; None once sent (or never deferred).
        self.create: dict[str, Any] | None = None
        #: The end (``outcome``, ``error``) of a run that ended before its creation was sent.
        self.outcome: dict[str, Any] | None = None
        #: When (``time.monotonic()``) a deferred run started and ended: sent as ages.
        self.started = self.ended = 0.0
        #: Set while the request that creates the run is on its way (answered: set, then None).
        self.in_flight: threading.Event | None = None
        self._lock = threading.Lock()
        self._checked: set[str] = set()  # names checked already

    def add(self, name: str, kind: str, value: Any, step: int | None = None) -> None:
        """Buffer one value of kind ``kind`` for metric ``name``.

        :raises UserErrorException: a name or step the server would refuse (checked here, so
            one bad value never holds up the batch it would travel in)."""
        from ..metrics import to_python

        check_metric(name, step)
        self._append((name, kind, to_python(value), step))

    def add_scalar(self, name: str, value: Any, step: int | None = None) -> None:
        """Buffer one scalar (the hot path of ``run.log``).

        :raises UserErrorException: a name or step the server would refuse."""
        # A loop logs a few names over and over: each is checked once (a set lookup after).
        if step is not None or type(name) is not str or name not in self._checked:
            check_metric(name, step)
            if len(self._checked) < 10_000:
                self._checked.add(name)
        t = type(value)
        if t is not float and t is not int and t is not str:
            from ..metrics import to_python

            value = to_python(value)
        self._append((name, None, value, step))

    def _append(self, item: tuple[str, str | None, Any, int | None]) -> None:
        if self.refused is not None:
            raise RunStateError(self.refused)
        with self._lock:
            self._buf.append(item)
            n = len(self._buf)
        if n >= FLUSH_AT:
            self.tracker.wake()
            if n >= MAX_PENDING:
                self.tracker.pump(self.run_id)

    def take(self, limit: int = BATCH) -> list[tuple[str, str | None, Any, int | None]]:
        """Up to ``limit`` buffered values, oldest first, removed from the buffer."""
        with self._lock:
            if len(self._buf) <= limit:
                batch, self._buf = self._buf, []
            else:
                batch, self._buf = self._buf[:limit], self._buf[limit:]
        return batch

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Tags to send with the run's next batch (later values of a key win)."""
        with self._lock:
            self.tags.update(tags)

    def take_tags(self) -> dict[str, Any]:
        """The tags waiting to be sent, removed."""
        with self._lock:
            tags, self.tags = self.tags, {}
        return tags

    def give_back(
        self,
        batch: list[tuple[str, str | None, Any, int | None]],
        tags: dict[str, Any] | None = None,
    ) -> None:
        """Put ``batch`` and ``tags`` (taken, not sent) back in front of what waits."""
        with self._lock:
            self._buf[:0] = batch
            if tags:
                self.tags = {**tags, **self.tags}  # set since: newer

    def pending(self) -> int:
        """How many values are buffered and not sent yet."""
        return len(self._buf)

    def waiting(self) -> bool:
        """Whether values, tags, its creation or its end wait to be sent."""
        return bool(self._buf or self.tags or self.create is not None or self.outcome)

    def flush(self) -> int:
        """Send everything buffered now (to the spool if the server is away); returns the
        number of values."""
        n = self.pending()
        self.tracker.pump(self.run_id)
        return n


def wire_series(
    batch: list[tuple[str, str | None, Any, int | None]],
) -> list[dict[str, Any]]:
    """Buffered values as the compact ``series`` of ``POST /runs/{id}/metrics``: one object
    per metric (a new one where its kind changes), its values in the order logged; ``steps``
    only where a value named its step."""
    out: list[dict[str, Any]] = []
    current: dict[str, tuple[str | None, dict[str, Any]]] = {}
    for name, kind, value, step in batch:
        c = current.get(name)
        if c is None or c[0] != kind:
            d: dict[str, Any] = {"name": name, "values": []}
            if kind is not None:
                d["kind"] = kind
            c = current[name] = (kind, d)
            out.append(d)
        d = c[1]
        d["values"].append(value)
        if step is not None or "steps" in d:
            steps = d.setdefault("steps", [None] * (len(d["values"]) - 1))
            steps.append(step)
    return out


class Tracker:
    """The sender thread of one :class:`~mlws.remote.client.RemoteClient` (``client.tracker``)."""

    def __init__(self, client: RemoteClient) -> None:
        self.client = client
        self.writers: dict[str, RemoteMetricWriter] = {}
        self.spools: dict[str, Spool] = {}
        self._run_locks: dict[str, threading.Lock] = {}
        #: Runs this process created: run id -> when the server last heard of it.
        self.held: dict[str, float] = {}
        self.heartbeat_s = 10.0
        #: Whether the server told this client its heartbeat interval yet.
        self.heartbeat_known = False
        self.offline_since: float | None = None
        #: Runs whose spool may hold requests (the sender looks only at these and at buffers).
        self._spooled: set[str] = set()
        self._lock = threading.Lock()
        #: Held while deferred creations are taken or changed (see :meth:`send_creates`).
        self._create_lock = threading.Lock()
        #: Held while deferred creations are sent (one ``POST /runs/batch`` at a time).
        self._send_lock = threading.Lock()
        #: Runs whose deferred creation the server refused: run id -> its error.
        self.refusals: dict[str, MlwsError] = {}
        #: Refusals no caller was told of yet (the next start_logging raises the first).
        self._unreported: dict[str, MlwsError] = {}
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="mlws-remote", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # -- bookkeeping -------------------------------------------------------------------------
    def writer(self, run_id: str) -> RemoteMetricWriter:
        """The metric buffer of ``run_id`` (one per run in this process)."""
        with self._lock:
            w = self.writers.get(run_id)
            if w is None:
                w = self.writers[run_id] = RemoteMetricWriter(self, run_id)
            return w

    def spool(self, run_id: str) -> Spool:
        """The on-disk buffer of ``run_id``."""
        with self._lock:
            s = self.spools.get(run_id)
            if s is None:
                s = self.spools[run_id] = Spool(self.client.url, run_id)
            return s

    def _run_lock(self, run_id: str) -> threading.Lock:
        with self._lock:
            return self._run_locks.setdefault(run_id, threading.Lock())

    def hold(self, run_id: str, heartbeat_s: float | None = None) -> None:
        """Renew the lease of ``run_id`` from now on (a run this process created)."""
        with self._lock:
            self.held[run_id] = time.monotonic()
        if heartbeat_s:
            self.heartbeat_s = float(heartbeat_s)
            self.heartbeat_known = True

    def release(self, run_id: str) -> None:
        """Stop renewing ``run_id`` (it ended)."""
        with self._lock:
            self.held.pop(run_id, None)

    def forget(self, run_id: str) -> None:
        """Drop what this process keeps of ``run_id`` once it ended and nothing of it waits to
        be sent (a process that makes thousands of runs keeps no state per finished run)."""
        with self._lock:
            w = self.writers.get(run_id)
            if run_id in self._spooled or (w is not None and w.waiting()):
                return
            self.writers.pop(run_id, None)
            self.spools.pop(run_id, None)
            self._run_locks.pop(run_id, None)
            self.held.pop(run_id, None)

    def wake(self) -> None:
        """Send now rather than at the next tick."""
        if not self._wake.is_set():  # set() takes a lock: not once per value of a full buffer
            self._wake.set()

    # -- runs created with their first send -----------------------------------------------------
    def defer_create(self, run_id: str, fields: dict[str, Any]) -> None:
        """Create ``run_id`` (``fields``: its item of ``POST /runs/batch``) with the next send
        of this client rather than now: the sender's next tick (:data:`FLUSH_S`), a flush, a
        read or another write of the run, or the process's exit; its properties, values, tags
        and (when it ended already) its end travel with it."""
        w = self.writer(run_id)
        w.started = time.monotonic()
        w.create = fields

    def update_deferred(self, run_id: str, change: Any) -> bool:
        """Apply ``change`` (a function of the creation's fields) to the creation of ``run_id``
        while it is not sent yet; False (nothing applied) once it was, after the request that
        carries it was answered (a write after it then goes after it)."""
        w = self.writers.get(run_id)
        if w is None:
            return False
        with self._create_lock:  # not while the sender takes it
            if w.create is not None:
                change(w.create)
                return True
            sending = w.in_flight
        if sending is not None:
            sending.wait()
        return False

    def end_deferred(self, run_id: str, outcome: dict[str, Any]) -> bool:
        """End ``run_id`` with its creation when that is not sent yet (one item of the next
        ``POST /runs/batch``, no request now); False once it was."""

        def end(_: dict[str, Any]) -> None:
            w = self.writers[run_id]
            w.ended = time.monotonic()
            w.outcome = outcome

        return self.update_deferred(run_id, end)

    def raise_refused(self, run_id: str | None = None) -> None:
        """Raise the server's refusal of the deferred creation of ``run_id`` (None: of any run
        not reported yet), once.

        :raises MlwsError: that refusal (the server's own error and message)."""
        with self._lock:
            if run_id is None:
                if not self._unreported:
                    return
                run_id = next(iter(self._unreported))
            e = self.refusals.get(run_id)
            self._unreported.pop(run_id, None)
        if e is not None:
            raise e

    def send_creates(self) -> None:
        """Send every deferred creation, :data:`CREATE_RUNS` runs per ``POST /runs/batch``
        (spooled, each run on its own, while the server is away). A refusal is kept for the
        runs it names (:meth:`raise_refused`): their values are not stored.

        The runs of a request are taken from their buffers first; while it is answered, runs
        started meanwhile are made and written without waiting for it (only a write to a run
        in that request waits: measured, holding every run while 500 were sent stalled the
        logging loop for each request, and 1,000 small runs took 4.6 s instead of ~1 s)."""
        with self._send_lock:
            while True:
                with self._create_lock:
                    items = self._take_creates()
                    if not items:
                        return
                    sending = threading.Event()
                    for it in items:
                        it[0].in_flight = sending
                try:
                    self._send_created(items)
                finally:
                    for it in items:
                        it[0].in_flight = None
                    sending.set()

    def _take_creates(self) -> list[Any]:
        # Under _create_lock: the next request's runs, each removed from its buffer.
        items: list[Any] = []
        total = 0
        # One clock reading for the whole batch: the server dates each run "now minus its
        # age", and ages taken as the loop went on shifted later runs earlier (two runs
        # created 2 ms apart came back in the wrong order on a loaded machine).
        now = time.monotonic()
        for w in list(self.writers.values()):
            if w.create is None:
                continue
            if len(items) >= CREATE_RUNS or (items and total >= BATCH):
                break
            batch = w.take(BATCH)
            total += len(batch)
            fields, w.create = w.create, None
            item = dict(fields)
            tags = w.take_tags()
            if tags:
                item["tags"] = {**item.get("tags", {}), **tags}
            if batch:
                item["series"] = wire_series(batch)
            item["startedSecondsAgo"] = round(now - w.started, 6)
            outcome = None
            if w.outcome is not None and not w.pending():
                outcome, w.outcome = w.outcome, None
                item.update(outcome)
                item["endedSecondsAgo"] = round(now - w.ended, 6)
            items.append((w, item, batch, tags, fields, outcome))
        return items

    def flush_all(self) -> None:
        """Send everything this process holds for the server now: runs not created yet (with
        their values, tags and ends), then every run's buffer; spooled while it is away.

        :raises MlwsError: the server refused a run's creation (the first not reported yet)."""
        self.send_creates()
        for run_id in list(self.writers.keys() | self._spooled):
            w = self.writers.get(run_id)
            if run_id in self._spooled or (w is not None and w.waiting()):
                self.pump(run_id)
        self.raise_refused()

    def _send_created(self, items: list[Any]) -> None:
        body = {"batchId": uuid.uuid4().hex, "runs": [it[1] for it in items]}
        path = self.client.path("runs", "batch")
        retry = 0.0 if self.offline_since is not None else SEND_RETRY_S
        try:
            self.client.request("POST", path, body, retry_s=retry)
        except ServerUnreachable:
            self._went_offline()
            for n, (w, item, batch, tags, _, outcome) in enumerate(items):
                try:  # each run's spool starts with its creation
                    one = {"batchId": uuid.uuid4().hex, "runs": [item]}
                    self._spool(self.spool(w.run_id), w, batch, tags, "POST", path, one)
                except BaseException:  # the spool is full: this run's values were given back
                    self._restore(items[n : n + 1], values=False)
                    self._restore(items[n + 1 :])
                    raise
                if outcome is None:
                    self.hold(w.run_id)  # heartbeats once the spool delivered it
            return
        except MlwsError as e:
            with self._lock:
                for w, *_ in items:
                    self.refusals[w.run_id] = e
                    self._unreported[w.run_id] = e
                    w.refused = f"run {w.run_id} was not created by the server: {e}"
                    w.outcome = None
                    w.take()  # its values have no run to go to
            return
        except BaseException:
            self._restore(items)
            raise
        for w, *_, outcome in items:
            if outcome is not None:
                self.forget(w.run_id)
            else:
                self.hold(w.run_id)

    def _restore(self, items: list[Any], values: bool = True) -> None:
        """Put runs taken for a request that was neither sent nor spooled back as they were
        (``values``: their values and tags too)."""
        with self._create_lock:
            for w, _, batch, tags, fields, outcome in items:
                if values:
                    w.give_back(batch, tags)
                w.create = fields
                if outcome is not None:
                    w.outcome = outcome

    # -- sending -----------------------------------------------------------------------------
    def pump(self, run_id: str) -> bool:
        """Send the run's spool (oldest first), then its buffer and tags; what the server does
        not take goes to the spool. True when nothing of the run is left to send."""
        return self._pump(run_id)[0]

    def finish(self, run_id: str, outcome: dict[str, Any]) -> Any:
        """End ``run_id`` (``outcome``: the ``outcome`` and ``error`` fields of a batch) with its
        last values and tags, in one request after everything before it. Returns the server's
        answer, or None when the server is away and it was spooled."""
        return self._pump(run_id, outcome)[1]

    def _pump(self, run_id: str, final: dict[str, Any] | None = None) -> tuple[bool, Any]:
        w = self.writers.get(run_id)
        if w is not None:
            if w.create is not None:
                self.send_creates()  # this run's creation first, with the others waiting
            sending = w.in_flight
            if sending is not None:  # its creation is being sent: its values go after it
                sending.wait()
        self.raise_refused(run_id)
        deferred_end = w is not None and w.outcome is not None and final is None
        if deferred_end:
            # Ended before it was created; its values outgrew the request that created it.
            final, w.outcome = w.outcome, None  # type: ignore[union-attr]
        answer = None
        with self._run_lock(run_id):
            spool = self.spool(run_id)
            drained = spool.deliver(self.client) if spool.entries() else True
            while (w is not None and w.waiting()) or final is not None:
                batch = w.take() if w is not None else []
                body: dict[str, Any] = {"batchId": uuid.uuid4().hex}
                if batch:
                    body["series"] = wire_series(batch)
                last = w is None or not w.pending()
                # Tags and the outcome ride on the last batch: one request, not three.
                tags = w.take_tags() if w is not None and last else {}
                if tags:
                    body["tags"] = tags
                ending = last and final is not None
                if ending:
                    body.update(final)
                    final = None
                path = self.client.path("runs", run_id, "metrics")
                if not drained:
                    self._spool(spool, w, batch, tags, "POST", path, body)
                    continue
                # Known to be away: one quick try, not a second of retries per batch.
                retry = 0.0 if self.offline_since is not None else SEND_RETRY_S
                try:
                    got = self.client.request("POST", path, body, retry_s=retry)
                except ServerUnreachable:
                    drained = False
                    self._went_offline()
                    self._spool(spool, w, batch, tags, "POST", path, body)
                    continue
                except RunStateError as e:
                    if ending and (batch or tags):
                        # The run cannot end (ended already): its values and tags are still
                        # stored, as they were when they travelled apart from the outcome.
                        for k in ("outcome", "error"):
                            body.pop(k, None)
                        self.client.request("POST", path, body, retry_s=retry)
                    elif w is not None:
                        w.refused = str(e)  # logging more would pile up values nobody stores
                    raise
                except UserErrorException as e:
                    if ending:
                        raise
                    # Refused as a whole (the checks at log() make this a server's own limit):
                    # said, never retried forever in front of the values after it.
                    print(
                        f"Warning: the server {self.client.url} refused {len(batch)} metric"
                        f" value(s) of run {run_id}, which are not stored: {e}",
                        file=sys.stderr,
                    )
                    continue
                except BaseException:
                    if w is not None:
                        w.give_back(batch, tags)
                    raise
                self._heard(run_id)
                if ending:
                    answer = got
            if drained:
                self._spooled.discard(run_id)
                if self.offline_since is not None:
                    self._back_online()
            if deferred_end:
                self.release(run_id)
            return drained and (w is None or not w.waiting()), answer

    def _spool(
        self,
        spool: Spool,
        w: RemoteMetricWriter | None,
        batch: list[Any],
        tags: dict[str, Any],
        method: str,
        path: str,
        body: Any,
    ) -> None:
        try:
            spool.append(method, path, body)
            self._spooled.add(spool.run_id)
        except MlwsError:
            if w is not None:  # kept in memory; the next log() says the spool is full
                w.give_back(batch, tags)
            raise

    def send(
        self,
        run_id: str,
        method: str,
        path: str,
        body: Any = None,
        blobs: dict[str, str | bytes] | None = None,
    ) -> Any:
        """An ordered write of ``run_id``: after the values logged before it. ``blobs``
        (``{hash: file path or bytes}``) are sent first, those the server lacks. Returns the
        server's answer, or None when the server is away and the write was spooled (with a
        copy of the blobs)."""
        from .backend import send_blobs

        self.pump(run_id)
        spool = self.spool(run_id)
        with self._run_lock(run_id):
            if not spool.entries():
                try:
                    if blobs:
                        send_blobs(self.client, blobs, retry_s=SEND_RETRY_S)
                    answer = self.client.request(method, path, body, retry_s=SEND_RETRY_S)
                except ServerUnreachable:
                    self._went_offline()
                else:
                    self._heard(run_id)
                    return answer
            spool.append(method, path, body, blobs)
            self._spooled.add(run_id)
        return None

    def drain(self, run_id: str, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` (``MLWS_SPOOL_WAIT_S``) for everything of ``run_id`` to be
        delivered; True when it was. Otherwise it stays spooled for a later process (or
        ``mlws remote sync``), and a warning says so."""
        if timeout is None:
            try:
                timeout = float(os.environ.get(WAIT_ENV, DEFAULT_WAIT_S))
            except ValueError:
                timeout = DEFAULT_WAIT_S
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            if self.pump(run_id):
                return True
            if time.monotonic() > deadline:
                left = len(self.spool(run_id))
                print(
                    f"Warning: the server {self.client.url} is away: {left} write(s) of run"
                    f" {run_id} are kept in {self.spool(run_id).dir}; they are delivered when a"
                    " process of this machine reaches the server again ('mlws remote sync')",
                    file=sys.stderr,
                )
                return False
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _heard(self, run_id: str) -> None:
        if run_id in self.held:
            self.held[run_id] = time.monotonic()

    def _went_offline(self) -> None:
        if self.offline_since is None:
            self.offline_since = time.monotonic()
            print(
                f"Warning: the workspace server {self.client.url} does not answer; writes are"
                " buffered on disk and delivered when it is back",
                file=sys.stderr,
            )

    def _back_online(self) -> None:
        self.offline_since = None

    def _heartbeats(self) -> None:
        now = time.monotonic()
        for run_id, seen in list(self.held.items()):
            if now - seen < self.heartbeat_s:
                continue
            try:
                answer = self.client.request(
                    "POST", self.client.path("runs", run_id, "heartbeat"), retry_s=0.2
                )
            except ServerUnreachable:
                continue
            except MlwsError:
                self.release(run_id)  # ended, or lost: nothing to renew
                continue
            self._heard(run_id)
            if isinstance(answer, dict) and answer.get("heartbeatSeconds"):
                self.heartbeat_s = float(answer["heartbeatSeconds"])
                self.heartbeat_known = True

    def _loop(self) -> None:
        while not self._stop:
            self._wake.wait(FLUSH_S)
            self._wake.clear()
            try:
                self.send_creates()
            except Exception:  # kept for its runs (raise_refused); the rest is sent below
                pass
            for run_id in list(self.writers.keys() | self._spooled):
                w = self.writers.get(run_id)
                if (w is None or not w.waiting()) and run_id not in self._spooled:
                    continue
                try:
                    self.pump(run_id)
                except Exception:  # a refused batch: raised to the run's next log() instead
                    pass
            try:
                self._heartbeats()
            except Exception:
                pass

    def close(self) -> None:
        """Send what is buffered (spooling what the server does not take) and stop."""
        self._stop = True
        try:
            self.send_creates()
        except Exception:
            pass
        for run_id in self._unreported:
            print(
                f"Warning: the server {self.client.url} refused to create run {run_id}, which"
                f" is not stored: {self.refusals[run_id]}",
                file=sys.stderr,
            )
        for run_id in list(self.writers):
            try:
                self.pump(run_id)
            except Exception:
                pass
