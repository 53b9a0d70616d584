"""The sweep controller: the detached process that drives one HyperDrive sweep to its end.

``config.submit_sweep`` records the parent run (type ``hyperdrive``, ``NotStarted``) and starts
``python -m mlws.hyperdrive.controller <workspace> <run id>`` detached (a new session), so the
sweep survives its submitter. The controller:

1. **Claims** the run: records its pid and start time as the run's supervising process (as a
   run's supervisor does) and moves it to ``Running``. From then on the parent's status is
   reconciled against this process (``lifecycle.reconcile``): if it dies (``kill -9``), the next
   reader calls :func:`abandon`, which cancels the open trials and ends the sweep ``Failed``
   with the reason, so a sweep is never left ``Running``. SIGTERM/SIGHUP do the same at once.
2. **Runs trials**: draws hyperparameters (:class:`~mlws.hyperdrive.sampling.Sampler`) and
   submits each set as a child run through the public ``submit_script`` (any compute target),
   the script's arguments followed by ``--name value``; keeps ``maxConcurrentRuns`` open. On a
   ``local`` target the trials are recorded unstarted and run by trial workers
   (:mod:`mlws.compute.trials`), one per trial open at once, which this process keeps alive.
3. **Watches** the trials' primary metric as they log it and cancels those the policy judges
   poor (each gets the property ``azureml.earlyTermination`` with the reason); stops launching
   at ``maxTotalRuns``, an exhausted grid, or ``maxDurationMinutes`` (then cancels what runs).
4. **Records the best** on the parent as v1's service does: each time a trial ends with a
   primary metric value better than every earlier one, a row of the table metric
   ``best_child_by_primary_metric`` (``metric_name``, ``timestamp``, ``run_id``,
   ``metric_value``, ``final``: False); when the sweep ends, the best once more with ``final``
   True. ``HyperDriveRun.get_best_run_by_primary_metric`` reads it back.
5. **Ends** the sweep once no trial is open: ``Completed``; ``Failed`` when every trial failed
   or the first trial to complete never logged the primary metric; ``Canceled`` when the parent
   was canceled (its trials are canceled first). Its log is stored as the run file
   ``azureml-logs/hyperdrive.txt``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import TYPE_CHECKING, Any

from .. import controllers
from ..lifecycle import TERMINAL

if TYPE_CHECKING:
    from ..workspace import Workspace

LOG_FILE = "azureml-logs/hyperdrive.txt"
#: The parent's table metric naming its best trial so far (v1's name and columns).
BEST_CHILD = "best_child_by_primary_metric"
#: The input name of a resumed trial's checkpoint folder (``$AZUREML_DATAREFERENCE_<name>``), v1's.
RESUME_INPUT = "MODEL_LOCATION"
#: The prefix of the tags v1's service writes on a sweep's parent: its configuration
#: (``_aml_system_generator_config``...) and each trial's hyperparameters
#: (``_aml_system_<trial id>``, a JSON object).
SYSTEM_TAG = "_aml_system_"
#: How often the controller checks that its open trials' supervising processes live.
RECONCILE_S = 2.0
#: How long a sweep's controller waits for the workspace's launcher before its first local
#: trial (the controller started cold has just started one; compute.launcher.wait_ready).
LAUNCHER_WAIT_S = 2.0
#: Trials submitted beyond ``max_concurrent_runs`` on a ``local`` target: each waits until
#: fewer than ``max_concurrent_runs`` older trials are open, its script made ready to start
#: meanwhile (``compute.local``). Two: on a busy machine one ahead was often not ready yet
#: when a slot freed (a trial of a short script lasts about as long as submitting one).
QUEUE_AHEAD = 2


def outputs_manifest(ws: Workspace, run_seq: int, folder: str = "outputs") -> str:
    """The manifest (stored) of the run files a run kept under ``folder/``, paths relative to
    it: what a later run gets as a read-only input folder."""
    from ..manifests import Entry

    prefix = f"{folder.strip('/')}/"
    rows = ws.catalog.query(
        "SELECT path, blob, size, mode FROM run_files WHERE run_seq = ? AND substr(path, 1, ?) = ?",
        (run_seq, len(prefix), prefix),
    )
    return ws.blobs.put_manifest(
        Entry(r["path"][len(prefix) :], r["blob"], r["size"], r["mode"]) for r in rows
    )


def strip_duplicate_arguments(arguments: list[str], names: set[str]) -> list[str]:
    """The script's arguments without those the parameter space sets (v1 drops them: the
    sampled value wins): ``--lr 0.1`` and ``--lr=0.1`` for a parameter ``lr`` or ``--lr``."""
    out: list[str] = []
    skip_value = False
    for a in arguments:
        if skip_value:
            skip_value = False
            if not (isinstance(a, str) and a.startswith("-")):
                continue
        if isinstance(a, str) and a.startswith("-"):
            key, eq, _ = a.partition("=")
            if key.lstrip("-") in names:
                skip_value = not eq
                continue
        out.append(a)
    return out


def trial_arguments(arguments: list[str], params: dict[str, Any]) -> list[str]:
    """The arguments of a trial: the script's own, then ``--name value`` per hyperparameter."""
    names = {n.lstrip("-") for n in params}
    out = strip_duplicate_arguments(list(arguments), names)
    for name, value in params.items():
        out += [name if name.startswith("-") else f"--{name}", str(value)]
    return out


def encode_argument(a: Any) -> Any:
    """A trial's argument as the sweep's definition records it: data objects (a pipeline's
    ``PipelineData`` in and out, a dataset input) as small dicts, anything else as text.

    :raises SweepConfigError: a data object trials cannot take (an output dataset...)."""
    from ..datasets import AbstractDataset
    from ..errors import SweepConfigError
    from ..rundata import (
        DatasetConsumptionConfig,
        RunFilesOutput,
        StoredInput,
        dataset_spec,
        default_input_name,
    )

    if isinstance(a, AbstractDataset):  # as a run takes it: a direct input of its name
        a = a.as_named_input(default_input_name(a))
    if isinstance(a, StoredInput):
        return {"storedInput": a.name, "manifest": a.manifest, "tabular": a.tabular, "file": a.file}
    if isinstance(a, RunFilesOutput):
        return {"runFilesOutput": a.name}
    if isinstance(a, DatasetConsumptionConfig):
        return {
            "datasetInput": a.name,
            "mode": a.mode,
            "pathOnCompute": a.path_on_compute,
            "dataset": dataset_spec(a.dataset),
        }
    if isinstance(a, (str, int, float)):
        return str(a)
    raise SweepConfigError(
        f"a sweep's trials take datasets (as_named_input, as_mount, as_download) and a"
        f" pipeline's PipelineData as data arguments, not {a!r}"
    )


def decode_argument(a: Any, ws: Workspace) -> Any:
    """A trial argument as :func:`encode_argument` wrote it, back as the object
    ``submit_script`` takes (a dataset rebuilt as it was defined when the sweep was submitted)."""
    from ..rundata import DatasetConsumptionConfig, RunFilesOutput, StoredInput, rebuild_dataset

    if isinstance(a, dict) and "storedInput" in a:
        return StoredInput(a["storedInput"], a["manifest"], a.get("tabular"), a.get("file") or "")
    if isinstance(a, dict) and "runFilesOutput" in a:
        return RunFilesOutput(a["runFilesOutput"])
    if isinstance(a, dict) and "datasetInput" in a:
        ds = rebuild_dataset(ws, a["dataset"])
        return DatasetConsumptionConfig(a["datasetInput"], ds, a["mode"], a["pathOnCompute"])
    return a


def primary_series(ws: Workspace, seqs: dict[int, str], metric: str) -> dict[str, list[float]]:
    """``{trial id: [primary metric values in logged order]}`` (numbers only)."""
    out: dict[str, list[float]] = {rid: [] for rid in seqs.values()}
    if not seqs:
        return out
    marks = ",".join("?" * len(seqs))
    for seq, value in ws.catalog.query(
        f"SELECT run_seq, value FROM metrics WHERE name = ? AND run_seq IN ({marks})"
        " ORDER BY run_seq, step",
        [metric, *seqs],
    ):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[seqs[seq]].append(float(value))
    return out


# The shared controller protocol (mlws.controllers); kept under the sweep's names too.
abandon = controllers.abandon
cancel_trials = controllers.cancel_children


class SweepController(controllers.Controller):
    """Drives one sweep (see the module docstring for the protocol)."""

    LOG_FILE = LOG_FILE
    ERROR_CODE = "SweepControllerError"

    def __init__(self, ws: Workspace, run_id: str) -> None:
        from .policy import from_json as policy_from_json
        from .sampling import Sampler

        super().__init__(ws, run_id)
        definition = self.run.get_details()["runDefinition"]
        self.sweep = definition["hyperdrive"]
        self.run_config = definition["runConfig"]
        #: Set by sweeps whose trials wait for older ones (``compute.local.wait_for_siblings``).
        self.childlimit = int(definition.get("childLimit") or 0)
        self.source_directory = definition["sourceDirectory"]
        self.snapshot: dict[str, Any] | None = definition.get("snapshot")
        #: A pipeline's HyperDriveStep: the trials' arguments and data, the step's outputs.
        self.step: dict[str, Any] | None = definition.get("step")
        #: The script's arguments with data objects (:func:`encode_argument`), when it has some.
        self.arguments: list[Any] | None = definition.get("arguments")
        self.metric = self.sweep["primaryMetricName"]
        self.maximize = self.sweep["primaryMetricGoal"] == "MAXIMIZE"
        self.policy = policy_from_json(self.sweep["policy"])
        self.sampler = Sampler(
            self.sweep["sampling"], int(self.sweep["seed"]), self.maximize, self.prior_trials()
        )
        #: Trials of earlier sweeps to run again first (``resume_child_runs``), oldest first.
        self.to_resume: list[str] = list(self.sweep.get("resumeChildRuns") or ())
        self.index_of: dict[str, int] = {}
        #: When the open trials were last reconciled (:meth:`trials`).
        self.reconciled = 0.0
        self.ended: set[str] = set()
        self.judged: set[str] = set()
        #: The primary metric values of the trials that have ended, by trial id.
        self.final: dict[str, list[float]] = {}
        #: The best trial so far and its best primary metric value (``BEST_CHILD``'s last row).
        self.best: tuple[str, float] | None = None
        #: Local trials are run by trial workers (``compute.trials``), not a supervisor each.
        self.use_workers = False
        #: The trial workers started, ``(pid, start time)``, and when they were last counted.
        self.workers: list[tuple[int, float | None]] = []
        self.workers_checked = 0.0

    def prior_trials(self) -> list[tuple[dict[str, Any], float | None]]:
        """The ended trials of the sweeps this one resumes (``resumeFrom``) and of the trials
        it runs again: ``(hyperparameters, best primary metric or None)``."""
        from .run import trial_hyperparameters

        ids = list(self.sweep.get("resumeFrom") or ())
        if not ids and not self.sweep.get("resumeChildRuns"):
            return []
        marks = ",".join("?" * len(TERMINAL))
        rows = self.ws.catalog.query(
            f"SELECT id, seq FROM runs WHERE (parent_id IN ({','.join('?' * len(ids))})"
            f" OR id IN ({','.join('?' * len(self.sweep.get('resumeChildRuns') or ()))}))"
            f" AND status IN ({marks})",
            (*ids, *(self.sweep.get("resumeChildRuns") or ()), *TERMINAL),
        )
        seqs = {r["seq"]: r["id"] for r in rows}
        params = trial_hyperparameters(self.ws, seqs)
        series = primary_series(self.ws, seqs, self.metric)
        pick = max if self.maximize else min
        out = [(params[rid], pick(series[rid]) if series[rid] else None) for rid in params]
        self.say(f"warm start: {len(out)} trial(s) of earlier sweeps")
        return out

    def resume_input(self, trial_id: str) -> tuple[dict[str, Any], Any]:
        """The hyperparameters of an earlier trial and its ``./outputs`` as the input
        ``MODEL_LOCATION`` of the trial that continues it (v1's resume-from checkpoint)."""
        from ..rundata import StoredInput
        from .run import trial_hyperparameters

        seq = self.ws.catalog.scalar("SELECT seq FROM runs WHERE id = ?", (trial_id,))
        params = trial_hyperparameters(self.ws, {seq: trial_id}).get(trial_id, {})
        return params, StoredInput(RESUME_INPUT, outputs_manifest(self.ws, seq))

    def submit_trial(
        self, index: int, params: dict[str, Any], resume_from: str | None = None
    ) -> str:
        """Submit one trial as a child run; returns its id. ``resume_from``: the earlier trial
        it continues (``params`` are ignored: it keeps the earlier trial's)."""
        from ..runconfig import RunConfiguration, ScriptRunConfig, submit_script
        from ..snapshots import Snapshot

        rc = RunConfiguration.from_dict(self.run_config)
        data = None
        if self.step is not None:
            rc.arguments = [decode_argument(a, self.ws) for a in self.step["arguments"]]
            data = [decode_argument(d, self.ws) for d in self.step["data"]]
        elif self.arguments is not None:  # the script's arguments hold datasets
            rc.arguments = [decode_argument(a, self.ws) for a in self.arguments]
        extra: dict[str, str] = {}
        tail: list[Any] = []
        if resume_from is not None:
            params, checkpoint = self.resume_input(resume_from)
            tail = ["--resume-from", checkpoint]
            extra["azureml.hyperdrive.resumedFrom"] = resume_from
        rc.arguments = trial_arguments(rc.arguments, params) + tail
        cfg = ScriptRunConfig(
            source_directory=self.source_directory, run_config=rc, max_run_duration_seconds=None
        )
        trial = submit_script(
            self.run.experiment,
            cfg,
            parent_id=self.run_id,
            snapshot=Snapshot(**self.snapshot) if self.snapshot else None,
            data=data,
            start=not self.use_workers,
            git=self.git_facts(self.source_directory),
            properties={
                "hyperparameters": json.dumps(params),
                "azureml.hyperdrive.index": str(index),
                **extra,
            },
        )
        self.index_of[trial.id] = index
        # v1's service records every trial's hyperparameters on the parent too, as a tag
        # named after the trial: what v1's get_hyperparameters() reads.
        self.run.set_tags({f"{SYSTEM_TAG}{trial.id}": json.dumps(params)})
        how = f" (resumes {resume_from})" if resume_from else ""
        self.say(f"trial {index} {trial.id}: {json.dumps(params)}{how}")
        return trial.id

    def trials(self) -> list[Any]:
        """The sweep's trial rows (id, seq, status, error), oldest first. Open trials are
        reconciled with their processes every :data:`RECONCILE_S`: a trial whose supervising
        process died unseen (it never recorded an outcome) ends ``Failed`` saying so, instead
        of holding the sweep open for ever."""
        now = time.monotonic()
        if now - self.reconciled >= RECONCILE_S:
            from ..lifecycle import reconcile

            self.reconciled = now
            marks = ",".join("?" * len(TERMINAL))
            for row in self.ws.catalog.query(
                f"SELECT * FROM runs WHERE parent_id = ? AND status NOT IN ({marks})",
                (self.run_id, *TERMINAL),
            ):
                reconcile(self.ws, row)
        return self.children()

    def record_best(self, trial_id: str, value: float | None, final: bool = False) -> None:
        """Log a ``BEST_CHILD`` row on the parent when ``value`` beats the best so far (ties
        keep the earlier trial, as v1's ranking does); with ``final``, the best once more."""
        import datetime

        if not final:
            if value is None or (
                self.best is not None
                and not (value > self.best[1] if self.maximize else value < self.best[1])
            ):
                return
            self.best = (trial_id, value)
        elif self.best is None:
            return
        self.run.log_row(
            BEST_CHILD,
            metric_name=self.metric,
            timestamp=str(datetime.datetime.now(datetime.timezone.utc)),
            run_id=self.best[0],
            metric_value=self.best[1],
            final=final,
        )
        self.run.flush()

    def config_tags(self, **extra: Any) -> None:
        """Tag the parent with the sweep's configuration as v1's service does (each key twice:
        with the ``_aml_system_`` prefix and without), plus ``extra`` (e.g.
        ``all_jobs_generated``)."""
        sw = self.sweep
        values = {
            "generator_config": json.dumps(sw["sampling"]),
            "primary_metric_config": json.dumps(
                {"name": self.metric, "goal": sw["primaryMetricGoal"].lower()}
            ),
            "policy_config": json.dumps(sw["policy"]),
            "max_total_jobs": str(sw["maxTotalRuns"]),
            "max_concurrent_jobs": str(sw["maxConcurrentRuns"]),
            "max_duration_minutes": str(sw["maxDurationMinutes"]),
            "resume_child_runs": json.dumps(sw.get("resumeChildRuns") or None),
            "all_jobs_generated": "false",
            "cancellation_requested": "false",
        }
        values.update(
            {k: json.dumps(v) if isinstance(v, bool) else str(v) for k, v in extra.items()}
        )
        self.run.set_tags({**values, **{SYSTEM_TAG + k: v for k, v in values.items()}})

    def drive(self) -> tuple[str, dict[str, Any] | None]:
        """Run the sweep; returns the parent's final status and error. The best trial is
        recorded as final (``BEST_CHILD``) before the outcome, so whoever sees the sweep ended
        sees it."""
        self.config_tags()
        status, error = self.drive_trials()
        self.config_tags(all_jobs_generated=True, cancellation_requested=status == "Canceled")

        self.record_best("", None, final=True)
        if self.step is not None and status == "Completed":
            from ..pipelines.hyperdrive_step import publish_step_outputs

            best = self.ws.get_run(self.best[0]) if self.best else None
            for note in publish_step_outputs(self.run, best, self.step):
                self.say(note)
        return status, error

    def drive_trials(self) -> tuple[str, dict[str, Any] | None]:
        """Launch, watch and judge trials until none is open and none may start."""
        sw = self.sweep
        max_total, max_conc = int(sw["maxTotalRuns"]), int(sw["maxConcurrentRuns"])
        deadline = time.monotonic() + float(sw["maxDurationMinutes"]) * 60
        # Trials open at once: max_concurrent_runs, plus one ahead on a local target, which
        # waits there for an older trial's end (compute.local.wait_for_siblings) and so starts
        # within milliseconds of it, not after this loop has seen it, sampled and submitted.
        open_limit = max_conc + self.queue_ahead()
        if open_limit > max_conc:  # local trials: forked by the launcher, not started cold
            from ..compute import launcher, trials

            launcher.wait_ready(self.ws.path, launcher.submitter_env(), LAUNCHER_WAIT_S)
            self.use_workers = trials.enabled()
            if self.use_workers:  # one opens the workspace while the first trials are recorded
                self.keep_workers(1, True)
        launched, exhausted, stopping = 0, False, False
        while True:
            status = self.ws.catalog.scalar("SELECT status FROM runs WHERE id = ?", (self.run_id,))
            if status == "CancelRequested" or status in TERMINAL:
                self.say("the sweep was canceled: canceling its trials")
                self.finish_trials()
                return "Canceled", None
            rows = self.trials()
            open_ids = {r["id"] for r in rows if r["status"] not in TERMINAL}
            prior = set(open_ids)
            # Only the trials not seen ended yet are read again: an ended trial's values are final
            # (its script flushed them before its status moved), so a long sweep's poll stays small.
            seqs = {r["seq"]: r["id"] for r in rows if r["id"] not in self.ended}
            series = {**self.final, **primary_series(self.ws, seqs, self.metric)}
            for r in rows:
                if r["status"] in TERMINAL and r["id"] not in self.ended:
                    self.ended.add(r["id"])
                    values = self.final[r["id"]] = series[r["id"]]
                    best = (max(values) if self.maximize else min(values)) if values else None
                    self.say(f"trial {r['id']} ended {r['status']} (best {self.metric}: {best})")
                    self.sampler.observe(self.index_of.get(r["id"], -1), best)
                    self.record_best(r["id"], best)
                    if r["status"] == "Completed" and not values:
                        return "Failed", self.never_logged(r)
            running = {r["id"] for r in rows if r["status"] == "Running"} - self.judged
            for tid, reason in self.policy.to_cancel(series, running, self.maximize).items():
                self.judged.add(tid)
                self.say(f"canceling trial {tid}: {reason}")
                trial = self.ws.get_run(tid)
                trial.add_properties({"azureml.earlyTermination": reason})
                trial.cancel()
            if not stopping and time.monotonic() > deadline:
                stopping = True
                self.say("max_duration_minutes reached: canceling the open trials")
                cancel_trials(self.ws, self.run_id)
            while (
                not (stopping or exhausted) and launched < max_total and len(open_ids) < open_limit
            ):
                if self.to_resume:
                    earlier = self.to_resume.pop(0)
                    open_ids.add(self.submit_trial(launched, {}, resume_from=earlier))
                    launched += 1
                    continue
                params = self.sampler.suggest(launched)
                if params is None:
                    exhausted = True
                    break
                open_ids.add(self.submit_trial(launched, params))
                launched += 1
            if self.use_workers:
                self.keep_workers(min(open_limit, len(open_ids)), len(open_ids) > len(prior))
            if not open_ids and (stopping or exhausted or launched >= max_total):
                return self.outcome(rows)
            self.wait_for_change()

    def keep_workers(self, wanted: int, submitted: bool) -> None:
        """Keep ``wanted`` trial workers alive (``compute.trials``): started when trials were
        submitted beyond the workers known, and each looked at every :data:`RECONCILE_S` (a
        killed worker's trial is failed by :meth:`trials`; another worker takes the next). Where none can be started, each trial
        waiting for one gets its own supervisor, as without workers."""
        from ..compute import launcher, trials
        from ..processes import process_alive

        now = time.monotonic()
        if now - self.workers_checked >= RECONCILE_S:  # a look at each: ~0.3 ms
            self.workers_checked = now
            self.workers = [w for w in self.workers if process_alive(*w)]
        elif not submitted or len(self.workers) >= wanted:
            return
        env = launcher.submitter_env()
        while len(self.workers) < wanted:
            try:
                self.workers.append(trials.start_worker(self.ws, self.run_id, env))
            except OSError as e:
                self.say(
                    f"could not start a trial worker ({e}): a supervisor per trial from now on"
                )
                self.use_workers = False
                for row in self.ws.catalog.query(
                    "SELECT id FROM runs WHERE parent_id = ? AND status = 'NotStarted'"
                    " AND supervisor_pid IS NULL",
                    (self.run_id,),
                ):
                    launcher.start_for_run(
                        self.ws, row[0], launcher.SUPERVISOR, env, warm_up=False, what="the trial"
                    )
                return

    def queue_ahead(self) -> int:
        """How many trials to submit beyond ``maxConcurrentRuns``: :data:`QUEUE_AHEAD` when
        they run on a ``local`` target and wait there for older trials to end (a sweep
        recorded with its ``childLimit``: ``RunSupervisor.waits_for_sibling``), else none."""
        from ..compute import target_config
        from ..errors import MlwsError

        if not self.childlimit:
            return 0
        try:
            kind, _ = target_config(self.ws, self.run_config.get("target") or "local")
        except MlwsError:
            return 0  # the trials fail on it and say why
        return QUEUE_AHEAD if kind == "local" else 0

    def never_logged(self, row: Any) -> dict[str, Any]:
        """The error of a sweep whose trial completed without logging the primary metric."""
        from ..metrics import latest_scalars

        logged = sorted(latest_scalars(self.ws.catalog, {row["seq"]: row["id"]})[row["id"]])
        self.finish_trials()
        return {
            "code": "PrimaryMetricNotLogged",
            "message": f"trial {row['id']} completed without logging the primary metric "
            f"{self.metric!r} (it logged: {', '.join(logged) or 'no metrics'}); the script must "
            f"call run.log({self.metric!r}, value), or set primary_metric_name to what it logs",
        }

    def outcome(self, rows: list[Any]) -> tuple[str, dict[str, Any] | None]:
        """Completed, unless no trial completed and some failed."""
        statuses = [r["status"] for r in rows]
        if statuses and "Completed" not in statuses and "Failed" in statuses:
            first = next(r for r in rows if r["status"] == "Failed")
            why = json.loads(first["error"] or "{}").get("message", "no reason recorded")
            return "Failed", {
                "code": "AllTrialsFailed",
                "message": f"no trial of the sweep completed; the first failure, {first['id']}: {why}",
            }
        return "Completed", None

    def finish_trials(self) -> None:
        """Cancel the open trials and wait (bounded) for them to end."""
        self.finish_children()


def main(argv: list[str]) -> int:
    """``python -m mlws.hyperdrive.controller WORKSPACE RUN_ID``."""
    return controllers.main(argv, SweepController, "the sweep")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
