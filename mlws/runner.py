"""Submitting and supervising script runs on the ``local`` target.

``submit_script`` snapshots the source folder, records the run and starts a detached
*supervising process* (``python -m mlws.runner <workspace> <run id>``) in a new session, so the
run survives the submitting process. The supervisor waits for a slot (``Queued``), materializes
the snapshot into a fresh working folder, runs the script in its own process group with output
captured to ``logs/driver.log``, watches for cancel and the time limit, collects ``outputs/`` and
``logs/`` into the blob store, and records the outcome. Its own pid and start time are in the
catalog, so if it is killed the run is reconciled to ``Failed`` on the next read.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MlwsError, RunConfigError
from .keyvault import CHANNEL_ENV, ENV_KEY, serve_run_channel

if TYPE_CHECKING:
    from .experiments import Experiment
    from .runconfig import ScriptRunConfig
    from .runs import Run
    from .workspace import Workspace

CANCEL_GRACE_S = float(os.environ.get("MLWS_CANCEL_GRACE_S", "10"))
_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)


def _python_path(existing: str | None) -> str:
    """PYTHONPATH with mlws importable first, so the supervisor and scripts see this mlws."""
    parts = [_PACKAGE_PARENT] + [
        p for p in (existing or "").split(os.pathsep) if p and p != _PACKAGE_PARENT
    ]
    return os.pathsep.join(parts)


def _environment_definition(
    ws: Workspace, env: Any, on_this_machine: bool = True
) -> dict[str, Any]:
    """The run definition's environment: the spec, plus the interpreter when it is known now
    (user-managed, run on this machine); a managed one is built where the run runs, while the
    run shows Preparing."""
    from .environments import as_environment, resolve

    env = as_environment(ws, env)
    spec = env.to_dict()
    try:
        spec["interpreter"] = None if env.managed or not on_this_machine else resolve(env)
    except MlwsError as e:
        raise RunConfigError(str(e)) from None
    spec["variables"] = {str(k): str(v) for k, v in env.environment_variables.items()}
    spec["managed"] = env.managed
    spec["specHash"] = env.spec_hash() if env.managed else None
    return spec


def submit_script(
    experiment: Experiment, config: ScriptRunConfig, tags: dict[str, Any] | None = None
) -> Run:
    """Snapshot, record and start a script run; returns it at once (status ``Queued``)."""
    from .compute import target_config
    from .rundata import encode_arguments
    from .runs import SCRIPT_RUN, Run, insert_run, key_values, process_start_time, set_status
    from .snapshots import git_properties, take_snapshot

    ws = experiment.workspace
    rc = config.run_config
    tags = key_values(tags, "tag")  # checked before the snapshot stores anything
    target_type, _ = target_config(ws, rc.target)
    src, script = config.validate()
    arguments, inputs, outputs = encode_arguments(ws, rc.arguments)
    # An ssh host has its own interpreters: the environment is resolved there.
    env = _environment_definition(ws, rc.environment, on_this_machine=target_type != "ssh")
    snap = take_snapshot(ws.blobs, src)
    for w in snap.warnings:
        print(f"Warning: {w}", file=sys.stderr)
    definition = {
        "script": script,
        "arguments": arguments,
        "inputs": inputs,
        "outputs": outputs,
        "command": rc.command,
        "target": rc.target,
        "sourceDirectory": str(src),
        "environment": env,
        "environmentVariables": {str(k): str(v) for k, v in rc.environment_variables.items()},
        "maxRunDurationSeconds": rc.max_run_duration_seconds,
        "outputCollection": rc.history.output_collection,
        "snapshot": {"files": snap.files, "bytes": snap.bytes, "newBytes": snap.new_bytes},
    }
    row = insert_run(
        ws,
        experiment.name,
        run_type=SCRIPT_RUN,
        status="NotStarted",
        fields={
            "snapshot": snap.manifest,
            "definition": json.dumps(definition),
            "target": rc.target,
            "environment": env["name"] if env["name"] != "default" else None,
        },
        tags=tags,
        properties={
            "azureml.runsource": "experiment",
            "ContentSnapshotId": snap.manifest,
            **git_properties(src),
        },
    )
    run_id = row["id"]
    penv = dict(os.environ)
    penv["PYTHONPATH"] = _python_path(penv.get("PYTHONPATH"))
    penv.pop(CHANNEL_ENV, None)  # a run submitted from a run: not its parent's pipes
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlws.runner", str(ws.path), run_id],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=penv,
            close_fds=True,
        )
    except OSError as e:
        set_status(
            ws,
            run_id,
            "Failed",
            error={"code": "SystemError", "message": f"could not start the run: {e}"},
        )
        raise MlwsError(f"could not start the supervising process: {e}") from None
    # The supervisor may already have moved on (Queued/Running): only fill in what is missing.
    with ws.catalog.write() as conn:
        conn.execute(
            "UPDATE runs SET supervisor_pid = ?, supervisor_start = ?,"
            " status = CASE status WHEN 'NotStarted' THEN 'Queued' ELSE status END WHERE id = ?",
            (proc.pid, process_start_time(proc.pid), run_id),
        )
    # Reap the supervisor if this process outlives it (else it lingers as a zombie); if this
    # process exits first, init adopts and reaps it.
    threading.Thread(target=proc.wait, name=f"mlws-reap-{proc.pid}", daemon=True).start()
    row = ws.catalog.one("SELECT * FROM runs WHERE id = ?", (run_id,))
    return Run(experiment, run_id, _row=row)


def _load_prctl() -> Any:
    # Looked up once, here: a child between fork and exec must not import or dlopen anything
    # (in a multi-threaded parent that can deadlock on a lock held by another thread).
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn``: the child is killed when its parent dies (Linux PR_SET_PDEATHSIG), so a
    script never outlives the Dask worker, ssh agent or supervisor that owns it."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


def script_env(
    base: dict[str, str],
    definition: dict[str, Any],
    ws_path: str | os.PathLike[str],
    ws_name: str,
    run_id: str,
    experiment: str,
    run_dir: str | os.PathLike[str],
) -> dict[str, str]:
    """The environment a run's script sees (locally, on an ``ssh`` host, on a Dask worker)."""
    from .rundata import PATHS_ENV, absolute_paths

    env = dict(base)
    env.pop(PATHS_ENV, None)  # a script that submits runs must not hand its own paths on
    env.pop(ENV_KEY, None)  # a run asks for secrets through its channel, never with the key
    if definition.get("dataPaths"):
        env[PATHS_ENV] = json.dumps(absolute_paths(definition, run_dir))
    env.update(definition["environment"].get("variables") or {})
    env.update(definition.get("environmentVariables") or {})
    env.update(
        {
            "MLWS_WORKSPACE": str(ws_path),
            "MLWS_RUN_ID": run_id,
            "AZUREML_RUN_ID": run_id,
            "AZUREML_ARM_WORKSPACE_NAME": ws_name,
            "AZUREML_ARM_PROJECT_NAME": experiment,
            "AZUREML_EXPERIMENT_NAME": experiment,
            "AZUREML_RUN_TOKEN": "",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": _python_path(base.get("PYTHONPATH")),
        }
    )
    return env


def script_argv(definition: dict[str, Any], run_dir: str | os.PathLike[str]) -> list[str]:
    """The run's command line: its ``command``, or the interpreter, script and arguments (data
    placeholders made paths inside ``run_dir``)."""
    from .rundata import expand_argument

    cmd = definition.get("command")
    if cmd:
        return ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else [str(c) for c in cmd]
    return [
        definition["environment"]["interpreter"],
        definition["script"],
        *(expand_argument(a, definition, run_dir) for a in definition["arguments"]),
    ]


def start_script(
    argv: list[str],
    workdir: Path,
    env: dict[str, str],
    tie_to_parent: bool = False,
    pass_fds: tuple[int, ...] = (),
    read_only: list[str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a run's script in its own process group (so cancel reaches everything it
    starts), its output appended to ``logs/driver.log``. ``read_only``: folders of
    ``workdir`` (mounted inputs) the script must not change."""
    from . import readonly

    preexec = die_with_parent if tie_to_parent else None
    if read_only:
        folders = [workdir / f for f in read_only]
        if readonly.available():
            binds = readonly.preexec(folders)

            def preexec() -> None:
                if tie_to_parent:
                    die_with_parent()
                binds()
        else:
            for f in folders:  # copies (see rundata.prepare): no longer writable
                readonly.strip_write_bits(f)
    with open(workdir / "logs" / "driver.log", "ab") as log:
        try:
            return subprocess.Popen(
                argv,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec,
                pass_fds=pass_fds,
            )
        except OSError as e:
            raise MlwsError(f"cannot start {argv[0]}: {e.strerror}") from None


def exit_outcome(rc: int, log_file: Path | None) -> tuple[str, dict[str, Any] | None]:
    """A script's exit code as the run's outcome, with the reason when it failed."""
    if rc == 0:
        return "Completed", None
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return "Failed", {
            "code": "ProcessKilled",
            "message": f"the script was killed by signal {-rc} ({name})",
        }
    return "Failed", {
        "code": "UserError",
        "message": f"the script exited with code {rc}{_last_error_line(log_file)}",
    }


def _last_error_line(log_file: Path | None) -> str:
    if log_file is None:
        return ""
    try:
        with open(log_file, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            lines = [
                ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()
            ]
        return f": {lines[-1]}" if lines else ""
    except OSError:
        return ""


def run_folder(ws: Workspace, run_id: str) -> Path:
    """Where a run of ``ws`` works on this machine: ``~/.cache/mlws/runs/<key>/<run id>``."""
    from .workspace import user_cache_dir

    return user_cache_dir() / "runs" / ws.folder_key / run_id


def collect_run_files(
    ws: Workspace, run_seq: int, definition: dict[str, Any], workdir: Path
) -> None:
    """Store ``outputs/`` (unless output collection is off) and ``logs/`` of a run's working
    folder as its run files (storing the same file again replaces it).

    The run has ended: what cannot be stored (links out of the folder, names no manifest
    accepts, unreadable files) is skipped and said in the run's log, not refused."""
    from .errors import UserErrorException
    from .runs import add_run_files

    entries = []
    with ws.blobs.batch():
        for sub in ("outputs", "logs"):
            if sub == "outputs" and not definition.get("outputCollection", True):
                continue
            if not (workdir / sub).is_dir():
                continue
            skipped: list[str] = []
            try:
                entries += ws.blobs.put_folder(
                    workdir / sub, sub, root_may_link=False, skipped=skipped, lenient=True
                )
            except UserErrorException as e:
                skipped.append(f"{sub}/ not stored: {e}")
            if skipped:
                # Outputs first, so the warning is in the driver log stored next.
                # O_NOFOLLOW: the script may have left a link in place of its log.
                try:
                    (workdir / "logs").mkdir(exist_ok=True)
                    fd = os.open(
                        workdir / "logs" / "driver.log",
                        os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW,
                        0o644,
                    )
                except OSError:
                    continue  # no log to tell: the files are skipped all the same
                with os.fdopen(fd, "a") as log:
                    log.writelines(f"Warning: {w}\n" for w in skipped)
    add_run_files(ws, run_seq, entries)


def abandon(ws: Workspace, run_id: str, error: dict[str, Any]) -> None:
    """End a run whose supervisor is gone (or going): stop its orphaned script, keep what its
    working folder holds (``logs/`` and ``outputs/``, as a failed run's supervisor would have:
    they say what went wrong and how far it got; outputs are not published to datastores),
    remove the folder, and mark the run ``Failed`` with ``error``.

    Several processes may find the same dead supervisor at once: a lock per run in the
    workspace's ``locks/`` makes exactly one of them do it; the others find the run ended.
    The run is marked Failed last, so whoever sees it ended sees its files."""
    from .lifecycle import TERMINAL, kill_orphan, set_status
    from .locks import locked

    with locked(ws.path / "locks" / "runs" / f"{run_id}.lock"):
        row = ws.catalog.one("SELECT * FROM runs WHERE id = ?", (run_id,))
        if row is None or row["status"] in TERMINAL:
            return
        kill_orphan(ws, row)
        from .reaper import end_leftovers

        end_leftovers(ws, run_id)  # what the script started outside its group, by its marker
        workdir = Path(row["working_dir"]) if row["working_dir"] else None
        # Only this workspace's own folder: a copy of the workspace has the same run ids and
        # recorded paths, and must never take (or delete) the original's files.
        if workdir is not None and workdir.parent.name == ws.folder_key and workdir.is_dir():
            try:
                if (workdir / "logs").is_dir():
                    with open(workdir / "logs" / "driver.log", "a") as log:
                        log.write(
                            f"\nmlws: {error['message']}; the supervising process died, and "
                            f"process {os.getpid()} stored this run's files\n"
                        )
                collect_run_files(ws, row["seq"], json.loads(row["definition"] or "{}"), workdir)
            except (OSError, MlwsError) as e:
                # Not removed, so nothing is lost; the reason says where the files are.
                error = {
                    **error,
                    "message": f"{error['message']}; its working folder {workdir} could not be"
                    f" stored ({e}) and was left in place",
                }
            else:
                if not os.environ.get("MLWS_KEEP_WORKDIR"):
                    remove_run_folder(workdir)
        set_status(ws, run_id, "Failed", error=error)


def remove_run_folder(folder: Path) -> None:
    """Remove a run's working folder, read-only input copies included."""
    from . import readonly
    from .rundata import DATA_DIR

    readonly.restore_write_bits(folder / DATA_DIR)
    shutil.rmtree(folder, ignore_errors=True)


# -- the supervising process ----------------------------------------------------------------------
class _Supervisor:
    def __init__(self, ws: Workspace, run_id: str, claim: bool = True) -> None:
        """``claim``: this process supervises the run (records its pid); a Dask task executing
        the run for a supervisor elsewhere does not."""
        from .runs import process_start_time

        self.ws = ws
        self.run_id = run_id
        row = ws.catalog.one("SELECT * FROM runs WHERE id = ?", (run_id,))
        if row is None:
            raise MlwsError(f"no run {run_id}")
        self.row = row
        self.definition = json.loads(row["definition"])
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None
        self._tie_to_parent = False
        self._note: str | None = None
        self._subreaper = False  # orphans of the script are re-parented here (reaper.py)
        self._sweep_due = False
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
        return str(self.ws.catalog.scalar("SELECT status FROM runs WHERE id = ?", (self.run_id,)))

    def run(self) -> None:
        from .compute import local, target_config
        from .runs import set_status

        def keep_waiting() -> bool:
            return self.status() not in ("CancelRequested", "Canceled", "Failed", "Completed")

        try:
            kind, config = target_config(self.ws, self.row["target"] or "local")
            if kind == "ssh":
                from .compute import sshrun

                sshrun.execute(self, self.row["target"], config)
                return
            if kind == "dask":
                from .compute import dask

                dask.execute(self, self.row["target"], config)
                return
            from .reaper import become_subreaper

            self._subreaper = become_subreaper()
            with local.slot(self.ws, keep_waiting, may_start=self.first_in_line) as slot:
                if slot is None:
                    set_status(self.ws, self.run_id, "Canceled")
                    return
                self._execute()
        except Exception as e:  # noqa: BLE001 - any failure must end the run, with its reason
            self.fail_with(e)
        finally:
            self._remove_workdir()

    def execute_guarded(self, tie_to_parent: bool = False) -> None:
        """Run the script here, now (a Dask task does this for the run's supervisor).

        ``tie_to_parent``: the script is killed when this process dies (a Dask worker). When
        an earlier attempt got as far as starting (its worker died), its leftovers are killed
        and the run starts over, with a note in its log.
        """
        from .lifecycle import PROGRESS

        self._tie_to_parent = tie_to_parent
        if self.status() in PROGRESS:
            self.kill_recorded_script()
            # The dead attempt's log and metrics are kept apart; the retry starts clean.
            from .attempts import set_aside

            n = set_aside(self.ws, self.run_id, run_folder(self.ws, self.run_id))
            self._note = (
                "mlws: the worker running this run died; this is attempt"
                f" {n + 1} (the dead attempt's log: logs/attempt-{n}/driver.log)\n"
            )
            with self.ws.catalog.write() as conn:
                conn.execute(
                    "INSERT OR IGNORE INTO run_properties VALUES (?, 'mlws.retried', 'worker died')",
                    (self.row["seq"],),
                )
        try:
            self._execute()
        except Exception as e:  # noqa: BLE001 - any failure must end the run, with its reason
            self.fail_with(e)
        finally:
            self._remove_workdir()
            if self._sweep_due:
                from .reaper import end_leftovers

                end_leftovers(self.ws, self.run_id)

    def fail_with(self, e: BaseException) -> None:

        self._kill_group(signal.SIGKILL)
        self._end_leftovers()
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

    def _remove_workdir(self) -> None:
        if self.workdir is not None and not os.environ.get("MLWS_KEEP_WORKDIR"):
            remove_run_folder(self.workdir)

    def kill_recorded_script(self) -> None:
        """Kill the script's process group recorded in the catalog, if it still runs here."""
        from .lifecycle import owned_process

        row = self.ws.catalog.one("SELECT pid, pid_start FROM runs WHERE id = ?", (self.run_id,))
        if row and owned_process(self.ws, row[0], row[1]):
            try:
                os.killpg(row[0], signal.SIGKILL)
            except OSError:
                pass

    def _execute(self) -> None:
        from .runs import process_start_time, set_status

        ws, d = self.ws, self.definition
        if not set_status(ws, self.run_id, "Preparing"):
            self.cancel_if_requested()
            return
        workdir = self.prepare_workdir()
        if d["environment"].get("managed"):
            from .errors import EnvironmentBuildCanceled

            try:
                d["environment"]["interpreter"] = self._prepare_environment(workdir)
            except EnvironmentBuildCanceled:  # killed and removed: the run ends Canceled
                self.collect(workdir)
                self.finish(("Canceled", None))
                return
        if not set_status(ws, self.run_id, "Starting", working_dir=str(workdir)):
            self.cancel_if_requested()
            return
        env = script_env(
            dict(os.environ), d, ws.path, ws.name, self.run_id, self.row["experiment"], workdir
        )
        channel = serve_run_channel(ws)  # run.get_secret() asks here; never a credential
        env[CHANNEL_ENV] = f"{channel[0]},{channel[1]}"
        try:
            self.proc = start_script(
                script_argv(d, workdir),
                workdir,
                env,
                self._tie_to_parent,
                pass_fds=channel,
                read_only=d.get("readOnly"),
            )
        finally:
            for fd in channel:  # the script's ends
                os.close(fd)
        with ws.catalog.write() as conn:  # recorded even if a cancel is pending: _watch acts on it
            conn.execute(
                "UPDATE runs SET pid = ?, pid_start = ? WHERE id = ?",
                (self.proc.pid, process_start_time(self.proc.pid), self.run_id),
            )
        set_status(ws, self.run_id, "Running")
        outcome = self._watch()
        self._kill_group(signal.SIGKILL)  # leftovers the script started and left behind
        self._end_leftovers()
        if outcome[0] != "Canceled":
            set_status(ws, self.run_id, "Finalizing")
        outcome = self.publish_outputs(workdir, outcome)
        self.collect(workdir)
        self.finish(outcome)

    def prepare_workdir(self, remote: bool = False) -> Path:
        """A fresh working folder holding the run's snapshot, ``logs/``, ``outputs/`` and its
        data (``rundata.prepare``; ``remote``: the folder is copied to an ``ssh`` host)."""
        from . import readonly, rundata

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
        notes = [self._note.rstrip("\n")] if self._note else []
        d = self.definition
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
            self._save_definition()
        if notes:
            (workdir / "logs" / "driver.log").write_text("".join(n + "\n" for n in notes))
        return workdir

    def _save_definition(self) -> None:
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
        from . import rundata

        if outcome[0] != "Completed" or not self.definition.get("outputs"):
            return outcome
        try:
            notes = rundata.publish(self.ws, self.run_id, self.row["seq"], self.definition, workdir)
        except MlwsError as e:
            return "Failed", {
                "code": "OutputUploadFailed",
                "message": f"the script completed, but its outputs could not be delivered: {e}",
            }
        if notes:
            with open(workdir / "logs" / "driver.log", "a") as log:
                log.writelines(n + "\n" for n in notes)
        return outcome

    def _prepare_environment(self, workdir: Path) -> str:
        """Build (once per machine) or reuse the run's managed environment, logging to
        ``logs/environment.log``; records the interpreter in the run definition."""
        from .environments import Environment, resolve

        spec = self.definition["environment"]
        with open(workdir / "logs" / "environment.log", "a") as log:
            log.write(f"Environment {spec['name']!r} (spec {spec['specHash']})\n")
            log.flush()
            python = resolve(
                Environment.from_dict(spec), self.ws, log=log, should_stop=self._cancel_asked
            )
            log.write(f"Ready: {python}\n")
        self.definition["environment"]["interpreter"] = python
        self._save_definition()
        return python

    def _cancel_asked(self) -> bool:
        """The run was canceled (or ended elsewhere): work in progress for it should stop."""
        from .lifecycle import TERMINAL

        return self.status() in ("CancelRequested", *TERMINAL)

    def cancel_if_requested(self) -> None:
        from .runs import set_status

        if self.status() == "CancelRequested":
            set_status(self.ws, self.run_id, "Canceled")

    def first_in_line(self) -> bool:
        """No older run of this workspace is queued for this machine's local slots."""
        import socket

        from .lifecycle import owned_process

        older = self.ws.catalog.query(
            "SELECT supervisor_pid, supervisor_start FROM runs WHERE status = 'Queued'"
            " AND target = ? AND host = ? AND seq < ?",
            (self.row["target"], socket.gethostname(), self.row["seq"]),
        )
        # Only this folder's waiters: a copy of the workspace carries the original's queued
        # rows, whose (live) supervisors wait for the original's slots, not ours.
        return not any(owned_process(self.ws, r[0], r[1]) for r in older)

    def _watch(self) -> tuple[str, dict[str, Any] | None]:
        from .lifecycle import TERMINAL

        assert self.proc is not None
        limit = self.definition.get("maxRunDurationSeconds")
        started = time.monotonic()
        delay = 0.005
        cancel_at: float | None = None
        while True:
            try:
                rc = self.proc.wait(timeout=delay)
                break
            except subprocess.TimeoutExpired:
                pass
            delay = min(delay * 2, 0.25)
            now = time.monotonic()
            # A final status too: a Dask run canceled in the moment before its script started,
            # or failed by its supervisor elsewhere, must not run on unsupervised.
            if cancel_at is None and self.status() in ("CancelRequested", *TERMINAL):
                cancel_at = now
                self._kill_group(signal.SIGTERM)
            if cancel_at is not None and now - cancel_at > CANCEL_GRACE_S:
                self._kill_group(signal.SIGKILL)
            if limit and now - started > float(limit) and cancel_at is None:
                self._kill_group(signal.SIGKILL)
                self.proc.wait()
                return "Failed", {
                    "code": "RunTimeout",
                    "message": f"the run exceeded max_run_duration_seconds={limit} and was killed",
                }
        if cancel_at is not None or self.status() == "CancelRequested":
            return "Canceled", None
        requested = self.ws.catalog.scalar(
            "SELECT requested_status FROM runs WHERE id = ?", (self.run_id,)
        )
        if requested == "Failed":
            return "Failed", None  # the script called run.fail(); its error is recorded
        return exit_outcome(rc, self.workdir / "logs" / "driver.log" if self.workdir else None)

    def _end_leftovers(self) -> None:
        """Processes the script started outside its process group (reaper.py). Without the
        sub-reaper (a Dask worker) the sweep by marker reads every process's environment: it
        runs once the run has ended (``execute_guarded``), not before its outcome is seen."""
        from .reaper import end_leftovers

        if self.proc is None:
            return
        if self._subreaper:
            end_leftovers(self.ws, self.run_id, below_me=True)
        else:
            self._sweep_due = True

    def _kill_group(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except OSError:
            pass

    def collect(self, workdir: Path) -> None:
        """Store ``outputs/`` and ``logs/`` of the working folder as run files."""
        collect_run_files(self.ws, self.row["seq"], self.definition, workdir)

    def finish(self, outcome: tuple[str, dict[str, Any] | None]) -> None:
        from .runs import TERMINAL, set_status

        status, error = outcome
        # Its files are stored by now: the working folder goes before the run is seen ended.
        self._remove_workdir()
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


def main(argv: list[str] | None = None) -> int:
    from .workspace import Workspace

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m mlws.runner WORKSPACE RUN_ID", file=sys.stderr)
        return 2
    ws = Workspace(args[0])
    sup = _Supervisor(ws, args[1])

    def on_term(signum: int, _frame: Any) -> None:
        # Stopped from outside (shutdown, kill): take the script down too, keep its logs and
        # say why.
        sup._kill_group(signal.SIGKILL)
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
    sup.run()
    ws.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
