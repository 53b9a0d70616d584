"""Trial workers: long-lived supervisors that run a local sweep's trials one after another.

A run's supervisor is a process forked for that run by the workspace's launcher; it forks the
run's script and exits at the run's end. For a sweep of short trials on ``local`` that machinery
was most of a trial's cost (bench row 13): each supervisor's fork, its copy-on-write faults on
the launcher's pages (~2,000, made again by forking the script), its catalog connection and its
exit, about 40% of a trial's CPU. So a sweep's controller (``hyperdrive.controller``) records its
local trials without starting a supervisor (``submit_script(start=False)``) and keeps a few
workers (``python -m mlws.compute.trials WORKSPACE SWEEP_ID``, forked by the launcher). Each
worker, in turn:

1. **claims** the sweep's oldest trial that nobody supervises yet (one ``BEGIN IMMEDIATE``
   transaction: its pid and start time recorded as the trial's supervising process, ``Queued``),
2. **supervises** it in-process exactly as a run's supervisor does (``RunSupervisor.run``: the
   sibling wait and the local slots in submission order, the script started forked warm,
   cancel, time limit, outputs, logs, outcome), its script forked by the worker's zygote server
   (``compute.warmstart.start_server``), so the worker itself never forks,
3. and looks for the next, until the sweep has ended (or its controller died).

What stays as with one supervisor per trial: each trial's supervising process is recorded and
reconciled (a killed worker fails the trial it held, ``lifecycle.reconcile``, and the controller
starts another worker); a queued trial nobody claimed yet is canceled at once (``Run.cancel``);
leftovers of a trial's script are killed at its end (the worker is a sub-reaper). What differs:
a trial's supervising process is shared, in turn, with the sweep's other trials.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..workspace import Workspace

#: The module a worker runs (``python -m``; one of ``compute.launcher.LAUNCHABLE``).
MODULE = "mlws.compute.trials"
#: How often an idle worker checks that its sweep's controller lives.
CHECK_S = 1.0


def enabled() -> bool:
    """Sweeps use trial workers unless ``MLWS_TRIAL_WORKERS=0`` (one supervisor per trial)."""
    return os.environ.get("MLWS_TRIAL_WORKERS", "1") != "0"


def claim_next(ws: Workspace, parent_id: str) -> str | None:
    """Claim the oldest trial of ``parent_id`` nobody supervises yet, while the sweep runs:
    this process is recorded as its supervising process (``Queued``). Its id, or None when
    there is none (or the sweep is no longer ``Running``: canceled, or failed because its
    controller died, it starts no trial)."""
    from ..processes import process_start_time

    me = os.getpid()
    with ws.catalog.write() as conn:
        row = conn.execute(
            "SELECT id FROM runs WHERE parent_id = ? AND status = 'NotStarted'"
            " AND supervisor_pid IS NULL"
            " AND (SELECT status FROM runs WHERE id = ?) = 'Running' ORDER BY seq LIMIT 1",
            (parent_id, parent_id),
        ).fetchone()
        if row is None:
            return None
        conn.execute(
            "UPDATE runs SET supervisor_pid = ?, supervisor_start = ?, status = 'Queued'"
            " WHERE id = ?",
            (me, process_start_time(me), row[0]),
        )
    return str(row[0])


def unclaimed(ws: Workspace, parent_id: str) -> int:
    """How many trials of ``parent_id`` wait for a worker to claim them."""
    return int(
        ws.catalog.scalar(
            "SELECT COUNT(*) FROM runs WHERE parent_id = ? AND status = 'NotStarted'"
            " AND supervisor_pid IS NULL",
            (parent_id,),
        )
    )


def start_worker(ws: Workspace, parent_id: str, env: dict[str, str]) -> tuple[int, float | None]:
    """Start one worker for the sweep ``parent_id``: forked by the workspace's launcher, else
    started detached. Its pid and start time (``(0, None)``: handed to a launcher that did not
    answer).

    :raises OSError: it could not be started."""
    from ..processes import process_start_time, start_detached
    from . import launcher

    args = [str(ws.path), parent_id]
    pid = launcher.launch(ws.path, args, env, warm_up=True, module=MODULE)
    if pid is None:
        pid = start_detached(MODULE, *args, env=env).pid
    return pid, (process_start_time(pid) if pid else None)


def serve(ws: Workspace, parent_id: str) -> None:
    """Claim and supervise the sweep's trials in turn until it has ended (see the module
    docstring); a trial that fails to start ends ``Failed`` with the reason, as from a
    supervisor."""
    from ..lifecycle import TERMINAL
    from ..processes import process_alive
    from . import warmstart
    from .supervisor import RunSupervisor, failed_to_start

    current: list[RunSupervisor] = []

    def on_term(signum: int, _frame: Any) -> None:
        # Stopped from outside: the trial held now ends as its own supervisor's would.
        from ..lifecycle import abandon

        for sup in current:
            sup.kill_script(signal.SIGKILL)
            abandon(
                ws,
                sup.run_id,
                {"code": "SupervisorStopped", "message": f"the trial worker got signal {signum}"},
            )
        os._exit(1)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    seen = None
    checked = 0.0
    while True:
        # Read first: claiming is a write transaction, and an idle worker wakes at every commit.
        run_id = claim_next(ws, parent_id) if unclaimed(ws, parent_id) else None
        if run_id is None:
            row = ws.catalog.one(
                "SELECT status, supervisor_pid, supervisor_start FROM runs WHERE id = ?",
                (parent_id,),
            )
            if row is None or row[0] in TERMINAL or row[0] == "CancelRequested":
                return
            now = time.monotonic()
            if now - checked >= CHECK_S:
                checked = now
                if row[1] and not process_alive(row[1], row[2]):
                    return  # its controller died: the next reader fails the sweep
            seen = ws.catalog.wait_for_commit(seen, CHECK_S)
            continue
        warmstart.start_zygote()  # a waiting child from the server (none: started fresh)
        try:
            sup = RunSupervisor(ws, run_id, claim=False)
        except Exception as e:  # noqa: BLE001 - a claimed trial must not wait Queued for no one
            failed_to_start(str(ws.path), run_id, e)
            continue
        current.append(sup)
        try:
            sup.run()
        finally:
            current.clear()
            warmstart.dismiss()


def main(argv: list[str] | None = None) -> int:
    """``python -m mlws.compute.trials WORKSPACE SWEEP_ID``: be a trial worker of the sweep."""
    from ..reaper import become_subreaper
    from ..workspace import Workspace
    from . import warmstart

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m mlws.compute.trials WORKSPACE SWEEP_ID", file=sys.stderr)
        return 2
    # A sub-reaper first, so the scripts the zygote server forks (through a middle process that
    # exits) are adopted by this process; then the server, before the catalog is open.
    if become_subreaper():
        warmstart.start_server()
    from ..errors import MlwsError

    try:
        ws = Workspace(args[0])
        serve(ws, args[1])
    except MlwsError as e:  # no such workspace: nothing of it to supervise
        print(f"mlws: {e}", file=sys.stderr)
        return 1
    finally:
        warmstart.stop_server()
    ws.close(optimize=False)  # the sweep has ended: nothing may change after it
    return 0


if __name__ == "__main__":
    sys.exit(main())
