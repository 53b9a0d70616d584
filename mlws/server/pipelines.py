"""REST routes for published pipelines and pipeline endpoints: list, get and submit, as v1's
REST endpoints.

v1 submits a published pipeline with ``POST <published_pipeline.endpoint>`` and a body
``{"ExperimentName": ..., "ParameterAssignments": {...}}``, answered ``{"Id": <run id>}``;
a pipeline endpoint's default version the same way at its ``endpoint``, another version at
``<endpoint>/<version>`` (or ``?pipelineVersion=<v>``). mlws keeps v1's body and answer and puts
the addresses under its own prefix: ``/api/v1/pipelines/{id}`` and
``/api/v1/pipelineendpoints/{name}[/{version}]`` (what ``.endpoint`` gives; ``{name}`` may
also be the endpoint's id, which ``.endpoint`` uses for a name with a ``/``).

A submission is checked whole (experiment name, fields, parameters, that the pipeline and the
endpoint are active, that the version exists) before anything is created; the pipeline run is
recorded as made by the token's user, and its controller is a detached process, so it goes on
when the request ends and when the server stops.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ..errors import UserErrorException
from .api import Call, Endpoint, body_field, query_value

#: The body fields a submission takes: v1's names. ``RunSource`` is accepted (v1's sample
#: sends ``"SDK"``) and recorded as the run's ``runSource`` property; ``DataPathAssignments``
#: gives DataPath parameters ``{"DataStoreName", "RelativePath"}``.
_FIELDS = ("ExperimentName", "ParameterAssignments", "DataPathAssignments", "RunSource")

_SUBMIT_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["ExperimentName"],
    "properties": {
        "ExperimentName": {"type": "string"},
        "ParameterAssignments": {
            "type": "object",
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        },
        "DataPathAssignments": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["DataStoreName", "RelativePath"],
                "properties": {
                    "DataStoreName": {"type": "string"},
                    "RelativePath": {"type": "string"},
                },
            },
        },
        "RunSource": {"type": "string"},
    },
}


def pipeline_url(base: str, pipeline_id: str) -> str:
    """The REST address of published pipeline ``pipeline_id`` on the server at ``base``."""
    return f"{base}/api/v1/pipelines/{quote(pipeline_id, safe='')}"


def endpoint_url(base: str, name: str, endpoint_id: str) -> str:
    """The REST address of pipeline endpoint ``name`` on the server at ``base``: by name, or by
    its id when the name has a ``/`` (the server sees the path decoded, so an escaped ``/``
    would still split it)."""
    key = endpoint_id if "/" in name else name
    return f"{base}/api/v1/pipelineendpoints/{quote(key, safe='')}"


def _find_endpoint(call: Call) -> Any:
    """The endpoint the path names, by name or else by id.

    :raises PipelineNotFound: neither (the message is the name's)."""
    from ..errors import PipelineNotFound
    from ..pipelines.endpoints import PipelineEndpoint

    key = call.path["name"]
    try:
        return PipelineEndpoint.get(call.ws, name=key)
    except PipelineNotFound:
        if call.ws.catalog.one("SELECT 1 FROM pipeline_endpoints WHERE id = ?", (key,)) is None:
            raise
    return PipelineEndpoint.get(call.ws, id=key)


def _submission(call: Call) -> tuple[str, dict[str, Any], str | None]:
    """The checked body: experiment name, parameter values, run source.

    :raises UserErrorException: a missing or invalid field, or an unknown one."""
    from ..experiments import check_experiment_name

    body = call.body
    unknown = sorted(set(body) - set(_FIELDS))
    if unknown:
        raise UserErrorException(
            f"unknown field(s) {', '.join(unknown)} in the body; a submission takes "
            f"{', '.join(_FIELDS)}"
        )
    name = body_field(body, "ExperimentName", str)
    if name is None:
        raise UserErrorException('the body needs "ExperimentName" (the experiment to run in)')
    check_experiment_name(name)
    params = body_field(body, "ParameterAssignments", dict, {})
    for key, value in params.items():
        if isinstance(value, (dict, list)) or value is None:
            raise UserErrorException(
                f"ParameterAssignments[{key!r}] must be a string, a number or a boolean"
            )
    for key, value in body_field(body, "DataPathAssignments", dict, {}).items():
        if key in params:
            raise UserErrorException(
                f"{key!r} is in both ParameterAssignments and DataPathAssignments; give it once"
            )
        if not (
            isinstance(value, dict)
            and set(value) == {"DataStoreName", "RelativePath"}
            and all(isinstance(v, str) for v in value.values())
        ):
            raise UserErrorException(
                f"DataPathAssignments[{key!r}] must be"
                ' {"DataStoreName": <datastore>, "RelativePath": <path on it>}'
            )
        params[key] = value  # the pipeline checks the datastore and the files
    source = body_field(body, "RunSource", str)
    return name, params, source


def _submitted(run: Any, experiment: str, pipeline_id: str) -> dict[str, Any]:
    return {
        "Id": run.id,
        "ExperimentName": experiment,
        "PipelineId": pipeline_id,
        "Status": run.get_status(),
    }


def submit_published(call: Call) -> dict[str, Any]:
    """``POST /pipelines/{pipeline_id}``: run a published pipeline (v1's REST submit)."""
    from ..experiments import Experiment
    from ..pipelines.published import PublishedPipeline

    experiment, params, source = _submission(call)
    published = PublishedPipeline.get(call.ws, call.path["pipeline_id"])
    published.check(params)  # before the experiment is created
    run = Experiment(call.ws, experiment).submit(
        published,
        pipeline_parameters=params,
        submitted_by=call.user.name,
        properties={"runSource": source} if source else None,
    )
    return _submitted(run, experiment, published.id)


def _submit_endpoint(call: Call, version: str | None) -> dict[str, Any]:
    from ..experiments import Experiment

    experiment, params, source = _submission(call)
    endpoint = _find_endpoint(call)
    published = endpoint.check(params, version)
    run = Experiment(call.ws, experiment).submit(
        endpoint,
        pipeline_parameters=params,
        pipeline_version=version,
        submitted_by=call.user.name,
        properties={"runSource": source} if source else None,
    )
    return _submitted(run, experiment, published.id)


def submit_endpoint(call: Call) -> dict[str, Any]:
    """``POST /pipelineendpoints/{name}``: run the endpoint's default version (or
    ``?pipelineVersion=``)."""
    return _submit_endpoint(call, query_value(call, "pipelineVersion"))


def submit_endpoint_version(call: Call) -> dict[str, Any]:
    """``POST /pipelineendpoints/{name}/{version}``: run one version of the endpoint."""
    if "pipelineVersion" in call.query:
        raise UserErrorException("give the version in the path or in pipelineVersion, not both")
    return _submit_endpoint(call, call.path["version"])


def _active_only(call: Call) -> bool:
    value = query_value(call, "all", "false")
    if value not in ("true", "false"):
        raise UserErrorException(f"all must be 'true' or 'false', got {value!r}")
    return value == "false"


def published_answer(published: Any) -> dict[str, Any]:
    """A published pipeline as the routes answer it: ``as_dict()``, its ``endpoint`` and its
    frozen ``graph`` (what a remote client's ``PublishedPipeline`` reads)."""
    return {**published.as_dict(), "endpoint": published.endpoint, "graph": published.graph}


_pipeline = published_answer


def list_published(call: Call) -> dict[str, Any]:
    """``GET /pipelines``: published pipelines, newest first (``all=true``: disabled too)."""
    from ..pipelines.published import PublishedPipeline

    return {"value": [_pipeline(p) for p in PublishedPipeline.list(call.ws, _active_only(call))]}


def get_published(call: Call) -> dict[str, Any]:
    """``GET /pipelines/{pipeline_id}``."""
    from ..pipelines.published import PublishedPipeline

    return _pipeline(PublishedPipeline.get(call.ws, call.path["pipeline_id"]))


def _endpoint(endpoint: Any) -> dict[str, Any]:
    return {**endpoint.as_dict(), "endpoint": endpoint.endpoint}


def list_endpoints(call: Call) -> dict[str, Any]:
    """``GET /pipelineendpoints``: endpoints by name (``all=true``: disabled too)."""
    from ..pipelines.endpoints import PipelineEndpoint

    found = PipelineEndpoint.list(call.ws, _active_only(call), max_results=10_000)
    return {"value": [_endpoint(e) for e in found]}


def get_endpoint(call: Call) -> dict[str, Any]:
    """``GET /pipelineendpoints/{name}`` (a name or an id)."""
    return _endpoint(_find_endpoint(call))


_ALL = (("all", "true: disabled ones too"),)

ENDPOINTS = [
    Endpoint(
        "GET",
        "/pipelines",
        "reader",
        "List published pipelines",
        list_published,
        query=_ALL,
        tag="pipelines",
    ),
    Endpoint(
        "GET",
        "/pipelines/{pipeline_id}",
        "reader",
        "One published pipeline",
        get_published,
        tag="pipelines",
    ),
    Endpoint(
        "POST",
        "/pipelines/{pipeline_id}",
        "contributor",
        "Submit a published pipeline (v1's REST endpoint); answers the new run's Id",
        submit_published,
        body=_SUBMIT_BODY,
        tag="pipelines",
    ),
    Endpoint(
        "GET",
        "/pipelineendpoints",
        "reader",
        "List pipeline endpoints",
        list_endpoints,
        query=_ALL,
        tag="pipelines",
    ),
    Endpoint(
        "GET",
        "/pipelineendpoints/{name}",
        "reader",
        "One pipeline endpoint and its versions",
        get_endpoint,
        tag="pipelines",
    ),
    Endpoint(
        "POST",
        "/pipelineendpoints/{name}",
        "contributor",
        "Submit a pipeline endpoint's default version (or pipelineVersion); answers the run's Id",
        submit_endpoint,
        query=(("pipelineVersion", "the version to run (default: the endpoint's default)"),),
        body=_SUBMIT_BODY,
        tag="pipelines",
    ),
    Endpoint(
        "POST",
        "/pipelineendpoints/{name}/{version}",
        "contributor",
        "Submit one version of a pipeline endpoint; answers the run's Id",
        submit_endpoint_version,
        body=_SUBMIT_BODY,
        tag="pipelines",
    ),
]
