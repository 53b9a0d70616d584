"""``PublishedPipeline``: a pipeline frozen as it was when published, submitted by id.

``pipeline.publish(name, description, version)`` validates the pipeline, snapshots every
step's source folder and stores the whole definition (steps, their snapshots, the parameters'
defaults) in the catalog under a new id (a GUID, as v1). Submitting it later runs exactly that
definition: editing or deleting the source folders changes nothing, and only the parameters
the pipeline has can be given. A disabled published pipeline refuses to be submitted.

Its runs are ordinary pipeline runs (:class:`~mlws.pipelines.run.PipelineRun`) with the
property ``azureml.pipelineid``; their steps are reused across runs as any pipeline's are.
v1's ``endpoint`` is its REST address on the workspace's running ``mlws serve`` (None when
no server runs).
"""

from __future__ import annotations

import json
import time
import unicodedata
import uuid
from typing import TYPE_CHECKING, Any

from ..errors import PipelineDisabled, PipelineNotFound, PipelineValidationError, UserErrorException

if TYPE_CHECKING:
    from ..experiments import Experiment
    from ..workspace import Workspace
    from .graph import Pipeline
    from .run import PipelineRun

ACTIVE = "Active"
DISABLED = "Disabled"


def check_pipeline_name(name: Any, what: str = "published pipeline") -> str:
    """``name`` if it can name a published pipeline, endpoint or schedule: 1-255 characters,
    no control characters, not only spaces.

    :raises UserErrorException: anything else.
    """
    if (
        not isinstance(name, str)
        or not name.strip()
        or len(name) > 255
        or any(unicodedata.category(c) == "Cc" for c in name)
    ):
        shown = repr(name) if len(repr(name)) <= 60 else repr(name)[:57] + "..."
        raise UserErrorException(
            f"invalid {what} name {shown}: use 1-255 characters, no control characters"
        )
    return name


def resolve_parameters(
    spec: dict[str, Any], given: dict[str, Any] | None, ws: Workspace | None = None
) -> dict[str, Any]:
    """The parameter values of a run of the frozen definition ``spec``: its defaults, with
    ``given`` in their place. With ``ws``, the files of every DataPath value are looked for
    now.

    :raises PipelineValidationError: ``given`` is not a dict, names a parameter the
        pipeline does not have, gives a DataPath parameter something else (or another one a
        DataPath), or (``ws``) a DataPath whose datastore or files are not there.
    """
    import copy

    from .data import bind_data_paths, check_value_kinds
    from .graph import check_parameter_values, parameter_value

    check_parameter_values(given)
    known = spec["parameters"]
    unknown = sorted(set(given or {}) - set(known))
    if unknown:
        raise PipelineValidationError(
            f"the pipeline has no parameter {unknown[0]!r}; its parameters: "
            f"{', '.join(sorted(known)) or 'none'}"
        )
    check_value_kinds(known, given)
    values = {**known, **{k: parameter_value(v) for k, v in (given or {}).items()}}
    if ws is not None:
        bind_data_paths(ws, {**copy.deepcopy(spec), "parameters": values})
    return values


class StoredItem:
    """What a published pipeline, a pipeline endpoint and a schedule share: a row of the
    catalog table ``TABLE`` with an ``id``, a ``name``, a ``description`` and a ``status``
    (``"Active"`` or ``"Disabled"``), read when the object is made and after each change."""

    TABLE = ""

    def __init__(self, workspace: Workspace, _row: Any) -> None:
        self.workspace = workspace
        self._row = _row

    @property
    def id(self) -> str:
        """Its id (a GUID)."""
        return str(self._row["id"])

    @property
    def name(self) -> str:
        """Its name."""
        return str(self._row["name"])

    @property
    def description(self) -> str | None:
        """Its description."""
        return self._row["description"]

    @property
    def status(self) -> str:
        """``"Active"`` or ``"Disabled"`` (as stored when last read)."""
        return str(self._row["status"])

    def enable(self) -> None:
        """Make it ``Active``."""
        self._set_status(ACTIVE)

    def disable(self) -> None:
        """Make it ``Disabled``: it is refused (or, a schedule, left alone) until enabled."""
        self._set_status(DISABLED)

    def _set_status(self, status: str) -> None:
        if self.workspace.remote is not None:
            from ..remote.backend import not_available

            raise not_available(f"{type(self).__name__}.enable/disable", self.workspace.remote.url)
        with self.workspace.catalog.write() as conn:
            conn.execute(f"UPDATE {self.TABLE} SET status = ? WHERE id = ?", (status, self.id))
        self._refresh()

    def _refresh(self) -> None:
        if self.workspace.remote is not None:
            from ..remote.execute import published_row

            self._row = published_row(self.workspace, self.id)
            return
        row = self.workspace.catalog.one(f"SELECT * FROM {self.TABLE} WHERE id = ?", (self.id,))
        if row is not None:  # deleted meanwhile (nothing deletes them yet): keep what we had
            self._row = row


class PublishedPipeline(StoredItem):
    """A published pipeline (v1's ``PublishedPipeline``): ``id``, ``name``, ``description``,
    ``version``, ``status`` (``"Active"`` or ``"Disabled"``), ``continue_on_step_failure``.
    Get one with :meth:`get` or :meth:`list`, or from ``pipeline.publish(...)``."""

    TABLE = "published_pipelines"

    def __repr__(self) -> str:
        return f"PublishedPipeline(name={self.name!r}, id={self.id!r}, status={self.status!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublishedPipeline) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def version(self) -> str | None:
        """The version given when it was published (free text, as v1)."""
        return self._row["version"]

    @property
    def continue_on_step_failure(self) -> bool | None:
        """Its default for ``continue_on_step_failure`` (None: False)."""
        v = self._row["continue_on_step_failure"]
        return None if v is None else bool(v)

    @property
    def created(self) -> float:
        """When it was published (epoch seconds)."""
        return float(self._row["created"])

    @property
    def endpoint(self) -> str | None:
        """v1's REST address: where ``POST {"ExperimentName", "ParameterAssignments"}`` with a
        bearer token submits it, while ``mlws serve`` serves this workspace (as this user);
        None when no server does."""
        from ..server.pipelines import pipeline_url

        remote = self.workspace.remote
        base = remote.url if remote is not None else served_url(self.workspace)
        return None if base is None else pipeline_url(base, self.id)

    @property
    def graph(self) -> dict[str, Any]:
        """The frozen definition: ``{"description", "parameters", "steps": [...]}``."""
        return dict(json.loads(self._row["definition"]))

    @property
    def graph_id(self) -> str:
        """The id of its graph (its own id: each published pipeline has its own graph)."""
        return self.id

    @property
    def total_run_steps(self) -> int:
        """How many steps it has."""
        return len(self.graph["steps"])

    def get_step_names(self) -> list[str]:
        """The names of its steps, upstream first."""
        return [s["name"] for s in self.graph["steps"]]

    def parameters(self) -> dict[str, Any]:
        """Its parameters with their default values."""
        return dict(self.graph["parameters"])

    # -- lookup ------------------------------------------------------------------------------
    @staticmethod
    def get(
        workspace: Workspace, id: str, _workflow_provider: Any = None, **_kw: Any
    ) -> PublishedPipeline:  # noqa: A002
        """The published pipeline ``id``.

        :raises PipelineNotFound: there is none.
        """
        if workspace.remote is not None:
            from ..remote.execute import published_row

            return PublishedPipeline(workspace, published_row(workspace, str(id)))
        row = workspace.catalog.one("SELECT * FROM published_pipelines WHERE id = ?", (str(id),))
        if row is None:
            raise PipelineNotFound(
                f"no published pipeline with id {str(id)[:80]!r}; `mlws pipeline list --all` lists them"
            )
        return PublishedPipeline(workspace, row)

    @staticmethod
    def list(
        workspace: Workspace, active_only: bool = True, _service_endpoint: Any = None, **_kw: Any
    ) -> list[PublishedPipeline]:
        """The published pipelines, newest first; only the active ones unless ``active_only``
        is False."""
        if workspace.remote is not None:
            from ..remote.execute import published_rows

            return [PublishedPipeline(workspace, r) for r in published_rows(workspace, active_only)]
        sql = "SELECT * FROM published_pipelines"
        if active_only:
            sql += f" WHERE status = '{ACTIVE}'"
        rows = workspace.catalog.query(sql + " ORDER BY created DESC, rowid DESC")
        return [PublishedPipeline(workspace, r) for r in rows]

    get_all = list

    # -- submission --------------------------------------------------------------------------
    def submit(
        self,
        workspace: Workspace,
        experiment_name: str,
        pipeline_parameters: dict[str, Any] | None = None,
        parent_run_id: str | None = None,
        continue_on_step_failure: bool | None = None,
        _creation_context: Any = None,
        **_kw: Any,
    ) -> PipelineRun:
        """Run the frozen pipeline in experiment ``experiment_name``; returns the
        pipeline run at once.

        :raises PipelineDisabled: it is disabled.
        :raises PipelineValidationError: a parameter it does not have.
        """
        from ..experiments import Experiment

        self.check(pipeline_parameters)  # before Experiment() creates the experiment
        return Experiment(workspace, experiment_name).submit(
            self,
            pipeline_parameters=pipeline_parameters,
            continue_on_step_failure=continue_on_step_failure,
        )

    def get_runs(self) -> list[PipelineRun]:
        """Its pipeline runs, newest first (submitted directly, through an endpoint or by a
        schedule)."""
        return pipeline_runs(self.workspace, self.id)

    def check(self, pipeline_parameters: dict[str, Any] | None = None) -> dict[str, Any]:
        """Check that it can be submitted with ``pipeline_parameters`` now; returns the
        parameter values its run would get.

        :raises PipelineDisabled: it is disabled.
        :raises PipelineValidationError: a parameter it does not have.
        """
        self._refresh()
        if self.status != ACTIVE:
            raise PipelineDisabled(
                f"published pipeline {self.name!r} ({self.id}) is disabled; enable it first"
                f" (`mlws pipeline enable {self.id}`)"
            )
        return resolve_parameters(self.graph, pipeline_parameters, self.workspace)

    def _submit(
        self,
        experiment: Experiment,
        tags: dict[str, Any] | None = None,
        pipeline_parameters: dict[str, Any] | None = None,
        continue_on_step_failure: bool | None = None,
        regenerate_outputs: bool = False,
        properties: dict[str, Any] | None = None,
        submitted_by: str | None = None,
        **_kwargs: Any,
    ) -> PipelineRun:
        from ..lifecycle import key_values
        from .graph import start_pipeline_run

        tags = key_values(tags, "tag")
        if experiment.workspace.remote is not None:  # v1's REST submit, run by the server
            from ..remote.execute import submit_published

            if tags or continue_on_step_failure is not None or regenerate_outputs or properties:
                from ..remote.backend import not_available

                raise not_available(
                    "tags, continue_on_step_failure or regenerate_outputs on a published"
                    " pipeline's submit",
                    experiment.workspace.remote.url,
                )
            return submit_published(experiment, self.id, pipeline_parameters)  # type: ignore[no-any-return]
        values = self.check(pipeline_parameters)
        spec = self.graph
        spec["parameters"] = values
        if continue_on_step_failure is None:
            continue_on_step_failure = bool(self.continue_on_step_failure)
        return start_pipeline_run(
            experiment,
            spec,
            tags=tags,
            continue_on_step_failure=continue_on_step_failure,
            regenerate_outputs=regenerate_outputs,
            properties={"azureml.pipelineid": self.id, **(properties or {})},
            submitted_by=submitted_by,
        )

    def as_dict(self) -> dict[str, Any]:
        """What ``mlws pipeline show --json`` prints."""
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "version": self.version,
            "status": self.status,
            "continue_on_step_failure": self.continue_on_step_failure,
            "created": self.created,
            "parameters": self.parameters(),
            "steps": [
                {
                    "name": s["name"],
                    "upstream": s["upstream"],
                    "target": s["runConfig"].get("target"),
                }
                for s in self.graph["steps"]
            ],
        }


def publish_pipeline(
    pipeline: Pipeline,
    name: str | None,
    description: str | None = None,
    version: str | None = None,
    continue_on_step_failure: bool | None = None,
) -> PublishedPipeline:
    """Freeze ``pipeline`` and record it (see :meth:`Pipeline.publish`).

    :raises PipelineValidationError: the pipeline is unsound.
    :raises UserErrorException: a bad name (nothing is recorded).
    """
    from .graph import freeze

    name = check_pipeline_name(name if name is not None else pipeline.description or "pipeline")
    for what, v in (("description", description), ("version", version)):
        if v is not None and not isinstance(v, str):
            raise UserErrorException(f"a published pipeline's {what} is text, got {v!r}")
    ws = pipeline.workspace
    if ws.remote is None:
        ws.catalog.require_writer()
    spec = freeze(pipeline)  # on a remote workspace: the snapshots sent to the server
    if description is not None:
        spec["description"] = description
    if ws.remote is not None:
        from ..remote.execute import publish

        return PublishedPipeline(
            ws, publish(ws, spec, name, description, version, continue_on_step_failure)
        )
    return record_published(ws, spec, name, description, version, continue_on_step_failure)


def record_published(
    ws: Workspace,
    spec: dict[str, Any],
    name: str,
    description: str | None,
    version: str | None,
    continue_on_step_failure: bool | None,
) -> PublishedPipeline:
    """Record the frozen definition ``spec`` as a new published pipeline (the names checked)."""
    pid = str(uuid.uuid4())
    cosf = None if continue_on_step_failure is None else int(bool(continue_on_step_failure))
    with ws.catalog.write() as conn:
        conn.execute(
            "INSERT INTO published_pipelines (id, name, description, version, status,"
            " continue_on_step_failure, definition, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                pid,
                name,
                description,
                version,
                ACTIVE,
                cosf,
                json.dumps(spec, sort_keys=True),
                time.time(),
            ),
        )
    return PublishedPipeline.get(ws, pid)


def served_url(ws: Workspace) -> str | None:
    """The address (``http://host:port``) of the ``mlws serve`` serving ``ws``, read from the
    server's state file (kept per user: another user's server is not seen), or None."""
    from ..server.process import running

    state = running(ws)
    return None if state is None else str(state["url"])


def pipeline_runs(ws: Workspace, pipeline_id: str) -> list[PipelineRun]:
    """The pipeline runs of the published pipeline ``pipeline_id``, newest first."""
    rows = ws.catalog.query(
        "SELECT r.id FROM run_properties p JOIN runs r ON r.seq = p.run_seq"
        " WHERE p.key = 'azureml.pipelineid' AND p.value = ? ORDER BY r.created DESC, r.seq DESC",
        (str(pipeline_id),),
    )
    return [ws.get_run(r["id"]) for r in rows]  # azureml.PipelineRun rows: PipelineRun objects
