"""mlws: the Azure Machine Learning v1 workspace model, local-first."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: The public API, by the module that defines it. Each is imported on first use (PEP 562):
#: ``import mlws`` comes first in every run's script, every service replica and the CLI, none
#: of which needs the whole library.
_EXPORTS = {
    "ActivityFailedException": "errors",
    "ComputeTarget": "compute",
    "ComputeTargetException": "errors",
    "CondaDependencies": "environments",
    "DataType": "datatypes",
    "Dataset": "datasets",
    "DatasetConsumptionConfig": "rundata",
    "Datastore": "datastores",
    "Environment": "environments",
    "Experiment": "experiments",
    "FunctionRunConfig": "functions",
    "MlwsError": "errors",
    "Model": "models",
    "MpiConfiguration": "distributed",
    "OutputFileDatasetConfig": "rundata",
    "Pipeline": "pipelines",
    "PipelineData": "pipelines",
    "PipelineParameter": "pipelines",
    "PipelineRun": "pipelines",
    "PythonScriptStep": "pipelines",
    "CommandStep": "pipelines",
    "StepRun": "pipelines",
    "PyTorchConfiguration": "distributed",
    "PublishedPipeline": "pipelines",
    "PipelineEndpoint": "pipelines",
    "Schedule": "pipelines",
    "ScheduleRecurrence": "pipelines",
    "Run": "runs",
    "RunConfiguration": "runconfig",
    "RunNotFound": "errors",
    "ScriptRunConfig": "runconfig",
    "TabularDataset": "tabular",
    "TensorflowConfiguration": "distributed",
    "UserErrorException": "errors",
    "Workspace": "workspace",
    "get_result": "functions",
    "run_parallel": "functions",
}

__all__ = [
    "ActivityFailedException",
    "ComputeTarget",
    "ComputeTargetException",
    "CondaDependencies",
    "DataType",
    "Dataset",
    "DatasetConsumptionConfig",
    "Datastore",
    "Environment",
    "Experiment",
    "FunctionRunConfig",
    "MlwsError",
    "Model",
    "MpiConfiguration",
    "OutputFileDatasetConfig",
    "Pipeline",
    "PipelineData",
    "PipelineParameter",
    "PipelineRun",
    "PythonScriptStep",
    "CommandStep",
    "StepRun",
    "PyTorchConfiguration",
    "PublishedPipeline",
    "PipelineEndpoint",
    "Schedule",
    "ScheduleRecurrence",
    "Run",
    "RunConfiguration",
    "RunNotFound",
    "ScriptRunConfig",
    "TabularDataset",
    "TensorflowConfiguration",
    "UserErrorException",
    "Workspace",
    "get_result",
    "run_parallel",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mlws' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:
    from .compute import ComputeTarget
    from .datasets import Dataset
    from .datastores import Datastore
    from .datatypes import DataType
    from .distributed import MpiConfiguration, PyTorchConfiguration, TensorflowConfiguration
    from .environments import CondaDependencies, Environment
    from .errors import (
        ActivityFailedException,
        ComputeTargetException,
        MlwsError,
        RunNotFound,
        UserErrorException,
    )
    from .experiments import Experiment
    from .functions import FunctionRunConfig, get_result, run_parallel
    from .models import Model
    from .pipelines import (
        CommandStep,
        Pipeline,
        PipelineData,
        PipelineEndpoint,
        PipelineParameter,
        PipelineRun,
        PublishedPipeline,
        PythonScriptStep,
        Schedule,
        ScheduleRecurrence,
        StepRun,
    )
    from .runconfig import RunConfiguration, ScriptRunConfig
    from .rundata import DatasetConsumptionConfig, OutputFileDatasetConfig
    from .runs import Run
    from .tabular import TabularDataset
    from .workspace import Workspace
