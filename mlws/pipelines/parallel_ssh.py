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

The entry script runs on the host without the step's run around it: ``Run.get_context()``
there is an offline run, and arguments naming files of this machine mean nothing there.
"""

from __future__ import annotations

import os
import pickle
import queue
import shlex
import struct
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .parallel_driver import Driver, Worker

_HEADER = struct.Struct("!Q")


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
    blocks the driver while the other side is writing to it), ``recv`` reads one."""

    def __init__(self, read_fd: int, write_file: Any) -> None:
        self.read_fd = read_fd
        self.write_file = write_file
        self.outbox: queue.Queue[bytes | None] = queue.Queue()
        self.writer = threading.Thread(target=self._write, daemon=True)
        self.writer.start()

    def _write(self) -> None:
        while True:
            data = self.outbox.get()
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

    def prepare(self) -> None:
        """Connect to each host, make mlws importable there, copy the step's folder."""
        from ..compute.shipping import ensure_mlws
        from ..compute.ssh import connection

        ws, d = self.driver.ws, self.driver
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

    def finish(self) -> None:
        """Copy each host's worker logs and written output home; close the connections."""
        d = self.driver
        for k, conn in enumerate(self.conns):
            folder, _ = self.ready.get(k, (None, None))
            if folder is None:
                continue
            for there, here in (("logs/user", d.logs / "user"), ("outputs/prs", d.output_dir)):
                try:
                    os.makedirs(here, exist_ok=True)
                    conn.rsync(f":{folder}/{there}/", f"{here}/")
                except Exception as e:  # noqa: BLE001 - the step's outcome matters more
                    d.say(f"node {k}: {there} not copied home: {e}")
            conn.run(f"rm -rf {shlex.quote(folder)}", timeout=60)


# -- on the host ---------------------------------------------------------------------------------
class _HostLink(FramedPipe):
    """The remote worker's side: a File mini-batch's files are written here first."""

    def __init__(self, read_fd: int, write_file: Any, folder: str) -> None:
        super().__init__(read_fd, write_file)
        self.folder = folder

    def recv(self) -> Any:
        msg = super().recv()
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
    link = _HostLink(read_fd, write_file, os.getcwd())
    settings = FramedPipe.recv(link)
    parallel_worker.serve(link, settings)  # type: ignore[arg-type]
    link.close()
    link.writer.join(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
