"""``MlwsModelRegistryStore``: MLflow's model registry over mlws's registered models.

MLflow finds it through the ``mlflow.model_registry_store`` entry point. A registered model is an
mlws model name; a model version is an mlws model version (``Model(ws, name, version)``), its
files copied (by reference: content-addressed) from the run's MLflow model folder as MLflow
wrote it, so the MLmodel file sits at ``<name of the folder>/MLmodel`` in the version, the run is
its lineage, and ``mlws model list``, ``Model.deploy`` and the Studio see it.

Where mlws has no counterpart, MLflow's error comes back: stages and aliases (``NOT_IMPLEMENTED``),
renaming (``INVALID_STATE``), a registered model with no versions (it exists once its first
version does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from mlflow.entities.model_registry import (
    ModelVersion,
    ModelVersionTag,
    RegisteredModel,
    RegisteredModelTag,
)
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2
from mlflow.store.entities.paged_list import PagedList
from mlflow.store.model_registry.abstract_store import AbstractStore
from mlflow.utils.search_utils import SearchModelUtils, SearchModelVersionUtils, SearchUtils

from ..models import Model, check_model_name, register_from_run
from . import logged_models, uris
from .uris import mlflow_errors

if TYPE_CHECKING:
    from ..workspace import Workspace

#: The model property that keeps the MLflow source URI a version was registered from.
SOURCE_PROPERTY = "mlflow.source"
MODEL_ID_PROPERTY = "mlflow.modelId"


def served_run_path(source: str) -> tuple[str, str] | None:
    """``(run id, path)`` of a run artifact URI as ``mlws serve`` hands them out
    (``mlflow-artifacts:/runs/<id>/artifacts/<path>``, or the ``mlws+http(s)://`` form a client
    of :mod:`mlws.mlflow.served` resolves it to); None for any other URI.

    :raises MlflowException: INVALID_PARAMETER_VALUE for ``..`` or a malformed run path.
    """
    from .served import ARTIFACTS_ROOT, PREFIX, SERVED

    if source.startswith(SERVED):
        rest = source[len(SERVED) :]
    elif source.startswith(PREFIX) and ARTIFACTS_ROOT in source:
        rest = source.partition(ARTIFACTS_ROOT)[2]
    else:
        return None
    parts = unquote(rest).strip("/").split("/", 3)
    path = parts[3].strip("/") if len(parts) > 3 else ""
    bad = any(p in (".", "..") for p in path.split("/"))
    if len(parts) < 3 or parts[0] != "runs" or parts[2] != "artifacts" or bad:
        raise MlflowException.invalid_parameter_value(
            f"not a run's model folder: {source!r} (expected {SERVED}runs/<run id>/artifacts/<path>)"
        )
    return parts[1], path


def _unsupported(what: str) -> MlflowException:
    return MlflowException(f"mlws's model registry has no {what}", databricks_pb2.NOT_IMPLEMENTED)


def to_model_version(m: Model) -> ModelVersion:
    """An mlws model version as MLflow's ``ModelVersion``."""
    created = int(m.created_time * 1000)
    return ModelVersion(
        name=m.name,
        version=str(m.version),
        creation_timestamp=created,
        last_updated_timestamp=created,
        description=m.description,
        user_id=m.created_by,
        current_stage="None",
        source=m.properties.get(SOURCE_PROPERTY),
        run_id=m.run_id,
        tags=[ModelVersionTag(k, v) for k, v in m.tags.items()],
        model_id=m.properties.get(MODEL_ID_PROPERTY),
    )


class MlwsModelRegistryStore(AbstractStore):
    """MLflow's model registry over the mlws workspace of ``store_uri``."""

    def __init__(self, store_uri: str | None = None, tracking_uri: str | None = None) -> None:
        super().__init__(store_uri, tracking_uri)
        self.ws: Workspace = uris.open_workspace(uris.workspace_path(store_uri or "mlws:"))

    def _versions(self, name: str) -> list[Model]:
        with mlflow_errors():
            return Model.list(self.ws, name=name)

    def _version(self, name: str, version: Any) -> Model:
        with mlflow_errors():
            return Model(self.ws, name, version=int(version))

    # -- registered models ----------------------------------------------------------------------
    def create_registered_model(
        self,
        name: str,
        tags: list[Any] | None = None,
        description: str | None = None,
        deployment_job_id: str | None = None,
    ) -> RegisteredModel:
        """A registered model comes to exist with its first version: this checks the name.

        :raises MlflowException: RESOURCE_ALREADY_EXISTS, INVALID_PARAMETER_VALUE.
        """
        with mlflow_errors():
            check_model_name(name)
        if self._versions(name):
            raise MlflowException(
                f"Registered Model (name={name}) already exists.",
                databricks_pb2.RESOURCE_ALREADY_EXISTS,
            )
        return RegisteredModel(name, description=description)

    def get_registered_model(self, name: str) -> RegisteredModel:
        """The registered model ``name`` with its latest version.

        :raises MlflowException: RESOURCE_DOES_NOT_EXIST.
        """
        versions = self._versions(name)
        if not versions:
            raise MlflowException(
                f"Registered Model with name={name} not found",
                databricks_pb2.RESOURCE_DOES_NOT_EXIST,
            )
        latest = versions[0]
        return RegisteredModel(
            name,
            creation_timestamp=int(versions[-1].created_time * 1000),
            last_updated_timestamp=int(latest.created_time * 1000),
            description=latest.description,
            latest_versions=[to_model_version(latest)],
            tags=[RegisteredModelTag(k, v) for k, v in latest.tags.items()],
        )

    def search_registered_models(
        self,
        filter_string: str | None = None,
        max_results: int | None = None,
        order_by: list[str] | None = None,
        page_token: str | None = None,
    ) -> PagedList:
        """Every registered model, filtered and sorted by MLflow's rules."""
        names = [r[0] for r in self.ws.catalog.query("SELECT DISTINCT name FROM models")]
        found = SearchModelUtils.filter(
            [self.get_registered_model(n) for n in names], filter_string
        )
        found = SearchModelUtils.sort(found, order_by)
        page, token = SearchUtils.paginate(found, page_token, max_results or 100)
        return PagedList(page, token)

    def get_latest_versions(self, name: str, stages: list[str] | None = None) -> list[ModelVersion]:
        """The latest version (mlws has no stages: every version is in stage ``None``)."""
        versions = self._versions(name)
        if not versions:
            raise MlflowException(
                f"Registered Model with name={name} not found",
                databricks_pb2.RESOURCE_DOES_NOT_EXIST,
            )
        if stages and not any(s.lower() == "none" for s in stages):
            return []
        return [to_model_version(versions[0])]

    def update_registered_model(
        self, name: str, description: str, deployment_job_id: str | None = None
    ) -> RegisteredModel:
        """Set the description of the latest version."""
        latest = self.get_latest_versions(name)[0]
        self.update_model_version(name, latest.version, description)
        return self.get_registered_model(name)

    def rename_registered_model(self, name: str, new_name: str) -> RegisteredModel:
        """Refused: mlws model names are their identity."""
        raise MlflowException("mlws models cannot be renamed", databricks_pb2.INVALID_STATE)

    def delete_registered_model(self, name: str) -> None:
        """Delete every version of ``name`` (refused while a service uses one)."""
        for m in self._versions(name):
            with mlflow_errors():
                m.delete()

    def set_registered_model_tag(self, name: str, tag: Any) -> None:
        """Set the tag on the latest version."""
        latest = self.get_latest_versions(name)[0]
        self.set_model_version_tag(name, latest.version, tag)

    def delete_registered_model_tag(self, name: str, key: str) -> None:
        """Remove the tag from the latest version."""
        latest = self.get_latest_versions(name)[0]
        self.delete_model_version_tag(name, latest.version, key)

    # -- versions -------------------------------------------------------------------------------
    def _source_files(self, source: str, model_id: str | None) -> tuple[str, str]:
        """``(run id, folder among the run's files)`` of an MLflow model source URI (a run
        artifact URI, ``runs:/<id>/<path>`` or ``models:/<logged model id>``).

        :raises MlflowException: INVALID_PARAMETER_VALUE for a source outside the workspace.
        """
        scheme = urlparse(source).scheme
        if scheme == "models":
            ref = urlparse(source).path.strip("/") or urlparse(source).netloc
            model = logged_models.get(self.ws, model_id or ref)
            source = model.artifact_location
            scheme = uris.SCHEME
        if scheme == "runs":
            parts = urlparse(source).path.strip("/").split("/", 1)
            return parts[0], parts[1] if len(parts) > 1 else ""
        served = served_run_path(source)
        if served is not None:
            return served
        if scheme == uris.SCHEME:
            ws_path, run_id, path = uris.parse_artifact_uri(source)
            if ws_path != self.ws.path:
                raise MlflowException.invalid_parameter_value(
                    f"{source!r} is in another workspace than {self.ws.path}"
                )
            return run_id, path
        raise MlflowException.invalid_parameter_value(
            f"cannot register {source!r}: mlws registers models from its runs' files "
            "(runs:/<run id>/<path>, models:/<logged model id>)"
        )

    def create_model_version(
        self,
        name: str,
        source: str,
        run_id: str | None = None,
        tags: list[Any] | None = None,
        run_link: str | None = None,
        description: str | None = None,
        local_model_path: str | None = None,
        model_id: str | None = None,
        created_by: str | None = None,
    ) -> ModelVersion:
        """Register the run's model folder ``source`` as the next mlws version of ``name``
        (``created_by``: who registers it; ``mlws serve`` gives the token's user).

        :raises MlflowException: INVALID_PARAMETER_VALUE (source, name), RESOURCE_DOES_NOT_EXIST.
        """
        src_run, path = self._source_files(source, model_id)
        with mlflow_errors():
            run = self.ws.get_run(run_id or src_run)
            props = {SOURCE_PROPERTY: source}
            if model_id:
                props[MODEL_ID_PROPERTY] = model_id
            m = register_from_run(
                run,
                name,
                path,
                tags={t.key: t.value for t in tags or []},
                properties=props,
                description=description,
                created_by=created_by,
            )
        return to_model_version(m)

    def get_model_version(self, name: str, version: Any) -> ModelVersion:
        """Version ``version`` of ``name``.

        :raises MlflowException: RESOURCE_DOES_NOT_EXIST.
        """
        return to_model_version(self._version(name, version))

    def get_model_version_download_uri(self, name: str, version: Any) -> str:
        """Where MLflow loads the version from: the run folder it was registered from.

        :raises MlflowException: INVALID_STATE for a version not registered through MLflow.
        """
        m = self._version(name, version)
        source = m.properties.get(SOURCE_PROPERTY)
        if source is None:
            raise MlflowException(
                f"model {name}:{version} was not registered from an MLflow model; "
                "download it with 'mlws model download'",
                databricks_pb2.INVALID_STATE,
            )
        run_id, path = self._source_files(source, m.properties.get(MODEL_ID_PROPERTY))
        return f"{uris.run_artifact_uri(self.ws, run_id)}/{path}".rstrip("/")

    def search_model_versions(
        self,
        filter_string: str | None = None,
        max_results: int | None = None,
        order_by: list[str] | None = None,
        page_token: str | None = None,
    ) -> PagedList:
        """Model versions matching MLflow's filter grammar (``name = 'x'``, ``run_id = 'y'``)."""
        with mlflow_errors():
            found = [to_model_version(m) for m in Model.list(self.ws)]
        found = SearchModelVersionUtils.filter(found, filter_string)
        found = SearchModelVersionUtils.sort(found, order_by or ["last_updated_timestamp DESC"])
        page, token = SearchUtils.paginate(found, page_token, max_results or 10000)
        return PagedList(page, token)

    def update_model_version(self, name: str, version: Any, description: str) -> ModelVersion:
        """Set the version's description."""
        m = self._version(name, version)
        with mlflow_errors():
            m.update(description=description)
        return self.get_model_version(name, version)

    def delete_model_version(self, name: str, version: Any) -> None:
        """Delete the version (refused while a service uses it)."""
        m = self._version(name, version)
        with mlflow_errors():
            m.delete()

    def set_model_version_tag(self, name: str, version: Any, tag: Any) -> None:
        """Set a tag of the version."""
        m = self._version(name, version)
        with mlflow_errors():
            m.add_tags({tag.key: tag.value})

    def delete_model_version_tag(self, name: str, version: Any, key: str) -> None:
        """Remove a tag of the version."""
        m = self._version(name, version)
        with mlflow_errors():
            m.remove_tags([key])

    def transition_model_version_stage(
        self, name: str, version: Any, stage: str, archive_existing_versions: bool
    ) -> ModelVersion:
        """Refused: mlws has no stages."""
        raise _unsupported("stages")

    def set_registered_model_alias(self, name: str, alias: str, version: Any) -> None:
        """Refused: mlws has no aliases."""
        raise _unsupported("aliases")

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        """Refused: mlws has no aliases."""
        raise _unsupported("aliases")

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        """Refused: mlws has no aliases."""
        raise _unsupported("aliases")
