"""A pipeline's steps: ``PythonScriptStep`` (a script with arguments) and ``CommandStep`` (a
command line), each run as a child run of the pipeline on its own compute target.

A step's data: ``inputs`` are :class:`~mlws.pipelines.data.PipelineData` written by another
step, or datasets (``ds.as_named_input("raw")``, ``.as_mount()``, ``.as_download()``);
``outputs`` are the ``PipelineData`` it writes. Either may also appear in ``arguments``, where
the script gets a path (a ``PipelineData`` in the arguments that the step does not list among
its outputs is an input). ``PipelineParameter`` values go into ``arguments`` and ``params``.
Ordering comes from the data, plus :meth:`PipelineStep.run_after`.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import UserErrorException
from .data import DataPathInput, PipelineData, PipelineParameter, graph_item


class PipelineStep:
    """What every step has: a name, arguments, inputs, outputs, a compute target, a run
    configuration, a source folder, ``params`` and ``allow_reuse``."""

    def __init__(
        self,
        name: str | None,
        arguments: list[Any] | None = None,
        compute_target: Any = None,
        runconfig: Any = None,
        inputs: list[Any] | None = None,
        outputs: list[Any] | None = None,
        params: dict[str, Any] | None = None,
        source_directory: str | os.PathLike[str] | None = None,
        allow_reuse: bool = True,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise UserErrorException(f"a pipeline step needs a name, got {name!r}")
        self.name = name
        self.outputs: list[PipelineData] = []
        #: PipelineData name -> how this step reads it as a table (``read_delimited_files()``).
        self.tabular_inputs: dict[str, dict[str, Any]] = {}
        #: Unnamed OutputFileDatasetConfigs this step named so far (:func:`.data.output_data`).
        self.unnamed_outputs = 0
        self.outputs = [graph_item(o, self, "outputs") for o in outputs or []]
        # After the outputs: an OutputFileDatasetConfig in the arguments that no earlier step
        # writes joins them.
        self.arguments: list[Any] = [graph_item(a, self, "arguments") for a in arguments or []]
        self.inputs: list[Any] = [graph_item(a, self, "inputs") for a in inputs or []]
        self.params: dict[str, Any] = dict(params or {})
        self.source_directory = None if source_directory is None else str(source_directory)
        self.allow_reuse = bool(allow_reuse)
        self.runconfig = runconfig
        if compute_target is None:
            target = getattr(runconfig, "target", None) or "local"
        elif isinstance(compute_target, str):
            target = compute_target
        else:
            target = getattr(compute_target, "name", str(compute_target))
        self.compute_target: str = target
        self._after: list[PipelineStep] = []
        for out in self.outputs:
            if not isinstance(out, PipelineData):
                raise UserErrorException(
                    f"step {name!r}: outputs are PipelineData or OutputFileDatasetConfig, got"
                    f" {type(out).__name__}"
                )
            if out.producer is not None and out.producer is not self:
                raise UserErrorException(
                    f"PipelineData {out.name!r} is an output of step {out.producer.name!r} "
                    f"already; step {name!r} cannot write it too"
                )
            out.producer = self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def run_after(self, step: PipelineStep) -> None:
        """Run this step only after ``step`` has completed, with no data between them."""
        if not isinstance(step, PipelineStep):
            raise UserErrorException(f"run_after takes a step, got {type(step).__name__}")
        if step not in self._after:
            self._after.append(step)

    def data_inputs(self) -> list[PipelineData]:
        """The ``PipelineData`` this step reads: its inputs, and those in its arguments that it
        does not write."""
        seen: list[PipelineData] = []
        for item in [*self.inputs, *self.arguments]:
            if isinstance(item, PipelineData) and item not in self.outputs and item not in seen:
                seen.append(item)
        return seen

    def upstream(self) -> list[PipelineStep]:
        """The steps this one waits for: the producers of its inputs and its ``run_after``."""
        out: list[PipelineStep] = []
        for d in self.data_inputs():
            if d.producer is not None and d.producer not in out:
                out.append(d.producer)
        return out + [s for s in self._after if s not in out]

    def parameters(self) -> list[PipelineParameter]:
        """The pipeline parameters this step uses (in ``arguments`` and ``params``, and the
        DataPath parameters of its inputs)."""
        items = [*self.arguments, *self.params.values()]
        found = [p for p in items if isinstance(p, PipelineParameter)]
        found += [
            p.parameter for p in [*self.arguments, *self.inputs] if isinstance(p, DataPathInput)
        ]
        return found

    def command_line(self) -> dict[str, Any]:
        """What runs: ``{"script": ...}`` or ``{"command": ...}``."""
        raise NotImplementedError

    def check(self, source_directory: str, target_type: str) -> None:
        """Checks of the step's own kind, made by ``Pipeline.validate`` with the step's source
        folder and the type of its compute target (none for a plain step).

        :raises MlwsError: the step cannot run there (one line).
        """


class PythonScriptStep(PipelineStep):
    """Run ``script_name`` (in ``source_directory``) with ``arguments`` (v1's
    ``PythonScriptStep``); ``name`` defaults to the script's name. ``params`` become the
    variables ``AML_PARAMETER_<name>``. v1's ``hash_paths``, ``version`` and
    ``runconfig_pipeline_params`` are accepted and ignored: the whole source folder is always
    part of the step's fingerprint."""

    def __init__(
        self,
        script_name: str,
        name: str | None = None,
        arguments: list[Any] | None = None,
        compute_target: Any = None,
        runconfig: Any = None,
        runconfig_pipeline_params: Any = None,
        inputs: list[Any] | None = None,
        outputs: list[Any] | None = None,
        params: dict[str, Any] | None = None,
        source_directory: str | os.PathLike[str] | None = None,
        allow_reuse: bool = True,
        version: str | None = None,
        hash_paths: list[str] | None = None,
    ) -> None:
        if not isinstance(script_name, str) or not script_name:
            raise UserErrorException(f"PythonScriptStep needs a script_name, got {script_name!r}")
        self.script_name = script_name
        super().__init__(
            name or script_name,
            arguments,
            compute_target,
            runconfig,
            inputs,
            outputs,
            params,
            source_directory,
            allow_reuse,
        )

    def command_line(self) -> dict[str, Any]:
        """``{"script": script_name}``."""
        return {"script": self.script_name}


class CommandStep(PipelineStep):
    """Run a command line (a string for ``/bin/sh -c``, or a list) in ``source_directory``
    (v1's ``CommandStep``). Data and parameters go to it as ``$AZUREML_DATAREFERENCE_<name>``
    and ``$AML_PARAMETER_<name>`` variables, which the shell expands."""

    def __init__(
        self,
        command: str | list[str] | None = None,
        name: str | None = None,
        compute_target: Any = None,
        runconfig: Any = None,
        runconfig_pipeline_params: Any = None,
        inputs: list[Any] | None = None,
        outputs: list[Any] | None = None,
        params: dict[str, Any] | None = None,
        source_directory: str | os.PathLike[str] | None = None,
        allow_reuse: bool = True,
        version: str | None = None,
    ) -> None:
        if not command:
            raise UserErrorException("CommandStep needs a command")
        self.command = command if isinstance(command, str) else [str(c) for c in command]
        super().__init__(
            name or "command",
            None,
            compute_target,
            runconfig,
            inputs,
            outputs,
            params,
            source_directory,
            allow_reuse,
        )

    def command_line(self) -> dict[str, Any]:
        """``{"command": command}``."""
        return {"command": self.command}
