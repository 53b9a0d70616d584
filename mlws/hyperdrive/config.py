"""``HyperDriveConfig`` (what to sweep, how far, how to judge) and ``PrimaryMetricGoal``.

Everything is checked when the config is built and again at submit (the source folder, the
compute target), so a bad sweep raises one :class:`~mlws.errors.SweepConfigError` line and
records nothing. ``Experiment.submit(config)`` calls :meth:`HyperDriveConfig._submit`: it records
the parent run (type ``hyperdrive``, its sweep in the run definition) and starts the detached
controller (:mod:`mlws.hyperdrive.controller`) that runs the trials.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SweepConfigError
from .policy import EarlyTerminationPolicy
from .sampling import ParameterSampling

if TYPE_CHECKING:
    from ..experiments import Experiment
    from .run import HyperDriveRun

#: The parent run's type, as v1's ``HyperDriveRun.RUN_TYPE``.
HYPERDRIVE = "hyperdrive"


class PrimaryMetricGoal(enum.Enum):
    """Whether a larger or a smaller primary metric is better."""

    MAXIMIZE = "MAXIMIZE"
    MINIMIZE = "MINIMIZE"

    @staticmethod
    def from_str(goal: str) -> PrimaryMetricGoal:
        """``'maximize'``/``'minimize'`` (any case) as a goal.

        :raises SweepConfigError: anything else."""
        try:
            return PrimaryMetricGoal(str(goal).upper())
        except ValueError:
            raise SweepConfigError(
                f"primary metric goal is MAXIMIZE or MINIMIZE, got {goal!r}"
            ) from None


def _positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise SweepConfigError(f"{name} is a whole number >= 1, got {v!r}")
    return v


def _runs(name: str, value: Any, what: str) -> list[Any]:
    """``value`` (one run or a list of runs, v1 takes both) as a list of runs."""
    from ..runs import Run

    runs = [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]
    for r in runs:
        if not isinstance(r, Run):
            raise SweepConfigError(f"{name} takes {what} or a list of them, got {type(r).__name__}")
    return runs


def _same_workspace(ws: Any, run: Any, name: str) -> Any:
    """The catalog row of ``run`` in ``ws``. :raises SweepConfigError: it is not there."""
    row = ws.catalog.one("SELECT * FROM runs WHERE id = ?", (run.id,))
    if row is None or Path(run.workspace.path).resolve() != Path(ws.path).resolve():
        raise SweepConfigError(
            f"{name}: run {run.id!r} is not in workspace {ws.name!r}, where this sweep runs"
        )
    return row


class HyperDriveConfig:
    """A sweep: run ``run_config`` (a ``ScriptRunConfig``) with hyperparameters drawn by
    ``hyperparameter_sampling`` as ``--name value`` arguments, at most ``max_total_runs`` trials,
    ``max_concurrent_runs`` at a time, for at most ``max_duration_minutes``; ``policy`` cancels
    trials whose ``primary_metric_name`` lags. v1's signature; ``estimator`` and ``pipeline``
    are not supported.

    Warm start, as v1: ``resume_from`` (a ``HyperDriveRun`` or a list of them, sweeps of the
    same primary metric) gives the sampler their finished trials, which it does not repeat
    (Bayesian learns from them), and ``get_best_run_by_primary_metric`` considers them;
    ``resume_child_runs`` (trials of earlier sweeps, ended) run again first, with their
    hyperparameters and ``--resume-from <folder>``: a copy of what the earlier trial wrote to
    ``./outputs`` (also ``$AZUREML_DATAREFERENCE_MODEL_LOCATION``), to continue from its
    checkpoints. They count towards ``max_total_runs``.

    :raises SweepConfigError: any argument out of range or of the wrong kind.
    """

    def __init__(
        self,
        hyperparameter_sampling: Any,
        primary_metric_name: str,
        primary_metric_goal: Any,
        max_total_runs: int,
        max_concurrent_runs: int | None = None,
        max_duration_minutes: float = 10080,
        policy: Any = None,
        estimator: Any = None,
        run_config: Any = None,
        resume_from: Any = None,
        resume_child_runs: Any = None,
        pipeline: Any = None,
        debug_flag: Any = None,
        custom_run_id: str | None = None,
    ) -> None:
        for name, v in (("estimator", estimator), ("pipeline", pipeline)):
            if v is not None:
                raise SweepConfigError(
                    f"HyperDriveConfig({name}=...) is not supported; pass run_config=ScriptRunConfig(...)"
                )
        if run_config is None or not hasattr(run_config, "validate"):
            raise SweepConfigError(
                f"HyperDriveConfig needs run_config=ScriptRunConfig(...), got {type(run_config).__name__}"
            )
        if not isinstance(hyperparameter_sampling, ParameterSampling):
            raise SweepConfigError(
                "hyperparameter_sampling is a RandomParameterSampling, GridParameterSampling or "
                f"BayesianParameterSampling, got {type(hyperparameter_sampling).__name__}"
            )
        if not isinstance(primary_metric_name, str) or not primary_metric_name.strip():
            raise SweepConfigError(
                f"primary_metric_name is the name of a metric the script logs, got {primary_metric_name!r}"
            )
        if not isinstance(primary_metric_goal, PrimaryMetricGoal):
            primary_metric_goal = PrimaryMetricGoal.from_str(primary_metric_goal)
        _positive_int("max_total_runs", max_total_runs)
        if max_concurrent_runs is not None:
            _positive_int("max_concurrent_runs", max_concurrent_runs)
        if (
            isinstance(max_duration_minutes, bool)
            or not isinstance(max_duration_minutes, (int, float))
            or not (max_duration_minutes > 0 and math.isfinite(max_duration_minutes))
        ):
            raise SweepConfigError(
                f"max_duration_minutes is a number of minutes > 0, got {max_duration_minutes!r}"
            )
        if policy is not None and not isinstance(policy, EarlyTerminationPolicy):
            raise SweepConfigError(
                "policy is a BanditPolicy, MedianStoppingPolicy, TruncationSelectionPolicy or "
                f"NoTerminationPolicy, got {type(policy).__name__}"
            )
        hyperparameter_sampling.check_policy(policy)
        self.resume_from = _runs("resume_from", resume_from, "a HyperDriveRun")
        self.resume_child_runs = _runs("resume_child_runs", resume_child_runs, "a trial's Run")
        if len(self.resume_child_runs) > max_total_runs:
            raise SweepConfigError(
                f"resume_child_runs lists {len(self.resume_child_runs)} trials, more than "
                f"max_total_runs={max_total_runs}; the resumed trials count towards it"
            )
        self.run_config = run_config
        self.hyperparameter_sampling = hyperparameter_sampling
        self.primary_metric_name = primary_metric_name
        self.primary_metric_goal: PrimaryMetricGoal = primary_metric_goal
        self.max_total_runs = max_total_runs
        self.max_concurrent_runs = max_concurrent_runs
        self.max_duration_minutes = max_duration_minutes
        self.policy = policy
        self.custom_run_id = custom_run_id

    def to_dict(self) -> dict[str, Any]:
        """The sweep as recorded in the parent run's definition (``hyperdrive``): sampling,
        policy, metric, goal and limits in v1's serialized forms."""
        sampling = self.hyperparameter_sampling.to_json()
        props = sampling["properties"]
        seed = props.get("seed", props.get("rseed"))
        return {
            "sampling": sampling,
            # Recorded even when drawn here, so the draws of a sweep can be told again.
            "seed": seed if seed is not None else secrets.randbelow(2**31),
            "policy": (
                self.policy.to_json()
                if self.policy is not None
                else {"name": "Default", "properties": {}}
            ),
            "primaryMetricName": self.primary_metric_name,
            "primaryMetricGoal": self.primary_metric_goal.value,
            "maxTotalRuns": self.max_total_runs,
            "maxConcurrentRuns": self.max_concurrent_runs or self.max_total_runs,
            "maxDurationMinutes": self.max_duration_minutes,
            # Only when set, so that sweeps recorded before warm start read the same.
            **({"resumeFrom": [r.id for r in self.resume_from]} if self.resume_from else {}),
            **(
                {"resumeChildRuns": [r.id for r in self.resume_child_runs]}
                if self.resume_child_runs
                else {}
            ),
        }

    def check_resume(self, ws: Any) -> None:
        """Check ``resume_from`` and ``resume_child_runs`` against the workspace the sweep is
        submitted to.

        :raises SweepConfigError: a run of another workspace, not a sweep (not a trial), a
            sweep of another primary metric, a trial that has not ended.
        """
        from ..lifecycle import TERMINAL

        for r in self.resume_from:
            row = _same_workspace(ws, r, "resume_from")
            if row["type"] != HYPERDRIVE:
                raise SweepConfigError(
                    f"resume_from takes HyperDrive sweeps; run {r.id!r} is of type {row['type']!r}"
                )
            earlier = json.loads(row["definition"] or "{}").get("hyperdrive") or {}
            if earlier.get("primaryMetricName") != self.primary_metric_name:
                raise SweepConfigError(
                    f"resume_from: sweep {r.id!r} measured {earlier.get('primaryMetricName')!r}, "
                    f"this sweep measures {self.primary_metric_name!r}; their results do not compare"
                )
        for r in self.resume_child_runs:
            row = _same_workspace(ws, r, "resume_child_runs")
            parent = ws.catalog.one("SELECT type FROM runs WHERE id = ?", (row["parent_id"],))
            if parent is None or parent["type"] != HYPERDRIVE:
                raise SweepConfigError(
                    f"resume_child_runs takes trials of HyperDrive sweeps; run {r.id!r} is not one"
                )
            if row["status"] not in TERMINAL:
                raise SweepConfigError(
                    f"resume_child_runs: trial {r.id!r} is {row['status']}; a trial is resumed "
                    "from what it stored when it ended (wait for it, or cancel it)"
                )

    def _submit(
        self, experiment: Experiment, tags: dict[str, Any] | None = None, **kwargs: Any
    ) -> HyperDriveRun:
        return submit_sweep(experiment, self, tags=tags)


def submit_sweep(
    experiment: Experiment, config: HyperDriveConfig, tags: dict[str, Any] | None = None
) -> HyperDriveRun:
    """Record the sweep's parent run and start its controller; returns it at once.

    :raises SweepConfigError: a parameter that the script's own arguments cannot take.
    :raises RunConfigError: the source folder or script is missing (nothing is recorded).
    :raises MlwsError: the controller could not be started (the run is Failed).
    """
    from ..compute import target_config
    from ..runs import key_values
    from ..snapshots import take_snapshot
    from .controller import encode_argument

    ws = experiment.workspace
    tags = key_values(tags, "tag")
    if ws.remote is not None and (config.resume_from or config.resume_child_runs):
        from ..remote.backend import not_available

        raise not_available("a warm-started sweep", ws.remote.url)
    config.check_resume(ws)
    src, _ = config.run_config.validate()
    remote = ws.remote is not None  # the server checks the target, and runs the sweep
    if not remote:
        target_config(ws, config.run_config.run_config.target)
    sweep = config.to_dict()
    arguments = config.run_config.run_config.arguments
    # Datasets among the script's arguments: recorded as data (checked before anything is
    # stored), so each trial gets the data, not its text.
    data_args = (
        [encode_argument(a) for a in arguments]
        if any(not isinstance(a, (str, int, float)) for a in arguments)
        else None
    )
    # One snapshot for every trial, taken now: trials run the code as it was at submit, as v1's.
    if remote:
        from ..remote.execute import server_datasets, snapshot_spec

        server_datasets(
            ws, [a["dataset"] for a in data_args or () if isinstance(a, dict) and "dataset" in a]
        )
        snapshot = snapshot_spec(ws, src)
    else:
        snap = take_snapshot(ws.blobs, src)
        for w in snap.warnings:
            print(f"Warning: {w}", file=sys.stderr)
        snapshot = {k: v for k, v in dataclasses.asdict(snap).items() if k != "warnings"}
    definition = {
        "hyperdrive": sweep,
        "runConfig": config.run_config.run_config.to_dict(),
        "sourceDirectory": str(src),
        "snapshot": snapshot,
    }
    if data_args is not None:
        definition["arguments"] = data_args
    if remote:
        from ..remote.execute import start_sweep as start_remote

        run_id = config.custom_run_id or f"HD_{secrets.token_hex(16)}"
        return start_remote(experiment, definition, run_id, tags)  # type: ignore[no-any-return]
    return start_sweep(
        experiment,
        definition,
        config.custom_run_id or f"HD_{secrets.token_hex(16)}",
        tags=tags,
    )


def start_sweep(
    experiment: Experiment,
    definition: dict[str, Any],
    run_id: str,
    tags: dict[str, str] | None = None,
    parent_id: str | None = None,
    display_name: str | None = None,
    properties: dict[str, str] | None = None,
    submitted_by: str | None = None,
) -> HyperDriveRun:
    """Record a sweep's parent run (``NotStarted``, its ``definition`` holding the sweep, the
    trials' run configuration, source folder and snapshot) and start its controller; returns
    it at once. ``parent_id``/``display_name``: a sweep that is a pipeline's step;
    ``submitted_by``: the user recorded as its submitter (and its trials'; default: this
    process's).

    :raises MlwsError: the controller could not be started (the run is Failed).
    """
    from ..controllers import start_controller
    from ..runs import insert_run
    from .run import HyperDriveRun

    ws = experiment.workspace
    sweep = definition["hyperdrive"]
    # How many trials may run at once, read by each trial's supervisor (``compute.local``): the
    # controller submits one trial ahead, which waits for a sibling's end, not for the controller.
    definition["childLimit"] = int(sweep["maxConcurrentRuns"])
    insert_run(
        ws,
        experiment.name,
        run_type=HYPERDRIVE,
        status="NotStarted",
        run_id=run_id,
        parent_id=parent_id,
        display_name=display_name,
        fields={
            "definition": json.dumps(definition),
            "target": definition["runConfig"].get("target"),
            "snapshot": definition["snapshot"]["manifest"],
            **({"submitter_user": submitted_by} if submitted_by else {}),
        },
        tags=tags,
        properties={
            "primary_metric_config": json.dumps(
                {"name": sweep["primaryMetricName"], "goal": sweep["primaryMetricGoal"].lower()}
            ),
            "runTemplate": "HyperDrive",
            "azureml.runsource": "hyperdrive",
            "max_total_runs": str(sweep["maxTotalRuns"]),
            "max_concurrent_runs": str(sweep["maxConcurrentRuns"]),
            **(properties or {}),
        },
    )
    start_controller(experiment, run_id, "mlws.hyperdrive.controller", "the sweep")
    row = ws.catalog.one("SELECT * FROM runs WHERE id = ?", (run_id,))
    return HyperDriveRun(experiment, run_id, _row=row)
