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

import json
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from mlflow.entities import (
    Experiment,
    LifecycleStage,
    Metric,
    Param,
    Run,
    RunData,
    RunInfo,
    RunInputs,
    RunOutputs,
    RunTag,
)
from mlflow.entities.logged_model_output import LoggedModelOutput
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2

from ..metrics import decode
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


def _chunks(seqs: list[int], size: int = 500) -> Any:
    for i in range(0, len(seqs), size):
        chunk = seqs[i : i + size]
        yield chunk, ",".join("?" * len(chunk))


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


def run_data(metrics: list[Metric], params: dict[str, str], tags: dict[str, str]) -> RunData:
    """MLflow's ``RunData`` of metric objects and param and tag dicts. ``RunData`` keeps params
    and tags as dicts only: filled straight from them, a search answer of a thousand runs makes
    no ``Param``/``RunTag`` object (a third of its entity building)."""
    if not _FAST_RUN_DATA:
        return RunData(
            metrics,
            [Param(k, v) for k, v in params.items()],
            [RunTag(k, v) for k, v in tags.items()],
        )
    data = RunData.__new__(RunData)
    data._metric_objs = metrics
    data._metrics = {m.key: m.value for m in metrics}
    data._params = params
    data._tags = tags
    return data


def to_runs(ws: Workspace, rows: list[sqlite3.Row]) -> list[Run]:
    """``runs`` rows (every column) as MLflow runs, reading tags, properties and latest metrics
    of all of them in a few queries (not a few per run)."""
    seqs = [r["seq"] for r in rows]
    tags: dict[int, dict[str, str]] = {s: {} for s in seqs}
    params: dict[int, dict[str, str]] = {s: {} for s in seqs}
    metrics: dict[int, list[Metric]] = {s: [] for s in seqs}
    exp_ids = {
        r[0]: experiment_id(r[0], r[1])
        for r in ws.catalog.query("SELECT name, id FROM experiments")
    }
    for chunk, marks in _chunks(seqs):
        for seq, key, value in ws.catalog.query(
            f"SELECT run_seq, key, value FROM run_tags WHERE run_seq IN ({marks})", chunk
        ):
            tags[seq][key] = "" if value is None else value
        for seq, key, value in ws.catalog.query(
            f"SELECT run_seq, key, value FROM run_properties WHERE run_seq IN ({marks})", chunk
        ):
            params[seq][key] = "" if value is None else value
        # The value at each name's highest step: max(step) on the (run, name, step) key is one
        # index probe per metric, never a scan of the series.
        for seq, name, step, value, data, t in ws.catalog.query(
            "SELECT m.run_seq, m.name, m.step, m.value, m.data, m.time FROM metric_summary s"
            " JOIN metrics m ON m.run_seq = s.run_seq AND m.name = s.name AND m.step ="
            " (SELECT max(step) FROM metrics x WHERE x.run_seq = s.run_seq AND x.name = s.name)"
            f" WHERE s.run_seq IN ({marks}) AND s.kind = 'scalar'",
            chunk,
        ):
            v = decode(value, data)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                metrics[seq].append(Metric(name, float(v), int(t * 1000), int(step)))
    if not rows:
        return []
    artifact_uri = uris.run_artifact_uris(ws)
    # sqlite3.Row finds a column by name comparing it with each column's in turn: a thousand
    # runs' dozen fields by position instead.
    col = {k: i for i, k in enumerate(rows[0].keys())}
    at = itemgetter(
        *(
            col[k]
            for k in (
                "seq",
                "id",
                "experiment",
                "display_name",
                "submitter_user",
                "parent_id",
                "status",
                "start_time",
                "created",
                "end_time",
            )
        )
    )
    out = []
    for r in rows:
        seq, run_id, exp, display, user, parent, status, start, created, end = at(r)
        info = RunInfo(
            run_id=run_id,
            experiment_id=exp_ids.get(exp, ""),
            user_id=user or "",
            status=TO_MLFLOW.get(status, "RUNNING"),
            start_time=ms(start or created),
            end_time=ms(end),
            lifecycle_stage=LifecycleStage.ACTIVE,
            artifact_uri=artifact_uri(run_id),
            run_name=display or run_id,
        )
        out.append(_to_run(info, parent, tags[seq], params[seq], metrics[seq]))
    return out


def _to_run(
    info: RunInfo,
    parent: str | None,
    tags: dict[str, str],
    params: dict[str, str],
    metrics: list[Metric],
) -> Run:
    outputs = []
    if any(k.startswith(LOGGED_MODEL_TAG) for k in tags):
        for k in [k for k in tags if k.startswith(LOGGED_MODEL_TAG)]:
            step = json.loads(tags.pop(k) or "{}").get("output_step")
            if step is not None:
                outputs.append(LoggedModelOutput(k[len(LOGGED_MODEL_TAG) :], int(step)))
    tags.pop(RUN_NAME_TAG, None)
    tags.pop(PARENT_TAG, None)
    tags[RUN_NAME_TAG] = info.run_name
    if parent:
        tags[PARENT_TAG] = parent
    if info.user_id and USER_TAG not in tags:
        tags[USER_TAG] = info.user_id
    data = run_data(metrics, params, tags)
    return Run(info, data, RunInputs(dataset_inputs=[]), RunOutputs(model_outputs=outputs))
