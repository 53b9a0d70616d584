"""The supervisor of a script run submitted to a remote workspace, on the submitting machine:
``python -m mlws.remote.supervisor URL RUN_ID`` (started detached by :mod:`.submit`; the token
comes in ``MLWS_TOKEN``).

The local supervisor (:mod:`mlws.compute.supervisor`) writes the catalog; this one speaks to the
server through the remote client instead, and reuses what does not depend on where the catalog
is: :mod:`mlws.compute.script` (the script's environment, command line, process group, outcome).

1. hold the run's lease (heartbeats from the client's tracker), ``Queued``, ``Preparing``;
2. materialize the snapshot from the server into a working folder, and the dataset inputs
   (their files fetched from the server, their lineage sent to it); ``Running``; start the
   script with ``MLWS_WORKSPACE`` = the server's URL, so ``Run.get_context()`` in it is the
   server's run and ``run.log`` streams through the remote client;
3. while it runs, upload ``logs/driver.log`` every :data:`LOG_EVERY_S` seconds when it changed
   (content-addressed: only new bytes' blobs travel); SIGTERM (``run.cancel()``) stops the script;
4. at the end ``Finalizing``, ``outputs/`` and the log uploaded, then complete, fail (with the
   reason) or ``Canceled``. The working folder is removed.

A supervisor killed outright leaves the run to the server's lease: Failed, ``ClientLost``.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..runs import Run

#: How often the script's log is uploaded while it runs (when it changed), in seconds.
LOG_EVERY_S = float(os.environ.get("MLWS_REMOTE_LOG_S", "3"))
#: The script's log, named as a local run's.
LOG = "logs/driver.log"


def upload_folder(run: Run, workdir: Path, prefix: str) -> int:
    """Record every file under ``workdir/prefix`` as the run's ``prefix/...`` files (blobs the
    server lacks sent); returns how many files."""
    from ..runfiles import add_run_files

    folder = workdir / prefix
    if not folder.is_dir():
        return 0
    entries = run.workspace.blobs.put_folder(folder, prefix, lenient=True)
    add_run_files(run.workspace, run.id, entries)  # type: ignore[arg-type]
    return len(entries)


class LogShipper:
    """Uploads the script's log when it changed since the last upload."""

    def __init__(self, run: Run, workdir: Path) -> None:
        self.run = run
        self.workdir = workdir
        self._last: tuple[int, int] | None = None

    def ship(self) -> None:
        """Upload ``logs/`` if the log's size or time changed."""
        try:
            st = (self.workdir / LOG).stat()
        except OSError:
            return
        key = (st.st_size, st.st_mtime_ns)
        if key != self._last:
            self._last = key
            upload_folder(self.run, self.workdir, "logs")


def status(run: Run, value: str) -> None:
    """Move the run to ``value`` on the server, in order after what it sent before."""
    from .runs import send

    send(run, "POST", "status", body={"status": value})


#: In the script's environment: the file where ``run.fail()`` leaves the outcome it asks for
#: (the supervisor, on the same machine, ends the run with it once the script exits).
OUTCOME_ENV = "MLWS_REMOTE_OUTCOME"


def request_failure(run: Run, error: dict[str, Any]) -> None:
    """``run.fail()`` inside a submitted script of a remote workspace: the run ends Failed with
    ``error`` once the script exits (as locally, its supervisor sets the outcome).

    :raises MlwsError: the script was not started by a supervisor of this machine."""
    import json

    from ..dirs import write_atomic
    from ..errors import MlwsError

    target = os.environ.get(OUTCOME_ENV)
    if not target:
        raise MlwsError(
            f"run {run.id}: fail() inside a submitted run needs its supervisor ({OUTCOME_ENV})"
        )
    write_atomic(Path(target), json.dumps({"status": "Failed", "error": error}), 0o600)


def requested_failure(path: Path) -> dict[str, Any] | None:
    """The error the script asked to fail with (``run.fail()``), or None."""
    import json

    try:
        return dict(json.loads(path.read_text())["error"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def build_environment(spec: dict[str, Any], workdir: Path, stop: threading.Event) -> str:
    """Build (once per machine) or reuse the run's managed environment on this machine,
    logging to ``logs/environment.log``; returns its interpreter.

    :raises EnvironmentBuildError: the build failed. :raises EnvironmentBuildCanceled: the run
        was canceled meanwhile."""
    from ..environments import Environment, resolve

    with open(workdir / "logs" / "environment.log", "a") as log:
        log.write(f"Environment {spec['name']!r} (spec {spec.get('specHash')})\n")
        log.flush()
        python = resolve(Environment.from_dict(spec), None, log=log, should_stop=stop.is_set)
        log.write(f"Ready: {python}\n")
    return python


def supervise(url: str, run_id: str) -> int:
    """Drive run ``run_id`` of server ``url`` to its end; returns the exit status."""
    from ..compute.script import exit_outcome, exit_watch, script_argv, script_env, start_script
    from ..errors import MlwsError
    from ..workspace import Workspace
    from .runs import finish
    from .submit import record_path, runs_dir

    ws = Workspace(url)
    client = ws.remote
    run = ws.get_run(run_id)
    beat = client.request("POST", client.path("runs", run_id, "heartbeat"))
    client.tracker.hold(run_id, beat.get("heartbeatSeconds"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    workdir = runs_dir(client.url) / run_id
    outcome, error = "Failed", None
    try:
        status(run, "Queued")
        status(run, "Preparing")
        details = run.get_details()
        definition = details["runDefinition"]
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        ws.blobs.materialize(ws.blobs.read_manifest(details["snapshotId"]), workdir)
        (workdir / "logs").mkdir(exist_ok=True)
        (workdir / "outputs").mkdir(exist_ok=True)
        if definition.get("inputs") or definition.get("outputs"):
            from ..rundata import prepare

            # The datasets' files fetched from the server (hash checked) and copied in; their
            # lineage goes to the server (a remote run's seq is its id).
            for note in prepare(ws, run_id, definition, workdir, links_ok=False, remote=True):
                print(note, file=sys.stderr)
        if stop.is_set():
            outcome = "Canceled"
            return 0
        spec = definition["environment"]
        if spec.get("managed") and not spec.get("interpreter"):
            spec["interpreter"] = build_environment(spec, workdir, stop)
        env = script_env(
            dict(os.environ),
            definition,
            client.url,
            ws.name,
            run_id,
            run.experiment.name,
            workdir,
            user=details.get("submittedBy"),
        )
        outcome_file = runs_dir(client.url) / f"{run_id}.outcome.json"
        outcome_file.unlink(missing_ok=True)
        env[OUTCOME_ENV] = str(outcome_file)
        status(run, "Running")
        proc = start_script(script_argv(definition, workdir), workdir, env)
        shipper = LogShipper(run, workdir)
        limit = definition.get("maxRunDurationSeconds")
        deadline = time.monotonic() + limit if limit else None
        next_ship = time.monotonic() + LOG_EVERY_S
        with exit_watch(proc) as ended:
            rc = ended(0)
            while rc is None:
                if stop.is_set() or (deadline is not None and time.monotonic() > deadline):
                    _kill(proc)
                    rc = proc.wait()
                    break
                if time.monotonic() >= next_ship:
                    shipper.ship()
                    next_ship = time.monotonic() + LOG_EVERY_S
                rc = ended(0.2)
        if stop.is_set():
            outcome = "Canceled"
        elif deadline is not None and time.monotonic() > deadline and rc != 0:
            outcome = "Failed"
            error = {
                "code": "MaxRunDurationExceeded",
                "message": f"the run exceeded its maximum duration of {limit} s",
            }
        else:
            outcome, error = exit_outcome(rc, workdir / LOG)
            asked = requested_failure(outcome_file)
            if asked is not None:  # the script called run.fail()
                outcome, error = "Failed", asked
        status(run, "Finalizing")
        if outcome == "Completed" and definition.get("outputs"):
            outcome, error = publish_outputs(ws, run_id, definition, workdir)
        if definition.get("outputCollection", True):
            upload_folder(run, workdir, "outputs")
        return 0
    except MlwsError as e:
        error = {"code": "SystemError", "message": str(e)}
        if stop.is_set():  # canceled while its environment was being built
            outcome = "Canceled"
        return 1
    except Exception as e:  # noqa: BLE001 - whatever happens, the run must end with the reason
        error = {"code": "SystemError", "message": f"{type(e).__name__}: {e}"}
        return 1
    finally:
        try:
            if (workdir / LOG).exists():
                upload_folder(run, workdir, "logs")
            if outcome == "Completed":
                finish(run, "complete")
            elif outcome == "Canceled":
                status(run, "Canceled")
                client.tracker.release(run_id)
                client.tracker.drain(run_id)
            else:
                finish(run, "fail", error)
        finally:
            client.close()
            shutil.rmtree(workdir, ignore_errors=True)
            record_path(client.url, run_id).unlink(missing_ok=True)
            (runs_dir(client.url) / f"{run_id}.outcome.json").unlink(missing_ok=True)


def publish_outputs(
    ws: Any, run_id: str, definition: dict[str, Any], workdir: Path
) -> tuple[str, dict[str, Any] | None]:
    """A completed run's output folders uploaded to their datastores on the server (and
    registered, lineage recorded there), as a local run's supervisor does; a run whose outputs
    cannot be delivered has failed."""
    from .. import rundata
    from ..errors import MlwsError

    try:
        notes = rundata.publish(ws, run_id, run_id, definition, workdir)  # type: ignore[arg-type]
    except MlwsError as e:
        return "Failed", {
            "code": "OutputUploadFailed",
            "message": f"the script completed, but its outputs could not be delivered: {e}",
        }
    if notes:
        with open(workdir / LOG, "a") as log:
            log.writelines(n + "\n" for n in notes)
    return "Completed", None


def _kill(proc: Any) -> None:
    """SIGTERM the script's process group, SIGKILL after the grace period."""
    from ..compute.script import CANCEL_GRACE_S

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=CANCEL_GRACE_S)
    except OSError:
        return
    except Exception:  # noqa: BLE001 - still running after the grace period
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    """``python -m mlws.remote.supervisor URL RUN_ID``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m mlws.remote.supervisor URL RUN_ID", file=sys.stderr)
        return 2
    return supervise(args[0], args[1])


if __name__ == "__main__":
    sys.exit(main())
