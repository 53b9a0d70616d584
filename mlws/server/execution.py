"""REST routes for submissions the SERVER executes: a script run on one of its compute targets
(ssh, Dask, ...) or a distributed job, a pipeline, a HyperDrive sweep, sent by a remote
workspace's client.

The client sends every source snapshot content-addressed first (``/blobs``), then one
``POST /experiments/{experiment}/executions`` with the submission's definition. The server
checks it whole (the snapshots stored, the compute targets its own, the shapes) before
anything is created, then makes it a normal submit on its own workspace: the same functions a
local ``Experiment.submit`` ends in (:func:`mlws.runconfig.submit_script`,
:func:`mlws.pipelines.graph.start_pipeline_run`, :func:`mlws.hyperdrive.config.start_sweep`),
so its supervisor or controller runs here, with this machine's keys, reusing steps against
this catalog, as a published pipeline's REST submit does (:mod:`.pipelines`). Its runs are
recorded as made by the token's user.

``POST /pipelines`` publishes a pipeline a client froze the same way. ``POST
/runs/{run_id}/cancel`` (:mod:`.interactive`) cancels a run this server executes through
:func:`cancel_executed` (a run a client's supervisor holds by a lease executes on that machine:
cancel it there).
"""

from __future__ import annotations

from typing import Any

from ..errors import RunStateError, UserErrorException
from .api import Call, Endpoint, body_field

#: What a submission may ask the server to execute.
KINDS = ("script", "pipeline", "sweep")
#: The largest definition accepted (JSON characters): a definition, not a data channel.
MAX_DEFINITION = 2_000_000


def _snapshot(ws: Any, value: Any, where: str) -> Any:
    """The :class:`~mlws.snapshots.Snapshot` of ``value`` (``{"manifest": ...}``), its counts
    read from the stored manifest (not from the client).

    :raises UserErrorException: not a dict with a manifest. :raises BlobNotFound: not stored."""
    from ..snapshots import Snapshot
    from .blobs import stored_manifest

    if not isinstance(value, dict) or not isinstance(value.get("manifest"), str):
        raise UserErrorException(f'{where} needs "snapshot": {{"manifest": "sha256:..."}}')
    entries = stored_manifest(ws, value["manifest"])
    return Snapshot(value["manifest"], len(entries), sum(e.size for e in entries), 0, 0)


def _as_dict(snap: Any) -> dict[str, Any]:
    return {
        "manifest": snap.manifest,
        "files": snap.files,
        "bytes": snap.bytes,
        "new_files": 0,
        "new_bytes": 0,
    }


def _run_config(ws: Any, data: Any, where: str) -> Any:
    """The checked :class:`~mlws.runconfig.RunConfiguration` of ``data``: its target one of
    this workspace's, its distributed layout one that target can run.

    :raises UserErrorException: not a mapping. :raises ComputeTargetException: no such target.
    :raises RunConfigError: a bad layout."""
    from ..compute import check_distributed, target_config
    from ..runconfig import RunConfiguration

    if not isinstance(data, dict):
        raise UserErrorException(f'{where} needs "runConfig": {{...}} (a run configuration)')
    rc = RunConfiguration.from_dict(data)
    target_config(ws, rc.target)
    layout = rc.distributed_layout()
    if layout is not None:
        check_distributed(ws, rc.target, layout)
    return rc


def checked_dataset(ws: Any, spec: Any, where: str) -> Any:
    """The dataset a client's run input names, as THIS workspace has it: a registered version
    read from its catalog (not the client's copy of its definition), else an unregistered
    definition over this server's datastore paths (never a folder of this machine).

    :raises UserErrorException: a bad shape, a path outside the datastores.
    :raises DatasetNotFound: no such registered version."""
    from .datasets import check_definition, registered_version

    registered = registered_version(ws, spec, f"{where}: its dataset")
    if registered is not None:
        return registered
    try:
        return check_definition(ws, spec.get("definition"))
    except UserErrorException as e:
        raise type(e)(f"{where}: {e}") from None


def _input(ws: Any, spec: Any, where: str) -> Any:
    """A client's dataset input (``{"name", "mode", "pathOnCompute", "dataset"}``, as a run
    definition records it) as the object a local submit takes."""
    from ..rundata import DatasetConsumptionConfig

    if not isinstance(spec, dict) or not isinstance(spec.get("mode"), str):
        raise UserErrorException(f"{where}: an input is {{name, mode, pathOnCompute, dataset}}")
    ds = checked_dataset(ws, spec.get("dataset"), f"{where}, input {spec.get('name')!r}")
    return DatasetConsumptionConfig(spec.get("name"), ds, spec["mode"], spec.get("pathOnCompute"))


def _output(ws: Any, spec: Any, where: str) -> Any:
    """A client's output (``{"name", "datastore", "path", "source", "overwrite",
    "register"}``, as a run definition records it) as an ``OutputFileDatasetConfig`` of this
    workspace (its datastore one of this server's)."""
    from ..datastores import Datastore, check_datastore_name
    from ..rundata import OutputFileDatasetConfig

    reg = spec.get("register") if isinstance(spec, dict) else None
    if (
        not isinstance(spec, dict)
        or spec.get("runFiles")
        or not all(isinstance(spec.get(k), str) for k in ("name", "datastore", "path"))
        or not (reg is None or (isinstance(reg, dict) and isinstance(reg.get("name"), str)))
        or not isinstance(spec.get("source") or "", str)
    ):
        raise UserErrorException(
            f"{where}: an output is {{name, datastore, path, source, overwrite, register}}"
        )
    store = Datastore(ws, check_datastore_name(spec["datastore"]))
    out = OutputFileDatasetConfig(spec["name"], (store, spec["path"]), spec.get("source"))
    if reg is not None:
        tags = reg.get("tags") or {}
        if not isinstance(tags, dict) or not isinstance(reg.get("description") or "", str):
            raise UserErrorException(f"{where}: register is {{name, description, tags}}")
        out = out.register_on_complete(reg["name"], reg.get("description"), tags)
    return out.as_upload(overwrite=bool(spec.get("overwrite")))


def data_arguments(ws: Any, definition: dict[str, Any], where: str) -> list[Any]:
    """The script's arguments of a client's submission whose definition carries data (its
    ``arguments`` with ``{"mlwsInput"|"mlwsOutput": name}`` placeholders, its ``inputs`` and
    ``outputs``, as a local run definition records them), as the objects a local submit takes:
    datasets resolved against this workspace's catalog, outputs on its datastores.

    :raises UserErrorException: a bad shape, a placeholder naming nothing, a dataset over
        paths outside this server's datastores. :raises DatasetNotFound: a version unknown
        here. :raises DatastoreNotFound: a datastore unknown here."""
    args, inputs, outputs = (definition.get(k) or [] for k in ("arguments", "inputs", "outputs"))
    if not all(isinstance(x, list) for x in (args, inputs, outputs)):
        raise UserErrorException(f"{where}: arguments, inputs and outputs are lists")
    found: dict[tuple[str, str], Any] = {}
    for kind, specs in (("mlwsInput", inputs), ("mlwsOutput", outputs)):
        for spec in specs:
            name = spec.get("name") if isinstance(spec, dict) else None
            if not isinstance(name, str) or (kind, name) in found:
                raise UserErrorException(f"{where}: inputs and outputs have a name each, once")
            found[(kind, name)] = spec
    out: list[Any] = []
    for a in args:
        if isinstance(a, (str, int, float)) and not isinstance(a, bool):
            out.append(str(a))
            continue
        key = next(iter(a.items())) if isinstance(a, dict) and len(a) == 1 else None
        if key is None or not isinstance(key[1], str) or key not in found:
            raise UserErrorException(
                f"{where}: argument {a!r} is neither text nor an input or output of the run"
            )
        read = _input if key[0] == "mlwsInput" else _output
        out.append(read(ws, found[key], where))
    return out


def sweep_arguments(ws: Any, items: Any) -> list[Any]:
    """A sweep's trial arguments as its client encoded them (text, and dataset inputs:
    :func:`mlws.hyperdrive.controller.encode_argument`), each dataset replaced by this
    workspace's (:func:`checked_dataset`); a trial takes no other data, as locally.

    :raises UserErrorException: anything else among them."""
    from ..hyperdrive.controller import encode_argument

    if not isinstance(items, list):
        raise UserErrorException('a sweep submission\'s "arguments" is a list')
    out = []
    for a in items:
        if isinstance(a, dict) and "datasetInput" in a:
            spec = {**a, "name": a["datasetInput"]}
            out.append(encode_argument(_input(ws, spec, "a sweep submission")))
        elif isinstance(a, str):
            out.append(a)
        else:
            raise UserErrorException(
                f"a sweep submission: argument {a!r} is neither text nor a dataset input"
            )
    return out


def _script(call: Call, req: dict[str, Any], definition: dict[str, Any]) -> Any:
    from ..experiments import Experiment
    from ..runconfig import ScriptRunConfig, submit_script

    rc = _run_config(call.ws, definition.get("runConfig"), "a script submission")
    if any(k in definition for k in ("arguments", "inputs", "outputs")):
        rc.arguments = data_arguments(call.ws, definition, "a script submission")
    snap = _snapshot(call.ws, definition.get("snapshot"), "a script submission")
    src = definition.get("sourceDirectory")
    if not isinstance(src, str) or not src:
        raise UserErrorException('a script submission needs "sourceDirectory" (recorded)')
    config = ScriptRunConfig(src, run_config=rc, max_run_duration_seconds=None)
    exp = Experiment(call.ws, req["experiment"])
    return submit_script(
        exp,
        config,
        tags=req["tags"],
        snapshot=snap,
        display_name=req["display_name"],
        submitted_by=call.user.name,
    )


def checked_pipeline(ws: Any, spec: Any) -> dict[str, Any]:
    """A client's frozen pipeline definition, checked: steps with names and upstream steps,
    their targets this workspace's, their snapshots stored (counts read from the store).

    :raises UserErrorException: a bad shape. :raises ComputeTargetException: no such target.
    :raises BlobNotFound: a snapshot not sent."""
    from ..pipelines.graph import check_parameter_values
    from ..rundata import dataset_spec

    steps = spec.get("steps") if isinstance(spec, dict) else None
    if not isinstance(steps, list) or not steps or not all(isinstance(s, dict) for s in steps):
        raise UserErrorException('a pipeline needs "pipeline": {"steps": [...]}')
    check_parameter_values(spec.get("parameters"))
    names = set()
    for s in steps:
        where = f"step {s.get('name')!r}"
        if not isinstance(s.get("name"), str) or not isinstance(s.get("upstream"), list):
            raise UserErrorException(f"{where} needs a name and its upstream steps")
        if not set(s["upstream"]) <= names or s["name"] in names:
            raise UserErrorException(f"{where}: steps come once each, upstream ones first")
        names.add(s["name"])
        _run_config(ws, s.get("runConfig"), where)
        datasets = s.get("datasets") or []
        if not isinstance(datasets, list):
            raise UserErrorException(f"{where}: datasets is a list")
        for d in datasets:  # the server's own datasets, never a folder of this machine
            d["dataset"] = dataset_spec(_input(ws, d, where).dataset)
        s["snapshot"] = _as_dict(_snapshot(ws, s.get("snapshot"), where))
    return {**spec, "parameters": spec.get("parameters") or {}}


def _pipeline(call: Call, req: dict[str, Any], definition: dict[str, Any]) -> Any:
    from ..experiments import Experiment
    from ..pipelines.graph import start_pipeline_run

    spec = checked_pipeline(call.ws, definition.get("pipeline"))
    exp = Experiment(call.ws, req["experiment"])
    return start_pipeline_run(
        exp,
        spec,
        tags=req["tags"],
        continue_on_step_failure=bool(definition.get("continueOnStepFailure")),
        regenerate_outputs=bool(definition.get("regenerateOutputs")),
        submitted_by=call.user.name,
    )


def _sweep(call: Call, req: dict[str, Any], definition: dict[str, Any]) -> Any:
    import secrets

    from ..experiments import Experiment
    from ..hyperdrive.config import start_sweep

    sweep = definition.get("hyperdrive")
    if not isinstance(sweep, dict) or not all(
        k in sweep for k in ("sampling", "primaryMetricName", "primaryMetricGoal", "maxTotalRuns")
    ):
        raise UserErrorException(
            'a sweep submission needs "hyperdrive": {"sampling", "primaryMetricName", '
            '"primaryMetricGoal", "maxTotalRuns", ...}'
        )
    if sweep.get("resumeFrom") or sweep.get("resumeChildRuns"):
        raise UserErrorException("a sweep resumed from earlier runs is submitted on the server")
    _run_config(call.ws, definition.get("runConfig"), "a sweep submission")
    if "arguments" in definition:
        definition["arguments"] = sweep_arguments(call.ws, definition["arguments"])
    snap = _snapshot(call.ws, definition.get("snapshot"), "a sweep submission")
    definition["snapshot"] = _as_dict(snap)
    exp = Experiment(call.ws, req["experiment"])
    return start_sweep(
        exp,
        definition,
        req["run_id"] or f"HD_{secrets.token_hex(16)}",
        tags=req["tags"],
        submitted_by=call.user.name,
    )


def execute(call: Call) -> dict[str, Any]:
    """``POST /experiments/{experiment}/executions``: a script run, a pipeline or a sweep this
    server executes (``kind``, ``definition``), checked whole before anything is created."""
    import json

    from .runs import new_run_request, run_details

    req = new_run_request(call, ("kind", "definition"))
    kind = body_field(call.body, "kind", str)
    if kind not in KINDS:
        raise UserErrorException(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    definition = body_field(call.body, "definition", dict)
    if definition is None:
        raise UserErrorException('the body needs "definition": {...}')
    if len(json.dumps(definition)) > MAX_DEFINITION:
        raise UserErrorException(f"the definition is over {MAX_DEFINITION} characters")
    if req["parent_id"] is not None or (req["run_id"] is not None and kind != "sweep"):
        raise UserErrorException(f"a {kind} submission takes no parentId or runId")
    if req["properties"]:
        raise UserErrorException("a submission executed by the server takes no properties")
    # Each records the token's user as its submitter when it creates the run, so its script
    # (and a pipeline's steps, a sweep's trials) act for that user from the start.
    run = {"script": _script, "pipeline": _pipeline, "sweep": _sweep}[kind](call, req, definition)
    return run_details(call.ws.get_run(run.id))


def publish(call: Call) -> dict[str, Any]:
    """``POST /pipelines``: publish a client's frozen pipeline (its snapshots sent first)."""
    from ..pipelines.published import check_pipeline_name, record_published
    from .pipelines import published_answer

    body = call.body
    unknown = set(body) - {"name", "description", "version", "continueOnStepFailure", "pipeline"}
    if unknown:
        raise UserErrorException(f"unknown field(s) {', '.join(sorted(unknown))} in the body")
    name = check_pipeline_name(body_field(body, "name", str))
    description = body_field(body, "description", str)
    version = body_field(body, "version", str)
    cosf = body_field(body, "continueOnStepFailure", bool)
    spec = checked_pipeline(call.ws, body.get("pipeline"))
    return published_answer(record_published(call.ws, spec, name, description, version, cosf))


def cancel_executed(call: Call, run: Any) -> dict[str, Any]:
    """The cancel (``POST /runs/{run_id}/cancel``, :mod:`.interactive`) of a run that is not
    interactive: one this server executes is canceled here (its supervisor or controller stops
    it); one a client's supervisor holds by a lease is refused (cancel it on that machine)."""
    from .runs import run_details

    row = call.ws.catalog.one("SELECT lease_seen, host FROM runs WHERE id = ?", (run.id,))
    if row is not None and row["lease_seen"] is not None:
        raise RunStateError(
            f"cannot cancel run {run.id}: it executes on {row['host'] or 'another machine'},"
            " not on the server; cancel it there"
        )
    run.cancel()
    return run_details(call.ws.get_run(run.id))


ENDPOINTS = [
    Endpoint(
        "POST",
        "/experiments/{experiment}/executions",
        "contributor",
        "Submit a script run (to a compute target of the server, or distributed), a pipeline or"
        " a sweep that the server executes",
        execute,
        body={
            "type": "object",
            "required": ["kind", "definition"],
            "properties": {
                "kind": {"type": "string", "enum": list(KINDS)},
                "definition": {"type": "object"},
                "runId": {"type": "string", "description": "a sweep's id"},
                "displayName": {"type": "string"},
                "tags": {"type": "object"},
            },
        },
        status=201,
        tag="runs",
    ),
    Endpoint(
        "POST",
        "/pipelines",
        "contributor",
        "Publish a pipeline a client froze (its step snapshots sent first)",
        publish,
        body={
            "type": "object",
            "required": ["name", "pipeline"],
            "properties": {
                "name": {"type": "string"},
                "description": {"type": "string"},
                "version": {"type": "string"},
                "continueOnStepFailure": {"type": "boolean"},
                "pipeline": {"type": "object", "description": "the frozen definition"},
            },
        },
        status=201,
        tag="pipelines",
    ),
]
