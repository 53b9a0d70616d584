"""``HyperDriveStep``: a HyperDrive sweep as one step of a pipeline (v1's
``azureml.pipeline.steps.HyperDriveStep``).

As in v1, the step's run *is* the sweep's parent run: a ``hyperdrive`` run, child of the
pipeline run and named after the step, driven by the sweep controller
(:mod:`mlws.hyperdrive.controller`); its trials are its children. So
``pipeline_run.find_step_run(name)[0]`` is a :class:`~mlws.hyperdrive.HyperDriveRun`
(``get_best_run_by_primary_metric()``...), and :class:`HyperDriveStepRun` wraps a step run as
v1's does.

Data: every trial reads the step's inputs (upstream ``PipelineData``, and datasets as
``as_named_input(...)``/``as_mount()``/``as_download()`` give them, as a ``PythonScriptStep``'s)
and writes its outputs; when the sweep completes, the best trial's outputs become the step's
outputs (the same stored files, no copy), which later steps read. ``metrics_output`` (a
``PipelineData``) is, as in v1, one JSON **file**: every trial's metrics by trial run id (v1's
``HyperDriveRun.get_metrics()``). A later step that takes it gets the file's path
(``open(args.metrics_data)``, ``$AZUREML_DATAREFERENCE_<name>``); among the step run's files it
is ``outputs/<name>/metrics.json``. Reuse: the step's fingerprint covers the sweep's
configuration (sampling, policy, metric, limits; not a seed drawn at submit) besides what every
step's covers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import SweepConfigError
from ..hyperdrive.run import HyperDriveRun
from .data import PipelineData
from .run import StepRun
from .steps import PipelineStep

if TYPE_CHECKING:
    from ..runconfig import ScriptRunConfig
    from ..runs import Run

STEP_TYPE = "HyperDriveStep"
#: The file ``metrics_output`` holds.
METRICS_FILE = "metrics.json"


class HyperDriveStep(PipelineStep):
    """Run ``hyperdrive_config`` (a :class:`~mlws.hyperdrive.HyperDriveConfig` over a
    ``ScriptRunConfig``) as a pipeline step. ``estimator_entry_script_arguments``: the
    script's arguments (``PipelineData`` among them become paths), instead of the
    ScriptRunConfig's own; ``inputs``/``outputs``: ``PipelineData`` every trial reads/writes
    (the best trial's outputs are the step's), datasets too; ``metrics_output``: a
    ``PipelineData`` that is one JSON file, every trial's metrics by trial id (a later step is
    given the file's path). ``version`` is accepted (v1) and ignored.

    :raises SweepConfigError: not a ``HyperDriveConfig``, or a ``metrics_output`` that is not
        a ``PipelineData``.
    """

    def __init__(
        self,
        name: str,
        hyperdrive_config: Any,
        estimator_entry_script_arguments: list[Any] | None = None,
        inputs: list[Any] | None = None,
        outputs: list[Any] | None = None,
        metrics_output: PipelineData | None = None,
        allow_reuse: bool = True,
        version: str | None = None,
    ) -> None:
        from ..hyperdrive.config import HyperDriveConfig

        if not isinstance(hyperdrive_config, HyperDriveConfig):
            raise SweepConfigError(
                f"HyperDriveStep needs a HyperDriveConfig, got {type(hyperdrive_config).__name__}"
            )
        if metrics_output is not None and not isinstance(metrics_output, PipelineData):
            raise SweepConfigError(
                f"HyperDriveStep: metrics_output is a PipelineData, got {type(metrics_output).__name__}"
            )
        src: ScriptRunConfig = hyperdrive_config.run_config
        rc = src.run_config
        arguments = (
            list(estimator_entry_script_arguments)
            if estimator_entry_script_arguments is not None
            else list(rc.arguments)
        )
        self.hyperdrive_config = hyperdrive_config
        self.metrics_output = metrics_output
        super().__init__(
            name,
            arguments,
            rc.target,
            rc,
            inputs,
            [*(outputs or []), *([metrics_output] if metrics_output is not None else [])],
            source_directory=src.source_directory,
            allow_reuse=allow_reuse,
        )

    def command_line(self) -> dict[str, Any]:
        """The script, and the sweep as the step's definition records it (``hyperdrive``)."""
        return {
            "script": self.hyperdrive_config.run_config.run_config.script,
            "stepType": STEP_TYPE,
            "hyperdrive": self.hyperdrive_config.to_dict(),
            "metricsOutput": None if self.metrics_output is None else self.metrics_output.name,
        }


class HyperDriveStepRun(HyperDriveRun, StepRun):
    """v1's ``HyperDriveStepRun(step_run)``: the run of a ``HyperDriveStep`` with both the
    sweep's methods (``get_best_run_by_primary_metric``...) and the step's
    (``get_output_data``...)."""

    def __init__(self, step_run: Run) -> None:
        super().__init__(step_run.experiment, step_run.id, _row=getattr(step_run, "_row", None))


def fingerprint_part(step: dict[str, Any]) -> dict[str, Any]:
    """What a ``HyperDriveStep`` adds to its step's fingerprint: the sweep without the seed
    drawn at submit (a seed given in the sampling's properties is part of it)."""
    if step.get("stepType") != STEP_TYPE:
        return {}
    return {"hyperdrive": {k: v for k, v in step["hyperdrive"].items() if k != "seed"}}


def file_output(steps: Any, name: str) -> str:
    """The file a later step is given for ``PipelineData`` ``name`` when ``name`` is the
    ``metrics_output`` of one of ``steps`` (step dicts): :data:`METRICS_FILE`; else "" (the
    folder)."""
    for step in steps:
        if step.get("stepType") == STEP_TYPE and step.get("metricsOutput") == name:
            return METRICS_FILE
    return ""


def submit_step(
    pipeline_run: Run, step: dict[str, Any], config: ScriptRunConfig, data: list[Any]
) -> str:
    """Start the sweep of a ``HyperDriveStep`` as the step's run (a child of
    ``pipeline_run``); returns its id. ``config``: the trials' run configuration, its
    arguments the step's resolved (data as input/output objects); ``data``: the inputs and
    outputs the trials get by name.

    :raises SweepConfigError: an argument or data a trial cannot take.
    :raises MlwsError: the sweep's controller could not be started.
    """
    import secrets

    from ..hyperdrive.config import start_sweep
    from ..hyperdrive.controller import encode_argument

    rc = config.run_config
    metrics = step.get("metricsOutput")
    args = [encode_argument(a) for a in rc.arguments]
    trial_data = [encode_argument(d) for d in data if getattr(d, "name", None) != metrics]
    rc.arguments = []  # the trials' arguments are ``stepArguments``, data included
    definition = {
        "hyperdrive": step["hyperdrive"],
        "runConfig": rc.to_dict(),
        "sourceDirectory": config.source_directory,
        "snapshot": step["snapshot"],
        "step": {
            "arguments": args,
            "data": trial_data,
            "outputs": [o for o in step["outputs"] if o != metrics],
            "metricsOutput": metrics,
        },
        # As a step run's: what StepRun.get_output_data lists.
        "outputs": [{"name": o, "runFiles": True} for o in step["outputs"]],
    }
    run = start_sweep(
        pipeline_run.experiment,
        definition,
        f"HD_{secrets.token_hex(16)}",
        parent_id=pipeline_run.id,
        display_name=step["name"],
        properties={"StepType": STEP_TYPE},
    )
    return run.id


def publish_step_outputs(parent: Run, best: Run | None, step: dict[str, Any]) -> list[str]:
    """At the end of a ``HyperDriveStep``'s sweep: the best trial's outputs become the step
    run's (the same stored files under ``outputs/<name>/``), and ``metricsOutput`` is the
    file ``outputs/<name>/metrics.json``. Returns notes for the sweep's log."""
    import io
    import json

    ws = parent.workspace
    notes = []
    if best is not None and step["outputs"]:
        with ws.catalog.write() as conn:
            for name in step["outputs"]:
                prefix = f"outputs/{name}/"
                conn.execute(
                    "INSERT OR REPLACE INTO run_files (run_seq, path, blob, size, mode, created)"
                    " SELECT ?, path, blob, size, mode, created FROM run_files"
                    " WHERE run_seq = ? AND substr(path, 1, ?) = ?",
                    (parent.seq, best.seq, len(prefix), prefix),
                )
        notes.append(f"the step's outputs are those of the best trial {best.id}")
    if step.get("metricsOutput"):
        # v1's shape: HyperDriveRun.get_metrics(), every trial's metrics by trial id.
        metrics = HyperDriveRun.get_metrics(parent)
        body = json.dumps(metrics, indent=1, default=str).encode()
        parent.upload_file(f"outputs/{step['metricsOutput']}/{METRICS_FILE}", io.BytesIO(body))
        notes.append(f"the sweep's metrics are {step['metricsOutput']}/{METRICS_FILE}")
    return notes
