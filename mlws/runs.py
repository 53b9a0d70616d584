"""Runs: the ``Run`` object — status, tags, properties, metrics and children.

Creating rows and moving status lives in :mod:`mlws.lifecycle`; its names are re-exported here.
A run's files and logs are in :mod:`mlws.runfiles` (``Run``'s base class).
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import metrics as _metrics
from .errors import (
    ActivityFailedException,
    ProcessNotOurs,
    PropertyConflict,
    RunNotFound,
    RunStateError,
    UserErrorException,
)
from .lifecycle import (  # noqa: F401 - re-exported for callers of mlws.runs
    ACTIVE,
    INTERACTIVE,
    SCRIPT_RUN,
    SUBMITTED,
    TERMINAL,
    foreign_process_message,
    hostname,
    insert_run,
    iso_utc,
    key_values,
    new_run_id,
    owned_process,
    process_alive,
    process_start_time,
    reconcile,
    set_status,
)
from .rundefinition import RunDefinition
from .runfiles import RunFiles
from .runfiles import add_run_files as add_run_files  # re-exported: the supervisor records files
from .runmetrics import RunMetrics

if TYPE_CHECKING:
    import sqlite3

    from .experiments import Experiment
    from .workspace import Workspace


#: The class of a run by its type, where it is not ``Run`` (imported when such a run is read).
RUN_CLASSES = {
    "hyperdrive": "mlws.hyperdrive.run:HyperDriveRun",
    "azureml.PipelineRun": "mlws.pipelines.run:PipelineRun",
    "azureml.StepRun": "mlws.pipelines.run:StepRun",
    "azureml.ReusedStepRun": "mlws.pipelines.run:StepRun",
}


#: How often :meth:`Run.wait_for_completion` reads the status through a check of the run's
#: processes (a dead supervisor found); between, the catalog's status column is read.
RECHECK_S = 0.5


class Run(RunFiles, RunMetrics, RunDefinition):
    """A run of an experiment. Get one from ``exp.submit``, ``exp.start_logging``,
    ``Run.get_context()``, ``ws.get_run(id)`` or ``Run(experiment, run_id)``.
    """

    _context: Run | None = None

    def __init__(
        self, experiment: Experiment, run_id: str, _row: sqlite3.Row | None = None
    ) -> None:
        self.experiment = experiment
        self.workspace: Workspace = experiment.workspace
        self.id = run_id
        if _row is None and self.workspace.remote is not None:
            from .remote.runs import get_row

            _row = get_row(self.workspace, run_id, experiment.name)
        if _row is None:
            _row = self.workspace.catalog.one(
                "SELECT * FROM runs WHERE id = ? AND experiment = ?", (run_id, experiment.name)
            )
            if _row is None:
                raise RunNotFound(f"no run {run_id!r} in experiment {experiment.name!r}")
        self._row = _row
        self.seq: int = _row["seq"]
        self._writer: _metrics.MetricWriter | None = None
        self._in_context = False

    @classmethod
    def from_row(cls, ws: Workspace, row: sqlite3.Row) -> Run:
        """The run of a ``runs`` catalog row (``SELECT * FROM runs ...``), as the class its type
        names (a sweep's parent a ``HyperDriveRun``, a pipeline's a ``PipelineRun``, ...)."""
        from .experiments import Experiment

        where = RUN_CLASSES.get(row["type"]) if cls is Run else None
        if where is not None:  # a sweep's parent is v1's HyperDriveRun, a pipeline's PipelineRun
            import importlib

            module, _, name = where.partition(":")
            cls = getattr(importlib.import_module(module), name)
        return cls(Experiment(ws, row["experiment"], _create=False), row["id"], _row=row)

    # -- identity ---------------------------------------------------------------------------
    @property
    def number(self) -> int:
        """The run's number within its experiment (1, 2, ...), as v1's ``run.number``."""
        if self._row["number"] is None and self.workspace.remote is not None:
            self._refresh()  # a run the server has not numbered yet (created with its next send)
        return int(self._row["number"])

    @property
    def type(self) -> str:
        """The run's type, as v1: ``azureml.scriptrun`` for a submitted script, ``interactive`` for
        one started with ``start_logging``; a child run has its parent's."""
        return str(self._row["type"])

    @property
    def display_name(self) -> str:
        """The run's display name (its id when none was given); setting it writes it to the catalog.
        ``run.name`` is the same."""
        return self._row["display_name"] or self.id

    @display_name.setter
    def display_name(self, value: str) -> None:
        if self.workspace.remote is not None:
            from .remote.runs import RemoteRow, row_of, send

            answer = send(self, "PATCH", body={"displayName": value})  # None: spooled
            self._row = row_of(answer) if answer else RemoteRow(self._row, display_name=value)
            return
        with self.workspace.catalog.write() as conn:
            conn.execute("UPDATE runs SET display_name = ? WHERE id = ?", (value, self.id))
        self._refresh()

    name = display_name

    @property
    def description(self) -> str | None:
        """The description given at submission, or None."""
        return self._row["description"]

    @property
    def parent(self) -> Run | None:
        """The parent run of a child run, or None.

        :raises RunNotFound: the parent was deleted.
        """
        pid = self._row["parent_id"]
        return None if pid is None else self.workspace.get_run(pid)

    @property
    def status(self) -> str:
        """The run's status now (see :meth:`get_status`)."""
        return self.get_status()

    def __repr__(self) -> str:
        return f"Run(experiment={self.experiment.name!r}, id={self.id!r}, status={self._row['status']!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Run)
            and other.id == self.id
            and other.workspace.path == self.workspace.path
        )

    def __hash__(self) -> int:
        return hash(self.id)

    def _refresh(self) -> sqlite3.Row:
        if self.workspace.remote is not None:
            from .remote.runs import get_row

            self._row = get_row(self.workspace, self.id)  # type: ignore[assignment]
            return self._row
        row = self.workspace.catalog.one("SELECT * FROM runs WHERE id = ?", (self.id,))
        if row is None:
            raise RunNotFound(f"run {self.id!r} no longer exists")
        self._row = reconcile(self.workspace, row)
        return self._row

    # -- context ----------------------------------------------------------------------------
    @classmethod
    def get_context(cls, allow_offline: bool = True, **_kwargs: Any) -> Run:
        """The current run inside a submitted run; outside one, an offline run that records
        (experiment ``offline`` of the discovered workspace) and completes at interpreter exit."""
        if cls._context is not None:
            return cls._context
        run_id = os.environ.get("MLWS_RUN_ID") or os.environ.get("AZUREML_RUN_ID")
        ws_path = os.environ.get("MLWS_WORKSPACE")
        from .workspace import Workspace

        if run_id and ws_path:
            ws = Workspace(ws_path)
            run = ws.get_run(run_id)
            run._in_context = True
            cls._context = run
            return run
        if not allow_offline:
            raise RunStateError(
                "not inside a submitted run (MLWS_RUN_ID is not set) and allow_offline=False"
            )
        from .experiments import Experiment

        ws = Workspace.from_config()
        run = Experiment(ws, "offline").start_logging(
            display_name=Path(sys.argv[0] or "python").name
        )
        _finish_at_exit(run)
        cls._context = run
        return run

    # -- status -----------------------------------------------------------------------------
    def get_status(self) -> str:
        """The run's status now (``Queued``, ``Running``, ``Completed``, ``Failed``, ...), re-read
        and reconciled with its supervising process: a run whose process is gone is ``Failed``, not
        left ``Running``.

        :raises RunNotFound: the run was deleted.
        """
        return str(self._refresh()["status"])

    def get_details(self) -> dict[str, Any]:
        """v1-shaped details: runId, status, times, properties, runDefinition, logFiles, error."""
        row = self._refresh()
        if self.workspace.remote is not None:
            return dict(row["details"])  # the server's, made by this same method there
        details: dict[str, Any] = {
            "runId": self.id,
            "runUuid": self.id,
            "parentRunId": row["parent_id"],
            "rootRunId": row["root_id"],
            "experimentName": row["experiment"],
            "number": row["number"],
            "displayName": self.display_name,
            "runType": row["type"],
            "target": row["target"] or ("local" if row["type"] == SCRIPT_RUN else None),
            "status": row["status"],
            "createdTimeUtc": iso_utc(row["created"]),
            "startTimeUtc": iso_utc(row["start_time"]),
            "endTimeUtc": iso_utc(row["end_time"]),
            "properties": self.get_properties(),
            "tags": self.get_tags(),
            "runDefinition": json.loads(row["definition"]) if row["definition"] else {},
            "snapshotId": row["snapshot"],
            "logFiles": {p: p for p in self._file_names() if p.startswith("logs/")},
            "submittedBy": row["submitter_user"],
            "host": row["host"],
        }
        from .rundata import lineage_of_run

        details.update(lineage_of_run(self.experiment.workspace, row["seq"]))
        if row["error"]:
            details["error"] = {"error": json.loads(row["error"])}
        return details

    @property
    def input_datasets(self) -> dict[str, Any]:
        """The run's named inputs. In the run's own script: the path of each mounted or
        downloaded input, the dataset of each direct one; elsewhere, the datasets."""
        from .rundata import run_data

        return run_data(self, "input")

    @property
    def output_datasets(self) -> dict[str, Any]:
        """The run's outputs. In the run's own script: the folder to write each to; once the
        run has completed, the dataset each became."""
        from .rundata import run_data

        return run_data(self, "output")

    def get_details_with_logs(self) -> dict[str, Any]:
        """As :meth:`get_details`, with the text of each log file instead of its name (v1's
        ``get_details_with_logs``)."""
        details = self.get_details()
        details["logFiles"] = {p: self._read_file_text(p) for p in details["logFiles"]}
        return details

    def start(self) -> None:
        """Mark the run ``Running`` (v1's ``run.start()``, for runs made with ``start_logging``); a
        run that has ended already is left as it is."""
        set_status(self.workspace, self.id, "Running")
        self._refresh()

    def complete(self, _set_status: bool = True) -> None:
        """Flush metrics and mark the run Completed. Inside a submitted run it only flushes:
        the supervising process sets the outcome once outputs are collected."""
        self._close_writer(self._sends_own_end(_set_status))
        if self._in_context and self._row["type"] in SUBMITTED:
            return
        if self.workspace.remote is not None:
            from .remote.runs import finish

            return finish(self, "complete") if _set_status else None
        if _set_status:
            set_status(self.workspace, self.id, "Completed")
        self._refresh()

    def fail(
        self, error_details: Any = None, error_code: str | None = None, _set_status: bool = True
    ) -> None:
        """Flush metrics and mark the run Failed, recording ``error_details``."""
        self._close_writer(self._sends_own_end(_set_status))
        err = {
            "code": error_code or "UserError",
            "message": str(error_details or "the run called fail()"),
        }
        if self._in_context and self._row["type"] in SUBMITTED:
            if self.workspace.remote is not None:  # its supervisor, on this machine, ends it
                from .remote.supervisor import request_failure

                return request_failure(self, err)
            with self.workspace.catalog.write() as conn:
                conn.execute(
                    "UPDATE runs SET requested_status = 'Failed', error = ? WHERE id = ?",
                    (json.dumps(err), self.id),
                )
            return
        if self.workspace.remote is not None:
            from .remote.runs import finish

            return finish(self, "fail", err) if _set_status else None
        if _set_status:
            set_status(self.workspace, self.id, "Failed", error=err)
        self._refresh()

    def cancel(self) -> None:
        """Cancel the run: a submitted run's process group gets SIGTERM, then SIGKILL after a
        grace period (by its supervising process); an interactive run is marked Canceled."""
        if self.workspace.remote is not None:
            from .remote.submit import cancel

            cancel(self)
            self._refresh()
            return
        raw = self.workspace.catalog.one("SELECT * FROM runs WHERE id = ?", (self.id,))
        foreign = (
            raw is not None
            and raw["status"] not in TERMINAL
            and raw["host"] == hostname()
            and process_alive(raw["supervisor_pid"], raw["supervisor_start"])
            and not owned_process(self.workspace, raw["supervisor_pid"], raw["supervisor_start"])
        )
        row = self._refresh()  # reconciled: a copy's run whose process is foreign is Failed here
        if foreign:
            raise ProcessNotOurs(
                f"cannot cancel run {self.id}: "
                + foreign_process_message(
                    self.workspace, "its supervising process", raw["supervisor_pid"]
                )
            )
        if row["status"] in TERMINAL:
            return
        if row["supervisor_pid"]:
            set_status(self.workspace, self.id, "CancelRequested")
            if row["host"] == hostname() and owned_process(
                self.workspace, row["pid"], row["pid_start"]
            ):
                import signal

                try:
                    os.killpg(row["pid"], signal.SIGTERM)
                except OSError:
                    pass
        else:
            self._close_writer()
            set_status(self.workspace, self.id, "Canceled")
        self._refresh()

    def delete(self) -> list[str]:
        """Delete this run and its children, with their tags, properties, metrics, files and
        dataset lineage (blobs go at the next ``gc``); returns the ids deleted. Not in v1:
        the way to remove a run whose records are broken, after which fsck and gc work.

        :raises RunStateError: the run or a child has not ended, or a model was registered
            from one of them.
        """
        from .lifecycle import delete_run

        return delete_run(self.workspace, self.id)

    def wait_for_completion(
        self,
        show_output: bool = False,
        wait_post_processing: bool = False,
        raise_on_error: bool = True,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Block until the run is terminal; stream its driver log when ``show_output``.

        :raises ActivityFailedException: the run Failed and ``raise_on_error``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if show_output:
            for chunk in self.iter_log(follow=True, timeout=timeout):
                sys.stdout.write(chunk)
                sys.stdout.flush()
        # Poll every 2 ms for the first second, when a short run's end is near (a backoff
        # from the start was ~20 ms late on a 150 ms run), then back off a little. A
        # status read that checks the run's processes live (get_status: ~0.2 ms) is made every
        # RECHECK_S; in between, the bare status column (~0.02 ms): a driver waiting on a
        # sweep of short trials took ~1 ms of CPU per trial from the 2 CPUs they ran on.
        delay = 0.002
        fine_until = time.monotonic() + 1.0
        catalog = self.workspace.catalog if self.workspace.remote is None else None
        while self.get_status() not in TERMINAL:
            recheck = time.monotonic() + RECHECK_S
            while True:
                now = time.monotonic()
                if deadline is not None and now > deadline:
                    raise TimeoutError(
                        f"run {self.id} is still {self._row['status']} after {timeout} s"
                    )
                time.sleep(delay)
                if now > fine_until:
                    # A bare status read costs ~0.02 ms: every 10 ms is 0.2% of a CPU, and a
                    # run seen ended within 5 ms, not 25 (a 2 s sweep's last wait).
                    delay = min(delay * 1.25, 0.01 if catalog is not None else 0.05)
                if catalog is None:
                    delay = 0.2  # a request to the server each time: not 500 a second
                    break
                if (
                    now >= recheck
                    or catalog.scalar("SELECT status FROM runs WHERE id = ?", (self.id,))
                    in TERMINAL
                ):
                    break
        details = self.get_details()
        if show_output:
            print(f"\nRun {self.id}: {details['status']}")
        if raise_on_error and details["status"] == "Failed":
            msg = details.get("error", {}).get("error", {}).get("message", "no reason recorded")
            raise ActivityFailedException(f"run {self.id} failed: {msg}")
        return details

    # -- tags and properties ------------------------------------------------------------------
    def tag(self, key: str, value: Any = None) -> None:
        """Set one tag. :raises InvalidName: ``key`` is empty."""
        self.set_tags({key: value})

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set tags (replacing values). :raises InvalidName: a key is empty (nothing is set)."""
        values = key_values(tags, "tag")
        if self.workspace.remote is not None:
            from .remote.runs import send

            send(self, "PATCH", "tags", body={"tags": values})
            return
        with self.workspace.catalog.write() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO run_tags VALUES (?, ?, ?)",
                [(self.seq, k, v) for k, v in values.items()],
            )

    def remove_tags(self, tags: list[str] | str) -> None:
        """Remove tags by key (one key or several); keys not set are ignored."""
        keys = [tags] if isinstance(tags, str) else list(tags)
        if self.workspace.remote is not None:
            from .remote.runs import send

            if keys:
                send(self, "POST", "tags", "remove", body={"keys": keys})
            return
        with self.workspace.catalog.write() as conn:
            conn.executemany(
                "DELETE FROM run_tags WHERE run_seq = ? AND key = ?", [(self.seq, k) for k in keys]
            )

    def get_tags(self) -> dict[str, str | None]:
        """The run's tags, by key."""
        if self.workspace.remote is not None:
            from .remote.runs import read

            return dict(read(self, "tags")["tags"])
        rows = self.workspace.catalog.query(
            "SELECT key, value FROM run_tags WHERE run_seq = ? ORDER BY key", (self.seq,)
        )
        return {r[0]: r[1] for r in rows}

    @property
    def tags(self) -> dict[str, str | None]:
        """The run's tags, by key (as :meth:`get_tags`)."""
        return self.get_tags()

    def add_properties(self, properties: dict[str, Any]) -> None:
        """Add properties. They are add-only: re-adding a key with the same value is a no-op, with
        another value raises :class:`PropertyConflict` and changes nothing."""
        new = key_values(properties, "property")
        if self.workspace.remote is not None:
            from .remote.runs import add_properties

            add_properties(self, new)
            return
        with self.workspace.catalog.write() as conn:
            for k, v in new.items():
                old = conn.execute(
                    "SELECT value FROM run_properties WHERE run_seq = ? AND key = ?", (self.seq, k)
                ).fetchone()
                if old is not None and old[0] != v:
                    raise PropertyConflict(
                        f"property {k!r} of run {self.id} is already {old[0]!r}; properties are add-only, "
                        "use a tag for values that change"
                    )
            conn.executemany(
                "INSERT OR IGNORE INTO run_properties VALUES (?, ?, ?)",
                [(self.seq, k, v) for k, v in new.items()],
            )

    def get_properties(self) -> dict[str, str | None]:
        """The run's properties, by key."""
        if self.workspace.remote is not None:
            from .remote.runs import read

            return dict(read(self, "properties")["properties"])
        rows = self.workspace.catalog.query(
            "SELECT key, value FROM run_properties WHERE run_seq = ? ORDER BY key", (self.seq,)
        )
        return {r[0]: r[1] for r in rows}

    @property
    def properties(self) -> dict[str, str | None]:
        """The run's properties, by key (as :meth:`get_properties`)."""
        return self.get_properties()

    # -- secrets ----------------------------------------------------------------------------
    def get_secret(self, name: str) -> str:
        """A secret from the workspace key vault (v1: ``run.get_secret``)."""
        return self.workspace.get_default_keyvault().get_secret(name)

    def get_secrets(self, secrets: list[str]) -> dict[str, str]:
        """Several secrets from the workspace key vault (v1: ``run.get_secrets``); inside a
        submitted run they are asked of its supervisor.

        :raises SecretNotFound: one of them is not set.
        """
        return self.workspace.get_default_keyvault().get_secrets(secrets)

    # -- children ---------------------------------------------------------------------------
    def child_run(
        self, name: str | None = None, run_id: str | None = None, outputs: str | None = None
    ) -> Run:
        """Create and start a child run (Running), recorded against this process."""
        if self.workspace.remote is not None:
            from .remote.runs import create_run

            row = create_run(self.experiment, display_name=name, parent_id=self.id, run_id=run_id)
            return Run(self.experiment, row["id"], _row=row)
        row = insert_run(
            self.workspace,
            self.experiment.name,
            run_type=INTERACTIVE if self.type == INTERACTIVE else self.type,
            status="Running",
            parent_id=self.id,
            run_id=run_id,
            display_name=name,
            fields={"pid": os.getpid(), "pid_start": process_start_time(os.getpid())},
        )
        return Run(self.experiment, row["id"], _row=row)

    def create_children(
        self,
        count: int | None = None,
        tag_key: str | None = None,
        tag_values: list[Any] | None = None,
    ) -> list[Run]:
        """Create ``count`` children, or one per ``tag_values`` item tagged ``tag_key=value``."""
        if tag_values is not None:
            if tag_key is None:
                raise UserErrorException("create_children: tag_values needs tag_key")
            children = []
            for v in tag_values:
                child = self.child_run()
                child.tag(tag_key, v)
                children.append(child)
            return children
        if count is None or count < 0:
            raise UserErrorException("create_children needs count >= 0 or tag_key + tag_values")
        return [self.child_run() for _ in range(count)]

    def get_children(
        self,
        recursive: bool = False,
        tags: Any = None,
        properties: Any = None,
        type: str | None = None,
        status: str | None = None,
        _rehydrate_runs: bool = True,
    ) -> list[Run]:
        """Children of this run (all descendants with ``recursive``), oldest first."""
        from .experiments import filter_clauses

        if self.workspace.remote is not None:
            from .remote.runs import children

            found = children(self, recursive, tags, properties, type, status)
            return [Run(self.experiment, r["id"], _row=r) for r in found]
        where, params = filter_clauses(
            tags=tags, properties=properties, run_type=type, status=status
        )
        if recursive:
            sql = (
                "WITH RECURSIVE tree(id) AS (SELECT id FROM runs WHERE parent_id = ?"
                " UNION ALL SELECT r.id FROM runs r JOIN tree t ON r.parent_id = t.id)"
                " SELECT r.* FROM runs r JOIN tree USING (id)"
            )
        else:
            sql = "SELECT r.* FROM runs r WHERE r.parent_id = ?"
        if where:
            sql += (" AND " if not recursive else " WHERE ") + " AND ".join(where)
        sql += " ORDER BY r.created, r.number"
        rows = self.workspace.catalog.query(sql, [self.id, *params])
        # Descendants share this run's experiment: no need to look it up again per run.
        return [Run(self.experiment, r["id"], _row=reconcile(self.workspace, r)) for r in rows]

    # -- models -----------------------------------------------------------------------------
    def register_model(
        self,
        model_name: str,
        model_path: str = "outputs/model.pkl",
        tags: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None,
        model_framework: str | None = None,
        model_framework_version: str | None = None,
        description: str | None = None,
        datasets: list[Any] | None = None,
        **_kwargs: Any,
    ) -> Any:
        """Register one of the run's files or folders (``./outputs/...`` works too) as the
        next version of ``model_name``; the model records this run as its origin."""
        from .models import register_from_run

        return register_from_run(
            self,
            model_name,
            model_path,
            tags=tags,
            properties=properties,
            description=description,
            datasets=datasets,
            model_framework=model_framework,
            model_framework_version=model_framework_version,
        )

    # -- context manager (interactive runs) ---------------------------------------------------
    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.complete()
        else:
            self.fail(error_details=f"{exc_type.__name__}: {exc}", error_code="UserError")


def _finish_at_exit(run: Run) -> None:
    """An offline run completes when the interpreter exits, or fails on an uncaught exception."""
    state: dict[str, Any] = {}
    previous = sys.excepthook

    def hook(exc_type: Any, exc: BaseException, tb: Any) -> None:
        state["error"] = f"{exc_type.__name__}: {exc}"
        previous(exc_type, exc, tb)

    sys.excepthook = hook

    def finish() -> None:
        try:
            if run.get_status() in TERMINAL:
                return
            if "error" in state:
                run.fail(error_details=state["error"])
            else:
                run.complete()
        except Exception:
            pass

    atexit.register(finish)
