"""A ``ParallelRunStep`` whose ``compute_target`` is an ``ssh`` target: its workers are
processes on the target's hosts, ``node_count`` hosts x ``process_count_per_node`` each.

The step's driver (:mod:`.parallel_driver`) runs on this machine as for ``local``: it reads the
input, cuts it into mini-batches and hands them out with the same loop (retries, timeouts,
``error_threshold``, results appended in mini-batch order). What differs is the worker:

- per host, over the target's shared ssh connection, mlws is made importable there
  (:func:`mlws.compute.shipping.ensure_mlws`) and the step's folder (its snapshot; not its
  data, logs or outputs) is copied to ``<work_dir>/prs/<run id>``;
- each worker is ``python -m mlws.pipelines.parallel_ssh`` in that folder, over its own ssh
  session, speaking length-prefixed pickles on its standard input and output (the same
  messages as a local worker's pipe: :func:`.parallel_worker.serve`), so the driver waits on
  it as on a local one;
- a mini-batch travels whole: a DataFrame's rows, or a File mini-batch's files (their bytes,
  written on the host under ``.prs-in/`` and given to ``run()`` as paths there);
- when the step ends, each host's ``logs/user`` (worker output, ``entry_script_log``) and its
  output folder (what ``summary_only`` scripts wrote) are copied home.

The entry script runs in the step's run there, as on ``local``: each worker makes a remote
catalog of the step run (:func:`mlws.compute.remote_catalog.make_replica`, as an ssh run's
agent does) and points ``Run.get_context()`` at it; what the script records there (metrics,
tags, child runs, uploaded files) is sent home ahead of the worker's next message and applied
to the step run (metric values each at their metric's next step, as several hosts' are).
``Model.get_model_path(name)`` there asks the driver for the model (the remote catalog has
none): it is copied to that host once, under the step folder's ``azureml-models/``, where v1's
scoring scripts find it. Arguments naming files of this machine mean nothing there.

Two things a host must not do to a worker:

- lack what a mini-batch needs: a Tabular mini-batch is a DataFrame, so the modules its
  pickle names (pandas, numpy, maybe pyarrow) are imported before ``init()``; one missing
  fails the step before any mini-batch, in one line naming the host and the module;
- cut its session for being idle: sshd's ``ChannelTimeout`` (or a firewall) ends a channel
  with no traffic, and a ``run()`` that works for minutes sends nothing. The ssh layer's
  ``ServerAliveInterval`` keeps the *connection* alive but is no traffic on a channel
  (measured: a session idle for 3 s is cut under ``ChannelTimeout session:command=3``
  whatever the keepalives); so a worker sends a heartbeat frame after
  :data:`mlws.sshhost.SESSION_HEARTBEAT_S` seconds of silence, which the driver drops.
"""

from __future__ import annotations

import importlib
import os
import pickle
import queue
import shlex
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..workspace import Workspace
    from .parallel_driver import Driver, Worker

_HEADER = struct.Struct("!Q")
#: Where a worker on a host keeps the step run's remote catalog (``<process>-<pid>``).
REPLICAS = ".mlws-replica"
_BEAT = pickle.dumps(("beat",), protocol=pickle.HIGHEST_PROTOCOL)
#: Seconds the workers have to send what they recorded (``shutdown()``'s too) and end once
#: told to stop; then their sessions are killed (a worker still in a long ``run()`` of a
#: failed step is not waited for).
DRAIN_S = 10.0
#: The run's variables a worker on a host gets from the driver (paths of this machine, such
#: as ``AZUREML_DATAREFERENCE_*``, mean nothing there).
_RUN_VARIABLES = (
    "MLWS_RUN_ID",
    "AZUREML_RUN_ID",
    "AZUREML_ARM_SUBSCRIPTION",
    "AZUREML_ARM_RESOURCEGROUP",
    "AZUREML_ARM_WORKSPACE_NAME",
    "AZUREML_ARM_PROJECT_NAME",
    "AZUREML_EXPERIMENT_NAME",
    "AZUREML_SERVICE_ENDPOINT",
    "AZUREML_RUN_TOKEN",
)


def _read_exact(fd: int, n: int) -> bytes:
    """``n`` bytes from ``fd``. :raises EOFError: it ended first."""
    parts, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the stream")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


class FramedPipe:
    """Pickles over a pair of file descriptors (the driver's ``Worker.conn``, or a remote
    worker's link to the driver): ``send`` queues (a thread writes, so a big mini-batch never
    blocks the driver while the other side is writing to it), ``recv`` reads one.
    ``heartbeat``: after that many seconds with nothing to write, write ``("beat",)``."""

    def __init__(self, read_fd: int, write_file: Any, heartbeat: float | None = None) -> None:
        self.read_fd = read_fd
        self.write_file = write_file
        self.heartbeat = heartbeat
        self.outbox: queue.Queue[bytes | None] = queue.Queue()
        self.writer = threading.Thread(target=self._write, daemon=True)
        self.writer.start()

    def _write(self) -> None:
        while True:
            try:
                data = self.outbox.get(timeout=self.heartbeat)
            except queue.Empty:
                data = _BEAT
            if data is None:
                break
            try:
                self.write_file.write(_HEADER.pack(len(data)) + data)
                self.write_file.flush()
            except OSError:
                break
        try:
            self.write_file.close()
        except OSError:
            pass

    def fileno(self) -> int:
        """What ``multiprocessing.connection.wait`` waits on."""
        return self.read_fd

    def send(self, obj: Any) -> None:
        """Queue ``obj`` to be written."""
        self.outbox.put(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))

    def recv(self) -> Any:
        """The next object. :raises EOFError: the stream ended."""
        (n,) = _HEADER.unpack(_read_exact(self.read_fd, _HEADER.size))
        return pickle.loads(_read_exact(self.read_fd, n))

    def close(self) -> None:
        """Stop writing (the other side sees the end) once the queue is written."""
        self.outbox.put(None)


class RemoteProcess:
    """An ``ssh`` session running one worker, as the driver handles a local worker process."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    @property
    def exitcode(self) -> int | None:
        """The session's exit status, None while it runs."""
        return self.proc.poll()

    def join(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` seconds for the session to end."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def is_alive(self) -> bool:
        """Whether the session still runs."""
        return self.proc.poll() is None

    def kill(self) -> None:
        """End the session (sshd ends the worker with it: its stdin closes)."""
        self.proc.kill()


class SshPool:
    """The hosts of an ``ssh`` target serving one step's workers (see the module docstring)."""

    def __init__(self, driver: Driver, target: str, config: dict[str, Any]) -> None:
        from ..compute.ssh import nodes_of
        from .parallel_driver import StepFailed

        self.driver = driver
        self.target = target
        self.config = config
        nodes = nodes_of(config)
        need = driver.s["nodeCount"]
        if len(nodes) < need:
            raise StepFailed(
                f"node_count={need} but the ssh target {target!r} has {len(nodes)} host(s)"
            )
        self.nodes = nodes[:need]
        self.conns: list[Any] = []
        self.ready: dict[int, tuple[str, str]] = {}  # node -> (folder there, PYTHONPATH)
        #: What the workers' remote catalogs changed that waits for its blobs (files, models).
        self.deferred: list[dict[str, Any]] = []
        #: (node, model name, version) of the models copied to the hosts.
        self.models_sent: set[tuple[int, str, int]] = set()

    def prepare(self) -> None:
        """Connect to each host, make mlws importable there, copy the step's folder."""
        from ..compute.remote_catalog import Home, run_spec
        from ..compute.shipping import ensure_mlws
        from ..compute.ssh import connection

        ws, d = self.driver.ws, self.driver
        row = ws.catalog.one("SELECT * FROM runs WHERE id = ?", (d.run.id,))
        # The step run as each worker's remote catalog starts it, and what may come back.
        self.context = run_spec(ws, row)
        self.home = Home(ws, row, row["supervisor_pid"], row["supervisor_start"])
        self.seq = int(row["seq"])
        self.variables = {k: os.environ[k] for k in _RUN_VARIABLES if k in os.environ}
        self.needs = needed_modules(d.mini_batch(0)) if d.sizes else []
        for k, node in enumerate(self.nodes):
            conn = connection(ws, self.target, self.config, node)
            conn.open()
            self.conns.append(conn)
            pythonpath = ensure_mlws(conn, sys.stdout)
            folder = f"{conn.work_dir()}/prs/{d.run.id}"
            conn.rsync(
                f"{d.cwd}/",
                f":{folder}/",
                options=("--exclude=/.mlws-data", "--exclude=/logs", "--exclude=/outputs"),
                make_dest=f"{folder}/outputs/prs",  # the folder too; finish() copies it home
            )
            self.ready[k] = (folder, pythonpath)
            d.say(f"host {node} (node {k}) ready: {folder}")

    def spawn(self, number: int, node: int) -> Worker:
        """Start worker ``number`` on host ``node`` over its own ssh session."""
        from .parallel_driver import Worker

        folder, pythonpath = self.ready[node]
        conn = self.conns[node]
        python = conn.config["python"]
        remote = (
            f"cd {shlex.quote(folder)} && PYTHONPATH={shlex.quote(pythonpath)}"
            f" exec {shlex.quote(python)} -m mlws.pipelines.parallel_ssh"
        )
        # What the session says before the worker takes over its output (ssh's errors, an
        # import failing there): logs/user/ssh/<node>/process<NNN>.txt here.
        said = self.driver.logs / "user" / "ssh" / f"{node}" / f"process{number:03d}.txt"
        said.parent.mkdir(parents=True, exist_ok=True)
        with open(said, "ab") as err:
            proc = subprocess.Popen(
                conn.ssh_command(remote),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                bufsize=0,
                start_new_session=True,
            )
        assert proc.stdin is not None and proc.stdout is not None
        pipe = FramedPipe(proc.stdout.fileno(), proc.stdin)
        settings = {
            **self.driver.worker_settings(number, node),
            "logDir": f"{folder}/logs/user",
            "workingDir": folder,
            "outputDir": f"{folder}/outputs/prs",
            "shipFiles": self.driver.s["inputKind"] != "tabular",
            "host": str(conn.node),
            "python": python,
            "needs": self.needs,
            "context": self.context,
            "variables": self.variables,
        }
        pipe.send(settings)
        return Worker(number, node, RemoteProcess(proc), pipe)

    def payload(self, index: int) -> Any:
        """Mini-batch ``index`` as it travels: a DataFrame, or its files' names and bytes."""
        batch = self.driver.mini_batch(index)
        if self.driver.s["inputKind"] == "tabular":
            return batch
        out = []
        for path in batch:
            with open(path, "rb") as f:
                out.append((os.path.basename(path), f.read()))
        return out

    def await_ready(self) -> None:
        """Wait until every worker has run ``init()``: a host that cannot serve (a module
        missing, ``init()`` failing) fails the step before any mini-batch is handed out."""
        from multiprocessing.connection import wait

        d = self.driver
        while not all(w.ready for w in d.workers):
            waiting = {w.conn: w for w in d.workers if not w.ready}
            for c in wait(list(waiting)):
                d.answer(waiting[c])  # type: ignore[index]

    def apply(self, changes: list[Any]) -> None:
        """A worker's remote-catalog changes, at home (checked as an ssh run's are): the step
        run's metric values each at its metric's next step, the rest but the run's own row
        (its name, status and error are the driver's); files wait for :meth:`finish`."""
        from ..compute.remote_catalog import apply_changes, metrics_home

        d = self.driver
        rest = [
            c
            for c in metrics_home(d.ws, d.run.id, self.seq, changes)
            if not (
                isinstance(c, dict) and c.get("table") == "runs" and c.get("run_id") == d.run.id
            )
        ]
        self.deferred += apply_changes(self.home, rest)

    def send_model(self, w: Worker, name: str, version: int | None) -> None:
        """Worker ``w`` asks for a registered model (``Model.get_model_path`` in its script):
        put it under ``azureml-models/<name>/<version>`` of its folder on its host (once per
        host), and answer ``("model", None)``, or ``("model", why not)``."""
        import tempfile

        from ..errors import MlwsError
        from ..models import Model

        d = self.driver
        folder, _ = self.ready[w.node]
        try:
            # From a host: a checked name (Model's own check), a whole-number version.
            version = None if version is None else int(version)
            model = Model(d.ws, str(name), version=version)
            key = (w.node, model.name, model.version)
            if key not in self.models_sent:
                with tempfile.TemporaryDirectory(dir=d.logs.parent) as tmp:
                    model.download(Path(tmp) / model.name / str(model.version))
                    self.conns[w.node].rsync(
                        f"{tmp}/",
                        f":{folder}/azureml-models/",
                        make_dest=f"{folder}/azureml-models",
                    )
                self.models_sent.add(key)
                d.say(f"model {model.name}:{model.version} sent to node {w.node}")
            answer = None
        except (MlwsError, TypeError, ValueError) as e:
            answer = str(e)
        w.conn.send(("model", answer))

    def stop(self) -> None:
        """Tell every worker to end (it calls ``shutdown()``), take in what they recorded
        meanwhile, then end their sessions (:meth:`.Driver.stop_pool`)."""
        from multiprocessing.connection import wait

        d = self.driver
        for w in d.workers:
            w.conn.send(None)
        open_ = {w.conn: w for w in d.workers}
        deadline = time.monotonic() + DRAIN_S
        while open_ and time.monotonic() < deadline:
            for c in wait(list(open_), max(0.0, deadline - time.monotonic())):
                try:
                    msg = c.recv()  # type: ignore[union-attr]
                except (EOFError, OSError):
                    open_.pop(c)
                    continue
                if msg[0] == "changes":
                    self.apply(msg[1])
        d.stop_pool()

    def finish(self) -> None:
        """Copy each host's worker logs and written output home, with the blobs of files the
        workers uploaded to the run; remove the step's folder there."""
        import tempfile

        d = self.driver
        with tempfile.TemporaryDirectory(dir=d.logs.parent) as tmp:
            for k, conn in enumerate(self.conns):
                folder, _ = self.ready.get(k, (None, None))
                if folder is None:
                    continue
                got = Path(tmp) / str(k)
                got.mkdir()
                there = ["logs/user", "outputs/prs", *([REPLICAS] if self.deferred else [])]
                try:
                    # One rsync (a round trip each otherwise): into got/user, got/prs, ...
                    conn.rsync(*(f":{folder}/{t}" for t in there), f"{got}/")
                except Exception as e:  # noqa: BLE001 - the step's outcome matters more
                    d.say(f"node {k}: not all of {', '.join(there)} came home: {e}")
                _move_into(got / "user", d.logs / "user")
                _move_into(got / "prs", Path(d.output_dir))
            # Removed once everything came home: hosts may share the folder (an NFS home).
            for k, conn in enumerate(self.conns):
                if k in self.ready:
                    conn.run(f"rm -rf {shlex.quote(self.ready[k][0])}", timeout=60)
            if self.deferred:
                self.files_home(Path(tmp))

    def files_home(self, tmp: Path) -> None:
        """Record the files the workers uploaded to the run, their blobs taken from the
        workers' remote catalogs copied into ``tmp`` (content-addressed: merged into one)."""
        from ..compute.remote_catalog import apply_files

        merged = tmp / "blobs"
        for blobs in tmp.glob(f"*/{REPLICAS}/*/blobs"):
            _move_into(blobs, merged)
        for warning in apply_files(self.home, self.deferred, merged) + self.home.warnings:
            self.driver.say(f"Warning: {warning}")


def _move_into(src: Path, dest: Path) -> None:
    """Move the files of folder ``src`` (plain files and folders: rsync brought nothing else
    home) into folder ``dest``, replacing same-named ones."""
    import shutil

    for p in sorted(src.rglob("*")):
        if p.is_file():
            out = dest / p.relative_to(src)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(p, out)


# -- on the host ---------------------------------------------------------------------------------
def needed_modules(sample: Any) -> list[str]:
    """The top-level modules unpickling ``sample`` (a mini-batch) imports: what a host's
    Python must have to take such mini-batches."""
    import pickletools

    # Protocol 2 names each class by "module name" in a GLOBAL opcode (later protocols push
    # the names as strings first).
    names = set()
    for op, arg, _ in pickletools.genops(pickle.dumps(sample, protocol=2, fix_imports=False)):
        if op.name == "GLOBAL":
            names.add(str(arg).split(" ", 1)[0].split(".", 1)[0])
    return sorted(names - set(sys.builtin_module_names) - {"copyreg", "_codecs"})


class _HostLink(FramedPipe):
    """The remote worker's side: a File mini-batch's files are written here first; what the
    run's remote catalog recorded goes ahead of each message."""

    def __init__(self, read_fd: int, write_file: Any, folder: str) -> None:
        from ..sshhost import SESSION_HEARTBEAT_S

        super().__init__(read_fd, write_file, heartbeat=SESSION_HEARTBEAT_S)
        self.folder = folder
        self.replica: Workspace | None = None
        self.change_id = 0
        #: What the driver sent while this worker waited for an answer (mini-batches ahead).
        self.pending: list[Any] = []

    def fetch_model(self, name: str, version: int | None) -> None:
        """Ask the driver for a registered model (:data:`mlws.modelpath.fetcher`): it is
        under ``azureml-models/`` here when this returns. :raises ModelNotFound:"""
        from ..errors import ModelNotFound

        self.send(("model?", name, version))
        while True:
            msg = FramedPipe.recv(self)
            if isinstance(msg, tuple) and msg[:1] == ("model",):
                if msg[1]:
                    raise ModelNotFound(msg[1])
                return
            self.pending.append(msg)

    def send(self, obj: Any) -> None:
        self.send_changes()
        super().send(obj)

    def send_changes(self) -> None:
        """Send what the run's remote catalog recorded since the last time."""
        if self.replica is None:
            return
        from ..compute.remote_catalog import read_changes

        metrics = sys.modules.get("mlws.metrics")
        if metrics is not None:  # values the script logged wait in a buffer: write them now
            metrics.flush_all(quiet=True)

        while True:
            last, changes = read_changes(self.replica.catalog.conn, self.change_id)
            if not changes:
                return
            self.change_id = last
            super().send(("changes", changes))

    def enter_run(self, settings: dict[str, Any]) -> None:
        """Make the step run's remote catalog in this worker's folder and make it the run
        ``Run.get_context()`` finds (the run's variables as the driver has them)."""
        from ..compute.remote_catalog import make_replica

        path = Path(self.folder) / REPLICAS / f"{settings['process']}-{os.getpid()}"
        path.parent.mkdir(exist_ok=True)
        self.replica = make_replica(path, settings["context"], Path(self.folder))
        os.environ.update(settings["variables"])
        os.environ["MLWS_WORKSPACE"] = str(path)
        from .. import modelpath

        # The run's models are in the workspace at home, not in this remote catalog.
        modelpath.fetcher = self.fetch_model

    def recv(self) -> Any:
        msg = self.pending.pop(0) if self.pending else super().recv()
        if msg is None or not isinstance(msg[1], list) or not msg[1]:
            return msg  # the end, a DataFrame, no files
        index, files = msg
        where = os.path.join(self.folder, ".prs-in", str(index))
        os.makedirs(where, exist_ok=True)
        paths = []
        for i, (name, data) in enumerate(files):
            path = os.path.join(where, f"{i:04d}-{name}")
            with open(path, "wb") as f:
                f.write(data)
            paths.append(path)
        return index, paths


def main() -> int:
    """``python -m mlws.pipelines.parallel_ssh`` on a host: one worker, talking to the driver
    on standard input and output (its own prints go to its log files)."""
    from ..processes import V1_SHIM_DIR
    from . import parallel_worker

    # The v1 layer (azureml_user.parallel_run, azureml.core) of the mlws running here.
    sys.path.insert(0, V1_SHIM_DIR)
    read_fd = os.dup(0)
    write_file = os.fdopen(os.dup(1), "wb", buffering=0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)  # a stray print before the worker's own logs are set up never joins the stream
    link = _HostLink(read_fd, write_file, os.getcwd())
    settings = FramedPipe.recv(link)
    missing = []
    for name in settings["needs"]:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        link.send(("host-error", _lacking(settings, missing)))
    else:
        link.enter_run(settings)
        parallel_worker.serve(link, settings)  # type: ignore[arg-type]
        link.send_changes()  # what shutdown() recorded
    link.close()
    link.writer.join(timeout=30)
    return 0


def _lacking(settings: dict[str, Any], missing: list[str]) -> str:
    names = " ".join(missing)
    python = settings["python"]
    return (
        f"ssh host {settings['host']}: {python} cannot import {', '.join(map(repr, missing))},"
        f" which a mini-batch of this step needs there (a Tabular dataset's are DataFrames):"
        f" install it there ({python} -m pip install {names}) or attach the target with"
        f" a python= that has it"
    )


if __name__ == "__main__":
    sys.exit(main())
