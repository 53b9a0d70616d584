"""Submissions of a remote workspace that the SERVER executes: a script run on a compute target
registered on the server (ssh, Dask, ...) or any distributed job, a pipeline, a HyperDrive
sweep.

Each source folder goes to the server content-addressed (:func:`mlws.remote.submit.remote_snapshot`:
only the blobs it lacks), then one ``POST /experiments/{name}/executions`` carries the
definition a local submit would record; the server turns it into a normal submit on its own
workspace (:mod:`mlws.server.execution`): its supervisor or controller, its keys, step reuse
against its catalog. The run object returned here follows it through the server (status,
children, metrics, logs, files); ``cancel()`` asks the server to cancel it.

A distributed job with target ``local`` runs on the server's machine too: ``local`` is the
machine that executes the submission, and for a distributed job that is the server's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import UserErrorException

if TYPE_CHECKING:
    from ..experiments import Experiment
    from ..runconfig import ScriptRunConfig
    from ..runs import Run
    from ..workspace import Workspace


def snapshot_spec(ws: Workspace, src: Any) -> dict[str, Any]:
    """Send ``src``'s snapshot to the server; returns it as a definition records it."""
    import sys

    from .submit import remote_snapshot

    snap = remote_snapshot(ws, src)
    for w in snap.warnings:
        print(f"Warning: {w}", file=sys.stderr)
    return {
        "manifest": snap.manifest,
        "files": snap.files,
        "bytes": snap.bytes,
        "new_files": snap.new_files,
        "new_bytes": snap.new_bytes,
    }


def server_datasets(ws: Workspace, specs: list[dict[str, Any]]) -> None:
    """Check that the server can read every dataset of ``specs`` (as a run definition records
    them): registered ones, or ones over its datastores' paths.

    :raises UserErrorException: one reads paths of this machine (upload them first)."""
    for spec in specs:
        local = [s["local"] for s in spec["definition"]["sources"] if "local" in s]
        if spec.get("name") is None and local:
            raise UserErrorException(
                f"a run the server executes reads datastore paths; {local[0]!r} is a path of"
                " this machine: upload it first (Datastore.upload) and use (datastore, 'path'),"
                " or submit to target 'local'"
            )


def post(
    experiment: Experiment,
    kind: str,
    definition: dict[str, Any],
    tags: dict[str, Any] | None = None,
    display_name: str | None = None,
    run_id: str | None = None,
) -> Any:
    """Send one submission the server executes; returns its run's row (as the server sees it).

    :raises MlwsError: the server refused it (a bad target, a reader's token...: nothing is
        created then)."""
    from ..lifecycle import key_values
    from .runs import row_of

    client = experiment.workspace.remote
    body: dict[str, Any] = {
        "kind": kind,
        "definition": definition,
        "tags": key_values(tags, "tag"),
    }
    if display_name is not None:
        body["displayName"] = display_name
    if run_id is not None:
        body["runId"] = run_id
    answer = client.request("POST", client.path("experiments", experiment.name, "executions"), body)
    return row_of(answer)


def submit_script(
    experiment: Experiment,
    config: ScriptRunConfig,
    tags: dict[str, Any] | None = None,
    display_name: str | None = None,
) -> Run:
    """A script run the server executes (on its compute target ``config``'s, or distributed);
    returns it at once.

    Datasets and outputs among the arguments go as a local run definition records them (the
    server resolves the datasets against its catalog and records the lineage).

    :raises RunConfigError: a bad configuration (nothing is sent).
    :raises UserErrorException: a dataset over paths of this machine (nothing is sent).
    """
    from ..runconfig import RunConfiguration
    from ..runs import Run, key_values
    from .submit import data_arguments

    ws = experiment.workspace
    rc = config.run_config
    tags = key_values(tags, "tag")
    rc.distributed_layout()  # a bad layout is refused before anything is sent
    src, _script = config.validate()
    arguments, inputs, outputs = data_arguments(ws, rc.arguments)
    server_datasets(ws, [spec["dataset"] for spec in inputs])
    data = rc.to_dict()
    RunConfiguration.from_dict(data)  # what the server will read back
    definition = {
        "runConfig": data,
        "sourceDirectory": str(src),
        "snapshot": snapshot_spec(ws, src),
    }
    if inputs or outputs:
        definition.update(arguments=arguments, inputs=inputs, outputs=outputs)
    row = post(experiment, "script", definition, tags, display_name)
    return Run(experiment, row["id"], _row=row)


def submit_pipeline(
    experiment: Experiment,
    spec: dict[str, Any],
    tags: dict[str, Any] | None = None,
    continue_on_step_failure: bool = False,
    regenerate_outputs: bool = False,
) -> Any:
    """A pipeline run of the frozen definition ``spec`` (its snapshots on the server already)
    that the server's controller runs; returns the :class:`~mlws.pipelines.run.PipelineRun`."""
    from ..pipelines.run import PipelineRun

    definition = {
        "pipeline": spec,
        "continueOnStepFailure": bool(continue_on_step_failure),
        "regenerateOutputs": bool(regenerate_outputs),
    }
    row = post(experiment, "pipeline", definition, tags)
    return PipelineRun(experiment, row["id"], _row=row)


def start_sweep(
    experiment: Experiment, definition: dict[str, Any], run_id: str, tags: dict[str, Any] | None
) -> Any:
    """A sweep (its definition as a local submit records it, its snapshot on the server) that
    the server's controller runs; returns the :class:`~mlws.hyperdrive.run.HyperDriveRun`."""
    from ..hyperdrive.run import HyperDriveRun

    row = post(experiment, "sweep", definition, tags, run_id=run_id)
    return HyperDriveRun(experiment, row["id"], _row=row)


def cancel(run: Run) -> None:
    """Ask the server to cancel ``run``, which it executes.

    :raises RunStateError: a client's supervisor executes it (cancel it on that machine)."""
    client = run.workspace.remote
    client.request("POST", client.path("runs", run.id, "cancel"), {})


# -- published pipelines ------------------------------------------------------------------------
def _published(answer: dict[str, Any]) -> dict[str, Any]:
    """A published pipeline's row (the catalog's columns) from the server's answer."""
    import json

    return {
        "id": answer["id"],
        "name": answer["name"],
        "description": answer.get("description"),
        "version": answer.get("version"),
        "status": answer["status"],
        "continue_on_step_failure": answer.get("continue_on_step_failure"),
        "created": answer.get("created") or 0.0,
        "definition": json.dumps(answer.get("graph") or {"parameters": {}, "steps": []}),
    }


def publish(
    ws: Workspace,
    spec: dict[str, Any],
    name: str,
    description: str | None,
    version: str | None,
    continue_on_step_failure: bool | None,
) -> dict[str, Any]:
    """Record the frozen ``spec`` (its snapshots on the server) as a published pipeline of the
    server; returns its row."""
    client = ws.remote
    body: dict[str, Any] = {"name": name, "pipeline": spec}
    for key, value in (
        ("description", description),
        ("version", version),
        ("continueOnStepFailure", continue_on_step_failure),
    ):
        if value is not None:
            body[key] = value
    return _published(client.request("POST", client.path("pipelines"), body))


def published_row(ws: Workspace, pipeline_id: str) -> dict[str, Any]:
    """The row of the server's published pipeline ``pipeline_id``.

    :raises PipelineNotFound: there is none."""
    client = ws.remote
    return _published(client.request("GET", client.path("pipelines", pipeline_id)))


def published_rows(ws: Workspace, active_only: bool) -> list[dict[str, Any]]:
    """The rows of the server's published pipelines, newest first."""
    client = ws.remote
    path = client.path("pipelines") + ("" if active_only else "?all=true")
    return [_published(p) for p in client.request("GET", path)["value"]]


def submit_published(
    experiment: Experiment, pipeline_id: str, parameters: dict[str, Any] | None
) -> Any:
    """Run the server's published pipeline through its REST submit; returns the
    :class:`~mlws.pipelines.run.PipelineRun`."""
    client = experiment.workspace.remote
    body = {"ExperimentName": experiment.name, "ParameterAssignments": parameters or {}}
    answer = client.request("POST", client.path("pipelines", pipeline_id), body)
    return experiment.workspace.get_run(answer["Id"])
