"""Controllers: the detached processes that drive a parent run's children to an end -- a
HyperDrive sweep (:mod:`mlws.hyperdrive.controller`) and a pipeline (:mod:`mlws.pipelines.controller`).

The protocol, the same for both:

1. **Start** (:func:`start_controller`, in the submitter): the parent run is recorded
   ``NotStarted`` with everything the controller needs in its ``definition``; then
   ``python -m <module> <workspace> <run id>`` is started detached (a new session), so it
   survives its submitter, and recorded as the run's supervising process (``Queued``).
2. **Claim** (:meth:`Controller.claim`): the controller records its own pid and start time and
   moves the run to ``Running``. From then on the parent's status is reconciled against this
   process (``lifecycle.reconcile``): if it dies (``kill -9``), the next reader calls
   :func:`abandon`, which cancels the open children and ends the parent ``Failed`` with the
   reason, so a parent is never left ``Running``. SIGTERM/SIGHUP do the same at once
   (:func:`main`).
3. **Drive** (the subclass's :meth:`Controller.drive`): children are submitted through the
   public ``submit_script`` with ``parent_id``, and watched through the catalog
   (:meth:`Controller.wait_for_change` wakes when another process commits).
4. **End**: the outcome is set last, after the controller's log is stored as a run file, so
   whoever sees the parent ended sees its log and its children ended.
"""

from __future__ import annotations

import io
import os
import signal
import time
import traceback
from typing import TYPE_CHECKING, Any

from .lifecycle import TERMINAL

if TYPE_CHECKING:
    from .experiments import Experiment
    from .workspace import Workspace

#: How often a controller asks SQLite whether another process changed the catalog
#: (``PRAGMA data_version``, microseconds); it looks at its children only then, or every
#: ``LOOK_S`` at the latest (deadlines). A child's end is seen within ~5 ms, not a 50 ms poll.
POLL_S = 0.005
LOOK_S = 0.5
#: How long a canceled parent waits for its children to end before it ends anyway.
CANCEL_WAIT_S = 30.0


def start_controller(experiment: Experiment, run_id: str, module: str, what: str) -> None:
    """Start ``python -m module <workspace> <run id>`` detached for the recorded parent run
    ``run_id`` and record it as the run's supervising process (``NotStarted`` becomes
    ``Queued``, unless the controller has moved it on already). ``what`` names the parent in
    messages ("the sweep", "the pipeline").

    :raises MlwsError: the process could not be started (the run is then ``Failed``).
    """
    from .compute import launcher

    ws = experiment.workspace
    penv = launcher.submitter_env()
    # Forked from the workspace's warm launcher when one runs (a fresh interpreter and its
    # imports are most of a reused pipeline's time); a parent submits children, so the launcher
    # is worth warming for them.
    launcher.start_for_run(ws, run_id, module, penv, warm_up=True, what=what)


def cancel_children(ws: Workspace, run_id: str) -> list[str]:
    """Cancel every open child of ``run_id``; returns their ids."""
    from .errors import MlwsError
    from .runs import Run

    marks = ",".join("?" * len(TERMINAL))
    # Youngest first: a child waiting for its older siblings' end (a sweep's trial submitted
    # ahead) is canceled before they end, so it never takes their place.
    rows = ws.catalog.query(
        f"SELECT * FROM runs WHERE parent_id = ? AND status NOT IN ({marks}) ORDER BY seq DESC",
        (run_id, *TERMINAL),
    )
    ids = []
    for r in rows:
        try:
            Run.from_row(ws, r).cancel()
            ids.append(r["id"])
        except MlwsError:
            pass  # a child run by another copy of the workspace: not ours to signal
    return ids


def abandon(ws: Workspace, run_id: str, error: dict[str, Any]) -> None:
    """End a parent whose controller is gone: cancel its open children and mark it ``Failed``
    with ``error``. A lock per run makes exactly one of several readers do it."""
    from .lifecycle import set_status
    from .locks import locked

    with locked(ws.path / "locks" / "runs" / f"{run_id}.lock"):
        row = ws.catalog.one("SELECT status FROM runs WHERE id = ?", (run_id,))
        if row is None or row["status"] in TERMINAL:
            return
        cancel_children(ws, run_id)
        set_status(ws, run_id, "Failed", error=error)


def cancel_parent(run: Any) -> None:
    """``cancel()`` of a controlled parent run (``run`` has already asked for it): with no live
    controller to do it, its open children are canceled here. On a remote workspace the
    server, which runs the controller, has done it."""
    if run.workspace.remote is None and run.get_status() in TERMINAL:
        cancel_children(run.workspace, run.id)


class Controller:
    """What every controller does besides its own driving: claim the run, keep a log, wait for
    the catalog to change, wind down its children. Subclasses set ``LOG_FILE`` and
    ``ERROR_CODE`` and implement :meth:`drive`."""

    #: The run file the controller's log is stored as.
    LOG_FILE = "azureml-logs/controller.txt"
    #: The error code of a parent whose controller failed.
    ERROR_CODE = "ControllerError"

    def __init__(self, ws: Workspace, run_id: str) -> None:
        from .runs import Run

        self.ws = ws
        self.run_id = run_id
        self.run = Run.from_row(ws, ws.catalog.one("SELECT * FROM runs WHERE id = ?", (run_id,)))
        self.log = io.StringIO()
        self._version: Any = None
        self._git: dict[str, dict[str, str]] = {}

    def git_facts(self, source_directory: str) -> dict[str, str]:
        """The git facts of a source folder (``snapshots.git_properties``) its children's runs
        record, read once per folder: three git processes for each trial or step (a
        ``git status`` of the whole repository among them) were most of a trial's CPU in a
        repository; the children run one snapshot taken at submission anyway."""
        if source_directory not in self._git:
            from .snapshots import git_properties

            self._git[source_directory] = git_properties(source_directory)
        return self._git[source_directory]

    def say(self, msg: str) -> None:
        """One line of the controller's log (stored as ``LOG_FILE``)."""
        now = time.time()
        stamp = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
        )
        self.log.write(f"{stamp} {msg}\n")

    def claim(self) -> None:
        """Record this process as the run's supervising process and move it to Running."""
        from .lifecycle import set_status
        from .processes import process_start_time

        pid = os.getpid()
        with self.ws.catalog.write() as conn:
            conn.execute(
                "UPDATE runs SET supervisor_pid = ?, supervisor_start = ? WHERE id = ?",
                (pid, process_start_time(pid), self.run_id),
            )
        set_status(self.ws, self.run_id, "Running")

    def status(self) -> str:
        """The parent's status as recorded."""
        return str(self.ws.catalog.scalar("SELECT status FROM runs WHERE id = ?", (self.run_id,)))

    def canceled(self) -> bool:
        """Whether the parent was asked to cancel (or ended under the controller)."""
        status = self.status()
        return status == "CancelRequested" or status in TERMINAL

    def children(self) -> list[Any]:
        """The parent's child rows (id, seq, status, error, display name), oldest first."""
        return self.ws.catalog.query(
            "SELECT id, seq, status, error, display_name FROM runs WHERE parent_id = ?"
            " ORDER BY seq",
            (self.run_id,),
        )

    def wait_for_change(self) -> None:
        """Return once another process has committed to the catalog, or after ``LOOK_S``."""
        self._version = self.ws.catalog.wait_for_commit(self._version, LOOK_S, POLL_S)

    def finish_children(self) -> None:
        """Cancel the open children and wait (bounded) for them to end, so whoever sees the
        parent ended sees its children ended too."""
        cancel_children(self.ws, self.run_id)
        until = time.monotonic() + CANCEL_WAIT_S
        while time.monotonic() < until and any(
            r["status"] not in TERMINAL for r in self.children()
        ):
            self.wait_for_change()

    def drive(self) -> tuple[str, dict[str, Any] | None]:
        """Drive the children to an end; returns the parent's final status and error."""
        raise NotImplementedError

    def store_log(self) -> None:
        """Store the log as a run file (best effort: the outcome matters more)."""
        try:
            self.run.upload_file(self.LOG_FILE, io.BytesIO(self.log.getvalue().encode()))
        except Exception:
            pass


def main(argv: list[str], controller: type[Controller], what: str) -> int:
    """The body of ``python -m <controller module> WORKSPACE RUN_ID``: claim, drive, end.
    Any end of the controller (an exception, SIGTERM, SIGHUP) ends the parent ``Failed`` with
    its open children canceled."""
    from .lifecycle import set_status
    from .workspace import Workspace

    ws = Workspace(argv[0])
    run_id = argv[1]

    def on_signal(signum: int, _frame: Any) -> None:
        raise SystemExit(f"{what}'s controller got signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    ctl = None
    try:
        ctl = controller(ws, run_id)
        ctl.claim()
        status, error = ctl.drive()
    except BaseException as e:  # noqa: BLE001 - any end of the controller ends the parent
        msg = str(e) if isinstance(e, SystemExit) else f"{type(e).__name__}: {e}"
        if ctl is not None:
            ctl.say(traceback.format_exc())
        cancel_children(ws, run_id)
        status, error = "Failed", {"code": controller.ERROR_CODE, "message": msg}
    if ctl is not None:
        ctl.say(f"{what} ended {status}")
        ctl.store_log()
    set_status(ws, run_id, status, error=error)
    return 0
