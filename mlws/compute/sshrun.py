"""A run on a node of an ``ssh`` target: the supervising process's side (see
``compute.ssh`` for the design, ``compute.agent`` for the host's side)."""

from __future__ import annotations

import json
import os
import queue
import shlex
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..errors import ComputeTargetException, MlwsError
from ..sshhost import Node, last_line, ssh_said
from . import hostmodels, remote_catalog
from .shipping import ensure_mlws, lib_path, source_hash
from .ssh import connection, nodes_of

if TYPE_CHECKING:
    from .supervisor import RunSupervisor

#: What a process that forks supervisors imports ahead for ssh runs
#: (:func:`mlws.compute.warm_executors`); the rest comes with this module.
WARM = ("mlws.compute.agent", "filelock")
#: Waits before each new try of a failed copy of outputs and logs home (a backoff, 7.5 s in all).
COPY_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)
#: How long a run whose session ended waits for its host to answer again (reconnecting with a
#: backoff) before it fails with ConnectionLost, unless the target says (``reconnect_seconds``):
#: a 30 s stall is noticed after ~15 s (ServerAlive 5 s x 3) and each try may wait 10 s
#: (ConnectTimeout), so 30 s lets such a stall end; every answer starts the window again.
RECONNECT_S = 30.0
#: Logs written on this side of a run (mlws's notes, the ssh client's stderr): never copied over.
_LOCAL_LOGS = ("--exclude=/logs/remote.log", "--exclude=/logs/ssh.log")


# -- a run on a node -------------------------------------------------------------------------------
def execute(sup: RunSupervisor, target: str, config: dict[str, Any]) -> None:
    """Run ``sup``'s run on a free node of an ``ssh`` target (waits ``Queued`` for one).

    A node that does not answer is skipped, and tried again after a backoff (recorded in the
    workspace, so every run of the target skips it); the run fails only when no node answers."""
    from ..runs import set_status
    from .local import hold_slot

    if int((sup.definition.get("distributed") or {}).get("nodeCount", 1)) > 1:
        from .sshnodes import execute_on_nodes

        execute_on_nodes(sup, target, config)
        return
    nodes = nodes_of(config)
    per_node = int(config.get("maxConcurrentRunsPerNode", 1))
    slots = [f"{n.slug}-{i}" for i in range(per_node) for n in nodes]
    by_slot = {f"{n.slug}-{i}": n for i in range(per_node) for n in nodes}

    def keep_waiting() -> bool:
        return sup.status() not in ("CancelRequested", "Canceled", "Failed", "Completed")

    folder = sup.ws.path / "locks" / "compute" / target
    health = _Health(folder)

    def answering_slots() -> list[str]:
        return [s for s in slots if not health.resting(by_slot[s])]

    while True:
        with hold_slot(folder, answering_slots, keep_waiting, may_start=sup.first_in_line) as name:
            if name is None:
                set_status(sup.ws, sup.run_id, "Canceled")
                return
            node = by_slot[name]
            run = SshRun(sup, target, config, node)
            try:
                try:
                    run.conn.open()
                except ComputeTargetException as e:
                    health.failed(node, str(e))
                    if all(health.resting(n) for n in nodes):
                        raise ComputeTargetException(
                            f"no host of compute target {target!r} answers: "
                            + "; ".join(f"{n}: {health.error(n)}" for n in nodes)
                        ) from None
                    continue  # the slot goes back; another node's is taken
                health.answered(node)
                run.run()
                return
            finally:
                run.conn.forget_key()


class _Health:
    """Which nodes of a target did not answer lately (a file per node beside the slot locks):
    such a node rests ``2, 4, 8, ... 120`` s after each failed connection, then is tried again."""

    FIRST_S = 2.0
    MAX_S = 120.0

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, node: Node) -> Path:
        return self.folder / f"down-{node.slug}.json"

    def _read(self, node: Node) -> dict[str, Any]:
        try:
            value = json.loads(self._path(node).read_text())
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def resting(self, node: Node) -> bool:
        return float(self._read(node).get("retryAt", 0)) > time.time()

    def error(self, node: Node) -> str:
        return str(self._read(node).get("error", "no answer"))

    def failed(self, node: Node, error: str) -> None:
        from ..dirs import write_atomic

        failures = int(self._read(node).get("failures", 0)) + 1
        rest = min(self.FIRST_S * 2 ** (failures - 1), self.MAX_S)
        record = {"failures": failures, "retryAt": time.time() + rest, "error": error}
        write_atomic(self._path(node), json.dumps(record).encode(), 0o644)

    def answered(self, node: Node) -> None:
        self._path(node).unlink(missing_ok=True)


class SshRun:
    """A run on one node of an ``ssh`` target, from this side: :meth:`run` takes it from
    ``Preparing`` to its end (the agent started over ssh, the script followed, outputs and logs
    copied home).

    ``peers``: the other nodes of a distributed run (:class:`mlws.compute.sshnodes.Peers`),
    started with this node's script and stopped with it. ``node_rank`` above 0: this session
    serves such a peer (its own folder on the host; the supervisor's process stays this node's).
    """

    def __init__(
        self,
        sup: RunSupervisor,
        target: str,
        config: dict[str, Any],
        node: Node,
        peers: Any = None,
        node_rank: int = 0,
    ) -> None:
        self.sup = sup
        self.ws = sup.ws
        self.run_id = sup.run_id
        self.config = config
        self.node = node
        self.peers = peers
        self.node_rank = node_rank
        #: The run's folder on the host (a peer's has its node rank: two "hosts" may be one).
        self.folder_name = sup.run_id if node_rank == 0 else f"{sup.run_id}-node{node_rank}"
        self.conn = connection(sup.ws, target, config, node)
        self.remote_dir = f"{config['workDir']}/runs/{self.folder_name}"
        self.proc: subprocess.Popen[bytes] | None = None
        #: What the agent said when it could not run the script (raised once its logs are home).
        self.agent_error: MlwsError | None = None
        self._ssh_log_offset = 0
        #: The last of the replica's changes applied here (a reconnect asks for those after it).
        self._change_id = 0
        self._script_started: float | None = None
        #: outputs/, logs/ and the replica's blobs, sent by the agent in its session (base64
        #: tar), or None: then rsync brings them.
        self._inline: str | None = None
        self._t0 = time.monotonic()
        me = sup.ws.catalog.one(
            "SELECT supervisor_pid, supervisor_start FROM runs WHERE id = ?", (sup.run_id,)
        )
        self.home = remote_catalog.Home(
            sup.ws, sup.row, me[0] if me else os.getpid(), me[1] if me else None
        )

    def run(self) -> None:
        """Take the run from ``Preparing`` to its end on this node (see the class docstring);
        the connection must be open."""
        from ..runs import set_status
        from . import remote_catalog

        sup, ws, d = self.sup, self.ws, self.sup.definition
        if not set_status(ws, self.run_id, "Preparing"):
            sup.cancel_if_requested()
            return
        with ws.catalog.write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO run_properties VALUES (?, 'mlws.node', ?)",
                (sup.row["seq"], str(self.node)),
            )
        workdir = sup.prepare_workdir(remote=True)
        # The local working folder holds the streamed log: `mlws run logs -f` reads it live.
        with ws.catalog.write() as conn:
            conn.execute(
                "UPDATE runs SET working_dir = ? WHERE id = ?", (str(workdir), self.run_id)
            )
        err_path = workdir / "logs" / "remote.log"
        self._t0 = time.monotonic()
        self._note(err_path, f"run {self.run_id} on {self.node}")
        self.conn.open()
        self.remote_dir = f"{self.conn.work_dir()}/runs/{self.folder_name}"
        self._note(err_path, f"connected ({self.remote_dir})")
        # The agent starts (Python, imports: the slow part on a host) while the snapshot is
        # copied; it waits for its instructions, which are sent once the copy is complete.
        ssh_err = workdir / "logs" / "ssh.log"
        events = self.start_agent(ssh_err)
        from .agent import pack

        # A small working folder goes with the agent's instructions: no second session and
        # rsync at both ends competing with the agent's start (with the copy home done the same
        # way: 2.8 s against 3.5 s a run, alternated, on a loaded 2-core machine).
        packed = pack(workdir, ("",), skip=("logs/remote.log", "logs/ssh.log"))
        if packed is None:
            self.conn.rsync(
                str(workdir) + "/",
                f":{self.remote_dir}/",
                options=_LOCAL_LOGS,
                make_dest=self.remote_dir,
            )
            self._note(err_path, "snapshot copied")
        else:
            self._note(
                err_path, f"snapshot packed ({len(packed)} bytes, sent with the instructions)"
            )
        if self._stop_if_canceled(workdir):
            return
        if not d["environment"].get("managed"):
            # A user-managed environment names the host's interpreter, or means the target's.
            explicit = (d["environment"].get("python") or {}).get("interpreterPath")
            use = explicit if explicit and explicit != "python" else self.config["python"]
            d["environment"]["interpreter"] = use
        spec = {
            **remote_catalog.run_spec(ws, sup.row),
            "definition": d,
            "cancelGraceS": _cancel_grace(),
            "keep": bool(os.environ.get("MLWS_KEEP_WORKDIR")),
        }  # fmt: skip
        if packed is not None:
            import base64

            spec["snapshot"] = base64.b64encode(packed).decode("ascii")
        events = self.agent_ready(events, err_path, ssh_err)
        self._note(err_path, "agent ready")
        if self._stop_if_canceled(workdir):
            return
        if self.peers is not None:
            # The other nodes start now, each with its own node rank, meeting at this node.
            self.peers.start(self, workdir, spec)
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(spec, default=str) + "\n").encode())
            self.proc.stdin.flush()
        except OSError:
            pass  # the session died at once: the reader sees the end and says so
        outcome, deferred = self._follow(events, workdir)
        if self.agent_error is not None:
            try:
                self.conn.rsync(f":{self.remote_dir}/logs", str(workdir) + "/", options=_LOCAL_LOGS)
            except MlwsError as e:
                self._note(err_path, f"could not copy the logs home: {e}")
            self.send("done")  # the agent removes the run's folder on the host
            raise self.agent_error
        lost = outcome[1] is not None and outcome[1].get("code") == "ConnectionLost"
        if lost:
            recovered = self._recover(workdir, err_path, deferred)
            if recovered is not None:
                outcome, lost = recovered, False
        if self.peers is not None:
            outcome = self.peers.finish(outcome)
        if outcome[0] != "Canceled":
            set_status(ws, self.run_id, "Finalizing")
        self._note(err_path, f"script ended: {outcome[0]}")
        warnings: list[str] = []
        if not lost:
            # One round trip brings outputs, logs and the blobs of uploaded files home.
            sources = [f":{self.remote_dir}/outputs", f":{self.remote_dir}/logs"]
            if deferred:
                sources.append(f":{self.remote_dir}/.mlws-replica/blobs")
            try:
                self._copy_home(sources, workdir)
            except MlwsError as first:
                try:
                    self._copy_home_again(sources, workdir, err_path, first)
                except MlwsError as e:
                    copied = False
                    warnings.append(str(e))
                    if outcome[0] == "Completed":
                        outcome = (
                            "Failed",
                            {
                                "code": "OutputsLost",
                                "message": f"the script completed, but its outputs could not be"
                                f" copied home from {self.node}:{self.remote_dir} ({e});"
                                " they are still there",
                            },
                        )
                else:
                    copied = True
            else:
                copied = True
            if copied:
                self._note(err_path, "outputs and logs copied home")
                self.send("done")  # the agent removes the run's folder on the host and exits
                if self.proc is not None and self.proc.poll() is not None:
                    # The agent's session dropped (the copy needed a new connection): "done"
                    # cannot reach it, so remove the folder ourselves.
                    if not os.environ.get("MLWS_KEEP_WORKDIR"):
                        self.conn.run(f"rm -rf {shlex.quote(self.remote_dir)}", timeout=60)
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.close()
        except OSError:
            pass  # the session is gone (and "done" with it)
        if deferred:
            warnings += remote_catalog.apply_files(self.home, deferred, workdir / "blobs")
        warnings += self.home.warnings
        if warnings:
            with open(err_path, "a") as log:
                log.writelines(f"Warning: {w}\n" for w in warnings)
        outcome = sup.publish_outputs(workdir, outcome)
        sup.collect(workdir)
        sup.finish(outcome)
        assert self.proc is not None
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def agent_ready(
        self, events: queue.Queue[dict[str, Any] | None], err_path: Path, ssh_err: Path
    ) -> queue.Queue[dict[str, Any] | None]:
        """Wait for the agent started by :meth:`start_agent` to say it can run the run; when it
        cannot (absent, another version, a missing dependency), ship mlws to the host and start
        it again. Returns the events of the agent that can.

        :raises MlwsError: the agent cannot run there even after mlws was shipped.
        """
        # Optimistic: start the agent with the shipped copy's path; only when it answers that
        # it cannot run is mlws shipped.
        refusal = self.hello(events, ssh_err)
        if refusal is None:
            return events
        from filelock import FileLock

        # Runs of this workspace ship to a host one at a time (rsync --delete into one folder
        # from two runs would break both).
        lock = self.ws.path / "locks" / "compute" / self.conn.target / f"ship-{self.node.slug}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock)), open(err_path, "a") as log:
            log.write(f"{self.node}: {refusal}\n")
            ensure_mlws(self.conn, log)
        events = self.start_agent(ssh_err)
        refusal = self.hello(events, ssh_err)
        if refusal is not None:
            raise MlwsError(f"{self.node}: the mlws agent cannot run there: {refusal}")
        return events

    def _copy_home_again(
        self, sources: list[str], workdir: Path, err_path: Path, error: MlwsError
    ) -> None:
        """The copy home failed: try again after 0.5, 1, 2 and 4 s (a network that hiccups, a
        host busy for a moment), each time over a new connection if the master went away.
        :raises MlwsError: the last failure."""
        for delay in COPY_RETRY_DELAYS_S:
            self._note(err_path, f"copying home failed ({error}); again in {delay:g} s")
            time.sleep(delay)
            try:
                self.conn.open()
                self._copy_home(sources, workdir)
                return
            except MlwsError as e:
                error = e
        raise error

    def apply_changes(self, changes: list[Any]) -> list[dict[str, Any]]:
        """Apply the replica's changes at home (a multi-host run's metrics as its peers')."""
        if self.peers is not None:
            changes = remote_catalog.metrics_home(
                self.ws, self.run_id, self.sup.row["seq"], changes, own_steps=True
            )
        return remote_catalog.apply_changes(self.home, changes)

    def _copy_home(self, sources: list[str], workdir: Path) -> None:
        inline, self._inline = self._inline, None  # once: a retry goes by rsync
        try:
            unpacked = inline is not None and unpack_home(inline, workdir)
        except Exception as e:  # noqa: BLE001 - the host's bytes: any flaw means rsync instead
            self._note(workdir / "logs" / "remote.log", f"files sent inline unusable ({e})")
            unpacked = False
        if not unpacked:
            self.conn.rsync(*sources, str(workdir) + "/", options=_LOCAL_LOGS)
        if self.sup.definition.get("outputs"):
            # Output datasets: the folders the script wrote (only those: inputs stay there).
            folders = self.sup.definition["dataPaths"]["outputs"].values()
            self.conn.rsync(
                *(f":{self.remote_dir}/./{f}" for f in folders),
                str(workdir) + "/",
                options=("--relative",),
            )

    def _stop_if_canceled(self, workdir: Path) -> bool:
        """Canceled while preparing: end the agent before it starts the script (it removes the
        run's folder on the host) and end the run."""
        if self.sup.status() != "CancelRequested":
            return False
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        self.sup.collect(workdir)
        self.sup.finish(("Canceled", None))
        return True

    def _note(self, path: Path, what: str) -> None:
        """A timed line in ``logs/remote.log``: where a remote run's time goes."""
        with open(path, "a") as log:
            log.write(f"[{time.monotonic() - self._t0:7.3f} s] {what}\n")

    def start_agent(self, err_path: Path) -> queue.Queue[dict[str, Any] | None]:
        """Start ``python -m mlws.compute.agent`` in the run's folder on the host over ssh (the
        ssh client's stderr to ``err_path``); returns the queue its JSON events arrive on."""
        from ..processes import die_with_parent

        python = self.config["python"]
        cache = self.config.get("cacheDir")
        folder = shlex.quote(self.remote_dir)
        remote = (
            f"mkdir -p {folder} && cd {folder} && PYTHONPATH={shlex.quote(lib_path(self.conn))}"
            + (f" XDG_CACHE_HOME={shlex.quote(cache)}" if cache else "")
            + f" exec {shlex.quote(python)} -u -m mlws.compute.agent ."
        )
        with open(err_path, "ab") as err:
            self._ssh_log_offset = err.tell()
            self.proc = subprocess.Popen(
                self.conn.ssh_command(remote),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        # No pid is recorded: the script's pid is on the host, and signalling the ssh client
        # would cut the session instead of cancelling gracefully. The client dies with this
        # process (PR_SET_PDEATHSIG), and the agent then kills the script on the host.
        if self.node_rank == 0:
            self.sup.proc = self.proc
        events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=_read_events, args=(self.proc.stdout, events), daemon=True).start()
        return events

    def hello(self, events: queue.Queue[dict[str, Any] | None], err_path: Path) -> str | None:
        """Wait for the agent's first line; ``None`` when it can run this run, else why not."""
        from .. import __version__
        from .agent import PROTOCOL

        assert self.proc is not None
        try:
            ev = events.get(timeout=120)
        except queue.Empty:
            ev = None
        if ev is None or ev.get("t") != "hello":
            self.proc.kill()
            self.proc.wait()
            return f"no mlws agent answered ({ssh_said(err_path)})"
        other = ev.get("hash", source_hash()) != source_hash()
        if (
            ev.get("missing")
            or ev.get("protocol") != PROTOCOL
            or ev.get("version") != __version__
            or other
        ):
            self.proc.kill()  # an agent of another version waits for instructions: end it
            self.proc.wait()
            if other:
                return f"mlws {__version__} of other source files there ({ev.get('file')})"
            return ev.get("missing") or f"mlws {ev.get('version')} there, not {__version__}"
        return None

    def _follow(
        self, events: queue.Queue[dict[str, Any] | None], workdir: Path
    ) -> tuple[tuple[str, dict[str, Any] | None], list[dict[str, Any]]]:
        from ..runs import set_status
        from .script import exit_outcome

        assert self.proc is not None and self.proc.stdin is not None
        sup, ws = self.sup, self.ws
        limit = sup.definition.get("maxRunDurationSeconds")
        # The limit is the script's, as on local: counted from its start, not from the agent's
        # (which may build the environment on the host first).
        started: float | None = None
        deferred: list[dict[str, Any]] = []
        canceled = timed_out = peer_failed = False
        log = open(workdir / "logs" / "driver.log", "a", encoding="utf-8")  # noqa: SIM115
        try:
            while True:
                ev = next_event(events)
                if ev is None:
                    self.proc.wait()
                    if canceled or sup.status() == "CancelRequested":
                        return ("Canceled", None), deferred
                    return (
                        "Failed",
                        {
                            "code": "ConnectionLost",
                            "message": f"lost the connection to {self.node} while the run was running"
                            f" (ssh exit {self.proc.returncode}: {self._ssh_said_since(workdir / 'logs' / 'ssh.log') or 'the host or its sshd went away'})",
                        },
                    ), deferred
                kind = ev.get("t")
                if kind == "log":
                    log.write(ev["data"])
                    log.flush()
                elif kind == "changes":
                    deferred += self.apply_changes(ev["changes"])
                    self._change_id = int(ev.get("upto") or self._change_id)
                elif kind == "interpreter":
                    set_status(ws, self.run_id, "Starting")
                elif kind == "started":
                    started = self._script_started = time.monotonic()
                    self._note(workdir / "logs" / "remote.log", "script started")
                    set_status(ws, self.run_id, "Running")
                elif kind == "build":
                    self.record_build(ev.get("row") or {})
                elif kind == "secrets":
                    self.answer_secrets(ev)
                elif kind == "model":  # the script's Model.get_model_path (hostmodels)
                    self.send(json.dumps(hostmodels.answer(ws, self.conn, self.remote_dir, ev)))
                elif kind == "error":
                    # The agent keeps the run's folder until "done": its logs (a failed
                    # environment build's) come home before the run fails with this.
                    err = MlwsError(f"on {self.node}: {ev.get('message')}")
                    err.remote_trace = ev.get("trace")  # type: ignore[attr-defined]
                    self.agent_error = err
                    return ("Failed", None), deferred
                elif kind == "files":
                    self._inline = ev.get("tar")
                elif kind == "exit":
                    rc = int(ev["rc"])
                    break
                if not canceled and sup.status() == "CancelRequested":
                    canceled = True
                    self.send("cancel")
                if self.peers is not None and not peer_failed and self.peers.failed():
                    peer_failed = True  # its outcome is the run's (Peers.finish)
                    self.send("kill")
                if (
                    limit
                    and started is not None
                    and not timed_out
                    and time.monotonic() - started > float(limit)
                ):
                    timed_out = True
                    self.send("kill")
        finally:
            log.close()
        if canceled or sup.status() == "CancelRequested":
            return ("Canceled", None), deferred
        if timed_out:
            return (
                "Failed",
                {
                    "code": "RunTimeout",
                    "message": f"the run exceeded max_run_duration_seconds={limit} and was killed",
                },
            ), deferred
        requested = ws.catalog.scalar(
            "SELECT requested_status FROM runs WHERE id = ?", (self.run_id,)
        )
        if requested == "Failed":
            return ("Failed", None), deferred
        return exit_outcome(rc, workdir / "logs" / "driver.log"), deferred

    def _recover(
        self, workdir: Path, err_path: Path, deferred: list[dict[str, Any]]
    ) -> tuple[str, dict[str, Any] | None] | None:
        """The agent's session ended while the run ran (a network stall, a killed agent):
        reconnect and follow the run from its folder on the host (``agent --recover``) until
        the script's end, bringing its catalog changes home meanwhile. Returns the outcome, or
        ``None`` when the host gave no answer for ``reconnect_seconds`` (or its folder is gone)."""
        from .script import exit_outcome

        self._note(err_path, "the agent's session ended; reconnecting")
        command = (
            f"PYTHONPATH={shlex.quote(lib_path(self.conn))} {shlex.quote(self.config['python'])}"
            f" -m mlws.compute.agent --recover {shlex.quote(self.remote_dir)}"
        )
        window = float(self.config.get("reconnectS", RECONNECT_S))
        deadline = time.monotonic() + window
        delay = 0.25
        limit = self.sup.definition.get("maxRunDurationSeconds")
        while time.monotonic() < deadline:
            cancel = self.sup.status() == "CancelRequested"
            # The script's time limit holds while it is followed from here too.
            over = bool(
                limit
                and self._script_started is not None
                and time.monotonic() - self._script_started > float(limit)
            )
            try:
                self.conn.open()
                r = self.conn.run(f"{command} {self._change_id}{' kill' if cancel or over else ''}")
                info = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else None
            except (MlwsError, ValueError, IndexError):
                info = None
            if isinstance(info, dict):
                if not info.get("folder"):
                    return None
                deadline = time.monotonic() + window  # it answers: the window starts again
                delay = 0.25
                deferred += self.apply_changes(info.get("changes") or [])
                self._change_id = int(info.get("upto") or self._change_id)
                if cancel:
                    return ("Canceled", None)
                if info.get("exit") is not None and not info.get("endedBy"):
                    self._note(err_path, "reconnected: the script ended on the host")
                    try:  # the log's last lines say why a script failed
                        self.conn.rsync(
                            f":{self.remote_dir}/logs", str(workdir) + "/", options=_LOCAL_LOGS
                        )
                    except MlwsError:
                        pass
                    return exit_outcome(int(info["exit"]), workdir / "logs" / "driver.log")
                if over:
                    return (
                        "Failed",
                        {
                            "code": "RunTimeout",
                            "message": f"the run exceeded max_run_duration_seconds={limit} and"
                            " was killed",
                        },
                    )
                if info.get("exit") is not None or not info.get("agent"):
                    # The agent is gone and the script with it (it ends the script when its
                    # session ends, and a killed agent's script dies with it).
                    self._note(err_path, "reconnected: the agent had ended")
                    said = self._ssh_said_since(workdir / "logs" / "ssh.log")
                    code = "ConnectionLost" if info.get("endedBy") else "AgentDied"
                    why = (
                        "the connection was lost and the agent ended the script"
                        if info.get("endedBy")
                        else "the mlws agent ended before the script did"
                    )
                    return (
                        "Failed",
                        {
                            "code": code,
                            "message": f"on {self.node}: {why}"
                            f" (ssh exit {self.proc.returncode if self.proc else '?'}"
                            f"{': ' + said if said else ''}); the host still answers, so the"
                            " run's outputs and logs there are copied home",
                        },
                    )
                # The script still runs on the host: follow it from here.
            time.sleep(delay)
            delay = min(delay * 2, 4.0)
        return None

    def _ssh_said_since(self, path: Path) -> str:
        """What the ssh client wrote since the agent's session started ("" if nothing): earlier
        lines (a first agent that could not import mlws) are not about this session."""
        try:
            with open(path, "rb") as f:
                f.seek(self._ssh_log_offset)
                text = f.read()[-4096:]
        except OSError:
            return ""
        line = last_line(text)
        return "" if line == "no message" else line

    def record_build(self, row: dict[str, Any]) -> None:
        """An environment the agent built on the host goes into the catalog, as local builds
        do; its ``host`` is the node (the path is on that node)."""
        columns = ("spec_hash", "path", "python", "tool", "freeze", "seconds", "created")
        if not row.get("spec_hash") or not row.get("path"):
            return
        with self.ws.catalog.write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO environment_builds"
                f" (host, {', '.join(columns)}) VALUES (?{', ?' * len(columns)})",
                (str(self.node), *(row.get(c) for c in columns)),
            )

    def answer_secrets(self, ev: dict[str, Any]) -> None:
        """The script asked for secrets: decrypt here, send only those values."""
        try:
            names = [str(n) for n in ev.get("names") or []]
            # A host could ask for anything by name: the credentials of compute targets and
            # datastores (keys that open other hosts) are never given to a run.
            from ..keyvault import secrets_for_run

            values = secrets_for_run(self.ws, names)
            answer: dict[str, Any] = {"id": ev.get("id"), "values": values}
        except MlwsError as e:
            answer = {"id": ev.get("id"), "error": str(e)}
        self.send(json.dumps(answer))

    def send(self, command: str) -> None:
        """One line to the agent (``cancel``, ``kill``, ``done``, a secrets answer); nothing
        when its session is gone."""
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(f"{command}\n".encode())
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass  # the session is gone


def next_event(
    events: queue.Queue[dict[str, Any] | None], timeout: float = 0.25
) -> dict[str, Any] | None:
    """The agent's next event, ``{"t": "tick"}`` when none came within ``timeout`` seconds, or
    ``None`` once its session has ended (the loops that follow an agent act on each tick)."""
    try:
        return events.get(timeout=timeout)
    except queue.Empty:
        return {"t": "tick"}


def unpack_home(data: str, workdir: Path) -> bool:
    """Write the agent's ``files`` event (base64 of a gzip'd tar of ``outputs/``, ``logs/`` and
    the replica's blobs) into ``workdir`` as the rsync home would: ``blobs/`` for the replica's
    blobs, ``logs/remote.log`` and ``logs/ssh.log`` left alone (written here). What the host sends
    is not trusted: only plain files and folders under those three, no absolute or ``..``
    paths, never through a link here; each file is written to a temporary name and renamed.
    :raises ValueError: a member breaks these rules (nothing more is written; rsync follows);
        a damaged payload raises what tarfile, gzip or base64 raise."""
    import base64
    import io
    import posixpath
    import tarfile

    from .agent import REPLICA

    tops = {"outputs": "outputs", "logs": "logs", f"{REPLICA}/blobs": "blobs"}
    skip = {f"logs/{name}" for name in ("remote.log", "ssh.log")}
    root = workdir.resolve()
    with tarfile.open(
        fileobj=io.BytesIO(base64.b64decode(data, validate=True)), mode="r:gz"
    ) as tar:
        for m in tar:
            name = posixpath.normpath(m.name)
            if name.startswith("/") or ".." in name.split("/"):
                raise ValueError(f"the host sent an unsafe path {m.name!r}")
            top = next((t for t in tops if name == t or name.startswith(t + "/")), None)
            if top is None or not (m.isfile() or m.isdir()):
                raise ValueError(f"the host sent {m.name!r}, which is not an output or a log")
            rel = tops[top] + name[len(top) :]
            if rel in skip:
                continue
            dest = root / rel
            parent = dest if m.isdir() else dest.parent
            parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            if parent.resolve() != parent or not parent.is_relative_to(root):
                raise ValueError(f"{rel!r} leads through a link here")
            if m.isdir():
                continue
            src = tar.extractfile(m)
            assert src is not None
            tmp = dest.with_name(f".{dest.name}.mlws-{os.getpid()}")
            with src, open(tmp, "wb") as f:
                while chunk := src.read(1 << 20):
                    f.write(chunk)
            os.chmod(tmp, 0o644)
            os.utime(tmp, (m.mtime, m.mtime))
            os.replace(tmp, dest)  # replaces a link itself, never writes through it
    return True


def _read_events(stream: IO[bytes], events: queue.Queue[dict[str, Any] | None]) -> None:
    for line in stream:
        try:
            ev = json.loads(line)
        except ValueError:
            continue  # not ours (a login banner); the agent only writes JSON objects
        if isinstance(ev, dict):
            events.put(ev)
    events.put(None)


def _cancel_grace() -> float:
    from .script import CANCEL_GRACE_S

    return CANCEL_GRACE_S
