"""The run supervisor: the one process that drives a submitted run to its end, on any target.

``runconfig.submit_script`` records the run (``NotStarted``) and starts
``python -m mlws.compute.supervisor <workspace> <run id>`` detached (``processes.start_detached``,
a new session), so the run survives its submitter. The protocol, in order:

1. **Claim.** :class:`RunSupervisor` records its own pid and start time on the run and moves
   ``NotStarted`` to ``Queued``. From then on the run's status is reconciled against this process
   (``lifecycle.reconcile``): if it dies, the next reader abandons the run (``lifecycle.abandon``: the
   orphaned script is killed, the working folder's logs and outputs are stored, the run is
   ``Failed``). ``SIGTERM``/``SIGHUP`` do the same at once.
2. **Execute on the target.** :meth:`RunSupervisor.run` looks the target's type up in the compute
   type registry (``compute.executor``) and calls that type's ``execute(sup, target, config)``:
   ``compute.local`` (a slot on this machine), ``compute.sshrun`` (a slot on a host, the agent
   over ssh), ``compute.dask`` (a task on a Dask cluster). Each waits ``Queued`` for a slot, in
   submission order (:meth:`first_in_line`), then moves the run through the statuses
   ``Preparing`` (working folder: :meth:`prepare_workdir`; managed environment:
   :meth:`prepare_environment`), ``Starting``, ``Running`` (the script, started as
   ``compute.script`` says), ``Finalizing``. Status moves are conditional: none replaces a
   ``CancelRequested``, none changes a final status.
3. **Watch.** While the script runs the target watches the catalog: ``CancelRequested`` (or a
   final status set elsewhere) sends SIGTERM to the script's process group
   (:meth:`kill_script`), SIGKILL after ``compute.script.CANCEL_GRACE_S``; past
   ``maxRunDurationSeconds`` the group is killed and the run fails ``RunTimeout``. The exit code
   becomes the outcome (``compute.script.exit_outcome``); ``run.fail()`` from the script wins.
4. **Collect.** Outputs of a completed run go to their datastores (:meth:`publish_outputs`; a
   run whose outputs cannot be delivered has failed), then ``outputs/`` and ``logs/`` are stored
   as run files (:meth:`collect`).
5. **Finish.** :meth:`finish` removes the working folder, ends the run's open child runs with
   the parent's outcome, then records the outcome. Any exception on the way ends the run
   ``Failed`` with its reason and the logs kept (:meth:`fail_with`).

Targets call into the supervisor through these public methods only; the supervisor knows no
target by name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MlwsError
from ..lifecycle import abandon
from ..runfolder import collect_run_files, remove_run_folder, run_folder

if TYPE_CHECKING:
    from ..workspace import Workspace


# -- the supervising process ----------------------------------------------------------------------
class RunSupervisor:
    """Drives one submitted run to its end (see the module docstring for the protocol).

    :param ws: the run's workspace.
    :param run_id: the run.
    :param claim: this process supervises the run: its pid and start time are recorded (a Dask
        task executing the run for a supervisor elsewhere does not claim it).
    :raises MlwsError: no such run.

    Attributes a target's ``execute`` uses: :attr:`ws`, :attr:`run_id`, :attr:`row` (the run's
    catalog row as read at the start), :attr:`definition` (the run definition, a dict),
    :attr:`workdir` (its working folder, once made), :attr:`proc` (the process whose group
    :meth:`kill_script` signals) and :attr:`note` (a line to start the run's log with).
    """

    def __init__(self, ws: Workspace, run_id: str, claim: bool = True) -> None:
        from ..processes import process_start_time

        self.ws = ws
        self.run_id = run_id
        row = ws.catalog.one("SELECT * FROM runs WHERE id = ?", (run_id,))
        if row is None:
            raise MlwsError(f"no run {run_id}")
        self.row = row
        self.definition = json.loads(row["definition"])
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None
        self.note: str | None = None
        #: Orphans of the script are re-parented to this process (``reaper.py``; local runs).
        self.subreaper = False
        #: A sweep for the script's leftovers by their marker is due once the run has ended.
        self.sweep_due = False
        #: Parents' ``childLimit`` by id (:meth:`sibling_limit`).
        self._limits: dict[str, int] = {}
        #: Waiters' supervising processes found this workspace's (:meth:`ahead_in_line`).
        self._owned: set[tuple[int, float]] = set()
        #: The script's command line, environment and secret channel, made while the run
        #: waited for an older sibling (``compute.local``): ``(argv, env, channel)``.
        self.prestart: tuple[list[str], dict[str, str], tuple[int, ...]] | None = None
        #: What the run asked of Docker when a daemon answers here, so its script runs in a
        #: container (``compute.docker``); set by :meth:`prepare_workdir`.
        self.docker: dict[str, Any] | None = None
        if not claim:
            return
        me = os.getpid()
        with ws.catalog.write() as conn:
            conn.execute(
                "UPDATE runs SET supervisor_pid = ?, supervisor_start = ?,"
                " status = CASE status WHEN 'NotStarted' THEN 'Queued' ELSE status END WHERE id = ?",
                (me, process_start_time(me), run_id),
            )

    def status(self) -> str:
        """The run's status in the catalog now."""
        return str(self.ws.catalog.scalar("SELECT status FROM runs WHERE id = ?", (self.run_id,)))

    def run(self) -> None:
        """Run the run on its target, to its end: the target type's ``execute(self, target,
        config)`` from the compute type registry (imported on first use). Any failure ends the
        run ``Failed`` with its reason; the working folder is removed in every case."""
        from . import executor, target_config

        target = self.row["target"] or "local"
        try:
            kind, config = target_config(self.ws, target)
            if kind != "local":
                from .warmstart import dismiss

                dismiss()  # only a local run's script is forked from here
            executor(kind)(self, target, config)
        except Exception as e:  # noqa: BLE001 - any failure must end the run, with its reason
            self.fail_with(e)
        finally:
            self.remove_workdir()

    def fail_with(self, e: BaseException) -> None:
        """End the run ``Failed`` because mlws could not run it (``e``): the script is killed,
        the logs that say what went wrong are kept, open child runs end with it."""
        self.kill_script(signal.SIGKILL)
        self.end_leftovers()
        if self.workdir is not None and self.workdir.exists():
            try:
                self.collect(self.workdir)  # keep the logs that say what went wrong
            except Exception:  # noqa: BLE001
                pass
        msg = str(e) if isinstance(e, MlwsError) else f"{type(e).__name__}: {e}"
        # finish() ends the run's open descendants too, then the run itself.
        self.finish(
            (
                "Failed",
                {
                    "code": "SystemError",
                    "message": f"mlws could not run the script: {msg}",
                    "trace": getattr(e, "remote_trace", None) or traceback.format_exc(),
                },
            )
        )

    def remove_workdir(self) -> None:
        """Remove the run's working folder (kept with ``MLWS_KEEP_WORKDIR`` set, for debugging)."""
        if self.workdir is not None and not os.environ.get("MLWS_KEEP_WORKDIR"):
            remove_run_folder(self.workdir)

    def kill_recorded_script(self) -> None:
        """Kill the script's process group recorded in the catalog, if it still runs here."""
        from ..processes import owned_process

        row = self.ws.catalog.one("SELECT pid, pid_start FROM runs WHERE id = ?", (self.run_id,))
        if row and owned_process(self.ws, row[0], row[1]):
            try:
                os.killpg(row[0], signal.SIGKILL)
            except OSError:
                pass

    def prepare_workdir(self, remote: bool = False) -> Path:
        """A fresh working folder holding the run's snapshot, ``logs/``, ``outputs/`` and its
        data (``rundata.prepare``; ``remote``: the folder is copied to an ``ssh`` host)."""
        from .. import readonly, rundata

        workdir = run_folder(self.ws, self.run_id)
        if workdir.exists():
            remove_run_folder(workdir)
        self.workdir = workdir
        # Recorded before anything is in it: if this process dies, whoever reconciles the run
        # finds the folder, keeps its logs and removes it (abandon()).
        with self.ws.catalog.write() as conn:
            conn.execute(
                "UPDATE runs SET working_dir = ? WHERE id = ?", (str(workdir), self.run_id)
            )
        self.ws.blobs.materialize(self.ws.blobs.read_manifest(self.row["snapshot"]), workdir)
        (workdir / "logs").mkdir(exist_ok=True)
        (workdir / "outputs").mkdir(exist_ok=True)
        notes = [self.note.rstrip("\n")] if self.note else []
        d = self.definition
        notes += d.get("notes") or []  # said at submit
        if d.get("docker"):
            notes.append(self.decide_docker(remote))
        if d.get("inputs") or d.get("outputs"):
            # Mounted inputs are hard links to the data only where the script can be given them
            # read-only; a host gets copies (rsync) and makes them read-only itself.
            notes += rundata.prepare(
                self.ws,
                self.row["seq"],
                d,
                workdir,
                links_ok=remote or readonly.available(),
                remote=remote,
            )
            self.save_definition()
        if notes:
            (workdir / "logs" / "driver.log").write_text("".join(n + "\n" for n in notes))
        return workdir

    def decide_docker(self, remote: bool = False) -> str:
        """For a run that asked for Docker: run its script in a container (:attr:`docker`) when
        a daemon answers here, else without; the line its log starts with, saying which."""
        from . import docker

        asked = self.definition["docker"]
        why = "mlws runs no container on an ssh host" if remote else docker.unreachable()
        if why is not None:
            return docker.note(asked.get("image"), why)
        self.docker = asked
        image = (
            "the image built from base_dockerfile" if asked.get("dockerfile") else asked["image"]
        )
        name = docker.container_name(self.run_id)
        note = f"Note: the script runs in Docker, in container {name} of {image}"
        if self.definition["environment"].get("managed"):
            note += " (the environment's packages are not installed: the image has what it has)"
        return note

    def save_definition(self) -> None:
        """Record :attr:`definition` as changed here (data paths, the built interpreter)."""
        with self.ws.catalog.write() as conn:
            conn.execute(
                "UPDATE runs SET definition = ? WHERE id = ?",
                (json.dumps(self.definition), self.run_id),
            )

    def publish_outputs(
        self, workdir: Path, outcome: tuple[str, dict[str, Any] | None]
    ) -> tuple[str, dict[str, Any] | None]:
        """A completed run's output folders go to their datastores (and are registered); a run
        whose outputs cannot be delivered has failed."""
        from .. import rundata
        from ..lifecycle import acting_for

        if outcome[0] != "Completed" or not self.definition.get("outputs"):
            return outcome
        try:
            # Registered as the submitter's, as what the script registers (a served workspace
            # runs its clients' runs as its own OS user).
            with acting_for(self.row["submitter_user"]):
                notes = rundata.publish(
                    self.ws, self.run_id, self.row["seq"], self.definition, workdir
                )
        except MlwsError as e:
            return "Failed", {
                "code": "OutputUploadFailed",
                "message": f"the script completed, but its outputs could not be delivered: {e}",
            }
        if notes:
            with open(workdir / "logs" / "driver.log", "a") as log:
                log.writelines(n + "\n" for n in notes)
        return outcome

    def prepare_environment(self, workdir: Path) -> str:
        """Build (once per machine) or reuse the run's managed environment, logging to
        ``logs/environment.log``; records the interpreter in the run definition."""
        from ..environments import Environment, resolve

        spec = self.definition["environment"]
        with open(workdir / "logs" / "environment.log", "a") as log:
            log.write(f"Environment {spec['name']!r} (spec {spec['specHash']})\n")
            log.flush()
            python = resolve(
                Environment.from_dict(spec), self.ws, log=log, should_stop=self.cancel_asked
            )
            log.write(f"Ready: {python}\n")
        self.definition["environment"]["interpreter"] = python
        self.save_definition()
        return python

    def cancel_asked(self) -> bool:
        """The run was canceled (or ended elsewhere): work in progress for it should stop."""
        from ..lifecycle import TERMINAL

        return self.status() in ("CancelRequested", *TERMINAL)

    def end_leftovers(self) -> None:
        """Processes the script started outside its process group (``reaper.py``). Without the
        sub-reaper (a Dask worker) the sweep by marker reads every process's environment: it
        runs once the run has ended (``execute_here``), not before its outcome is seen."""
        from ..reaper import end_leftovers

        if self.proc is None:
            return
        if self.subreaper:
            from .warmstart import server_pid

            server = server_pid()  # a trial worker's: its child, not the script's leftover
            end_leftovers(
                self.ws, self.run_id, below_me=True, keep=() if server is None else [server]
            )
        else:
            self.sweep_due = True

    def cancel_if_requested(self) -> None:
        """A step found the run no longer moving forward: a pending cancel becomes ``Canceled``."""
        from ..runs import set_status

        if self.status() == "CancelRequested":
            set_status(self.ws, self.run_id, "Canceled")

    def first_in_line(self) -> bool:
        """No older run of this workspace is queued for this machine's local slots (a run
        waiting for a sibling's end, :meth:`waits_for_sibling`, is not in line for them)."""
        return self.ahead_in_line(1) == 0

    def ahead_in_line(self, limit: int) -> int:
        """How many older runs of this workspace are queued for this machine's local slots
        (as :meth:`first_in_line`), counted up to ``limit``."""
        import socket

        from ..processes import owned_process, process_alive

        older = self.ws.catalog.query(
            "SELECT supervisor_pid, supervisor_start, parent_id, seq FROM runs"
            " WHERE status = 'Queued' AND target = ? AND host = ? AND seq < ?",
            (self.row["target"], socket.gethostname(), self.row["seq"]),
        )
        n = 0
        for r in older:
            if n >= limit:
                break
            # Only this folder's waiters: a copy of the workspace carries the original's queued
            # rows, whose (live) supervisors wait for the original's slots, not ours. A process
            # found ours stays ours while it lives (its command line is fixed): asked once.
            key = (r[0], r[1])
            if key in self._owned:
                ours = process_alive(r[0], r[1])
            else:
                ours = owned_process(self.ws, r[0], r[1])
                if ours:
                    self._owned.add(key)
            if ours and not self.waits_for_sibling(r[2], r[3]):
                n += 1
        return n

    def sibling_limit(self, parent_id: str | None) -> int:
        """How many children of ``parent_id`` may be under way at once: its definition's
        ``childLimit`` (a sweep's ``max_concurrent_runs``); 0 for no limit."""
        if not parent_id:
            return 0
        if parent_id not in self._limits:
            text = self.ws.catalog.scalar("SELECT definition FROM runs WHERE id = ?", (parent_id,))
            try:
                self._limits[parent_id] = int(json.loads(text or "{}").get("childLimit") or 0)
            except (TypeError, ValueError, AttributeError):
                self._limits[parent_id] = 0
        return self._limits[parent_id]

    def waits_for_sibling(self, parent_id: str | None = None, seq: int | None = None) -> bool:
        """Whether this run (the child ``seq`` of ``parent_id``) must wait for an older sibling
        to end: the parent's :meth:`sibling_limit` older children are still open. Only the
        oldest open children may go on, so no more than the limit run at once, in submission
        order, and none waits for a younger one (a sweep's controller submits a trial ahead,
        which starts the moment a sibling ends)."""
        from ..lifecycle import TERMINAL

        if seq is None:
            parent_id, seq = self.row["parent_id"], self.row["seq"]
        limit = self.sibling_limit(parent_id)
        if not limit:
            return False
        older_open = self.ws.catalog.scalar(
            "SELECT COUNT(*) FROM runs WHERE parent_id = ? AND seq < ?"
            f" AND status NOT IN ({','.join('?' * len(TERMINAL))})",
            (parent_id, seq, *TERMINAL),
        )
        return int(older_open or 0) >= limit

    def kill_script(self, sig: int) -> None:
        """Send ``sig`` to the process group of :attr:`proc` (the script, or the ``ssh`` session
        of the agent running it), if one was started."""
        if self.proc is None:
            return
        if self.docker is not None and sig == signal.SIGKILL:
            # The container outlives a killed docker client: it goes by name, first (a client
            # killed while it starts the container can leave podman's start half done).
            from ..reaper import container_name, remove_container

            remove_container(container_name(self.run_id))
        try:
            os.killpg(self.proc.pid, sig)
        except OSError:
            pass

    def collect(self, workdir: Path) -> None:
        """Store ``outputs/`` and ``logs/`` of the working folder as run files."""
        collect_run_files(self.ws, self.row["seq"], self.definition, workdir)

    def finish(self, outcome: tuple[str, dict[str, Any] | None]) -> None:
        """Record the outcome ``(status, error)``: the working folder goes first, then the run's
        open descendants end, then the run itself (so whoever sees it ended sees them ended)."""
        from ..runs import TERMINAL, set_status

        status, error = outcome
        # Its files are stored by now: the working folder goes before the run is seen ended.
        self.remove_workdir()
        # Children the script started and never ended share the parent's outcome. They are
        # ended first, so whoever sees the parent ended sees its children ended too.
        for r in self.ws.catalog.query(
            "WITH RECURSIVE tree(id) AS (SELECT id FROM runs WHERE parent_id = ?"
            " UNION ALL SELECT r.id FROM runs r JOIN tree t ON r.parent_id = t.id)"
            " SELECT runs.id, runs.status FROM runs JOIN tree USING (id)",
            (self.run_id,),
        ):
            if r["status"] not in TERMINAL:
                set_status(
                    self.ws,
                    r["id"],
                    status,
                    error=None
                    if status == "Completed"
                    else {"code": "ParentEnded", "message": f"the parent run ended {status}"},
                )
        set_status(self.ws, self.run_id, status, error=error)


def failed_to_start(workspace: str, run_id: str, e: BaseException) -> None:
    """A supervisor that could not take its run up (the workspace could not be opened, the run
    not claimed) ends it ``Failed`` with the reason, if the catalog can be written at all: its
    output goes nowhere (a detached process), and a run left ``Queued`` would only be found
    dead later, with no cause given. Best effort: nothing is raised."""
    import traceback

    from ..lifecycle import abandon

    reason = traceback.format_exception_only(type(e), e)[-1].strip()
    try:
        from ..workspace import Workspace

        with Workspace(workspace) as ws:
            message = f"the run's supervising process failed to start: {reason}"
            abandon(ws, run_id, {"code": "SupervisorFailed", "message": message})
    except BaseException:  # noqa: BLE001, S110 - nowhere left to report to
        pass


def main(argv: list[str] | None = None) -> int:
    """``python -m mlws.compute.supervisor WORKSPACE RUN_ID``: supervise the run to its end."""
    from ..workspace import Workspace

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m mlws.compute.supervisor WORKSPACE RUN_ID", file=sys.stderr)
        return 2
    from .warmstart import dismiss, start_zygote

    start_zygote()  # before the catalog is open (see compute.warmstart)
    try:
        ws = Workspace(args[0])
        sup = RunSupervisor(ws, args[1])
    except Exception as e:  # noqa: BLE001 - the run must not wait Queued for no one, unexplained
        dismiss()
        failed_to_start(args[0], args[1], e)
        return 1

    def on_term(signum: int, _frame: Any) -> None:
        # Stopped from outside (shutdown, kill): take the script down too, keep its logs and
        # say why.
        sup.kill_script(signal.SIGKILL)
        abandon(
            ws,
            args[1],
            {
                "code": "SupervisorStopped",
                "message": f"the supervising process got signal {signum}",
            },
        )
        os._exit(1)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    try:
        sup.run()
    finally:
        dismiss()
    ws.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
