"""MLflow 3's logged models, kept inside the run that logs them.

``mlflow.<flavor>.log_model(model, name="model")`` creates a logged model and writes the MLmodel
folder to its artifact location. Here that location is the source run's files under
``<name>/`` (``model/MLmodel``, ``model/model.pkl``...), where Azure ML v1 put them, so
``runs:/<run id>/model`` names the folder, ``run.register_model(model_path="model")`` and
``mlflow.register_model`` register it as written, and it is stored content-addressed like every
run file.

The model's record (name, status, tags, params, the step it was output at) is a run tag
``mlflow.loggedModel.<model id>`` holding JSON, found by the tags' key index; MLflow 2 kept its
``mlflow.log-model.history`` the same way. A logged model needs a run: one logged outside any
run is refused (there is nowhere to keep its files).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from mlflow.entities import LoggedModel, LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2
from mlflow.store.entities.paged_list import PagedList
from mlflow.utils.search_utils import SearchLoggedModelsUtils, SearchUtils

from . import entities, uris

if TYPE_CHECKING:
    import sqlite3

    from ..workspace import Workspace


def _status(status: Any) -> str:
    if isinstance(status, int) and not isinstance(status, LoggedModelStatus):
        return str(LoggedModelStatus.from_int(status))
    return str(LoggedModelStatus(str(status)))


def _pairs(items: Any) -> dict[str, str]:
    if items is None:
        return {}
    if isinstance(items, dict):
        return {str(k): str(v) for k, v in items.items()}
    return {i.key: i.value for i in items}


def create(
    ws: Workspace,
    experiment_id: str,
    name: str | None,
    source_run_id: str | None,
    tags: Any,
    params: Any,
    model_type: str | None,
) -> LoggedModel:
    """Record a new (PENDING) logged model of run ``source_run_id``.

    :raises MlflowException: INVALID_PARAMETER_VALUE with no run, or a name with ``/`` or ``..``.
    """
    if source_run_id is None:
        raise MlflowException.invalid_parameter_value(
            "mlws keeps a logged model's files in its run: log the model inside a run "
            "(mlflow.start_run())"
        )
    name = name or "model"
    if "/" in name or name in (".", "..") or not name.strip():
        raise MlflowException.invalid_parameter_value(f"invalid logged model name {name!r}")
    model_id = f"m-{uuid.uuid4().hex}"
    now = time.time()
    record = {
        "experiment_id": experiment_id,
        "name": name,
        "model_type": model_type,
        "status": str(LoggedModelStatus.PENDING),
        "tags": _pairs(tags),
        "params": _pairs(params),
        "created": now,
        "updated": now,
        "output_step": None,
    }
    with uris.mlflow_errors(), ws.catalog.write() as conn:
        seq = conn.execute("SELECT seq FROM runs WHERE id = ?", (source_run_id,)).fetchone()[0]
        conn.execute(
            "INSERT INTO run_tags VALUES (?, ?, ?)",
            (seq, entities.LOGGED_MODEL_TAG + model_id, json.dumps(record)),
        )
    return get(ws, model_id)


def _find(conn_or_catalog: Any, model_id: str) -> sqlite3.Row | None:
    sql = (
        "SELECT r.id, r.seq, t.value FROM run_tags t JOIN runs r ON r.seq = t.run_seq"
        " WHERE t.key = ?"
    )
    key = entities.LOGGED_MODEL_TAG + str(model_id)
    if hasattr(conn_or_catalog, "one"):
        return conn_or_catalog.one(sql, (key,))
    return conn_or_catalog.execute(sql, (key,)).fetchone()


def _missing(model_id: str) -> MlflowException:
    return MlflowException(
        f"Logged model with ID '{model_id}' not found.", databricks_pb2.RESOURCE_DOES_NOT_EXIST
    )


def to_logged_model(
    ws: Workspace, run_id: str, model_id: str, record: dict[str, Any]
) -> LoggedModel:
    """A logged model's record (the run tag's JSON) as MLflow's ``LoggedModel``."""
    return LoggedModel(
        experiment_id=record["experiment_id"],
        model_id=model_id,
        name=record["name"],
        artifact_location=f"{uris.run_artifact_uri(ws, run_id)}/{record['name']}",
        creation_timestamp=int(record["created"] * 1000),
        last_updated_timestamp=int(record["updated"] * 1000),
        model_type=record.get("model_type"),
        source_run_id=run_id,
        status=LoggedModelStatus(record["status"]),
        tags=record.get("tags") or {},
        params=record.get("params") or {},
    )


def get(ws: Workspace, model_id: str) -> LoggedModel:
    """The logged model ``model_id``.

    :raises MlflowException: RESOURCE_DOES_NOT_EXIST.
    """
    row = _find(ws.catalog, model_id)
    if row is None:
        raise _missing(model_id)
    return to_logged_model(ws, row["id"], model_id, json.loads(row["value"]))


def update(
    ws: Workspace,
    model_id: str,
    *,
    status: Any = None,
    tags: dict[str, str] | None = None,
    drop_tag: str | None = None,
    output_step: int | None = None,
) -> LoggedModel:
    """Change a logged model's status, tags or output step (one read-modify-write transaction).

    :raises MlflowException: RESOURCE_DOES_NOT_EXIST (the model, or the tag to drop).
    """
    with uris.mlflow_errors(), ws.catalog.write() as conn:
        row = _find(conn, model_id)
        if row is None:
            raise _missing(model_id)
        record = json.loads(row[2])
        if status is not None:
            record["status"] = _status(status)
        record["tags"] = {**(record.get("tags") or {}), **(tags or {})}
        if drop_tag is not None:
            if drop_tag not in record["tags"]:
                raise MlflowException(
                    f"logged model {model_id} has no tag {drop_tag!r}",
                    databricks_pb2.RESOURCE_DOES_NOT_EXIST,
                )
            del record["tags"][drop_tag]
        if output_step is not None:
            record["output_step"] = int(output_step)
        record["updated"] = time.time()
        conn.execute(
            "UPDATE run_tags SET value = ? WHERE run_seq = ? AND key = ?",
            (json.dumps(record), row[1], entities.LOGGED_MODEL_TAG + model_id),
        )
    return get(ws, model_id)


def set_output(ws: Workspace, model_id: str, run_id: str, step: int) -> None:
    """Record logged model ``model_id`` as an output of its run, at ``step``.

    :raises MlflowException: INVALID_PARAMETER_VALUE, the model belongs to another run.
    """
    model = get(ws, model_id)
    if model.source_run_id != run_id:
        raise MlflowException.invalid_parameter_value(
            f"logged model {model_id} belongs to run {model.source_run_id}, not {run_id}"
        )
    update(ws, model_id, output_step=step or 0)


def search(
    ws: Workspace,
    experiments: list[sqlite3.Row],
    filter_string: str | None,
    max_results: int | None,
    page_token: str | None,
) -> PagedList:
    """Logged models of the runs of ``experiments``, newest first, filtered by MLflow's rules."""
    names = [e["name"] for e in experiments]
    if not names:
        return PagedList([], None)
    marks = ",".join("?" * len(names))
    rows = ws.catalog.query(
        "SELECT r.id, t.key, t.value FROM run_tags t JOIN runs r ON r.seq = t.run_seq"
        f" WHERE t.key >= ? AND t.key < ? AND r.experiment IN ({marks})",
        [entities.LOGGED_MODEL_TAG, entities.LOGGED_MODEL_TAG[:-1] + "/", *names],
    )
    models = [
        to_logged_model(ws, r[0], r[1][len(entities.LOGGED_MODEL_TAG) :], json.loads(r[2]))
        for r in rows
    ]
    models = SearchLoggedModelsUtils.filter_logged_models(models, filter_string)
    models.sort(key=lambda m: m.creation_timestamp, reverse=True)
    page, token = SearchUtils.paginate(models, page_token, max_results or 100)
    return PagedList(page, token)
