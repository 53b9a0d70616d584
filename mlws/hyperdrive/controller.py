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
   the script's arguments followed by ``--name value``; keeps ``maxConcurrentRuns`` open.
3. **Watches** the trials' primary metric as they log it and cancels those the policy judges
   poor (each gets the property ``azureml.earlyTermination`` with the reason); stops launching
   at ``maxTotalRuns``, an exhausted grid, or ``maxDurationMinutes`` (then cancels what runs).
4. **Ends** the sweep once no trial is open: ``Completed``; ``Failed`` when every trial failed
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
        self.source_directory = definition["sourceDirectory"]
        self.snapshot: dict[str, Any] | None = definition.get("snapshot")
        self.metric = self.sweep["primaryMetricName"]
        self.maximize = self.sweep["primaryMetricGoal"] == "MAXIMIZE"
        self.policy = policy_from_json(self.sweep["policy"])
        self.sampler = Sampler(self.sweep["sampling"], int(self.sweep["seed"]), self.maximize)
        self.index_of: dict[str, int] = {}
        self.ended: set[str] = set()
        self.judged: set[str] = set()
        #: The primary metric values of the trials that have ended, by trial id.
        self.final: dict[str, list[float]] = {}

    def submit_trial(self, index: int, params: dict[str, Any]) -> str:
        """Submit one trial as a child run; returns its id."""
        from ..runconfig import RunConfiguration, ScriptRunConfig, submit_script
        from ..snapshots import Snapshot

        rc = RunConfiguration.from_dict(self.run_config)
        rc.arguments = trial_arguments(rc.arguments, params)
        cfg = ScriptRunConfig(
            source_directory=self.source_directory, run_config=rc, max_run_duration_seconds=None
        )
        trial = submit_script(
            self.run.experiment,
            cfg,
            parent_id=self.run_id,
            snapshot=Snapshot(**self.snapshot) if self.snapshot else None,
            properties={
                "hyperparameters": json.dumps(params),
                "azureml.hyperdrive.index": str(index),
            },
        )
        self.index_of[trial.id] = index
        self.say(f"trial {index} {trial.id}: {json.dumps(params)}")
        return trial.id

    def trials(self) -> list[Any]:
        """The sweep's trial rows (id, seq, status, error), oldest first."""
        return self.children()

    def drive(self) -> tuple[str, dict[str, Any] | None]:
        """Run the sweep; returns the parent's final status and error."""
        sw = self.sweep
        max_total, max_conc = int(sw["maxTotalRuns"]), int(sw["maxConcurrentRuns"])
        deadline = time.monotonic() + float(sw["maxDurationMinutes"]) * 60
        launched, exhausted, stopping = 0, False, False
        while True:
            status = self.ws.catalog.scalar("SELECT status FROM runs WHERE id = ?", (self.run_id,))
            if status == "CancelRequested" or status in TERMINAL:
                self.say("the sweep was canceled: canceling its trials")
                self.finish_trials()
                return "Canceled", None
            rows = self.trials()
            open_ids = {r["id"] for r in rows if r["status"] not in TERMINAL}
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
            while not (stopping or exhausted) and launched < max_total and len(open_ids) < max_conc:
                params = self.sampler.suggest(launched)
                if params is None:
                    exhausted = True
                    break
                open_ids.add(self.submit_trial(launched, params))
                launched += 1
            if not open_ids and (stopping or exhausted or launched >= max_total):
                return self.outcome(rows)
            self.wait_for_change()

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
