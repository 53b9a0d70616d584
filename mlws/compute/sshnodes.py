"""A distributed run over several hosts of an ``ssh`` target (``node_count`` above 1).

The run takes a slot on ``node_count`` distinct hosts (one such run gathers its hosts at a
time: two that each held some hosts would wait for each other forever), then runs as usual on
the first one, node 0 (:class:`mlws.compute.sshrun.SshRun`: statuses, outputs, the run's end).
The other nodes are its :class:`Peers`: once node 0's agent is ready, each gets the same
working folder and instructions, but for its own node rank, over its own agent session (the
same ssh path: ``SshRun.start_agent``/``agent_ready``), in its own folder on the host. Every
node's rank launcher (:mod:`mlws.compute.ranks`) meets at node 0: ``MASTER_ADDR`` is node 0's
host as the target names it, ``MASTER_PORT`` a port free there.

What comes home from a peer: its ranks' logs (``logs/std_log_process_<rank>.txt``, and as v1
names them, ``azureml-logs/70_driver_log_<rank>.txt``), its launcher's output
(``logs/node_<k>.log``) and what its ranks record on the run -- as in v1, where every rank's
``Run.get_context()`` is the one run, wherever it runs: tags, properties, child runs and uploaded
files (through the same checks as node 0's, :mod:`mlws.compute.remote_catalog`), and metric
values. The run's ``./outputs`` are rank 0's (node 0's), as in v1.

Metrics of a multi-host run: each node's copy of the run numbers its metric steps from 0, so
neither node's numbers can be kept. Every node's values of the run's own metrics are stored at
home as they arrive, each at its metric's next step (:func:`.remote_catalog.metrics_home`), with the time the
rank logged it: a rank's values keep their order, and the ranks' interleave as they came, as
ranks on one machine do (and as v1 appends them). A step a rank passed itself (``step=``) is
kept: the nodes number the steps they give from ``metrics.NODE_AUTO_STEP``, so home tells the
two apart. A peer that fails (a rank there fails, its session is lost, its agent cannot run)
stops node 0's script and the run fails naming that node. When node 0's script completes, the
run ends once the peers' ranks have ended too (as with torchrun); when it fails or is
canceled, the peers are stopped.
"""

from __future__ import annotations

import contextlib
import copy
import json
import queue
import shlex
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ComputeTargetException, MlwsError
from . import hostmodels
from .ssh import nodes_of

if TYPE_CHECKING:
    from .sshrun import SshRun
    from .supervisor import RunSupervisor

#: Seconds a peer has to end and send its logs once it is stopped.
PEER_END_S = 60.0


def execute_on_nodes(sup: RunSupervisor, target: str, config: dict[str, Any]) -> None:
    """Run ``sup``'s distributed run on ``nodeCount`` hosts of the ``ssh`` target (waits
    ``Queued`` until it holds a slot on each).

    :raises ComputeTargetException: the target has fewer hosts than the run needs, or node 0
        does not answer.
    """
    from ..runs import set_status
    from .local import hold_slot
    from .sshrun import SshRun

    need = int(sup.definition["distributed"]["nodeCount"])
    nodes = nodes_of(config)
    if need > len(nodes):
        raise ComputeTargetException(
            f"the run needs {need} nodes; compute target {target!r} has {len(nodes)} host(s)"
        )
    per_node = int(config.get("maxConcurrentRunsPerNode", 1))
    by_slot = {f"{n.slug}-{i}": n for i in range(per_node) for n in nodes}

    def keep_waiting() -> bool:
        return sup.status() not in ("CancelRequested", "Canceled", "Failed", "Completed")

    folder = sup.ws.path / "locks" / "compute" / target
    with contextlib.ExitStack() as held:
        chosen: list[Any] = []
        # One multi-node run gathers its hosts at a time (two that each held some hosts would
        # wait for each other forever); once it has them all, the next may gather.
        with hold_slot(
            folder, lambda: ["multi-node"], keep_waiting, may_start=sup.first_in_line
        ) as gang:
            while gang is not None and len(chosen) < need:
                name = held.enter_context(
                    hold_slot(
                        folder,
                        lambda: [s for s, n in by_slot.items() if n not in chosen],
                        keep_waiting,
                    )
                )
                if name is None:
                    break
                chosen.append(by_slot[name])
        if len(chosen) < need:  # canceled while waiting
            set_status(sup.ws, sup.run_id, "Canceled")
            return
        peers = Peers(sup, target, config, chosen[1:])
        run = SshRun(sup, target, config, chosen[0], peers=peers)
        try:
            run.conn.open()
            run.run()
        finally:
            peers.close()
            run.conn.forget_key()


class Peers:
    """The nodes of a distributed ssh run other than node 0, each followed in a thread (see the
    module docstring). Node 0's :class:`~mlws.compute.sshrun.SshRun` calls :meth:`start` when
    its agent is ready, polls :meth:`failed` while its script runs and :meth:`finish` when it
    has ended; :meth:`close` ends whatever still runs."""

    def __init__(
        self, sup: RunSupervisor, target: str, config: dict[str, Any], nodes: list[Any]
    ) -> None:
        self.sup = sup
        self.target = target
        self.config = config
        self.nodes = nodes
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.sessions: list[SshRun] = []
        #: When the peers started (the run's time limit counts from about then).
        self.started = time.monotonic()
        #: The first peer failure: ``(node rank, node, message)``.
        self.failure: tuple[int, Any, str] | None = None
        #: Each peer session's file changes waiting for their blobs, by ``id(session)``.
        self.deferred: dict[int, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def start(self, primary: SshRun, workdir: Path, spec: dict[str, Any]) -> None:
        """Pick the meeting port on node 0, record the layout in node 0's instructions
        (``spec``, about to be sent) and start every peer with its own node rank."""
        python = shlex.quote(self.config["python"])
        probe = "import socket; s = socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])"
        r = primary.conn.run(f"{python} -c {shlex.quote(probe)}", timeout=60)
        try:
            port = int(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise MlwsError(
                f"{primary.node}: could not find a free port for the ranks to meet at"
                f" ({r.stderr.strip()[-200:] or 'no answer'})"
            ) from None
        self.started = time.monotonic()
        layout = spec["definition"]["distributed"]
        layout.update(masterAddr=primary.node.host, masterPort=port, nodeRanks=[0])
        # Every node numbers the steps it gives far above any a script passes, so a rank's
        # own step= is told apart at home (metrics_home) and kept.
        from ..metrics import NODE_AUTO_STEP, STEP_BASE_ENV

        d = spec["definition"] = dict(spec["definition"])  # the nodes', not the run's record
        d["environmentVariables"] = {
            **(d.get("environmentVariables") or {}),
            STEP_BASE_ENV: str(NODE_AUTO_STEP),
        }
        for k, node in enumerate(self.nodes, start=1):
            mine = copy.deepcopy(spec)
            mine["definition"]["distributed"]["nodeRanks"] = [k]
            t = threading.Thread(
                target=self._follow,
                args=(k, node, workdir, mine),
                name=f"mlws-node-{k}",
                daemon=True,
            )
            self.threads.append(t)
            t.start()

    def failed(self) -> bool:
        """A peer has failed (its script, its session or its agent)."""
        return self.failure is not None

    def finish(
        self, outcome: tuple[str, dict[str, Any] | None]
    ) -> tuple[str, dict[str, Any] | None]:
        """Node 0's script has ended with ``outcome``; returns the run's. When it completed, the
        job is done once every rank is (as with torchrun): the peers run on to their own end
        (a cancel, a peer's failure or the run's time limit stops them). Otherwise they are
        stopped at once. A peer's failure is the run's, unless the run was canceled."""
        if outcome[0] == "Completed":
            limit = self.sup.definition.get("maxRunDurationSeconds")
            deadline = self.started + float(limit) if limit else None
            while self.failure is None and any(t.is_alive() for t in self.threads):
                if self.sup.status() == "CancelRequested":
                    outcome = ("Canceled", None)
                    break
                if deadline is not None and time.monotonic() > deadline:
                    outcome = (
                        "Failed",
                        {
                            "code": "RunTimeout",
                            "message": f"the run exceeded max_run_duration_seconds={limit}"
                            " (ranks on other nodes still ran) and was killed",
                        },
                    )
                    break
                time.sleep(0.1)
        self.stop.set()
        for t in self.threads:
            t.join(PEER_END_S)
        if self.failure is not None and outcome[0] != "Canceled":
            k, node, message = self.failure
            return "Failed", {"code": "NodeFailed", "message": f"node {k} ({node}): {message}"}
        return outcome

    def close(self) -> None:
        """End every peer session still open (node 0 failed to run, or raised)."""
        self.stop.set()
        for s in self.sessions:
            if s.proc is not None and s.proc.poll() is None:
                s.proc.kill()
        for t in self.threads:
            t.join(5)

    def _fail(self, k: int, node: Any, message: str) -> None:
        with self._lock:
            if self.failure is None and not self.stop.is_set():
                self.failure = (k, node, message)

    def _follow(self, k: int, node: Any, workdir: Path, spec: dict[str, Any]) -> None:
        from .script import exit_outcome
        from .sshrun import SshRun

        session = SshRun(self.sup, self.target, self.config, node, node_rank=k)
        self.sessions.append(session)
        logs = workdir / "logs"
        node_log = logs / f"node_{k}.log"
        try:
            session.conn.open()
            session.remote_dir = f"{session.conn.work_dir()}/runs/{session.folder_name}"
            if "snapshot" not in spec:  # too large to travel with the instructions
                session.conn.rsync(
                    str(workdir) + "/",
                    f":{session.remote_dir}/",
                    options=("--exclude=/logs/",),
                    make_dest=session.remote_dir,
                )
            ssh_err = logs / f"ssh_node_{k}.log"
            events = session.start_agent(ssh_err)
            events = session.agent_ready(events, node_log, ssh_err)
            assert session.proc is not None and session.proc.stdin is not None
            session.proc.stdin.write((json.dumps(spec, default=str) + "\n").encode())
            session.proc.stdin.flush()
            rc, files = self._watch(k, node, session, events, node_log)
            if rc is None:
                return
            if rc != 0 and not self.stop.is_set():
                status, error = exit_outcome(rc, node_log)
                self._fail(k, node, (error or {}).get("message", status))
            self._bring_logs(session, files, logs)
            session.send("done")
        except (MlwsError, OSError) as e:
            self._fail(k, node, str(e))
        finally:
            if session.proc is not None:
                with contextlib.suppress(OSError):
                    assert session.proc.stdin is not None
                    session.proc.stdin.close()
                try:
                    session.proc.wait(timeout=30)
                except Exception:  # noqa: BLE001 - a session that will not end is killed
                    session.proc.kill()
            session.conn.forget_key()

    def _watch(
        self,
        k: int,
        node: Any,
        session: SshRun,
        events: queue.Queue[dict[str, Any] | None],
        node_log: Path,
    ) -> tuple[int | None, str | None]:
        """Follow a peer's agent until its script exits: its exit status (``None`` when the
        session ended first) and the files the agent sent inline (or ``None``). The peer is
        stopped once node 0 has ended or the run is canceled."""
        from .sshrun import next_event

        stopped = False
        files: str | None = None
        with open(node_log, "a", encoding="utf-8") as log:
            while True:
                ev = next_event(events)
                if ev is None:
                    self._fail(k, node, "lost the connection while the run was running")
                    return None, None
                kind = ev.get("t")
                if kind == "log":
                    log.write(ev["data"])
                    log.flush()
                elif kind == "changes":
                    self._apply(session, ev.get("changes") or [])
                elif kind == "build":
                    session.record_build(ev.get("row") or {})
                elif kind == "secrets":  # its first rank has the run's channel too
                    session.answer_secrets(ev)
                elif kind == "model":  # a script there asks for a registered model
                    reply = hostmodels.answer(self.sup.ws, session.conn, session.remote_dir, ev)
                    session.send(json.dumps(reply))
                elif kind == "files":
                    files = ev.get("tar")
                elif kind == "error":
                    self._fail(
                        k, node, f"the mlws agent could not run the script: {ev.get('message')}"
                    )
                    return None, None
                elif kind == "exit":
                    return int(ev["rc"]), files
                if not stopped and (self.stop.is_set() or self.sup.status() == "CancelRequested"):
                    stopped = True
                    session.send("kill")

    def _apply(self, session: SshRun, changes: list[Any]) -> None:
        """A peer's catalog changes, at home: the run's metric values (:func:`metrics_home`),
        then the rest through the peer session's checks (``remote_catalog``), except changes to
        the run's own row (its name, status and error are node 0's). Uploaded files wait for
        their blobs (:meth:`_bring_logs`)."""
        from .remote_catalog import apply_changes, metrics_home

        rest = [
            c
            for c in metrics_home(
                self.sup.ws, self.sup.run_id, self.sup.row["seq"], changes, own_steps=True
            )
            if not (
                isinstance(c, dict)
                and c.get("table") == "runs"
                and c.get("run_id") == self.sup.run_id
            )
        ]
        deferred = apply_changes(session.home, rest)
        with self._lock:
            self.deferred.setdefault(id(session), []).extend(deferred)

    def _bring_logs(self, session: SshRun, files: str | None, logs: Path) -> None:
        """The peer's rank logs, into the run's ``logs/`` (never its ``driver.log``, which is
        node 0's), and the files its ranks uploaded to the run (their blobs come with them)."""
        import shutil
        import tempfile

        from .agent import REPLICA
        from .remote_catalog import apply_files
        from .sshrun import unpack_home

        deferred = self.deferred.pop(id(session), [])
        with tempfile.TemporaryDirectory(dir=logs.parent) as tmp:
            got = False
            if files:
                with contextlib.suppress(Exception):  # a damaged payload: rsync instead
                    got = unpack_home(files, Path(tmp))
            if not got:
                blobs = [f":{session.remote_dir}/{REPLICA}/blobs"] if deferred else []
                session.conn.rsync(f":{session.remote_dir}/logs", *blobs, tmp + "/")
            for f in sorted((Path(tmp) / "logs").glob("std_log_process_*.txt")):
                shutil.copyfile(f, logs / f.name)
            if deferred:
                warnings = apply_files(session.home, deferred, Path(tmp) / "blobs")
                warnings += session.home.warnings
                if warnings:
                    with open(logs / f"ssh_node_{session.node_rank}.log", "a") as log:
                        log.writelines(f"Warning: {w}\n" for w in warnings)
