"""``mlws+http://host:port`` and ``mlws+https://`` tracking URIs: a served workspace through
MLflow's own REST store, with the token mlws finds for that server.

``mlflow.set_tracking_uri("mlws+https://host:port")`` is ``https://host:port`` with
``MLFLOW_TRACKING_TOKEN`` taken care of: the token is :func:`mlws.remote.client.find_token`'s
(``MLWS_TOKEN``, else the per-user tokens file that ``mlws login`` writes), so a notebook needs
no MLflow variable. ``Workspace(url).get_mlflow_tracking_uri()`` returns this form.

Artifacts: the server hands out ``mlflow-artifacts:/runs/<id>/artifacts`` URIs, which MLflow
resolves only against an ``http(s)`` tracking URI; the store here turns them into
``mlws+http(s)://host:port/api/2.0/mlflow-artifacts/artifacts/runs/<id>/artifacts``, served by
:class:`MlwsHttpArtifactRepository` (MLflow's HTTP repository with the same token).
"""

from __future__ import annotations

import posixpath
from typing import Any
from urllib.parse import urlsplit

from mlflow.entities import FileInfo
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository
from mlflow.store.model_registry.rest_store import RestStore as RegistryRestStore
from mlflow.store.tracking.rest_store import RestStore
from mlflow.utils.rest_utils import MlflowHostCreds, augmented_raise_for_status, http_request

from ..errors import MlwsError
from ..remote.client import find_token, normalize_url

PREFIX = "mlws+"
#: Where ``mlws serve`` answers MLflow's artifact API.
ARTIFACTS_ROOT = "/api/2.0/mlflow-artifacts/artifacts"
#: What the server's artifact URIs start with.
SERVED = "mlflow-artifacts:/"


def server_url(uri: str) -> str:
    """The server (``http(s)://host:port``) an ``mlws+http(s)://`` URI names.

    :raises MlflowException: INVALID_PARAMETER_VALUE for another URI.
    """
    if not uri.startswith(PREFIX):
        raise MlflowException.invalid_parameter_value(f"not an mlws+http(s) URI: {uri!r}")
    parts = urlsplit(uri[len(PREFIX) :])
    try:
        return normalize_url(f"{parts.scheme}://{parts.netloc}")
    except MlwsError as e:
        raise MlflowException.invalid_parameter_value(f"{uri!r}: {e}") from None


def host_creds(url: str) -> MlflowHostCreds:
    """MLflow's credentials for server ``url``: mlws's token for it (or none)."""
    return MlflowHostCreds(url, token=find_token(url))


def resolve(url: str, uri: str) -> str:
    """A server artifact URI as one this process resolves to server ``url`` (see the module)."""
    if uri and uri.startswith(SERVED):
        return f"{PREFIX}{url}{ARTIFACTS_ROOT}/{uri[len(SERVED) :].lstrip('/')}"
    return uri


class MlwsRestStore(RestStore):
    """MLflow's REST tracking store against the server of ``mlws+http(s)://host:port``."""

    def __init__(self, store_uri: str, artifact_uri: str | None = None) -> None:
        self.url = server_url(store_uri)
        # Found on every request (an environment lookup; the file only without MLWS_TOKEN):
        # MLflow keeps one store per URI for the process, and a token may change meanwhile.
        super().__init__(lambda: host_creds(self.url))

    def _local(self, uri: str) -> str:
        return resolve(self.url, uri)

    def _runs(self, runs: Any) -> Any:
        for run in runs:
            # RunInfo has no setter; its artifact URI is this store's to give.
            run.info._artifact_uri = self._local(run.info.artifact_uri)
        return runs

    def get_run(self, run_id: str) -> Any:
        """The run, its artifact URI resolved to the server."""
        return self._runs([super().get_run(run_id)])[0]

    def create_run(self, *args: Any, **kwargs: Any) -> Any:
        """A new run, its artifact URI resolved to the server."""
        return self._runs([super().create_run(*args, **kwargs)])[0]

    def _search_runs(self, *args: Any, **kwargs: Any) -> Any:
        runs, token = super()._search_runs(*args, **kwargs)
        return self._runs(runs), token

    def _model(self, model: Any) -> Any:
        model.artifact_location = self._local(model.artifact_location)
        return model

    def create_logged_model(self, *args: Any, **kwargs: Any) -> Any:
        """A new logged model, its artifact location resolved to the server."""
        return self._model(super().create_logged_model(*args, **kwargs))

    def get_logged_model(self, *args: Any, **kwargs: Any) -> Any:
        """The logged model, its artifact location resolved to the server."""
        return self._model(super().get_logged_model(*args, **kwargs))

    def finalize_logged_model(self, *args: Any, **kwargs: Any) -> Any:
        """Finalize the logged model; its artifact location resolved to the server."""
        return self._model(super().finalize_logged_model(*args, **kwargs))

    def search_logged_models(self, *args: Any, **kwargs: Any) -> Any:
        """Logged models, their artifact locations resolved to the server."""
        page = super().search_logged_models(*args, **kwargs)
        for m in page:
            self._model(m)
        return page


class MlwsRegistryRestStore(RegistryRestStore):
    """MLflow's REST model registry store against the server of ``mlws+http(s)://host:port``
    (``mlws serve``'s registry routes, :mod:`mlws.server.mlflow_registry`)."""

    def __init__(self, store_uri: str, tracking_uri: str | None = None) -> None:
        self.url = server_url(store_uri)
        super().__init__(lambda: host_creds(self.url))

    def get_model_version_download_uri(self, name: str, version: Any) -> str:
        """Where the version's files are, resolved to the server."""
        return resolve(self.url, super().get_model_version_download_uri(name, version))


class MlwsHttpArtifactRepository(HttpArtifactRepository):
    """MLflow's HTTP artifact repository for ``mlws+http(s)://`` artifact URIs, sending mlws's
    token for the server."""

    def __init__(
        self, artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None
    ) -> None:
        self.server = server_url(artifact_uri)
        super().__init__(artifact_uri[len(PREFIX) :], tracking_uri, registry_uri)

    @property
    def _host_creds(self) -> MlflowHostCreds:
        return MlflowHostCreds(self.artifact_uri, token=find_token(self.server))

    def list_artifacts(self, path: str | None = None) -> list[FileInfo]:
        """The files and folders directly under ``path`` (MLflow's own listing builds its
        credentials from ``MLFLOW_TRACKING_TOKEN``; this one sends mlws's token)."""
        base, _, tail = self.artifact_uri.partition(ARTIFACTS_ROOT)
        root = tail.strip("/")
        creds = MlflowHostCreds(base + "/api/2.0", token=find_token(self.server))
        where = posixpath.join(root, path) if path else root
        resp = http_request(creds, "/mlflow-artifacts/artifacts", "GET", params={"path": where})
        augmented_raise_for_status(resp)
        out = [
            FileInfo(
                posixpath.join(path, f["path"]) if path else f["path"],
                f["is_dir"],
                int(f["file_size"]) if "file_size" in f else None,
            )
            for f in resp.json().get("files", [])
        ]
        return sorted(out, key=lambda f: f.path)
