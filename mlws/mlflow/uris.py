"""Tracking and artifact URIs of the MLflow plugin, the workspaces it opens, and its errors.

- a tracking (and registry) URI: ``mlws:///abs/path/to/workspace``, or ``mlws:`` alone for the
  workspace mlws finds by its usual discovery (``MLWS_WORKSPACE``, ``.mlws/config.json``, the
  per-user default);
- a run's artifact URI: ``mlws:///abs/path/to/workspace/.mlflow/runs/<run id>/artifacts``;
  what follows ``artifacts`` is a path among the run's files (``model/MLmodel``), so MLflow's
  artifacts *are* the run's files, as in Azure ML v1.

``.mlflow`` marks where the workspace path ends: a workspace folder is never named so by mlws,
and the first occurrence is taken, so a run file path may contain it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2

from ..errors import (
    ExperimentNotFound,
    MlwsError,
    ModelNotFound,
    RunNotFound,
    RunStateError,
    UserErrorException,
    WorkspaceNotFound,
    WorkspaceReadOnly,
)

if TYPE_CHECKING:
    from ..workspace import Workspace

SCHEME = "mlws"
#: The path segment between a workspace's path and the MLflow objects inside it.
MARK = "/.mlflow/"

_open: dict[str, Workspace] = {}
_open_lock = threading.Lock()


def workspace_path(uri: str) -> Path | None:
    """The workspace folder a tracking URI names, or None for ``mlws:`` alone (discovery).

    :raises MlflowException: INVALID_PARAMETER_VALUE for another scheme, a host, or a relative
        path.
    """
    parsed = urlparse(uri)
    if parsed.scheme != SCHEME:
        raise MlflowException.invalid_parameter_value(f"not an mlws URI: {uri!r}")
    if parsed.netloc:
        raise MlflowException.invalid_parameter_value(
            f"{uri!r}: mlws URIs name a local workspace folder (mlws:///abs/path/to/ws); "
            "a served workspace is not reachable through this plugin yet"
        )
    path = unquote(parsed.path)
    if not path or path == "/":
        return None
    if not path.startswith("/"):
        raise MlflowException.invalid_parameter_value(
            f"{uri!r}: give the workspace's absolute path, as mlws:///abs/path/to/ws"
        )
    return Path(path)


def open_workspace(path: Path | None) -> Workspace:
    """The open workspace at ``path`` (None: the discovered one), opened once per process: opening
    checks the catalog's schema, which is too slow to do on every ``log_metric``."""
    from ..workspace import Workspace

    key = "" if path is None else str(path)
    with _open_lock:
        ws = _open.get(key)
        if ws is None:
            with mlflow_errors():
                ws = Workspace.from_config() if path is None else Workspace(path)
            _open[key] = ws
            _open[str(ws.path)] = ws
        return ws


def adopt(ws: Workspace) -> None:
    """Use the already open ``ws`` for its path in this process (``mlws serve``'s own), rather
    than opening the workspace a second time."""
    with _open_lock:
        _open[str(ws.path)] = ws


def tracking_uri(ws: Workspace) -> str:
    """The tracking URI of an open workspace (``mlws:///abs/path``)."""
    return f"{SCHEME}://{ws.path.as_posix()}"


def run_artifact_uri(ws: Workspace, run_id: str) -> str:
    """The artifact URI of run ``run_id`` (its files)."""
    return run_artifact_uris(ws)(run_id)


def run_artifact_uris(ws: Workspace) -> Callable[[str], str]:
    """:func:`run_artifact_uri` of many runs of ``ws``: the workspace's part made once."""
    root = f"{tracking_uri(ws)}{MARK}runs/"
    return lambda run_id: f"{root}{run_id}/artifacts"


def experiment_artifact_uri(ws: Workspace, experiment_id: str) -> str:
    """The artifact location MLflow shows for an experiment (its runs' files are elsewhere)."""
    return f"{tracking_uri(ws)}{MARK}experiments/{experiment_id}"


def parse_artifact_uri(uri: str) -> tuple[Path, str, str]:
    """``(workspace path, run id, path among the run's files)`` of a run's artifact URI.

    :raises MlflowException: INVALID_PARAMETER_VALUE when ``uri`` is not one.
    """
    parsed = urlparse(uri)
    path = unquote(parsed.path)
    head, mark, rest = path.partition(MARK)
    parts = rest.split("/", 3)
    if (
        parsed.scheme != SCHEME
        or parsed.netloc
        or not mark
        or not head.startswith("/")
        or len(parts) < 3
        or parts[0] != "runs"
        or parts[2] != "artifacts"
    ):
        raise MlflowException.invalid_parameter_value(
            f"not an mlws run artifact URI: {uri!r} (expected "
            f"mlws:///path/to/ws{MARK}runs/<run id>/artifacts[/path])"
        )
    return Path(head), parts[1], (parts[3] if len(parts) > 3 else "").strip("/")


#: mlws's errors as MLflow's error codes.
_CODES: list[tuple[type[MlwsError], int]] = [
    (RunNotFound, databricks_pb2.RESOURCE_DOES_NOT_EXIST),
    (ExperimentNotFound, databricks_pb2.RESOURCE_DOES_NOT_EXIST),
    (ModelNotFound, databricks_pb2.RESOURCE_DOES_NOT_EXIST),
    (WorkspaceNotFound, databricks_pb2.RESOURCE_DOES_NOT_EXIST),
    (RunStateError, databricks_pb2.INVALID_STATE),
    (WorkspaceReadOnly, databricks_pb2.PERMISSION_DENIED),
    (UserErrorException, databricks_pb2.INVALID_PARAMETER_VALUE),
]


@contextlib.contextmanager
def mlflow_errors() -> Iterator[None]:
    """Raise mlws's errors inside the block as :class:`MlflowException` with MLflow's code
    (an unknown run: ``RESOURCE_DOES_NOT_EXIST``; bad input: ``INVALID_PARAMETER_VALUE``), so
    MLflow code handles them as it handles its own stores' errors."""
    try:
        yield
    except MlwsError as e:
        code = next((c for cls, c in _CODES if isinstance(e, cls)), databricks_pb2.INTERNAL_ERROR)
        raise MlflowException(str(e), error_code=code) from e
