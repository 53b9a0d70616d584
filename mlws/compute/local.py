"""The ``local`` compute target: subprocesses on this machine, limited by run slots.

``execute(sup, target, config)`` is the target's entry point for the run supervisor
(``compute.supervisor``), the same shape as ``compute.sshrun.execute`` and
``compute.dask.execute``: wait ``Queued`` for a slot, then :func:`run_script` here. A Dask task
runs the script on its worker the same way (:func:`execute_here`).

A slot is an exclusive file lock, so no daemon is needed and a crashed supervisor frees its slot
(the OS drops its locks). Slot files live in the workspace's ``locks/slots/<machine id>/``: every
user of the workspace on one machine shares the limit (a per-user folder would give each HOME its
own slots), while on a shared folder each machine's ``local`` target still has its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserErrorException
from ..locks import try_lock
from . import script, target_config

if TYPE_CHECKING:
    from ..workspace import Workspace
    from .supervisor import RunSupervisor


def max_concurrent_runs(ws: Workspace) -> int:
    """How many runs the ``local`` target runs at once: as configured (:func:`configure`), else one
    per CPU."""
    _, config = target_config(ws, "local")
    value = config.get("max_concurrent_runs")
    return int(value) if value else max(1, os.cpu_count() or 1)


def configure(ws: Workspace, max_concurrent_runs: int) -> None:
    """Set how many runs the ``local`` target runs at once (others wait ``Queued``)."""
    if not isinstance(max_concurrent_runs, int) or max_concurrent_runs < 1:
        raise UserErrorException(
            f"max_concurrent_runs must be a whole number >= 1, got {max_concurrent_runs!r}"
        )
    _, config = target_config(ws, "local")
    config["max_concurrent_runs"] = max_concurrent_runs
    with ws.catalog.write() as conn:
        conn.execute(
            "UPDATE compute_targets SET config = ? WHERE name = 'local'", (json.dumps(config),)
        )


#: How often the oldest queued run looks for a free slot (the others: ``poll_s``).
FIRST_POLL_S = 0.005


@contextlib.contextmanager
def slot(
    ws: Workspace,
    keep_waiting: Callable[[], bool],
    poll_s: float = 0.1,
    may_start: Callable[[], bool] = lambda: True,
    on_first: Callable[[], None] = lambda: None,
    ahead: Callable[[int], int] | None = None,
) -> Iterator[int | None]:
    """Hold one of the target's slots; yields its index, or ``None`` if ``keep_waiting()``
    returned false (e.g. the run was canceled while queued). ``on_first``, ``ahead``: see
    :func:`hold_slot`."""
    folder = ws.path / "locks" / "slots" / machine_id()
    with hold_slot(
        folder,
        lambda: [f"local-{i}" for i in range(max_concurrent_runs(ws))],
        keep_waiting,
        poll_s,
        may_start,
        on_first,
        ahead,
    ) as name:
        yield None if name is None else int(name.rsplit("-", 1)[1])


def machine_id() -> str:
    """This machine's stable id (systemd's ``/etc/machine-id``), or its host name without one."""
    for f in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            value = Path(f).read_text().strip()
        except OSError:
            continue
        if value.isalnum():
            return value
    return "host-" + "".join(c if c.isalnum() or c in "-." else "_" for c in socket.gethostname())


@contextlib.contextmanager
def hold_slot(
    folder: Path,
    names: Callable[[], list[str]],
    keep_waiting: Callable[[], bool],
    poll_s: float = 0.1,
    may_start: Callable[[], bool] = lambda: True,
    on_first: Callable[[], None] = lambda: None,
    ahead: Callable[[int], int] | None = None,
) -> Iterator[str | None]:
    """Hold the first free one of the lock files ``folder/<name>.lock`` (``names()`` is asked
    again on every poll, so a changed limit applies at once); yields its name, or ``None`` once
    ``keep_waiting()`` is false. ``on_first()`` is called once, when this waiter is the next to
    take a slot and none is free yet: what it does (a run's start made ready) is off the path
    from a slot's release to the next run's start. ``ahead(n)``, instead of ``may_start``:
    how many older waiters are in line, counted up to ``n`` (the slots); this waiter is first
    at 0, and looks as often as the first while fewer than the slots are ahead (two slots
    freed together: the second in line, asleep on the slow poll, took its slot up to ``poll_s``
    late). Shared by every target type that has slots."""
    folder.mkdir(parents=True, exist_ok=True)
    first = readied = near = False
    while True:
        # may_start keeps queued runs in submission order: only the oldest waiter takes a slot.
        # Once the oldest, always the oldest (older waiters only leave): it is not asked again,
        # and this one waiter looks at the locks every FIRST_POLL_S, so a freed slot is taken
        # within milliseconds while the others keep the slow, costlier poll.
        slots = names()
        if not first and ahead is not None:
            n = ahead(len(slots))
            first, near = n == 0, n < len(slots)
        else:
            first = first or may_start()
        for name in slots if first else []:
            fd = try_lock(folder / f"{name}.lock")
            if fd is None:
                continue
            try:
                yield name
            finally:
                os.close(fd)  # drops the lock
            return
        if not keep_waiting():
            yield None
            return
        if first and not readied:
            readied = True
            on_first()
            continue  # it took a while: a slot may be free now
        time.sleep(FIRST_POLL_S if first or near else poll_s)


# -- running a script here ------------------------------------------------------------------------
def execute(sup: RunSupervisor, target: str, config: dict[str, Any]) -> None:
    """The supervisor's entry point: hold one of this machine's slots (``Queued`` meanwhile, in
    submission order), then run the script here. A run canceled while queued ends ``Canceled``."""
    from ..lifecycle import set_status
    from ..reaper import become_subreaper

    def keep_waiting() -> bool:
        return sup.status() not in ("CancelRequested", "Canceled", "Failed", "Completed")

    sup.subreaper = become_subreaper()

    # A sweep's trial waits first for an older sibling's end (the controller submits one trial
    # ahead, so it starts the moment one ends), then for a slot of this machine.
    def ready_ahead() -> None:
        # The working folder, the script's environment and its secret channel, made while
        # older runs hold what this one waits for, not after one ends.
        if sup.workdir is None:
            workdir = sup.prepare_workdir()
            if not sup.definition["environment"].get("managed"):
                _prestart(sup, workdir)

    if sup.waits_for_sibling():
        ready_ahead()
    # A sweep's trials, once past their sibling wait, look for a slot as often as the first in
    # line does: two may be let go by the same sibling's end, and the younger one, not first in
    # line for a moment, slept the slow poll (0.1 s) after the older took its slot. They are
    # few (the sweep's max_concurrent_runs and its trials ahead).
    poll_s = FIRST_POLL_S if sup.sibling_limit(sup.row["parent_id"]) else 0.1
    try:
        waited = wait_for_siblings(sup, keep_waiting)
        with slot(
            sup.ws, keep_waiting, poll_s=poll_s, on_first=ready_ahead, ahead=sup.ahead_in_line
        ) as index:
            if not waited or index is None:
                set_status(sup.ws, sup.run_id, "Canceled")
                return
            run_script(sup)
    finally:
        if sup.prestart is not None:  # never started: the script's ends of the channel
            for fd in sup.prestart[2]:
                os.close(fd)


def wait_for_siblings(sup: RunSupervisor, keep_waiting: Callable[[], bool]) -> bool:
    """Wait (``Queued``) while the run must let older siblings end first
    (``sup.waits_for_sibling()``: its parent's ``childLimit``); False once ``keep_waiting()``
    is false. Such a run is not in line for the slots meanwhile (``first_in_line``)."""
    # One trial at most waits here (the controller's one ahead): it looks every few ms.
    waited = False
    while sup.waits_for_sibling():
        waited = True
        if not keep_waiting():
            return False
        time.sleep(FIRST_POLL_S)
    if waited:
        # The siblings may have ended because the sweep did (canceled, or its controller died
        # and was reconciled): a trial submitted ahead then never starts.
        parent = sup.ws.catalog.scalar(
            "SELECT status FROM runs WHERE id = ?", (sup.row["parent_id"],)
        )
        if parent in ("CancelRequested", "Canceled", "Failed", "Completed"):
            return False
    return True


def execute_here(sup: RunSupervisor, tie_to_parent: bool = False) -> None:
    """Run the script here, now, to the run's end (a Dask task does this for the run's
    supervisor); any failure ends the run ``Failed`` with its reason.

    ``tie_to_parent``: the script is killed when this process dies (a Dask worker). When
    an earlier attempt got as far as starting (its worker died), its leftovers are killed
    and the run starts over, with a note in its log.
    """
    from ..lifecycle import PROGRESS

    if sup.status() in PROGRESS:
        sup.kill_recorded_script()
        # The dead attempt's log and metrics are kept apart; the retry starts clean.
        from ..attempts import set_aside
        from ..runfolder import run_folder

        n = set_aside(sup.ws, sup.run_id, run_folder(sup.ws, sup.run_id))
        sup.note = (
            "mlws: the worker running this run died; this is attempt"
            f" {n + 1} (the dead attempt's log: logs/attempt-{n}/driver.log)\n"
        )
        with sup.ws.catalog.write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO run_properties VALUES (?, 'mlws.retried', 'worker died')",
                (sup.row["seq"],),
            )
    try:
        run_script(sup, tie_to_parent)
    except Exception as e:  # noqa: BLE001 - any failure must end the run, with its reason
        sup.fail_with(e)
    finally:
        sup.remove_workdir()
        if sup.sweep_due:
            from ..reaper import end_leftovers

            end_leftovers(sup.ws, sup.run_id)


def run_script(sup: RunSupervisor, tie_to_parent: bool = False) -> None:
    """Preparing, Starting, Running, Finalizing on this machine: the working folder and
    environment, the script (as ``compute.script`` starts it, with the run's secret channel),
    :func:`watch`, then publish, collect and finish through the supervisor."""
    from ..lifecycle import set_status
    from ..processes import process_start_time

    ws, d = sup.ws, sup.definition
    if not set_status(ws, sup.run_id, "Preparing"):
        sup.cancel_if_requested()
        return
    # Made already by a trial that waited for an older one (execute).
    workdir = sup.workdir if sup.workdir is not None else sup.prepare_workdir()
    if sup.docker is not None:
        # The image is the environment: its `python` runs the script (see compute.docker).
        d["environment"]["interpreter"] = d["environment"].get("interpreter") or "python"
    elif d["environment"].get("managed"):
        from ..errors import EnvironmentBuildCanceled

        try:
            d["environment"]["interpreter"] = sup.prepare_environment(workdir)
        except EnvironmentBuildCanceled:  # killed and removed: the run ends Canceled
            sup.collect(workdir)
            sup.finish(("Canceled", None))
            return
    if not set_status(ws, sup.run_id, "Starting", working_dir=str(workdir)):
        sup.cancel_if_requested()
        return
    argv, env, channel = sup.prestart or _script_setup(sup, workdir)
    sup.prestart = None
    try:
        sup.proc = script.start_script(
            argv,
            workdir,
            env,
            tie_to_parent,
            pass_fds=channel,
            # In a container, mounted inputs are read-only volumes (compute.docker.wrap).
            read_only=None if sup.docker is not None else d.get("readOnly"),
            warm=not d.get("distributed") and sup.docker is None,
        )
    finally:
        for fd in channel:  # the script's ends
            os.close(fd)
    with ws.catalog.write() as conn:  # recorded even if a cancel is pending: watch acts on it
        conn.execute(
            "UPDATE runs SET pid = ?, pid_start = ? WHERE id = ?",
            (sup.proc.pid, process_start_time(sup.proc.pid), sup.run_id),
        )
    set_status(ws, sup.run_id, "Running")
    outcome = watch(sup)
    sup.kill_script(signal.SIGKILL)  # leftovers the script started and left behind
    if sup.docker is not None and outcome[0] == "Failed" and sup.proc.returncode == 125:
        from .docker import failure_line

        # docker run itself failed (no such image, a bad option): its own reason, not the
        # usage hint it prints last.
        line = failure_line(workdir / "logs" / "driver.log")
        if line:
            outcome = (
                "Failed",
                {"code": "UserError", "message": f"docker could not run the script: {line}"},
            )
    sup.end_leftovers()
    if outcome[0] != "Canceled":
        set_status(ws, sup.run_id, "Finalizing")
    outcome = sup.publish_outputs(workdir, outcome)
    sup.collect(workdir)
    sup.finish(outcome)


def _script_setup(
    sup: RunSupervisor, workdir: Path
) -> tuple[list[str], dict[str, str], tuple[int, ...]]:
    """The script's command line, its environment, and the script's ends of its secret
    channel (served from a thread of this process; run.get_secret() asks there). In Docker
    (``sup.docker``): ``docker run`` of them, the channel a pair of FIFOs (no fds to pass)."""
    from ..keyvault import CHANNEL_ENV, serve_run_channel, serve_run_channel_at

    d = sup.definition
    env = script.script_env(
        dict(os.environ),
        d,
        sup.ws.path,
        sup.ws.name,
        sup.run_id,
        sup.row["experiment"],
        workdir,
        user=sup.row["submitter_user"],
    )
    if sup.docker is not None:
        from . import docker

        image = docker.image_for(sup.docker, workdir / "logs" / "environment.log")
        env[CHANNEL_ENV] = serve_run_channel_at(sup.ws, workdir / docker.CHANNEL_FOLDER)
        argv, env = docker.wrap(
            script.script_argv(d, workdir),
            env,
            sup.docker,
            image,
            sup.run_id,
            workdir,
            sup.ws.path,
            dict(os.environ),
            read_only=d.get("readOnly"),
            interpreter=d["environment"].get("interpreter"),
        )
        return argv, env, ()
    channel = serve_run_channel(sup.ws)
    env[CHANNEL_ENV] = f"{channel[0]},{channel[1]}"
    return script.script_argv(d, workdir), env, channel


def _prestart(sup: RunSupervisor, workdir: Path) -> None:
    """For a run that waits for an older sibling: its script's setup (:func:`_script_setup`)
    now, and the script made ready to start forked (``script.prepare_script``), so that once
    it may go it starts within a millisecond or two."""
    d = sup.definition
    sup.prestart = _script_setup(sup, workdir)
    if not d.get("distributed") and not d.get("readOnly") and sup.docker is None:
        argv, env, channel = sup.prestart
        script.prepare_script(argv, workdir, env, pass_fds=channel)


def watch(sup: RunSupervisor) -> tuple[str, dict[str, Any] | None]:
    """Wait for the script (``sup.proc``) to end, acting on a cancel (SIGTERM, SIGKILL after
    the grace) and on the time limit; its outcome ``(status, error)``."""
    from ..lifecycle import TERMINAL

    assert sup.proc is not None
    limit = sup.definition.get("maxRunDurationSeconds")
    started = time.monotonic()
    delay = 0.005
    cancel_at: float | None = None
    with script.exit_watch(sup.proc) as ended:
        while True:
            rc = ended(delay)
            if rc is not None:
                break
            delay = min(delay * 2, 0.25)
            now = time.monotonic()
            # A final status too: a Dask run canceled in the moment before its script started,
            # or failed by its supervisor elsewhere, must not run on unsupervised.
            if cancel_at is None and sup.status() in ("CancelRequested", *TERMINAL):
                cancel_at = now
                sup.kill_script(signal.SIGTERM)
            if cancel_at is not None and now - cancel_at > script.CANCEL_GRACE_S:
                sup.kill_script(signal.SIGKILL)
            if limit and now - started > float(limit) and cancel_at is None:
                sup.kill_script(signal.SIGKILL)
                sup.proc.wait()
                return "Failed", {
                    "code": "RunTimeout",
                    "message": f"the run exceeded max_run_duration_seconds={limit} and was killed",
                }
    if cancel_at is not None or sup.status() == "CancelRequested":
        return "Canceled", None
    requested = sup.ws.catalog.scalar(
        "SELECT requested_status FROM runs WHERE id = ?", (sup.run_id,)
    )
    if requested == "Failed":
        return "Failed", None  # the script called run.fail(); its error is recorded
    return script.exit_outcome(rc, sup.workdir / "logs" / "driver.log" if sup.workdir else None)
