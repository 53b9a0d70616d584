"""mlws: the Azure Machine Learning v1 workspace model, local-first."""

from .compute import ComputeTarget
from .datasets import Dataset
from .datastores import Datastore
from .datatypes import DataType
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
from .runconfig import RunConfiguration, ScriptRunConfig
from .rundata import DatasetConsumptionConfig, OutputFileDatasetConfig
from .runs import Run
from .tabular import TabularDataset
from .workspace import Workspace

__version__ = "0.1.0"

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
    "OutputFileDatasetConfig",
    "Run",
    "RunConfiguration",
    "RunNotFound",
    "ScriptRunConfig",
    "TabularDataset",
    "UserErrorException",
    "Workspace",
    "get_result",
    "run_parallel",
    "__version__",
]
