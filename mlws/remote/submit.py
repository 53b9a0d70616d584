"""Script runs submitted to a remote workspace: recorded on the server, executed on THIS machine.

``Experiment(remote_ws, name).submit(ScriptRunConfig(...))`` comes here (from
:func:`mlws.runconfig.submit_script`):

1. the source folder's snapshot goes to the server content-addressed (its hashes asked first,
   only the blobs the server lacks sent, then the manifest);
2. the run is created on the server (``POST /experiments/{name}/submissions``: NotStarted, with
   its snapshot and run definition, held by a lease);
3. a detached supervisor on this machine (for a ``local`` target; any other target, and a
   distributed job, is executed by the server: :mod:`mlws.remote.execute`) (:mod:`mlws.remote.supervisor`) drives it: statuses,
   the script with ``MLWS_WORKSPACE`` = the server's URL (the token in the environment, never on
   a command line), its log and outputs uploaded, heartbeats, the outcome.

The supervisor's pid is recorded in this user's cache folder (:func:`record_path`), so
``run.cancel()`` on this machine can stop it; elsewhere cancel is a one-line error.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserErrorException

if TYPE_CHECKING:
    from ..experiments import Experiment
    from ..runconfig import ScriptRunConfig
    from ..runs import Run
    from ..snapshots import Snapshot
    from ..workspace import Workspace

#: What the supervisor logs about itself (not the script's log) lands here, by run.
SUPERVISOR_LOG = "supervisor.log"


def runs_dir(url: str) -> Path:
    """This machine's folder of runs of server ``url`` it executes (working folders, records)."""
    from ..dirs import user_cache_dir
    from .backend import server_key

    return user_cache_dir() / "remote-runs" / server_key(url)


def record_path(url: str, run_id: str) -> Path:
    """The record (``{"pid", "start"}``) of the supervisor of ``run_id`` on this machine."""
    return runs_dir(url) / f"{run_id}.json"


def remote_snapshot(ws: Workspace, source_dir: str | os.PathLike[str]) -> Snapshot:
    """Capture ``source_dir`` (the local snapshot's rules: ignore files, links, names) on the
    server: every file hashed here, only the blobs the server lacks sent, then the manifest.

    :raises SnapshotError: the folder is unreadable or a name cannot be stored (nothing sent).
    """
    from ..errors import SnapshotError
    from ..fileops import hash_file, skipped_warning
    from ..manifests import Entry, canonical_manifest, file_mode, hash_bytes
    from ..snapshots import Snapshot, snapshot_files
    from .backend import send_blobs

    root = Path(source_dir).absolute()
    files, links = snapshot_files(root)
    entries = []
    for rel, st, path in files:
        try:
            digest, size = hash_file(path)
        except OSError as e:
            raise SnapshotError(f"cannot read {path}: {e.strerror}") from None
        entries.append(Entry(rel, digest, size, file_mode(st.st_mode)))
    data = canonical_manifest(entries)
    manifest = hash_bytes(data)
    sources: dict[str, str | bytes] = {
        e.hash: p for e, (_r, _s, p) in zip(entries, files, strict=True)
    }
    sources[manifest] = data
    # One question for every hash (manifest included), then only what the server lacks.
    sent = send_blobs(ws.remote, sources)
    total = sum(e.size for e in entries)
    warnings = [skipped_warning(str(root), links)] if links else []
    return Snapshot(manifest, len(entries), total, sent, 0, warnings)


def data_arguments(
    ws: Workspace, arguments: list[Any]
) -> tuple[list[Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """A script's arguments as the run definition records them, its dataset inputs
    (``as_named_input``, ``as_mount``, ``as_download``, a dataset or a datastore path) and its
    outputs (``OutputFileDatasetConfig``). For a ``local`` run, the submitting machine prepares
    the inputs and uploads the outputs to their datastores on the server, and its supervisor
    sends the lineage; a run the server executes gets them resolved there
    (:mod:`mlws.remote.execute`).

    :raises NotAvailableRemotely: stored files (a pipeline's) as an input."""
    from ..rundata import encode_arguments
    from .backend import not_available

    if all(isinstance(a, (str, int, float)) for a in arguments):
        return [str(a) for a in arguments], [], []
    args, inputs, outputs = encode_arguments(ws, arguments)
    if any(spec.get("manifest") for spec in inputs):
        raise not_available("stored files as a run input", ws.remote.url)
    return args, inputs, outputs


def submit(
    experiment: Experiment,
    config: ScriptRunConfig,
    tags: dict[str, Any] | None = None,
    display_name: str | None = None,
) -> Run:
    """Snapshot, record on the server and start on this machine a script run of a remote
    workspace; returns it at once (NotStarted, soon Queued and Running).

    :raises RunConfigError: a bad configuration (nothing is sent).
    A target other than ``local``, or a distributed job, is executed by the server instead
    (:mod:`mlws.remote.execute`).
    :raises EnvironmentNotFound: a registered environment's name the server does not know.
    """
    from ..errors import RunExists
    from ..lifecycle import new_run_id
    from ..runconfig import environment_definition, run_definition
    from ..runs import Run, key_values
    from ..snapshots import git_properties
    from .runs import row_of

    ws = experiment.workspace
    client = ws.remote
    rc = config.run_config
    tags = key_values(tags, "tag")
    if rc.target != "local" or rc.distributed_layout() is not None:
        from .execute import submit_script

        return submit_script(experiment, config, tags=tags, display_name=display_name)
    src, script = config.validate()
    arguments, inputs, outputs = data_arguments(ws, rc.arguments)
    # A registered name is read from the server; a managed environment is built (once per
    # machine) by the supervisor here, while the run shows Preparing.
    env = environment_definition(ws, rc.environment)
    snap = remote_snapshot(ws, src)
    for w in snap.warnings:
        print(f"Warning: {w}", file=sys.stderr)
    definition = run_definition(config, script, arguments, src, env, snap, inputs, outputs)
    run_id = new_run_id(experiment.name)
    body: dict[str, Any] = {
        "runId": run_id,
        "tags": tags,
        "properties": git_properties(src),
        "snapshotId": snap.manifest,
        "definition": definition,
        "target": "local",
        "host": socket.gethostname(),
    }
    if display_name is not None:
        body["displayName"] = display_name
    path = client.path("experiments", experiment.name, "submissions")
    try:
        answer = client.request("POST", path, body)
    except RunExists:  # made by a first attempt whose answer was lost
        answer = client.request("GET", client.path("runs", run_id))
    start_supervisor(ws, run_id)
    return Run(experiment, run_id, _row=row_of(answer))


def start_supervisor(ws: Workspace, run_id: str) -> int:
    """Start the detached supervisor of ``run_id`` and record its pid; returns the pid.

    :raises MlwsError: it could not be started (the run is failed on the server then)."""
    from ..errors import MlwsError
    from ..processes import process_start_time, start_detached

    client = ws.remote
    folder = runs_dir(client.url)
    folder.mkdir(parents=True, exist_ok=True)
    from ..compute.launcher import submitter_env

    env = submitter_env()
    # The token reaches the supervisor (and the script) in its environment, never in argv,
    # where any user of the machine could read it.
    env["MLWS_TOKEN"] = client.token or ""
    try:
        with open(folder / f"{run_id}.{SUPERVISOR_LOG}", "ab") as log:
            proc = start_detached("mlws.remote.supervisor", client.url, run_id, env=env, log=log)
    except OSError as e:
        error = {"code": "SystemError", "message": f"cannot start the supervisor: {e.strerror}"}
        client.request("POST", client.path("runs", run_id, "fail"), {"error": error})
        raise MlwsError(f"cannot start the supervisor of run {run_id}: {e.strerror}") from None
    record = {"pid": proc.pid, "start": process_start_time(proc.pid)}
    record_path(client.url, run_id).write_text(json.dumps(record))
    return proc.pid


def cancel(run: Run) -> None:
    """Cancel a run of a remote workspace: a submitted run whose supervisor runs on this machine
    is stopped (SIGTERM: it kills the script, uploads its logs, ends it Canceled); an interactive
    run is marked Canceled by the server, after what this process logged to it (its holder, in
    this process or another, sees the status on its next call; v1's semantics).

    Any other (a run, pipeline or sweep the server executes) is canceled by the server.

    :raises RunStateError: the run executes on another machine (cancel it there)."""
    import signal

    from ..lifecycle import HYPERDRIVE, PIPELINE_RUN, SUBMITTED, TERMINAL
    from ..processes import process_alive
    from .execute import cancel as cancel_on_server

    row = run._refresh()
    if row["type"] not in (*SUBMITTED, PIPELINE_RUN, HYPERDRIVE):
        if row["status"] not in TERMINAL:
            from .runs import send

            run._close_writer()  # its values go first, in order, as a local cancel flushes
            send(run, "POST", "cancel", body={})
            run.workspace.remote.tracker.release(run.id)  # no more heartbeats from here
        return
    if row["status"] in TERMINAL:
        return
    if row["type"] in (PIPELINE_RUN, HYPERDRIVE):  # their controller runs on the server
        cancel_on_server(run)
        return
    try:
        record = json.loads(record_path(run.workspace.remote.url, run.id).read_text())
    except (OSError, ValueError):
        record = None
    if record is None or not process_alive(record.get("pid"), record.get("start")):
        # The server cancels what it executes; a run another machine's supervisor holds is
        # refused there (RunStateError: cancel it on that machine).
        cancel_on_server(run)
        return
    try:
        os.kill(int(record["pid"]), signal.SIGTERM)
    except OSError as e:
        raise UserErrorException(
            f"cannot stop the supervisor of run {run.id}: {e.strerror}"
        ) from None
