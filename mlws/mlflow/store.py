"""``MlwsTrackingStore``: MLflow's tracking store over an mlws workspace (``mlws:///path``).

MLflow finds it through the ``mlflow.tracking_store`` entry point. The mapping of experiments,
runs, params, metrics and tags is :mod:`mlws.mlflow.entities`'. Choices:

- metrics go into the run's metric buffer (``mlws.metrics.MetricWriter``), written in batches
  by its background flusher, as ``run.log`` does; every read here flushes first, so a process
  reads back what it logged. mlws keys a metric by (run, name, step): a value logged again at
  the same step replaces the earlier one (MLflow keeps both);
- a run made here is an interactive run of this process (reconciled to Failed if the process
  dies without ending it); ``mlflow.parentRunId`` at creation makes it a child run;
- a run mlws itself supervises (a submitted script) keeps the status its supervisor gives it:
  ``mlflow.end_run()`` in the script does not complete it before the script has ended;
- ``delete_run`` deletes an ended run for good (mlws has no soft delete), so ``restore_run``
  is refused; ``delete_experiment`` archives the experiment and ``restore_experiment`` un-archives.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from mlflow.entities import RunStatus, ViewType
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2
from mlflow.store.entities.paged_list import PagedList
from mlflow.store.tracking import SEARCH_MAX_RESULTS_DEFAULT, SEARCH_MAX_RESULTS_THRESHOLD
from mlflow.store.tracking.abstract_store import AbstractStore
from mlflow.utils.search_utils import SearchExperimentsUtils, SearchUtils

from ..catalog import gc_paused
from ..experiments import Experiment as MlwsExperiment
from ..experiments import check_experiment_name
from ..lifecycle import (
    INTERACTIVE,
    SUBMITTED,
    TERMINAL,
    insert_run,
    key_values,
    process_start_time,
    reconcile,
    set_status,
)
from ..metrics import MetricWriter, flush_all
from . import entities, logged_models, search, uris
from .uris import mlflow_errors

if TYPE_CHECKING:
    import sqlite3

    from mlflow.entities import Metric, Param, Run, RunTag


def _invalid(msg: str) -> MlflowException:
    return MlflowException(msg, databricks_pb2.INVALID_PARAMETER_VALUE)


def check_metric(metric: Metric) -> None:
    """MLflow's rules for a metric: a key, a number value, integer timestamp and step.

    :raises MlflowException: INVALID_PARAMETER_VALUE.
    """
    key, value, ts, step = metric.key, metric.value, metric.timestamp, metric.step
    # The common case in four type checks: numbers.Number is an ABC, slow to ask.
    if type(key) is str and key.strip() and type(value) is float and type(ts) is type(step) is int:
        return
    if not isinstance(key, str) or not key.strip():
        raise _invalid(f"a metric needs a name, got {metric.key!r}")
    if isinstance(value, bool) or not isinstance(value, numbers.Number):
        raise _invalid(
            f"Got invalid value {value!r} for metric {metric.key!r} (timestamp="
            f"{metric.timestamp}). Please specify value as a valid double (64-bit floating point)"
        )
    for what, v in (("timestamp", ts), ("step", step)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise _invalid(f"metric {metric.key!r}: {what} must be an integer, got {v!r}")


def _check_key(kind: str, key: Any) -> None:
    if not isinstance(key, str) or not key.strip():
        raise _invalid(f"a {kind} needs a non-empty name, got {key!r}")


class MlwsTrackingStore(AbstractStore):
    """MLflow's tracking store over the mlws workspace of ``store_uri`` (``mlws:///abs/path``, or
    ``mlws:`` for the discovered workspace)."""

    def __init__(
        self, store_uri: str | None = None, artifact_uri: str | None = None, *, leased: bool = False
    ) -> None:
        super().__init__()
        self.ws = uris.open_workspace(uris.workspace_path(store_uri or "mlws:"))
        #: ``mlws serve``'s store: its runs belong to remote clients, held by a lease
        #: (:mod:`mlws.server.leases`), not to this process.
        self.leased = leased
        self._writers: dict[int, MetricWriter] = {}
        self._lock = threading.Lock()

    # -- experiments ----------------------------------------------------------------------------
    def search_experiments(
        self,
        view_type: int = ViewType.ACTIVE_ONLY,
        max_results: int = SEARCH_MAX_RESULTS_DEFAULT,
        filter_string: str | None = None,
        order_by: list[str] | None = None,
        page_token: str | None = None,
    ) -> PagedList:
        """The workspace's experiments (archived ones are MLflow's deleted), filtered, sorted
        and paged by MLflow's own rules."""
        if not isinstance(max_results, int) or not 1 <= max_results <= SEARCH_MAX_RESULTS_THRESHOLD:
            raise _invalid(
                f"Invalid value {max_results!r} for parameter 'max_results': it must be an "
                f"integer from 1 to {SEARCH_MAX_RESULTS_THRESHOLD}"
            )
        # MLflow's stores always have experiment "0"; a workspace another machine writes
        # cannot make it, and is listed without it.
        with contextlib.suppress(MlflowException):
            entities.experiment_row(self.ws, entities.DEFAULT_EXPERIMENT_ID)
        wanted = {
            ViewType.ACTIVE_ONLY: (0,),
            ViewType.DELETED_ONLY: (1,),
        }.get(view_type, (0, 1))
        exps = [
            entities.to_experiment(self.ws, r)
            for r in self.ws.catalog.query("SELECT * FROM experiments ORDER BY created")
            if r["archived"] in wanted
        ]
        exps = SearchExperimentsUtils.filter(exps, filter_string)
        exps = SearchExperimentsUtils.sort(exps, order_by or ["creation_time DESC"])
        page, token = SearchUtils.paginate(exps, page_token, max_results)
        return PagedList(page, token)

    def create_experiment(
        self, name: str, artifact_location: str | None = None, tags: list[Any] | None = None
    ) -> str:
        """Create mlws experiment ``name``; returns its MLflow id.

        :raises MlflowException: RESOURCE_ALREADY_EXISTS; INVALID_PARAMETER_VALUE for a name
            mlws cannot take (letters, digits, ``_``, ``-``).
        """
        with mlflow_errors():
            check_experiment_name(name)
        if self.ws.catalog.one("SELECT 1 FROM experiments WHERE name = ?", (name,)):
            raise MlflowException(
                f"Experiment(name={name}) already exists.", databricks_pb2.RESOURCE_ALREADY_EXISTS
            )
        note = [t.value for t in tags or [] if t.key == "mlflow.note.content"]
        with mlflow_errors():
            exp = MlwsExperiment(self.ws, name)
            if note:
                with self.ws.catalog.write() as conn:
                    conn.execute(
                        "UPDATE experiments SET description = ? WHERE name = ?", (note[0], name)
                    )
        return entities.experiment_id(name, exp.id)

    def get_experiment(self, experiment_id: str) -> Any:
        """The experiment of MLflow id ``experiment_id``.

        :raises MlflowException: RESOURCE_DOES_NOT_EXIST.
        """
        return entities.to_experiment(self.ws, entities.experiment_row(self.ws, experiment_id))

    def get_experiment_by_name(self, experiment_name: str) -> Any:
        """The experiment named ``experiment_name``, or None."""
        if experiment_name == entities.DEFAULT_EXPERIMENT:
            return self.get_experiment(entities.DEFAULT_EXPERIMENT_ID)
        row = self.ws.catalog.one("SELECT * FROM experiments WHERE name = ?", (experiment_name,))
        return None if row is None else entities.to_experiment(self.ws, row)

    def _archive(self, experiment_id: str, archived: int) -> None:
        row = entities.experiment_row(self.ws, experiment_id)
        with mlflow_errors(), self.ws.catalog.write() as conn:
            conn.execute(
                "UPDATE experiments SET archived = ? WHERE name = ?", (archived, row["name"])
            )

    def delete_experiment(self, experiment_id: str) -> None:
        """Archive the experiment (MLflow's deleted; its runs stay)."""
        self._archive(experiment_id, 1)

    def restore_experiment(self, experiment_id: str) -> None:
        """Un-archive the experiment."""
        self._archive(experiment_id, 0)

    def rename_experiment(self, experiment_id: str, new_name: str) -> None:
        """Refused: an mlws experiment's name is its identity (run ids and folders use it)."""
        raise MlflowException(
            "mlws experiments cannot be renamed (their runs are named after them)",
            databricks_pb2.INVALID_STATE,
        )

    def set_experiment_tag(self, experiment_id: str, tag: RunTag) -> None:
        """Only ``mlflow.note.content`` (the experiment's description) is kept.

        :raises MlflowException: INVALID_PARAMETER_VALUE for any other tag.
        """
        row = entities.experiment_row(self.ws, experiment_id)
        if tag.key != "mlflow.note.content":
            raise _invalid(
                f"mlws experiments keep no tags but their description (mlflow.note.content); "
                f"got {tag.key!r}"
            )
        with mlflow_errors(), self.ws.catalog.write() as conn:
            conn.execute(
                "UPDATE experiments SET description = ? WHERE name = ?", (tag.value, row["name"])
            )

    # -- runs -----------------------------------------------------------------------------------
    def _row(self, run_id: str) -> sqlite3.Row:
        row = self.ws.catalog.one("SELECT * FROM runs WHERE id = ?", (str(run_id),))
        if row is None:
            raise MlflowException(
                f"Run with id={run_id} not found", databricks_pb2.RESOURCE_DOES_NOT_EXIST
            )
        with mlflow_errors():
            return reconcile(self.ws, row)

    def _target(self, run_id: str) -> sqlite3.Row:
        """The run a write goes to: one indexed lookup, without the status reconciliation of
        reads (it checks the run's process, which cost a millisecond per ``log_metric``)."""
        row = self.ws.catalog.one(
            "SELECT seq, id, parent_id FROM runs WHERE id = ?", (str(run_id),)
        )
        if row is None:
            raise MlflowException(
                f"Run with id={run_id} not found", databricks_pb2.RESOURCE_DOES_NOT_EXIST
            )
        return row

    def _flush(self, seq: int | None = None) -> None:
        with mlflow_errors():
            if seq is None:
                flush_all()
            elif (w := self._writers.get(seq)) is not None:
                w.flush()

    def flush(self, run_id: str | None = None) -> None:
        """Write the metrics this store has buffered (of run ``run_id``, or of every run) now."""
        if run_id is None:
            self._flush()
        else:
            self._flush(self._target(run_id)["seq"])

    def get_run(self, run_id: str) -> Run:
        """The run of id ``run_id`` (an mlws run id).

        :raises MlflowException: RESOURCE_DOES_NOT_EXIST.
        """
        row = self._row(run_id)
        self._flush(row["seq"])
        return search.to_runs(self.ws, [row])[0]

    def create_run(
        self,
        experiment_id: str,
        user_id: str | None,
        start_time: int | None,
        tags: list[RunTag] | None,
        run_name: str | None,
    ) -> Run:
        """A new interactive run of this process in the experiment; ``mlflow.parentRunId``
        among ``tags`` makes it a child of that run, ``mlflow.runName`` (or ``run_name``) its
        display name.

        :raises MlflowException: RESOURCE_DOES_NOT_EXIST (experiment or parent run),
            INVALID_STATE (an archived experiment).
        """
        exp = entities.experiment_row(self.ws, experiment_id)
        if exp["archived"]:
            raise MlflowException(
                f"experiment {experiment_id!r} is deleted (archived); restore it first",
                databricks_pb2.INVALID_STATE,
            )
        values = {t.key: t.value for t in tags or []}
        parent = values.pop(entities.PARENT_TAG, None)
        name = run_name or values.pop(entities.RUN_NAME_TAG, None)
        values.pop(entities.RUN_NAME_TAG, None)
        if parent is not None:
            self._row(parent)
        now = time.time() if start_time is None else start_time / 1000
        fields: dict[str, Any] = {"created": now, "start_time": now}
        if self.leased:
            from ..server.leases import MLFLOW_HOST

            # Held by MLflow's (longer) lease: its client sends no heartbeat (see leases).
            fields.update(lease_seen=time.time(), host=MLFLOW_HOST)
        else:
            fields.update(pid=os.getpid(), pid_start=process_start_time(os.getpid()))
        if user_id:
            fields["submitter_user"] = user_id
        with mlflow_errors():
            row = insert_run(
                self.ws,
                exp["name"],
                run_type=INTERACTIVE,
                status="Running",
                parent_id=parent,
                display_name=name,
                fields=fields,
                tags=values,
            )
            stored = key_values(values, "tag")
        # Built from what was written, not read back: every client's first call of a run.
        return search.created_run(
            self.ws, row, entities.experiment_id(exp["name"], exp["id"]), stored
        )

    def update_run_info(
        self, run_id: str, run_status: Any, end_time: int | None, run_name: str | None
    ) -> Any:
        """Set the run's display name and status (``FINISHED`` = Completed, ``FAILED`` = Failed,
        ``KILLED`` = Canceled). A run mlws supervises keeps its supervisor's status."""
        row = self._row(run_id)
        with mlflow_errors():
            if run_name and run_name != row["display_name"]:
                with self.ws.catalog.write() as conn:
                    conn.execute(
                        "UPDATE runs SET display_name = ? WHERE id = ?", (run_name, row["id"])
                    )
            status = entities.FROM_MLFLOW.get(
                run_status if isinstance(run_status, str) else RunStatus.to_string(run_status)
            )
            supervised = row["type"] in SUBMITTED or row["supervisor_pid"] is not None
            if status and not supervised and row["status"] not in TERMINAL:
                set_status(self.ws, row["id"], status)
        # The info alone, not the whole run read again: a client ends every run with this.
        # Its buffered metrics are written first, as reading the run did.
        self._flush(row["seq"])
        return search.run_info(self.ws, self._row(run_id))

    def delete_run(self, run_id: str) -> None:
        """Delete an ended run for good (mlws has no soft delete).

        :raises MlflowException: RESOURCE_DOES_NOT_EXIST; INVALID_STATE for a run not ended.
        """
        row = self._row(run_id)
        with mlflow_errors():
            self.ws.get_run(row["id"]).delete()

    def restore_run(self, run_id: str) -> None:
        """Refused: a deleted mlws run is gone.

        :raises MlflowException: RESOURCE_DOES_NOT_EXIST or INVALID_STATE.
        """
        self._row(run_id)
        raise MlflowException(
            f"run {run_id} is not deleted (mlws deletes runs for good, so none can be restored)",
            databricks_pb2.INVALID_STATE,
        )

    # -- params, metrics, tags ------------------------------------------------------------------
    def log_metric(self, run_id: str, metric: Metric) -> None:
        """Log one metric (see :meth:`log_batch`)."""
        self.log_batch(run_id, [metric], [], [])

    def log_param(self, run_id: str, param: Param) -> None:
        """Log one param: a run property (see :meth:`log_batch`)."""
        self.log_batch(run_id, [], [param], [])

    def set_tag(self, run_id: str, tag: RunTag) -> None:
        """Set one tag (see :meth:`log_batch`)."""
        self.log_batch(run_id, [], [], [tag])

    def delete_tag(self, run_id: str, key: str) -> None:
        """Remove tag ``key`` from the run.

        :raises MlflowException: RESOURCE_DOES_NOT_EXIST, the run has no such tag.
        """
        row = self._row(run_id)
        if not self.ws.catalog.one(
            "SELECT 1 FROM run_tags WHERE run_seq = ? AND key = ?", (row["seq"], key)
        ):
            raise MlflowException(
                f"No tag with name: {key} in run with id {run_id}",
                databricks_pb2.RESOURCE_DOES_NOT_EXIST,
            )
        with mlflow_errors(), self.ws.catalog.write() as conn:
            conn.execute("DELETE FROM run_tags WHERE run_seq = ? AND key = ?", (row["seq"], key))

    def log_batch(
        self,
        run_id: str,
        metrics: list[Metric],
        params: list[Param],
        tags: list[RunTag],
        *,
        flush: bool = False,
    ) -> None:
        """Log metrics, params and tags of one run. Everything is checked before anything is
        written: a bad metric value, an empty key, or a param already logged with another
        value changes nothing. ``flush``: the metrics are written before this returns (as
        :meth:`flush` of the run, without looking the run up again).

        :raises MlflowException: INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST.
        """
        row = self._target(run_id)
        seq = row["seq"]
        for m in metrics:
            check_metric(m)
        for kind, items in (("param", params), ("tag", tags)):
            for item in items:
                _check_key(kind, item.key)
        for t in tags:
            if t.key == entities.PARENT_TAG and (t.value or "") != (row["parent_id"] or ""):
                raise _invalid(
                    f"run {row['id']}'s parent is set when it is created "
                    f"({row['parent_id'] or 'none'}); it cannot become {t.value!r}"
                )
        new_params = self._new_params(seq, run_id, params)
        with mlflow_errors():
            if new_params or tags:  # params and tags in one transaction: all or nothing
                with self.ws.catalog.write() as conn:
                    conn.executemany(
                        "INSERT INTO run_properties VALUES (?, ?, ?)",
                        [(seq, k, v) for k, v in new_params.items()],
                    )
                    self._set_tags(conn, row, tags)
            if metrics:
                writer = self._writer(seq)
                for m in metrics:
                    v = float(m.value)
                    writer.add_scalar(m.key, v, int(m.step), m.timestamp / 1000)
                if flush:
                    writer.flush()

    def _new_params(self, seq: int, run_id: str, params: list[Param]) -> dict[str, str]:
        """The params not logged yet; the same value again is fine, another one is refused (as
        MLflow's params, mlws's properties never change)."""
        if not params:
            return {}
        wanted: dict[str, str] = {}
        for p in params:
            value = "" if p.value is None else str(p.value)
            if wanted.get(p.key, value) != value:
                raise _invalid(f"param {p.key!r} is given twice with different values")
            wanted[p.key] = value
        marks = ",".join("?" * len(wanted))
        have = {
            r[0]: r[1]
            for r in self.ws.catalog.query(
                f"SELECT key, value FROM run_properties WHERE run_seq = ? AND key IN ({marks})",
                [seq, *wanted],
            )
        }
        for k, v in wanted.items():
            if k in have and have[k] != v:
                raise _invalid(
                    f"Changing param values is not allowed. Param with key={k!r} was already "
                    f"logged with value={have[k]!r} for run ID={run_id!r}. Attempted logging "
                    f"new value {v!r}."
                )
        return {k: v for k, v in wanted.items() if k not in have}

    def _set_tags(self, conn: sqlite3.Connection, row: sqlite3.Row, tags: list[RunTag]) -> None:
        plain = []
        for t in tags:
            value = "" if t.value is None else str(t.value)
            if t.key == entities.RUN_NAME_TAG:
                conn.execute("UPDATE runs SET display_name = ? WHERE id = ?", (value, row["id"]))
            elif t.key != entities.PARENT_TAG:  # checked by log_batch: it names the parent
                plain.append((row["seq"], t.key, value))
        conn.executemany("INSERT OR REPLACE INTO run_tags VALUES (?, ?, ?)", plain)

    def _writer(self, seq: int) -> MetricWriter:
        with self._lock:
            w = self._writers.get(seq)
            if w is None:
                w = self._writers[seq] = MetricWriter(self.ws.catalog, seq)
            return w

    def get_metric_history(
        self,
        run_id: str,
        metric_key: str,
        max_results: int | None = None,
        page_token: str | None = None,
    ) -> PagedList:
        """Every value of scalar metric ``metric_key`` of the run, by step."""
        from mlflow.entities import Metric

        from ..metrics import decode

        row = self._row(run_id)
        self._flush(row["seq"])
        out = []
        for step, value, data, t in self.ws.catalog.query(
            "SELECT step, value, data, time FROM metrics WHERE run_seq = ? AND name = ?"
            " AND kind = 'scalar' ORDER BY step",
            (row["seq"], metric_key),
        ):
            v = decode(value, data)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out.append(Metric(metric_key, float(v), int(t * 1000), int(step), run_id=run_id))
        if max_results is None:
            return PagedList(out, None)
        page, token = SearchUtils.paginate(out, page_token, max_results)
        return PagedList(page, token)

    # -- search ---------------------------------------------------------------------------------
    def _search_runs(
        self,
        experiment_ids: list[str],
        filter_string: str | None,
        run_view_type: int,
        max_results: int,
        order_by: list[str] | None,
        page_token: str | None,
    ) -> tuple[list[Run], str | None]:
        """Runs of the experiments (children included) matching MLflow's filter grammar, in
        its order and pages (:func:`mlws.mlflow.search.search`)."""
        records, token = self.search_records(
            experiment_ids, filter_string, run_view_type, max_results, order_by, page_token
        )
        with gc_paused():
            return [search.to_run(r) for r in records], token

    def search_records(
        self,
        experiment_ids: list[str],
        filter_string: str | None,
        run_view_type: int,
        max_results: int,
        order_by: list[str] | None,
        page_token: Any,
    ) -> tuple[list[search.RunRecord], Any]:
        """:meth:`search_runs`' page as plain records (``mlws serve`` answers them as JSON
        without making MLflow's entities).

        :raises MlflowException: INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST.
        """
        if max_results > SEARCH_MAX_RESULTS_THRESHOLD:
            raise _invalid(
                "Invalid value for request parameter max_results. It must be at most "
                f"{SEARCH_MAX_RESULTS_THRESHOLD}, but got value {max_results}"
            )
        search.parse_filter(filter_string)  # a bad filter is refused whatever the view
        if run_view_type == ViewType.DELETED_ONLY:
            return [], None  # deleted mlws runs are gone
        self._flush()
        exps = {}
        for e in experiment_ids:
            row = entities.experiment_row(self.ws, e)
            exps[row["name"]] = entities.experiment_id(row["name"], row["id"])
        with mlflow_errors(), gc_paused():
            return search.search(self.ws, exps, filter_string, max_results, order_by, page_token)

    # -- inputs, outputs, logged models -----------------------------------------------------------
    def log_inputs(
        self,
        run_id: str,
        datasets: list[Any] | None = None,
        models: list[Any] | None = None,
    ) -> None:
        """Accepted and not recorded: MLflow's dataset inputs have no mlws counterpart yet (mlws
        datasets are consumed through run configurations)."""
        self._row(run_id)

    def log_outputs(self, run_id: str, models: list[Any]) -> None:
        """Record logged models as outputs of the run (``run.outputs.model_outputs``)."""
        self._row(run_id)
        for m in models:
            logged_models.set_output(self.ws, m.model_id, run_id, m.step)

    def create_logged_model(
        self,
        experiment_id: str = "0",  # MLflow's default experiment (entities.DEFAULT_EXPERIMENT_ID)
        name: str | None = None,
        source_run_id: str | None = None,
        tags: list[Any] | None = None,
        params: list[Any] | None = None,
        model_type: str | None = None,
    ) -> Any:
        """A new logged model of run ``source_run_id``; its artifacts are the run's files under
        ``<name>/`` (see :mod:`mlws.mlflow.logged_models`)."""
        entities.experiment_row(self.ws, experiment_id)
        if source_run_id is not None:
            self._row(source_run_id)
        return logged_models.create(
            self.ws, experiment_id, name, source_run_id, tags, params, model_type
        )

    def get_logged_model(self, model_id: str, allow_deleted: bool = False) -> Any:
        """The logged model ``model_id``.

        :raises MlflowException: RESOURCE_DOES_NOT_EXIST.
        """
        return logged_models.get(self.ws, model_id)

    def finalize_logged_model(self, model_id: str, status: Any) -> Any:
        """Set the logged model's status (``READY``, ``FAILED``)."""
        return logged_models.update(self.ws, model_id, status=status)

    def set_logged_model_tags(self, model_id: str, tags: list[Any]) -> None:
        """Set tags on the logged model."""
        logged_models.update(self.ws, model_id, tags={t.key: t.value for t in tags})

    def delete_logged_model_tag(self, model_id: str, key: str) -> None:
        """Remove a tag of the logged model."""
        logged_models.update(self.ws, model_id, drop_tag=key)

    def search_logged_models(
        self,
        experiment_ids: list[str],
        filter_string: str | None = None,
        datasets: list[Any] | None = None,
        max_results: int | None = None,
        order_by: list[Any] | None = None,
        page_token: str | None = None,
    ) -> PagedList:
        """Logged models of the experiments' runs; ``filter_string`` by MLflow's own rules."""
        return logged_models.search(
            self.ws,
            [entities.experiment_row(self.ws, e) for e in experiment_ids],
            filter_string,
            max_results,
            page_token,
        )

    def link_traces_to_run(self, trace_ids: list[str], run_id: str) -> None:
        """Refused: mlws records no traces."""
        raise MlflowException("mlws records no traces", databricks_pb2.NOT_IMPLEMENTED)
