"""Pipelines (v1's ``azureml.pipeline.core`` / ``.steps``): steps wired by data, run as child
runs of one pipeline run by a detached controller, unchanged steps reused.

One module per concept: :mod:`.data` (``PipelineData``, ``PipelineParameter``), :mod:`.steps`
(``PythonScriptStep``, ``CommandStep``), :mod:`.graph` (``Pipeline``: closure, validation,
submission), :mod:`.reuse` (step fingerprints), :mod:`.controller` (the detached process that
runs the graph) and :mod:`.run` (``PipelineRun``, ``StepRun``); :mod:`.published`
(``PublishedPipeline``), :mod:`.endpoints` (``PipelineEndpoint``), :mod:`.schedules`
(``Schedule``, ``ScheduleRecurrence``), :mod:`.scheduler` (the process that fires schedules)
and :mod:`.loader` (``FILE.py:OBJ`` on the command line). Names are imported on first use
(PEP 562), so importing the package costs nothing until a pipeline is built.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Pipeline": "graph",
    "PipelineData": "data",
    "PipelineParameter": "data",
    "PythonScriptStep": "steps",
    "CommandStep": "steps",
    "PipelineStep": "steps",
    "PipelineRun": "run",
    "StepRun": "run",
    "PortDataReference": "run",
    "PublishedPipeline": "published",
    "PipelineEndpoint": "endpoints",
    "PipelineVersion": "endpoints",
    "Schedule": "schedules",
    "ScheduleRecurrence": "schedules",
    "ParallelRunConfig": "parallel",
    "ParallelRunStep": "parallel",
    "HyperDriveStep": "hyperdrive_step",
    "HyperDriveStepRun": "hyperdrive_step",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mlws.pipelines' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
