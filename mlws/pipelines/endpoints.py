"""``PipelineEndpoint``: a named, versioned place to submit published pipelines.

An endpoint holds published pipelines as versions ``"0"``, ``"1"``, ... (each added pipeline
gets the next number; numbers only count up) and a default version, which is what
``submit`` runs unless told a version. Callers keep submitting to the endpoint's name while
the pipeline behind it is replaced (``add_default``) or rolled back (``set_default_version``).
A disabled endpoint refuses to be submitted. While ``mlws serve`` serves the workspace,
``endpoint`` is its REST address (``POST`` there submits, as v1).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import PipelineDisabled, PipelineNotFound, UserErrorException
from .published import ACTIVE, PublishedPipeline, StoredItem, check_pipeline_name, served_url

if TYPE_CHECKING:
    from ..experiments import Experiment
    from ..workspace import Workspace
    from .run import PipelineRun


@dataclass(frozen=True)
class PipelineVersion:
    """One version of an endpoint (v1's ``PipelineVersion``): ``version`` and the published
    pipeline's id ``pipeline_id``."""

    version: str
    pipeline_id: str


class PipelineEndpoint(StoredItem):
    """A pipeline endpoint (v1's ``PipelineEndpoint``): ``id``, ``name``, ``description``,
    ``status``, ``default_version``. Create one with :meth:`publish`, find one with
    :meth:`get` or :meth:`list`."""

    TABLE = "pipeline_endpoints"

    def __repr__(self) -> str:
        return f"PipelineEndpoint(name={self.name!r}, default_version={self.default_version!r})"

    @property
    def default_version(self) -> str:
        """The version ``submit`` runs when given none."""
        return str(self._row["default_version"])

    @property
    def endpoint(self) -> str | None:
        """v1's REST address: ``POST`` there (with a bearer token) submits the default version,
        at ``<endpoint>/<version>`` another version, while ``mlws serve`` serves this
        workspace (as this user); None when no server does."""
        from ..server.pipelines import endpoint_url

        base = served_url(self.workspace)
        return None if base is None else endpoint_url(base, self.name, self.id)

    @property
    def swaggerurl(self) -> str | None:
        """The OpenAPI document of the serving ``mlws serve`` (None when no server runs)."""
        base = served_url(self.workspace)
        return None if base is None else f"{base}/api/v1/openapi.json"

    @property
    def pipeline_version_list(self) -> list[PipelineVersion]:
        """Its versions (as :meth:`list_versions`)."""
        return self.list_versions()

    # -- creation and lookup -----------------------------------------------------------------
    @staticmethod
    def publish(
        workspace: Workspace, name: str, description: str | None, pipeline: Any, **_kw: Any
    ) -> PipelineEndpoint:
        """Create the endpoint ``name`` with ``pipeline`` (a ``PublishedPipeline``, or a
        ``Pipeline``, which is published under the endpoint's name first) as version "0",
        the default.

        :raises UserErrorException: the name is taken, or is not a valid name.
        """
        from .graph import Pipeline

        check_pipeline_name(name, "pipeline endpoint")
        if description is not None and not isinstance(description, str):
            raise UserErrorException(f"an endpoint's description is text, got {description!r}")
        if workspace.catalog.one("SELECT 1 FROM pipeline_endpoints WHERE name = ?", (name,)):
            raise UserErrorException(
                f"a pipeline endpoint named {name!r} exists already; add a version to it"
                " (add / add_default) or choose another name"
            )
        if isinstance(pipeline, Pipeline):
            pipeline = pipeline.publish(name, description)
        published = _published(workspace, pipeline)
        eid = str(uuid.uuid4())
        now = time.time()
        with workspace.catalog.write() as conn:
            if conn.execute("SELECT 1 FROM pipeline_endpoints WHERE name = ?", (name,)).fetchone():
                raise UserErrorException(f"a pipeline endpoint named {name!r} exists already")
            conn.execute(
                "INSERT INTO pipeline_endpoints (id, name, description, status, default_version,"
                " created) VALUES (?, ?, ?, ?, '0', ?)",
                (eid, name, description, ACTIVE, now),
            )
            conn.execute(
                "INSERT INTO pipeline_endpoint_versions (endpoint_id, version, pipeline_id,"
                " created) VALUES (?, 0, ?, ?)",
                (eid, published.id, now),
            )
        return PipelineEndpoint.get(workspace, id=eid)

    @staticmethod
    def get(
        workspace: Workspace,
        id: str | None = None,
        name: str | None = None,
        **_kw: Any,  # noqa: A002
    ) -> PipelineEndpoint:
        """The endpoint of that ``id`` or ``name``.

        :raises PipelineNotFound: there is none.
        """
        if (id is None) == (name is None):
            raise UserErrorException("PipelineEndpoint.get takes an id or a name (one of them)")
        col, value = ("id", id) if id is not None else ("name", name)
        row = workspace.catalog.one(f"SELECT * FROM pipeline_endpoints WHERE {col} = ?", (value,))
        if row is None:
            raise PipelineNotFound(
                f"no pipeline endpoint with {col} {str(value)[:80]!r};"
                " `mlws pipeline-endpoint list` lists them"
            )
        return PipelineEndpoint(workspace, row)

    @staticmethod
    def list(
        workspace: Workspace, active_only: bool = True, max_results: int = 100, **_kw: Any
    ) -> list[PipelineEndpoint]:
        """The endpoints by name (only the active ones unless ``active_only`` is False)."""
        sql = "SELECT * FROM pipeline_endpoints"
        if active_only:
            sql += f" WHERE status = '{ACTIVE}'"
        rows = workspace.catalog.query(sql + " ORDER BY name LIMIT ?", (int(max_results),))
        return [PipelineEndpoint(workspace, r) for r in rows]

    get_all = list

    # -- versions ----------------------------------------------------------------------------
    def list_versions(self) -> list[PipelineVersion]:
        """Every version, oldest first."""
        rows = self.workspace.catalog.query(
            "SELECT version, pipeline_id FROM pipeline_endpoint_versions WHERE endpoint_id = ?"
            " ORDER BY version",
            (self.id,),
        )
        return [PipelineVersion(str(r["version"]), str(r["pipeline_id"])) for r in rows]

    def list_pipelines(self, active_only: bool = True) -> list[PublishedPipeline]:
        """The published pipelines of its versions, oldest version first (only active ones
        unless ``active_only`` is False)."""
        out = [PublishedPipeline.get(self.workspace, v.pipeline_id) for v in self.list_versions()]
        return [p for p in out if p.status == ACTIVE or not active_only]

    get_all_pipelines = list_pipelines

    def get_pipeline(self, version: str | int | None = None) -> PublishedPipeline:
        """The published pipeline of ``version`` (None: the default version).

        :raises PipelineNotFound: the endpoint has no such version.
        """
        v = self.default_version if version is None else self._version(version)
        row = self.workspace.catalog.one(
            "SELECT pipeline_id FROM pipeline_endpoint_versions WHERE endpoint_id = ? AND version = ?",
            (self.id, int(v)),
        )
        if row is None:
            have = ", ".join(x.version for x in self.list_versions())
            raise PipelineNotFound(
                f"pipeline endpoint {self.name!r} has no version {str(version)[:40]!r};"
                f" its versions: {have}"
            )
        return PublishedPipeline.get(self.workspace, row["pipeline_id"])

    def get_default_version(self) -> str:
        """The default version."""
        self._refresh()
        return self.default_version

    def add(self, pipeline: PublishedPipeline) -> str:
        """Add ``pipeline`` as the next version; returns that version. The default is kept."""
        return self._add(pipeline, make_default=False)

    def add_default(self, pipeline: PublishedPipeline) -> str:
        """Add ``pipeline`` as the next version and make it the default; returns the version."""
        return self._add(pipeline, make_default=True)

    def _add(self, pipeline: Any, make_default: bool) -> str:
        published = _published(self.workspace, pipeline)
        with self.workspace.catalog.write() as conn:
            last = conn.execute(
                "SELECT max(version) FROM pipeline_endpoint_versions WHERE endpoint_id = ?",
                (self.id,),
            ).fetchone()[0]
            version = 0 if last is None else int(last) + 1
            conn.execute(
                "INSERT INTO pipeline_endpoint_versions (endpoint_id, version, pipeline_id,"
                " created) VALUES (?, ?, ?, ?)",
                (self.id, version, published.id, time.time()),
            )
            if make_default:
                conn.execute(
                    "UPDATE pipeline_endpoints SET default_version = ? WHERE id = ?",
                    (str(version), self.id),
                )
        self._refresh()
        return str(version)

    def set_default_version(self, version: str | int) -> None:
        """Make ``version`` the default.

        :raises PipelineNotFound: the endpoint has no such version.
        """
        self.get_pipeline(version)  # raises when unknown
        with self.workspace.catalog.write() as conn:
            conn.execute(
                "UPDATE pipeline_endpoints SET default_version = ? WHERE id = ?",
                (str(self._version(version)), self.id),
            )
        self._refresh()

    def set_default(self, pipeline: PublishedPipeline) -> None:
        """Make the (newest) version holding ``pipeline`` the default.

        :raises PipelineNotFound: no version of the endpoint holds it.
        """
        published = _published(self.workspace, pipeline)
        found = [v.version for v in self.list_versions() if v.pipeline_id == published.id]
        if not found:
            raise PipelineNotFound(
                f"pipeline endpoint {self.name!r} has no version of pipeline {published.id}; add it"
            )
        self.set_default_version(found[-1])

    @staticmethod
    def _version(version: Any) -> int:
        text = str(version).strip()
        if not text.isdigit() or len(text) > 9:
            raise PipelineNotFound(
                f"a pipeline endpoint's versions are 0, 1, 2, ...; got {str(version)[:40]!r}"
            )
        return int(text)

    # -- submission --------------------------------------------------------------------------
    def submit(
        self,
        experiment_name: str,
        pipeline_parameters: dict[str, Any] | None = None,
        parent_run_id: str | None = None,
        pipeline_version: str | int | None = None,
        **_kw: Any,
    ) -> PipelineRun:
        """Run version ``pipeline_version`` (None: the default) in experiment
        ``experiment_name``; returns the pipeline run at once.

        :raises PipelineDisabled: the endpoint (or that version's pipeline) is disabled.
        :raises PipelineNotFound: no such version.
        """
        from ..experiments import Experiment

        self.check(pipeline_parameters, pipeline_version)  # before the experiment is created
        return Experiment(self.workspace, experiment_name).submit(
            self, pipeline_parameters=pipeline_parameters, pipeline_version=pipeline_version
        )

    def check(
        self,
        pipeline_parameters: dict[str, Any] | None = None,
        pipeline_version: str | int | None = None,
    ) -> PublishedPipeline:
        """Check that version ``pipeline_version`` (None: the default) can be submitted with
        ``pipeline_parameters`` now; returns its published pipeline.

        :raises PipelineDisabled: the endpoint or the version's pipeline is disabled.
        :raises PipelineNotFound: no such version.
        :raises PipelineValidationError: a parameter the pipeline does not have.
        """
        self._refresh()
        if self.status != ACTIVE:
            raise PipelineDisabled(
                f"pipeline endpoint {self.name!r} is disabled; enable it first"
                f" (`mlws pipeline-endpoint enable {self.name}`)"
            )
        version = self.default_version if pipeline_version is None else pipeline_version
        published = self.get_pipeline(version)
        published.check(pipeline_parameters)
        return published

    def _submit(
        self,
        experiment: Experiment,
        tags: dict[str, Any] | None = None,
        pipeline_parameters: dict[str, Any] | None = None,
        pipeline_version: str | int | None = None,
        properties: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> PipelineRun:
        published = self.check(pipeline_parameters, pipeline_version)
        version = self.default_version if pipeline_version is None else pipeline_version
        return published._submit(
            experiment,
            tags=tags,
            pipeline_parameters=pipeline_parameters,
            properties={
                "azureml.pipelineendpointid": self.id,
                "azureml.pipelineendpointversion": str(self._version(version)),
                **(properties or {}),
            },
            **kwargs,
        )

    def as_dict(self) -> dict[str, Any]:
        """What ``mlws pipeline-endpoint show --json`` prints."""
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "status": self.status,
            "default_version": self.default_version,
            "versions": [
                {"version": v.version, "pipeline_id": v.pipeline_id} for v in self.list_versions()
            ],
        }


def _published(ws: Workspace, pipeline: Any) -> PublishedPipeline:
    """``pipeline`` as a stored published pipeline of this workspace (an id is looked up).

    :raises UserErrorException: it is neither.
    :raises PipelineNotFound: an id of none.
    """
    if isinstance(pipeline, str):
        return PublishedPipeline.get(ws, pipeline)
    if not isinstance(pipeline, PublishedPipeline):
        raise UserErrorException(
            f"an endpoint's versions are published pipelines (pipeline.publish(...)),"
            f" got {type(pipeline).__name__}"
        )
    return PublishedPipeline.get(ws, pipeline.id)
