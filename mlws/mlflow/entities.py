"""mlws's catalog rows as MLflow's entities: experiments, runs (info, params, metrics, tags).

The mapping, one way for every call:

- experiment id: the mlws experiment's own id (a uuid kept in the catalog since it was
  created, so it is stable across processes and copies of the workspace), except MLflow's
  default experiment ``"0"``, which is the mlws experiment ``Default``;
- run id: the mlws run id itself (MLflow accepts mlws's ``<experiment>_<time>_<hex>`` ids), so
  an id from ``run.id`` works in ``mlflow.get_run`` and the reverse;
- params: the run's properties (add-only, like MLflow's params);
- metrics: the run's scalar metrics, the value at the highest step of each name (MLflow's
  "latest" metric);
- tags: the run's tags, plus MLflow's system tags made from run fields: ``mlflow.runName``
  (display name), ``mlflow.parentRunId`` (parent run), ``mlflow.user`` (submitter).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlflow.entities import Experiment, LifecycleStage, Metric, Param, RunData, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2

from . import uris

if TYPE_CHECKING:
    import sqlite3

    from ..workspace import Workspace

#: MLflow's default experiment id, and the mlws experiment it is.
DEFAULT_EXPERIMENT_ID = "0"
DEFAULT_EXPERIMENT = "Default"

RUN_NAME_TAG = "mlflow.runName"
PARENT_TAG = "mlflow.parentRunId"
USER_TAG = "mlflow.user"
#: Run tags ``mlflow.loggedModel.<model id>`` hold the run's MLflow 3 logged models (JSON); they
#: are not shown among the run's MLflow tags.
LOGGED_MODEL_TAG = "mlflow.loggedModel."

#: mlws statuses as MLflow's run statuses.
TO_MLFLOW = {
    "NotStarted": "SCHEDULED",
    "Queued": "SCHEDULED",
    "Preparing": "SCHEDULED",
    "Starting": "SCHEDULED",
    "Running": "RUNNING",
    "Finalizing": "RUNNING",
    "CancelRequested": "RUNNING",
    "Completed": "FINISHED",
    "Failed": "FAILED",
    "Canceled": "KILLED",
}
#: MLflow's run statuses as mlws statuses.
FROM_MLFLOW = {
    "SCHEDULED": "Queued",
    "RUNNING": "Running",
    "FINISHED": "Completed",
    "FAILED": "Failed",
    "KILLED": "Canceled",
}


def ms(t: float | None) -> int | None:
    """Seconds since the epoch as MLflow's milliseconds."""
    return None if t is None else int(t * 1000)


def experiment_id(name: str, uuid: str) -> str:
    """The MLflow id of the mlws experiment ``name`` (whose catalog id is ``uuid``)."""
    return DEFAULT_EXPERIMENT_ID if name == DEFAULT_EXPERIMENT else uuid


def experiment_row(ws: Workspace, exp_id: str) -> sqlite3.Row:
    """The ``experiments`` row of MLflow experiment ``exp_id`` (``"0"`` is ``Default``, made on
    first use as MLflow's stores always have it).

    :raises MlflowException: RESOURCE_DOES_NOT_EXIST, no such experiment.
    """
    if str(exp_id) == DEFAULT_EXPERIMENT_ID:
        from ..experiments import Experiment as MlwsExperiment

        with uris.mlflow_errors():
            MlwsExperiment(ws, DEFAULT_EXPERIMENT)
        row = ws.catalog.one("SELECT * FROM experiments WHERE name = ?", (DEFAULT_EXPERIMENT,))
    else:
        row = ws.catalog.one("SELECT * FROM experiments WHERE id = ?", (str(exp_id),))
    if row is None:
        raise MlflowException(
            f"no experiment with id {exp_id!r} in workspace {ws.name!r}",
            databricks_pb2.RESOURCE_DOES_NOT_EXIST,
        )
    return row


def to_experiment(ws: Workspace, row: sqlite3.Row) -> Experiment:
    """An ``experiments`` row as MLflow's ``Experiment`` (archived = deleted)."""
    from mlflow.entities import ExperimentTag

    eid = experiment_id(row["name"], row["id"])
    tags = [ExperimentTag("mlflow.note.content", row["description"])] if row["description"] else []
    return Experiment(
        experiment_id=eid,
        name=row["name"],
        artifact_location=uris.experiment_artifact_uri(ws, eid),
        lifecycle_stage=LifecycleStage.DELETED if row["archived"] else LifecycleStage.ACTIVE,
        tags=tags,
        creation_time=ms(row["created"]),
        last_update_time=ms(row["created"]),
    )


def _fast_run_data() -> bool:
    """Whether MLflow's ``RunData`` keeps exactly what :func:`run_data` sets (its metric objects
    and three dicts): checked once against the installed MLflow, else its constructor is used."""
    try:
        made = RunData([Metric("m", 1.0, 2, 3)], [Param("p", "v")], [RunTag("t", "w")])
        return vars(made) == {
            "_metric_objs": made._metric_objs,
            "_metrics": {"m": 1.0},
            "_params": {"p": "v"},
            "_tags": {"t": "w"},
        }
    except Exception:  # another MLflow: the constructor it is
        return False


_FAST_RUN_DATA = _fast_run_data()


def run_data(
    metrics: list[Metric],
    params: dict[str, str],
    tags: dict[str, str],
    values: dict[str, float] | None = None,
) -> RunData:
    """MLflow's ``RunData`` of metric objects and param and tag dicts (``values``: each metric's
    value by key, when the caller has it). ``RunData`` keeps params and tags as dicts only:
    filled straight from them, a search answer of a thousand runs makes no ``Param``/``RunTag``
    object (a third of its entity building)."""
    if not _FAST_RUN_DATA:
        return RunData(
            metrics,
            [Param(k, v) for k, v in params.items()],
            [RunTag(k, v) for k, v in tags.items()],
        )
    data = RunData.__new__(RunData)
    data._metric_objs = metrics
    data._metrics = {m.key: m.value for m in metrics} if values is None else values
    data._params = params
    data._tags = tags
    return data
