"""``Pipeline``: a graph of steps, checked as a whole and submitted as one parent run.

``Pipeline(ws, steps=[compare])`` pulls in every step that ``compare`` depends on (the
producers of its ``PipelineData`` inputs and its ``run_after`` steps, transitively), as v1's
``resolve_closure=True``. :meth:`Pipeline.validate` checks everything that can be checked
before a step runs: step names, cycles, data no step produces, compute targets, source
folders and scripts, datasets that match no file, parameters the pipeline does not have; it
raises :class:`~mlws.errors.PipelineValidationError` (one line) and records nothing.

``Experiment(ws, name).submit(pipeline, pipeline_parameters=..., regenerate_outputs=...,
continue_on_step_failure=...)`` validates, snapshots every step's source folder (each folder
once: the steps run the code as it was at submit), records the pipeline run
(``azureml.PipelineRun``, its graph in the run's definition) and starts its controller
(:mod:`mlws.pipelines.controller`); it returns a :class:`~mlws.pipelines.run.PipelineRun` at once.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MlwsError, PipelineValidationError
from .data import (
    DataPathInput,
    OutputData,
    PipelineData,
    PipelineParameter,
    bind_data_paths,
    check_value_kinds,
    data_path_datasets,
    data_path_value,
)
from .steps import PipelineStep

if TYPE_CHECKING:
    from ..experiments import Experiment
    from ..workspace import Workspace
    from .published import PublishedPipeline
    from .run import PipelineRun


class Pipeline:
    """A pipeline of steps (v1's ``Pipeline``). ``steps``: the steps to run; with
    ``resolve_closure`` (the default) the steps they depend on are added. ``description`` is
    the pipeline run's description; ``default_source_directory`` the source folder of steps
    that name none (else the current folder, as v1)."""

    def __init__(
        self,
        workspace: Workspace,
        steps: list[PipelineStep] | PipelineStep,
        description: str | None = None,
        default_datastore: Any = None,
        default_source_directory: str | os.PathLike[str] | None = None,
        resolve_closure: bool = True,
        **_azure_kwargs: Any,
    ) -> None:
        self.workspace = workspace
        given = [steps] if isinstance(steps, PipelineStep) else list(steps)
        for s in given:
            if not isinstance(s, PipelineStep):
                raise PipelineValidationError(
                    f"a pipeline's steps are steps (PythonScriptStep, CommandStep), got {s!r}"
                )
        self.description = description
        self.default_source_directory = (
            None if default_source_directory is None else str(default_source_directory)
        )
        self._given = given
        self._closure = resolve_closure

    def __repr__(self) -> str:
        return f"Pipeline(steps={[s.name for s in self._given]!r})"

    @property
    def steps(self) -> list[PipelineStep]:
        """Every step of the pipeline (the closure of the given ones), upstream first.

        :raises PipelineValidationError: a cycle, or two steps of one name.
        """
        return ordered(self._all_steps())

    def _all_steps(self) -> list[PipelineStep]:
        found: list[PipelineStep] = []
        todo = list(self._given)
        while todo:
            s = todo.pop(0)
            if s in found:
                continue
            found.append(s)
            if self._closure:
                todo += [u for u in s.upstream() if u not in found]
        return found

    def parameters(self) -> dict[str, PipelineParameter]:
        """The pipeline's parameters by name (those its steps use)."""
        out: dict[str, PipelineParameter] = {}
        for s in self.steps:
            for p in s.parameters():
                out.setdefault(p.name, p)
        return out

    def validate(self, pipeline_parameters: dict[str, Any] | None = None) -> list[str]:
        """Check the pipeline (and ``pipeline_parameters``) as far as can be done before it
        runs; returns an empty list (v1's list of errors) when it is sound.

        :raises PipelineValidationError: the first problem found, in one line.
        """
        from ..compute import target_config
        from ..datasets import AbstractDataset
        from ..datastores import Datastore
        from ..errors import ComputeTargetException
        from ..runconfig import ScriptRunConfig
        from ..rundata import DatasetConsumptionConfig

        steps = self.steps
        in_graph = set(map(id, steps))
        names: dict[str, PipelineData] = {}
        for s in steps:
            for d in s.data_inputs():
                if d.producer is None or (id(d.producer) not in in_graph):
                    raise PipelineValidationError(
                        f"step {s.name!r} reads PipelineData {d.name!r}, which no step of the "
                        "pipeline writes; list it in the outputs of the step that writes it"
                    )
            for d in [*s.outputs, *s.data_inputs()]:
                if names.setdefault(d.name, d) is not d:
                    raise PipelineValidationError(
                        f"two different PipelineData are named {d.name!r}; give each its own name"
                    )
            for a in s.inputs:
                if not isinstance(
                    a, (PipelineData, DatasetConsumptionConfig, AbstractDataset, DataPathInput)
                ):
                    raise PipelineValidationError(
                        f"step {s.name!r}: an input is PipelineData or a dataset, got {a!r}"
                    )
        known = self.parameters()
        for s in steps:
            for p in s.parameters():
                if p is not known[p.name] and p.default_value != known[p.name].default_value:
                    raise PipelineValidationError(
                        f"two PipelineParameters are named {p.name!r} with different defaults"
                        f" ({known[p.name].default_value!r}, {p.default_value!r})"
                    )
        unknown = sorted(set(pipeline_parameters or {}) - set(known))
        if unknown:
            raise PipelineValidationError(
                f"the pipeline has no parameter {unknown[0]!r}; its parameters: "
                f"{', '.join(sorted(known)) or 'none'}"
            )
        for s in steps:
            try:
                target_config(self.workspace, s.compute_target)
                # A ParallelRunStep is checked against where its workers run.
                target_type, _ = target_config(
                    self.workspace, getattr(s, "workers_target", s.compute_target)
                )
            except ComputeTargetException as e:
                raise PipelineValidationError(f"step {s.name!r}: {e}") from None
            src = self.source_of(s)
            try:
                s.check(src, target_type)
                for d in s.outputs:
                    if isinstance(d, OutputData) and d.config.destination:
                        Datastore(self.workspace, d.config.destination[0].name)  # registered
                cmd = s.command_line()
                ScriptRunConfig(
                    src, cmd.get("script"), command=cmd.get("command"), run_config=None
                ).validate()
            except MlwsError as e:
                raise PipelineValidationError(f"step {s.name!r}: {e}") from None
            for spec in dataset_inputs(s).values():
                if "dataPathParameter" in spec:
                    continue  # its files are those of the value it is given (freeze)
                try:
                    spec["_dataset"].current_files()
                except MlwsError as e:
                    raise PipelineValidationError(
                        f"step {s.name!r}: input {spec['name']!r}: {e}"
                    ) from None
        return []

    def source_of(self, step: PipelineStep) -> str:
        """The source folder a step runs from (absolute)."""
        return str(Path(step.source_directory or self.default_source_directory or ".").absolute())

    def submit(
        self,
        experiment_name: str,
        pipeline_parameters: dict[str, Any] | None = None,
        continue_on_step_failure: bool = False,
        regenerate_outputs: bool = False,
        parent_run_id: str | None = None,
        tags: dict[str, Any] | None = None,
        **_kwargs: Any,
    ) -> PipelineRun:
        """v1's ``pipeline.submit(experiment_name, ...)``: the same as
        ``Experiment(ws, experiment_name).submit(pipeline, ...)``."""
        from ..experiments import Experiment

        return Experiment(self.workspace, experiment_name).submit(
            self,
            tags=tags,
            pipeline_parameters=pipeline_parameters,
            continue_on_step_failure=continue_on_step_failure,
            regenerate_outputs=regenerate_outputs,
        )

    def publish(
        self,
        name: str | None = None,
        description: str | None = None,
        version: str | None = None,
        continue_on_step_failure: bool | None = None,
    ) -> PublishedPipeline:
        """Freeze the pipeline as a :class:`~mlws.pipelines.published.PublishedPipeline`: its
        definition and every step's source snapshot as they are now, stored in the catalog.

        :raises PipelineValidationError: the pipeline is unsound (nothing is recorded).
        """
        from .published import publish_pipeline

        return publish_pipeline(self, name, description, version, continue_on_step_failure)

    def _submit(
        self,
        experiment: Experiment,
        tags: dict[str, Any] | None = None,
        pipeline_parameters: dict[str, Any] | None = None,
        continue_on_step_failure: bool = False,
        regenerate_outputs: bool = False,
        **_kwargs: Any,
    ) -> PipelineRun:
        return submit_pipeline(
            experiment,
            self,
            tags=tags,
            pipeline_parameters=pipeline_parameters,
            continue_on_step_failure=continue_on_step_failure,
            regenerate_outputs=regenerate_outputs,
        )


def ordered(steps: list[PipelineStep]) -> list[PipelineStep]:
    """``steps`` upstream first (stable: otherwise in the order given).

    :raises PipelineValidationError: two steps of one name, or a cycle (named).
    """
    seen: dict[str, PipelineStep] = {}
    for s in steps:
        if seen.setdefault(s.name, s) is not s:
            raise PipelineValidationError(
                f"two steps are named {s.name!r}; give each step its own name"
            )
    inside = set(map(id, steps))
    out: list[PipelineStep] = []
    placed: set[int] = set()
    while len(out) < len(steps):
        ready = [
            s
            for s in steps
            if id(s) not in placed
            and all(id(u) in placed or id(u) not in inside for u in s.upstream())
        ]
        if not ready:
            left = [s for s in steps if id(s) not in placed]
            raise PipelineValidationError(f"the steps form a cycle: {cycle_of(left)}")
        for s in ready:
            out.append(s)
            placed.add(id(s))
    return out


def cycle_of(steps: list[PipelineStep]) -> str:
    """A cycle among ``steps`` (each of which waits for another of them), as ``a -> b -> a``."""
    inside = set(map(id, steps))
    path: list[PipelineStep] = [steps[0]]
    while True:
        nxt = next(u for u in path[-1].upstream() if id(u) in inside)
        if nxt in path:
            loop = path[path.index(nxt) :] + [nxt]
            return " -> ".join(s.name for s in reversed(loop))
        path.append(nxt)


def dataset_inputs(step: PipelineStep) -> dict[str, dict[str, Any]]:
    """The datasets a step reads, by input name: ``{"name", "mode", "pathOnCompute",
    "dataset": dataset_spec, "inArguments", "_dataset": the dataset}``.

    :raises PipelineValidationError: two different inputs of one name.
    """
    from ..datasets import AbstractDataset
    from ..rundata import DatasetConsumptionConfig, dataset_spec, default_input_name

    out: dict[str, dict[str, Any]] = {}
    for where, items in (("arguments", step.arguments), ("inputs", step.inputs)):
        for a in items:
            param = a.parameter.name if isinstance(a, DataPathInput) else None
            if isinstance(a, DataPathInput):
                a = a.config
            if isinstance(a, AbstractDataset):
                a = a.as_named_input(default_input_name(a))
            if not isinstance(a, DatasetConsumptionConfig):
                continue
            new = {
                "name": a.name,
                "mode": a.mode,
                "pathOnCompute": a.path_on_compute,
                "dataset": dataset_spec(a.dataset),
                "inArguments": False,
                "_dataset": a.dataset,
                # Its files are those the parameter's value names (bind_data_paths).
                **({"dataPathParameter": param} if param else {}),
            }
            spec = out.setdefault(a.name, new)
            if spec is not new and any(spec[k] != new[k] for k in ("mode", "dataset")):
                # One name, two data: the step could only be given one of them.
                raise PipelineValidationError(
                    f"step {step.name!r}: two different inputs are named {a.name!r}"
                )
            spec["inArguments"] = spec["inArguments"] or where == "arguments"
    return out


def encode_step(pipeline: Pipeline, step: PipelineStep, snapshot: dict[str, Any]) -> dict[str, Any]:
    """A step as the pipeline run's definition records it (what the controller runs)."""
    from ..datasets import AbstractDataset
    from ..runconfig import RunConfiguration
    from ..rundata import DatasetConsumptionConfig, default_input_name

    def encode(a: Any) -> Any:
        if isinstance(a, PipelineData):
            return {"data": a.name}
        if isinstance(a, PipelineParameter):
            return {"param": a.name}
        if isinstance(a, AbstractDataset):
            return {"dataset": default_input_name(a)}
        if isinstance(a, (DatasetConsumptionConfig, DataPathInput)):
            return {"dataset": a.name}
        return str(a)

    rc = step.runconfig
    rc = RunConfiguration.from_dict(rc.to_dict()) if hasattr(rc, "to_dict") else RunConfiguration()
    rc.target = step.compute_target
    datasets = dataset_inputs(step)
    return {
        "name": step.name,
        **step.command_line(),
        "sourceDirectory": pipeline.source_of(step),
        "snapshot": snapshot,
        "arguments": [encode(a) for a in step.arguments],
        "dataInputs": [d.name for d in step.data_inputs()],
        "datasets": [{k: v for k, v in d.items() if k != "_dataset"} for d in datasets.values()],
        "outputs": [d.name for d in step.outputs],
        # Only when there are some: an older definition (and fingerprint) stays as it was.
        **(
            {"outputConfigs": {d.name: d.spec() for d in step.outputs if isinstance(d, OutputData)}}
            if any(isinstance(d, OutputData) for d in step.outputs)
            else {}
        ),
        **({"tabularInputs": step.tabular_inputs} if step.tabular_inputs else {}),
        "params": {str(k): encode(v) for k, v in step.params.items()},
        "runConfig": rc.to_dict(),
        "allowReuse": step.allow_reuse,
        "upstream": [u.name for u in step.upstream()],
    }


def submit_pipeline(
    experiment: Experiment,
    pipeline: Pipeline,
    tags: dict[str, Any] | None = None,
    pipeline_parameters: dict[str, Any] | None = None,
    continue_on_step_failure: bool = False,
    regenerate_outputs: bool = False,
) -> PipelineRun:
    """Validate, snapshot, record the pipeline run and start its controller; returns it at once.

    :raises PipelineValidationError: the pipeline or its parameters are unsound (nothing is
        recorded).
    :raises MlwsError: the controller could not be started (the run is Failed).
    """
    from ..lifecycle import key_values

    tags = key_values(tags, "tag")
    check_parameter_values(pipeline_parameters)
    spec = freeze(pipeline, pipeline_parameters)
    if experiment.workspace.remote is not None:  # the server's controller runs it
        from ..remote.execute import submit_pipeline as submit_remote

        return submit_remote(experiment, spec, tags, continue_on_step_failure, regenerate_outputs)
    return start_pipeline_run(
        experiment,
        spec,
        tags=tags,
        continue_on_step_failure=continue_on_step_failure,
        regenerate_outputs=regenerate_outputs,
    )


def check_parameter_values(pipeline_parameters: Any) -> None:
    """:raises PipelineValidationError: ``pipeline_parameters`` is given and not a dict."""
    if pipeline_parameters is not None and not isinstance(pipeline_parameters, dict):
        raise PipelineValidationError(
            f"pipeline_parameters is a dict of name -> value, got {type(pipeline_parameters).__name__}"
        )


def parameter_value(v: Any) -> Any:
    """A parameter's value as a pipeline run's definition records it (numbers and booleans as
    they are, a ``DataPath`` as ``{"datastore", "path"}``, anything else as text)."""
    path = data_path_value(v)
    if path is not None:
        return path
    return v if isinstance(v, (int, float, bool)) else str(v)


def freeze(pipeline: Pipeline, pipeline_parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate the pipeline and snapshot every step's source folder (each folder once);
    returns its definition: ``{"description", "parameters": {name: value}, "steps": [...]}``,
    all a controller needs to run it, whatever happens to the folders later.

    :raises PipelineValidationError: the pipeline or its parameters are unsound.
    """
    from ..snapshots import take_snapshot

    ws = pipeline.workspace
    pipeline.validate(pipeline_parameters)
    steps = pipeline.steps
    defaults = {n: parameter_value(p.default_value) for n, p in pipeline.parameters().items()}
    check_value_kinds(defaults, pipeline_parameters)
    values = {n: p.default_value for n, p in pipeline.parameters().items()}
    values.update(pipeline_parameters or {})
    recorded = {k: parameter_value(v) for k, v in values.items()}
    # Before anything is stored: a DataPath whose datastore or files are not there.
    data_path_datasets(ws, recorded, [n for n, v in defaults.items() if data_path_value(v)])
    snapshots: dict[str, dict[str, Any]] = {}
    for s in steps:
        src = pipeline.source_of(s)
        if src not in snapshots and ws.remote is not None:  # sent to the server, which runs it
            from ..remote.execute import snapshot_spec

            snapshots[src] = snapshot_spec(ws, src)
        elif src not in snapshots:
            snap = take_snapshot(ws.blobs, src)
            for w in snap.warnings:
                print(f"Warning: {w}", file=sys.stderr)
            snapshots[src] = {k: v for k, v in dataclasses.asdict(snap).items() if k != "warnings"}
    return {
        "description": pipeline.description,
        "parameters": recorded,
        "steps": [encode_step(pipeline, s, snapshots[pipeline.source_of(s)]) for s in steps],
    }


def start_pipeline_run(
    experiment: Experiment,
    spec: dict[str, Any],
    tags: dict[str, Any] | None = None,
    continue_on_step_failure: bool = False,
    regenerate_outputs: bool = False,
    properties: dict[str, Any] | None = None,
    submitted_by: str | None = None,
) -> PipelineRun:
    """Record a pipeline run of the definition ``spec`` (as :func:`freeze` returns it, its
    parameters' values final) and start its controller; returns the run at once.
    ``submitted_by``: the user recorded as its submitter (default: this process's user; the
    workspace server gives the token's user).

    :raises MlwsError: the controller could not be started (the run is Failed).
    """
    import json

    from ..controllers import start_controller
    from ..lifecycle import PIPELINE_RUN, insert_run
    from .run import PipelineRun

    ws = experiment.workspace
    bind_data_paths(ws, spec)
    definition = {
        "pipeline": {
            **spec,
            "continueOnStepFailure": bool(continue_on_step_failure),
            "regenerateOutputs": bool(regenerate_outputs),
        }
    }
    row = insert_run(
        ws,
        experiment.name,
        run_type=PIPELINE_RUN,
        status="NotStarted",
        fields={
            "definition": json.dumps(definition),
            "description": spec.get("description"),
            **({"submitter_user": submitted_by} if submitted_by else {}),
        },
        tags=tags,
        properties={
            "azureml.runsource": "azureml.PipelineRun",
            "runSource": "SDK",
            "runType": "SDK",
            "azureml.parameters": json.dumps(spec["parameters"]),
            "azureml.continue_on_step_failure": str(bool(continue_on_step_failure)),
            "azureml.pipelineComponent": "pipelinerun",
            **(properties or {}),
        },
    )
    start_controller(experiment, row["id"], "mlws.pipelines.controller", "the pipeline")
    row = ws.catalog.one("SELECT * FROM runs WHERE id = ?", (row["id"],))
    return PipelineRun(experiment, row["id"], _row=row)
