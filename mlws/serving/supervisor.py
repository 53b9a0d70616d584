"""The supervising process of a service: ``python -m mlws.serving.supervisor WORKSPACE NAME``.

Detached from whoever deployed the service (it survives them). It lays out the models and the
source folder of the service's generation, binds the port once (TCP_NODELAY on the listening
socket, which accepted sockets inherit on Linux: no Nagle delay behind keep-alive clients),
starts the replicas with that socket, and then:

- restarts a replica that died (kill -9, an out-of-memory kill) at once;
- collects the replicas' telemetry and writes it to the catalog in batches;
- follows the catalog row: new keys go to the replicas; ``Deleting`` stops everything.

When the CPUs are busy, the first replica starts alone and the others once it is ready
(:func:`one_first`): the first answer needs one replica, and replicas importing their libraries
side by side share what CPU the service gets (bench row 10d: a scikit-learn model's replica
imports for ~1.5 s of CPU). The first replica's interpreter starts while the files are laid out.

A replica gets its configuration, keys included, as the first line on its stdin, and new keys
later on the same pipe: the keys never rest in the workspace or the per-user cache.

Its state is the service row: ``Transitioning`` while starting, ``Healthy`` when every replica
is up, ``Unhealthy`` while one is being replaced, ``Failed`` (with the reason) when ``init()``
fails.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import MlwsError


def background_priority() -> None:
    """Lower this thread's scheduling priority (nice 10; Linux sets it per thread). The
    supervisor's bookkeeping (parsing and storing telemetry) comes in bursts; at the default
    priority the kernel lets such a burst preempt a replica mid-request, which showed as
    milliseconds in p99 under load. Only threads that never start replicas may call this:
    a child inherits its parent thread's niceness and could not get it back."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass


#: ``1``: the first replica starts alone, the others once it is ready; ``0``: all at once;
#: unset (or anything else): :func:`one_first` decides by how busy the CPUs are.
ONE_FIRST_ENV = "MLWS_SERVING_ONE_FIRST"


def one_first(replicas: int) -> bool:
    """Whether a service of ``replicas`` replicas starts its first replica alone and the others
    once it is ready: yes when the CPUs idle now (those this process may use minus the
    1-minute load average) cannot give each replica three quarters of one.
    ``MLWS_SERVING_ONE_FIRST`` (1/0) overrides.

    Why: on busy CPUs replicas importing their libraries side by side split what the service
    gets, and the first answer waits on all of them (bench row 10d at load 7 on 2 CPUs: 11 s
    against 4 s one first). On idle CPUs they run in parallel, and starting them one after the
    other would only delay the last one (``wait_for_deployment`` waits for every replica)."""
    if replicas < 2:
        return False
    forced = os.environ.get(ONE_FIRST_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return cpus - load < 0.75 * replicas


class TelemetryWriter(threading.Thread):
    """Stores the replicas' telemetry rows in the catalog, in batches, every quarter second,
    at background priority."""

    def __init__(self, ws: Any, name: str) -> None:
        super().__init__(name=f"mlws-telemetry-{name}", daemon=True)
        self.ws = ws
        self.service = name
        self.rows: list[list[Any]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def add(self, rows: list[Any]) -> None:
        """Queue telemetry rows from a replica (written by the next :meth:`flush`)."""
        with self.lock:
            self.rows.extend(rows)

    def run(self) -> None:
        """The thread: flush every quarter second until ``stop`` is set."""
        background_priority()
        while not self.stop.wait(0.25):
            self.flush()

    def flush(self) -> None:
        """Write the queued rows to ``service_requests`` in one transaction; malformed rows from a
        replica are dropped."""
        with self.lock:
            rows, self.rows = self.rows, []
        if not rows:
            return
        with self.ws.catalog.write() as conn:
            conn.executemany(
                "INSERT INTO service_requests (service, time, path, status, latency_ms,"
                " request_bytes, response_bytes, request_id, replica, input, output)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(self.service, *r[:10]) for r in rows if isinstance(r, list) and len(r) >= 10],
            )


class Replica:
    """One replica process as the supervisor sees it: its process, whether it said ``ready``, and a
    thread that reads its stdout (telemetry to the writer, other events to the supervisor's queue,
    ``gone`` at its end)."""

    def __init__(
        self,
        index: int,
        proc: subprocess.Popen[bytes],
        events: queue.Queue[Any],
        telemetry: TelemetryWriter,
    ) -> None:
        self.index = index
        self.telemetry = telemetry
        self.proc = proc
        self.ready = False
        self.started = time.monotonic()
        self.cpu: Any = None  # psutil.Process, for autoscaling
        self.reader = threading.Thread(target=self._read, args=(events,), daemon=True)
        self.reader.start()

    def _read(self, events: queue.Queue[Any]) -> None:
        assert self.proc.stdout is not None
        background_priority()  # parsing telemetry must not take a CPU from a replica
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict) and msg.get("t") == "telemetry":
                self.telemetry.add(msg.get("rows") or [])
            elif isinstance(msg, dict):
                events.put((self, msg))
        events.put((self, {"t": "gone"}))

    def send(self, **msg: Any) -> None:
        """Send a command to the replica on its stdin; a replica that is gone is ignored (its
        ``gone`` event follows)."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write((json.dumps(msg) + "\n").encode())
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass


class Supervisor:
    """The supervising process of one service (see the module docstring); :meth:`run` is its life."""

    def __init__(self, ws: Any, name: str) -> None:
        from . import service

        self.ws = ws
        self.name = name
        self.service = service
        self.row = dict(ws.catalog.one("SELECT * FROM services WHERE name = ?", (name,)))
        self.config = json.loads(self.row["config"])
        self.events: queue.Queue[Any] = queue.Queue()
        self.replicas: dict[int, Replica] = {}
        # Replicas to start once the first one is ready (see one_first).
        self.pending: list[int] = []
        self.telemetry = TelemetryWriter(ws, name)
        self.stopping = False
        self.quiet_since: float | None = None
        self.last_scaled = 0.0
        self.logs = service.service_dir(ws, name) / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    # -- setting up ----------------------------------------------------------------------------
    def _layout(self) -> tuple[Path, Path]:
        """The generation's folder: ``source/`` and ``azureml-models/<name>/<version>/``;
        returns (source folder, AZUREML_MODEL_DIR)."""
        import shutil

        from ..dirs import user_cache_dir
        from ..models import Model

        gen = self.row["generation"]
        root = user_cache_dir() / "services" / self.ws.folder_key / self.name / f"g{gen}"
        if root.exists():
            shutil.rmtree(root)
        source = root / "source"
        self.ws.blobs.materialize(self.ws.blobs.read_manifest(self.config["snapshot"]), source)
        source.mkdir(parents=True, exist_ok=True)  # an MLflow model's service may have no code
        models_root = root / "azureml-models"
        model_dirs = []
        for ref in json.loads(self.row["models"]):
            m = Model(self.ws, id=ref)
            d = models_root / m.name / str(m.version)
            # Copies (reflinks where possible), hash-checked: a scoring script that writes to
            # its model file, as root too, changes only this service's copy, never the blob.
            self.ws.blobs.materialize(m._entries(), d)
            model_dirs.append(d)
        model_dir = model_dirs[0] if len(model_dirs) == 1 else models_root
        return source, model_dir

    def _bind(self) -> socket.socket:
        host = self.row["host"]
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((host, int(self.row["port"] or 0)))
        except OSError as e:
            raise MlwsError(f"cannot listen on {host}:{self.row['port']}: {e.strerror}") from None
        sock.listen(2048)
        sock.set_inheritable(True)
        return sock

    def _start_replica(self, index: int) -> Replica:
        replica = self._spawn(index)
        self._configure(replica)
        return replica

    def _spawn(self, index: int) -> Replica:
        """Start replica ``index``'s interpreter; it imports what it needs, then waits for its
        configuration (:meth:`_configure`), so it can start before the files it serves are
        laid out."""
        from ..keyvault import CHANNEL_ENV, ENV_KEY
        from ..processes import die_with_parent, python_path

        env = dict(os.environ)
        # The scoring script gets no key vault key: the supervisor hands the replica its keys.
        env.pop(ENV_KEY, None)
        env.pop(CHANNEL_ENV, None)
        env["PYTHONPATH"] = python_path(env.get("PYTHONPATH"))
        env["PYTHONUNBUFFERED"] = "1"
        log = open(self.logs / f"replica-{index}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            # The service and index only name the process for ps; the configuration, keys
            # included, is the first line on stdin: never in a file, argv or the environment.
            [self.python, "-m", "mlws.serving.replica", self.name, str(index)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            pass_fds=(self.sock.fileno(),),
            env=env,
            # The service's folder: the source folder may not be laid out yet; the replica
            # moves to it (and sets AZUREML_MODEL_DIR) when its configuration comes.
            cwd=str(self.logs.parent),
            preexec_fn=die_with_parent,
        )
        log.close()
        return Replica(index, proc, self.events, self.telemetry)

    def _configure(self, replica: Replica) -> None:
        """Send a started replica its configuration (the current layout and keys)."""
        cfg = {
            **self.replica_config,
            "modelDir": str(self.model_dir),
            "replica": replica.index,
            "keys": self.service.current_keys(self.ws, self.name, self.config),
        }
        try:
            assert replica.proc.stdin is not None
            replica.proc.stdin.write((json.dumps(cfg) + "\n").encode())
            replica.proc.stdin.flush()
        except OSError:
            pass  # it died at once: its reader reports it gone and it is replaced

    def _interpreter(self) -> str:
        """The replicas' Python: the environment's, a managed one built with what a replica
        needs (uvicorn) on top of the scoring script's packages."""
        from ..environments import SERVING_PACKAGES, as_environment, resolve

        env = as_environment(self.ws, self.config.get("environment"))
        return resolve(env, self.ws, extra_packages=SERVING_PACKAGES)

    # -- running -------------------------------------------------------------------------------
    def run(self) -> None:
        """Lay out the service, bind its port, start its replicas, then follow their events and the
        catalog row (restarts, updates, keys, autoscaling) until stopped; stops every replica before
        it returns."""
        # Earlier versions left a configuration file per replica here, keys in plain text.
        for stale in self.logs.parent.glob("replica-*.json"):
            stale.unlink(missing_ok=True)
        self.python = self._interpreter()
        self.sock = self._bind()
        count = int(self.config.get("replicas", 1))
        # The first replica's interpreter starts and imports while the files are laid out.
        self.replicas[0] = self._spawn(0)
        self.source, self.model_dir = self._layout()
        port = self.sock.getsockname()[1]
        self.replica_config = {
            "fd": self.sock.fileno(),
            "service": self.name,
            **self._replica_settings(),
        }
        self._set(port=port)
        self.telemetry.start()
        self._configure(self.replicas[0])
        if one_first(count):
            self.pending = list(range(1, count))
        else:
            for i in range(1, count):
                self.replicas[i] = self._start_replica(i)
        last_check = last_scale_check = time.monotonic()
        while not self.stopping:
            try:
                replica, msg = self.events.get(timeout=0.2)
                self._on_event(replica, msg)
            except queue.Empty:
                pass
            now = time.monotonic()
            if now - last_check > 0.25:
                self._follow_row()
                last_check = now
            if now - last_scale_check > 1.0:
                self._autoscale(now)
                last_scale_check = now
        self._stop_all()

    def _on_event(self, replica: Replica, msg: dict[str, Any]) -> None:
        kind = msg.get("t")
        if kind in ("ready", "failed") and self.replicas.get(replica.index) is not replica:
            return  # from a replica of an update that was given up, or one being drained
        if kind == "ready":
            replica.ready = True
            # The first one serves: the others start now (before the check below, so the
            # service is Healthy only once they are ready too).
            for i in self.pending:
                self.replicas[i] = self._start_replica(i)
            self.pending = []
            if all(r.ready for r in self.replicas.values()):
                self._set(state="Healthy", error=None, applied=self.row["generation"])
        elif kind == "failed":
            # init() failed: the deployment failed (restarting would fail the same way).
            self._set(
                state="Failed",
                error=json.dumps({"message": msg.get("error"), "trace": msg.get("trace")}),
            )
            self.stopping = True
        elif kind == "gone":
            if self.stopping or self.replicas.get(replica.index) is not replica:
                replica.proc.wait()  # a drained replica: reap it (no zombie)
                return
            replica.proc.wait()
            # A replica died (killed, crashed): replace it at once; others keep serving.
            self._set(state="Unhealthy")
            print(
                f"replica {replica.index} (pid {replica.proc.pid}) exited with"
                f" {replica.proc.returncode}; starting a new one",
                file=sys.stderr,
                flush=True,
            )
            self.replicas[replica.index] = self._start_replica(replica.index)

    def _follow_row(self) -> None:
        row = self.ws.catalog.one("SELECT * FROM services WHERE name = ?", (self.name,))
        if row is None or row["state"] in ("Deleting", "Deleted"):
            self.stopping = True
            return
        if row["generation"] != self.row["generation"]:
            self._roll(dict(row))
            return
        config = json.loads(row["config"])
        if config.get("keysVersion") != self.config.get("keysVersion"):
            self.config = config
            keys = self.service.current_keys(self.ws, self.name, config)
            for r in self.replicas.values():
                r.send(keys=keys)

    def _autoscale(self, now: float) -> None:
        """Between min and max replicas on CPU use: one more while the replicas are busier
        than the target (every 2 s at most), one fewer (drained) after a quiet spell."""
        import psutil

        lo = int(self.config.get("minReplicas") or self.config.get("replicas", 1))
        hi = int(self.config.get("maxReplicas") or lo)
        if hi <= lo or self.pending:
            return
        busy = []
        for r in self.replicas.values():
            if not r.ready:
                return  # one is starting: judge once it serves
            try:
                if r.cpu is None:
                    r.cpu = psutil.Process(r.proc.pid)
                    r.cpu.cpu_percent(None)  # the first reading only starts the clock
                    return
                busy.append(r.cpu.cpu_percent(None))
            except psutil.Error:
                return
        if not busy:
            return
        load = sum(busy) / len(busy)
        target = float(self.config.get("targetUtilization", 70))
        if load > target:
            self.quiet_since = None
            if len(self.replicas) < hi and now - self.last_scaled > 2.0:
                index = max(self.replicas) + 1
                self.replicas[index] = self._start_replica(index)
                self.last_scaled = now
                print(
                    f"load {load:.0f}% > {target:.0f}%: replica {index} added",
                    file=sys.stderr,
                    flush=True,
                )
        elif load < target / 5:
            if self.quiet_since is None:
                self.quiet_since = now
            idle = float(self.config.get("idleSecondsBeforeScaledown", 30))
            if len(self.replicas) > lo and now - self.quiet_since > idle:
                index = max(self.replicas)
                self.replicas.pop(index).send(drain=True)
                self.quiet_since = now
                self.last_scaled = now
                print(f"load {load:.0f}%: replica {index} removed", file=sys.stderr, flush=True)
        else:
            self.quiet_since = None

    def _roll(self, row: dict[str, Any]) -> None:
        """A rolling update to the row's generation: new replicas start (on the same socket)
        while the old ones serve; once every new one is ready the old ones drain and exit, so
        no request is dropped. If a new one fails, the old ones go on and the error says why."""
        old_row, old_config = self.row, self.config
        old_layout = (self.source, self.model_dir, self.python, dict(self.replica_config))
        self.row, self.config = row, json.loads(row["config"])
        gen = row["generation"]
        # The new version's replicas all start below (the old ones serve meanwhile); replicas
        # of the old version not started yet start only if the update fails.
        old_pending, self.pending = self.pending, []
        new: dict[int, Replica] = {}
        failure = None
        try:
            source, model_dir = self._layout()
            python = self._interpreter()
        except Exception as e:  # noqa: BLE001 - the update fails, the service goes on
            failure = f"{type(e).__name__}: {e}"
        else:
            self.source, self.model_dir, self.python = source, model_dir, python
            self.replica_config.update(self._replica_settings())
            base = max(self.replicas, default=-1) + 1
            for i in range(int(self.config.get("replicas", 1))):
                new[base + i] = self._start_replica(base + i)
            deadline = time.monotonic() + 300
            while failure is None and not all(r.ready for r in new.values()):
                if time.monotonic() > deadline or self.stopping:
                    failure = "the new replicas did not become ready"
                    break
                try:
                    replica, msg = self.events.get(timeout=0.2)
                except queue.Empty:
                    continue
                if replica in new.values():
                    if msg.get("t") == "ready":
                        replica.ready = True
                    elif msg.get("t") == "failed":
                        failure = str(msg.get("error"))
                    elif msg.get("t") == "gone":
                        failure = "a new replica exited while starting"
                else:
                    self._on_event(replica, msg)
        if failure is not None:
            for r in new.values():
                r.proc.kill()
                r.proc.wait()
            # Everything back as it was, the row too: a replica restarted later is the version
            # that serves, and the models it uses stay recorded (and protected from delete).
            self.source, self.model_dir, self.python, self.replica_config = old_layout
            self.row, self.config = {**old_row, "generation": gen}, old_config
            for i in old_pending:
                self.replicas[i] = self._start_replica(i)
            self._set(models=old_row["models"], config=old_row["config"])
            self._set(
                state="Healthy",
                applied=gen,
                error=json.dumps(
                    {"message": f"update failed, still serving the previous version: {failure}"}
                ),
            )
            return
        old = list(self.replicas.values())
        self.replicas = new
        for r in old:
            r.send(drain=True)
        self._await_closed(old)
        self._set(state="Healthy", error=None, applied=gen)

    def _await_closed(self, old: list[Replica]) -> None:
        """Wait (a few seconds at most) until every old replica has stopped accepting
        connections, handling other events meanwhile: before that, a new connection on the
        shared socket may still reach the old version."""
        waiting = {id(r) for r in old if r.proc.poll() is None}
        deadline = time.monotonic() + 5.0
        while waiting and time.monotonic() < deadline:
            try:
                replica, msg = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            if id(replica) in waiting and msg.get("t") in ("closed", "gone"):
                waiting.discard(id(replica))
            self._on_event(replica, msg)

    def _replica_settings(self) -> dict[str, Any]:
        return {
            "sourceDirectory": str(self.source),
            "entryScript": self.config["entryScript"],
            "pyfunc": self.config.get("pyfunc"),  # an MLflow model served without a script
            "authEnabled": self.config.get("authEnabled", True),
            "maxRequestBytes": self.config.get("maxRequestBytes", 5 * 1024 * 1024),
            "scoringTimeoutMs": self.config.get("scoringTimeoutMs", 60_000),
            "clientTimeoutMs": self.config.get("clientTimeoutMs", 5_000),
            "collectModelData": self.config.get("collectModelData", False),
        }

    def _stop_all(self) -> None:
        for r in self.replicas.values():
            if r.proc.poll() is None:
                r.proc.send_signal(signal.SIGTERM)  # uvicorn: finish in-flight requests, exit
        deadline = time.monotonic() + 15
        for r in self.replicas.values():
            try:
                r.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                r.proc.kill()
        for r in self.replicas.values():  # their last telemetry is in once the readers end
            r.reader.join(timeout=5)
        self.telemetry.stop.set()
        if self.telemetry.is_alive():
            self.telemetry.join(timeout=10)  # a batch it is storing now is not cut off
        self.telemetry.flush()

    def _set(self, **fields: Any) -> None:
        if "applied" in fields:
            fields["applied_generation"] = fields.pop("applied")
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.ws.catalog.write() as conn:
            # Never resurrect a service being deleted.
            conn.execute(
                f"UPDATE services SET {sets}, updated = ? WHERE name = ? AND state NOT IN ('Deleting', 'Deleted')",
                [*fields.values(), time.time(), self.name],
            )


def main(argv: list[str] | None = None) -> int:
    """``python -m mlws.serving.supervisor WORKSPACE NAME``: supervise the service until SIGTERM or
    ``Deleting``. Returns the exit status: 2 for bad arguments, 1 when the service failed (recorded
    in its row), else 0."""
    import traceback

    from ..workspace import Workspace

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m mlws.serving.supervisor WORKSPACE NAME", file=sys.stderr)
        return 2
    ws = Workspace(args[0])
    sup = Supervisor(ws, args[1])

    def on_term(_signum: int, _frame: Any) -> None:
        sup.stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        sup.run()
    except Exception as e:  # noqa: BLE001 - the service fails with the reason
        msg = str(e) if isinstance(e, MlwsError) else f"{type(e).__name__}: {e}"
        sup._set(
            state="Failed", error=json.dumps({"message": msg, "trace": traceback.format_exc()})
        )
        sup._stop_all()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
